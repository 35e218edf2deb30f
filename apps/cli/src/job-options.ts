import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expandShortForms, mlpSpec, type ModelSpec, outputSize, parseModelSpec, vocabularyOf, withVocabulary } from '@ringtrain/core';
import { type Dataset, loadDataset, type TextTokenizer } from '@ringtrain/data';
import { type JobConfig, DEFAULT_JOB, mergeConfig, parseJobConfig } from '@ringtrain/trainer';
import { type JobFlags, MODELS_DIR, namedModels, parseDataFlag } from './job-flags.js';
import { errorWithCode } from './cli-error.js';

/** A trained model a run starts from (--init-from): its job, and its text tokenizer (characters, or BPE merges). */
export interface InitModel {
  path: string;
  config: unknown;
  vocabulary?: string[];
  tokenizer?: TextTokenizer;
  /** Characters of the new text outside `vocabulary` become new tokens (and the model's vocabulary grows). */
  extendVocabulary?: boolean;
}

/**
 * Default job ← config file ← flags, validated as a whole. Sizes the config leaves out (the
 * model's input width, its output units) come from the data. A run that starts from a trained
 * model (`init`) takes that model's job unless --model or --config says otherwise, and reads text
 * with that model's characters.
 */
export function resolveJob(flags: JobFlags, init?: InitModel): JobConfig {
  let job: unknown = DEFAULT_JOB;
  const fromInit = init !== undefined && !flags.model && !flags.config && typeof init.config === 'object' && init.config !== null;
  if (fromInit) job = mergeConfig(job, init.config);
  if (flags.model) job = mergeConfig(job, readJson(modelFile(flags.model)));
  const file = flags.config ? readJson(flags.config) : undefined;
  if (file !== undefined) job = mergeConfig(job, file);
  const over: Record<string, unknown> = {};
  if (flags.epochs !== undefined) over.epochs = flags.epochs;
  if (flags.batchSize !== undefined) over.batchSize = flags.batchSize;
  if (flags.globalBatch !== undefined) over.globalBatchSize = flags.globalBatch;
  if (flags.deterministic) over.deterministic = true;
  if (flags.seed !== undefined) over.seed = flags.seed;
  if (flags.backend) over.backend = flags.backend;
  if (flags.gradientCompression) over.gradientCompression = flags.gradientCompression;
  if (flags.evalEvery !== undefined) over.evalEvery = flags.evalEvery;
  if (flags.optimizer || flags.lr !== undefined) {
    const current = (job as { optimizer: { type: string; lr: number } }).optimizer;
    over.optimizer =
      flags.optimizer && flags.optimizer !== current.type
        ? { type: flags.optimizer, lr: flags.lr ?? (flags.optimizer === 'sgd' ? 0.1 : 0.001) }
        : { ...current, lr: flags.lr ?? current.lr };
  }
  if (flags.data) over.dataset = parseDataFlag(flags.data);
  job = mergeConfig(job, over);
  if (flags.tokenizer) job = withTokenizer(job as Record<string, unknown>, flags.tokenizer);
  const dataset = (job as { dataset: { source?: string } }).dataset;
  if (init?.tokenizer?.type === 'bpe' && dataset.source === 'text') {
    // A byte-level BPE reads any text with the trained model's merges: nothing to extend.
    if (init.extendVocabulary) throw errorWithCode('ERR_ARGUMENT', `--extend-vocabulary: ${init.path} tokenizes by byte-level BPE, which reads any text with its own tokens; leave --extend-vocabulary out`);
    job = { ...(job as object), dataset: { ...dataset, tokenizer: init.tokenizer } };
  } else if (init?.vocabulary && dataset.source === 'text') job = { ...(job as object), dataset: { ...dataset, vocabulary: init.vocabulary, ...(init.extendVocabulary ? { extendVocabulary: true } : {}) } };
  job = withCsvFlags(job as Record<string, unknown>, flags);
  const fromFile = (file ?? (fromInit ? init.config : {})) as { batchSize?: unknown; schedule?: unknown; model?: unknown };
  const stated = { batchSize: flags.batchSize !== undefined || fromFile.batchSize !== undefined, schedule: fromFile.schedule !== undefined };
  job = fitModelToData(job as Record<string, unknown>, fromFile.model, stated);
  if (flags.hidden) {
    // A ReLU MLP with these hidden widths, keeping the config's input size, output width and loss.
    const model = parseModelSpec((job as { model: unknown }).model);
    if (model.layers.some((l) => !['dense', 'relu', 'leaky_relu', 'tanh', 'sigmoid', 'gelu', 'dropout'].includes(l.type))) {
      throw errorWithCode('ERR_SPEC', `--hidden sets the widths of an MLP; this model has ${[...new Set(model.layers.map((l) => l.type))].join(', ')} layers (leave --hidden out, or --model/--config another model)`);
    }
    job = { ...(job as object), model: mlpSpec([model.inputSize, ...flags.hidden, outputSize(model)], { loss: model.loss }) };
  }
  return parseJobConfig(job);
}

/** Layers that take [C, H, W] samples. */
const IMAGE_LAYERS = new Set(['conv2d', 'maxpool2d', 'avgpool2d', 'globalavgpool', 'groupnorm']);

/** `--model`: a name from models/, or a path to a job config file. */
function modelFile(model: string): string {
  if (/[./\\]/.test(model)) return model;
  if (namedModels().includes(model)) return join(MODELS_DIR, `${model}.json`);
  throw errorWithCode('ERR_SPEC', `--model ${model}: no such named model; there are ${namedModels().join(', ') || 'none'} (or give a job config file)`);
}

/** --tokenizer: how a text becomes tokens (a new BPE is learned, so no merges are kept from a config). */
function withTokenizer(job: Record<string, unknown>, tokenizer: TextTokenizer): Record<string, unknown> {
  const dataset = job.dataset as { source: string };
  if (dataset.source !== 'text') throw errorWithCode('ERR_DATA_CONFIG', `--tokenizer is for text data, not ${dataset.source}${dataset.source === 'packed' ? ' (a packed text was tokenized when it was packed: ringtrain data pack text:FILE DIR --tokenizer …)' : ''}`);
  return { ...job, dataset: { ...dataset, tokenizer } };
}

/** --label, --header and --test-fraction, which say how to read a CSV. */
function withCsvFlags(job: Record<string, unknown>, flags: JobFlags): Record<string, unknown> {
  const given = Object.entries({ label: flags.label, header: flags.header, testFraction: flags.testFraction }).filter(([, v]) => v !== undefined);
  if (!given.length) return job;
  const dataset = job.dataset as { source: string };
  if (dataset.source !== 'csv') throw errorWithCode('ERR_DATA_CONFIG', `the CSV options (--${given.map(([k]) => k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)).join(', --')}) are for csv data, not ${dataset.source}`);
  return { ...job, dataset: { ...dataset, ...Object.fromEntries(given) } };
}

/**
 * The model fits the data: an input width or last-layer units that the user's config does not
 * state come from the dataset (features; classes, or the target width for regression, with MSE).
 * The default model's MNIST sizes count as unstated when the data is not MNIST. A stated size that
 * contradicts the data fails here, naming both. An unstated batch size and schedule fit a small CSV.
 */
/**
 * A GPT's vocabulary comes from its text's tokenizer, and the text's windows from the GPT's
 * context; a vocabulary or context the job states must be the data's.
 */
function fitGptToText(job: Record<string, unknown>): Record<string, unknown> {
  const model = job.model as { type: 'gpt'; context?: number; vocab?: number };
  // The model's own mistakes (heads that do not divide the dimension, a context past the limit) first, before any data is read.
  expandShortForms({ ...model, vocab: model.vocab ?? 2 });
  const dataset = job.dataset as { source: string; context?: number };
  if (dataset.source !== 'text' && dataset.source !== 'packed') throw errorWithCode('ERR_DATA_CONFIG', `a GPT trains on text, and the data is ${dataset.source}: give --data text (the embedded English corpus), --data text:FILE or a packed text (--data packed:DIR)`);
  if (dataset.context !== undefined && dataset.context !== model.context) throw errorWithCode('ERR_SHAPE', `the model's context is ${model.context} tokens, the dataset's ${dataset.context}; leave the dataset's out`);
  let fitted: Record<string, unknown> = { ...dataset, context: model.context };
  const split = loadDataset(fitted);
  const train = split.train;
  if (model.vocab !== undefined && model.vocab !== train.classes) throw errorWithCode('ERR_SHAPE', `the model's vocabulary has ${model.vocab} tokens, the text ${train.name} has ${train.classes}; leave the model's vocab out to take the text's`);
  // Learned BPE merges go into the job: every worker, checkpoint and weights file then has them.
  if (split.merges) fitted = { ...fitted, tokenizer: { type: 'bpe', vocabSize: train.classes, ...(fitted.tokenizer as object), merges: Array.from(split.merges), charsPerToken: split.charsPerToken } };
  return { ...job, dataset: fitted, model: { ...model, vocab: train.classes } };
}

function fitModelToData(job: Record<string, unknown>, userModel: unknown, given: { batchSize: boolean; schedule: boolean }): Record<string, unknown> {
  if ((job.model as { type?: string }).type === 'gpt') return fitGptToText(job);
  const text = job.dataset as { source?: string; extendVocabulary?: boolean };
  // A trained language model fine-tuned on a text with new characters grows to its vocabulary.
  if (text.source === 'text' && text.extendVocabulary && vocabularyOf(job.model as ModelSpec) !== null) {
    job = { ...job, model: withVocabulary(job.model as ModelSpec, loadDataset(job.dataset).train.classes) };
    userModel = job.model;
  }
  const model = structuredClone(job.model) as { inputSize?: number; inputShape?: number[]; layers: { type: string; units?: number }[]; loss?: string };
  const user = (userModel ?? {}) as { inputSize?: unknown; inputShape?: unknown; layers?: { type?: string; units?: unknown }[]; loss?: unknown };
  const last = [...(model.layers ?? [])].reverse().find((l) => l.type === 'dense');
  const mnist = ['mnist', 'mnist-small'].includes((job.dataset as { source?: string }).source ?? '');
  if (!mnist && user.inputSize === undefined) delete model.inputSize;
  if (!mnist && user.inputShape === undefined) delete model.inputShape;
  if (!mnist && last && user.layers === undefined) delete last.units;
  const needsImages = model.layers.some((l) => IMAGE_LAYERS.has(l.type));
  // MNIST is what the default model is for; other data is read here, so that a size that does not
  // fit it fails now, naming both, rather than in every worker.
  const stated = (model.inputSize !== undefined || model.inputShape !== undefined) && (!needsImages || model.inputShape !== undefined) && (!last || last.units !== undefined);
  if (mnist && stated) return job;
  let train: Dataset;
  try {
    train = loadDataset(job.dataset).train;
  } catch (err) {
    // A coordinator need not hold the data its workers read, when the config states the sizes.
    if (stated && (err as { code?: string }).code === 'ERR_DATA_NOT_FOUND') return job;
    throw err;
  }
  if (model.inputSize !== undefined && model.inputSize !== train.features) throw errorWithCode('ERR_SHAPE', `model inputSize ${model.inputSize} does not match dataset ${train.name} with ${train.features} features`);
  const shape = (s: readonly number[]): string => `[${s.join(', ')}]`;
  if (model.inputShape && train.shape && shape(model.inputShape) !== shape(train.shape)) throw errorWithCode('ERR_SHAPE', `model inputShape ${shape(model.inputShape)} does not match dataset ${train.name} with images of ${shape(train.shape)}`);
  if (model.inputShape && model.inputShape.reduce((a, b) => a * b, 1) !== train.features) throw errorWithCode('ERR_SHAPE', `model inputShape ${shape(model.inputShape)} does not match dataset ${train.name} with ${train.features} features`);
  if (needsImages && !model.inputShape) {
    if (!train.shape) throw errorWithCode('ERR_SHAPE', `the model's ${model.layers.filter((l) => IMAGE_LAYERS.has(l.type)).map((l) => l.type)[0]} layers need images, and dataset ${train.name} has flat features (give the model an inputShape)`);
    model.inputShape = [...train.shape];
  }
  const outputs = train.classes > 0 ? train.classes : train.targetSize;
  if (last?.units !== undefined && last.units !== outputs) throw errorWithCode('ERR_SHAPE', `model has ${last.units} outputs but dataset ${train.name} has ${train.classes > 0 ? `${train.classes} classes` : `${train.targetSize} targets`}`);
  model.inputSize ??= train.features;
  if (last) last.units ??= train.classes > 0 ? train.classes : train.targetSize;
  if (train.classes === 0 && user.loss === undefined) model.loss = 'mse';
  if ((job.dataset as { source?: string }).source !== 'csv') return { ...job, model };
  // A small table (iris: 120 training rows) holds fewer rows than one default global batch: unless
  // stated, the batch per worker is the power of two near 1/32 of the rows, 4 to 64. Batches that
  // small make the last epochs' constant rate bounce between solutions (iris: 24 to 29 right of
  // 30 over five seeds), so an unstated schedule decays to zero over the run (29 on every seed).
  const fitted = {
    ...(given.batchSize ? {} : { batchSize: Math.min(64, Math.max(4, 2 ** Math.floor(Math.log2(Math.max(1, train.size / 32))))) }),
    ...(given.schedule ? {} : { schedule: { type: 'cosine' } }),
  };
  return { ...job, ...fitted, model };
}

function readJson(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw errorWithCode('ERR_CONFIG', `cannot read config ${file}: ${e.code === 'ENOENT' ? 'no such file' : e.code === 'EISDIR' ? 'it is a folder' : e.message}; give a job config (JSON) file, or a named --model (${namedModels().join(', ')})`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw errorWithCode('ERR_CONFIG', `config ${file} is not valid JSON: ${(err as Error).message}`);
  }
}

/** The job config a checkpoint recorded (with `over` on top), or an error that names the file. */
export function checkpointJob(path: string, config: unknown, over: Record<string, unknown> = {}): JobConfig {
  try {
    return parseJobConfig({ ...(typeof config === 'object' && config !== null ? config : {}), ...over });
  } catch (err) {
    throw Object.assign(new Error(`${path}: ${(err as Error).message}`), { code: (err as { code?: string }).code ?? 'ERR_SPEC', cause: err });
  }
}

/** Which test set a figure is on: the two MNIST sets say which they are (their figures compare with different things). */
export function testSetOf(dataset: { source: string }): string {
  if (dataset.source === 'mnist-small') return 'mnist-small (the embedded 2,000 test digits; --data mnist for the official 10,000)';
  if (dataset.source === 'mnist') return 'mnist (the official 10,000 test digits)';
  return `the ${dataset.source} test set`;
}
