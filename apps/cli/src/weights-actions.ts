import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type RawTensor, readSafetensorsHeader, WEIGHTS_FORMAT, writeSafetensors } from '@ringtrain/checkpoint';
import { dequantizeRows, describeModel, fromFloat16, generateTokens, type LayerSpec, MAX_TEMPERATURE, type Model, packInt4, quantizeRows, Rng, toFloat16 } from '@ringtrain/core';
import { applyScaling, Batcher, BpeTokenizer, type Dataset, decodeImage, loadDataset, planarPixels, readIdx, type TextTokenizer } from '@ringtrain/data';
import { bitsPerCharacter, charsPerTokenOf, describeLanguageModelLoss, type EvalResult, evaluateRange } from '@ringtrain/trainer';
import { parseDataFlag } from './job-flags.js';
import { checkpointJob } from './job-options.js';
import { errorWithCode } from './cli-error.js';
import { outputPath } from './output-path.js';
import { table } from './table.js';
import { loadModelFile, type ModelFile, type Precision } from './model-file.js';
import { asMatrix } from './weights-file.js';

// What the weights commands do, loaded when one runs (weights-commands.ts defines them).

/** Loss and accuracy of `model` over all of `ds`. */
function evaluate(model: Model, ds: Dataset): EvalResult {
  return evaluateRange(model, new Batcher(ds, 1000, (n) => model.backend.alloc(n)));
}

/** The test set the file's job trained against, or the one `--data` names. */
function testSet(file: ModelFile, data?: string): Dataset {
  if (!data && file.config === null) throw errorWithCode('ERR_ARGUMENT', `${file.path} records no job config (an export made before exports carried one): give the test data with --data`);
  const config = checkpointJob(file.path, file.config);
  let source = (data ? parseDataFlag(data) : config.dataset) as { source: string; train?: string };
  // A CSV given to score is scored whole (not a held-out share of it), read as the model's own CSV
  // was (its label column), and scaled as the model's features were, not by the file's own figures.
  const scoredCsv = data !== undefined && source.source === 'csv';
  if (scoredCsv) {
    const own: Record<string, unknown> = config.dataset.source === 'csv' ? { ...config.dataset } : {};
    delete own.testFraction;
    source = { ...own, ...source, test: source.train, normalize: 'none' } as typeof source;
  }
  const test = loadDataset(source as Parameters<typeof loadDataset>[0]).test;
  if (scoredCsv && file.scaling && file.scaling.shift.length === test.features) applyScaling(test.x, file.scaling);
  // The data's shape first: another set's labels are meaningless to a model that cannot read its inputs.
  if (test.features !== file.model.inputSize) throw errorWithCode('ERR_SHAPE', `${test.name} has ${test.features} values per sample, and the model ${describeModel(file.model.spec)} takes ${file.model.inputSize}: give the data it was trained on`);
  const classes = file.model.outputSize / file.model.positions;
  if (test.classes > classes) throw errorWithCode('ERR_SHAPE', `${test.name} has ${test.classes} classes, and the model predicts ${classes}: give the data it was trained on`);
  return test;
}

const mb = (bytes: number): string => (bytes >= 1e6 ? `${(bytes / 1e6).toFixed(2)} MB` : `${(bytes / 1e3).toFixed(1)} kB`);
const PRECISIONS: Precision[] = ['fp32', 'fp16', 'int8', 'int4'];

/**
 * The model's parameters at a precision, as `export` writes them: matrices (dense, attention,
 * embedding and convolution weights) at fp16, or int8/int4 with one fp32 scale per output row;
 * vectors (biases, norms) stay fp32. The model's values become the ones the file stands for.
 */
function quantizeModel(model: Model, precision: Precision): RawTensor[] {
  const out: RawTensor[] = [];
  for (const t of model.params.tensors) {
    const w = model.params.value(t.name);
    const matrix = asMatrix(t.shape);
    if (precision === 'fp32' || !matrix) {
      out.push({ name: t.name, dtype: 'F32', shape: t.shape, bytes: new Uint8Array(w.slice().buffer) });
    } else if (precision === 'fp16') {
      const h = Uint16Array.from(w, toFloat16);
      out.push({ name: t.name, dtype: 'F16', shape: t.shape, bytes: new Uint8Array(h.buffer) });
      w.set(Float32Array.from(h, fromFloat16));
    } else {
      const bits = precision === 'int8' ? 8 : 4;
      const [rows, cols] = matrix!;
      const q = quantizeRows(w, rows, cols, bits);
      const bytes = bits === 8 ? new Uint8Array(q.values.buffer) : packInt4(q);
      out.push({ name: t.name, dtype: bits === 8 ? 'I8' : 'U8', shape: bits === 8 ? t.shape : [rows, Math.ceil(cols / 2)], bytes });
      out.push({ name: `${t.name}.scale`, dtype: 'F32', shape: [rows], bytes: new Uint8Array(q.scales.buffer) });
      dequantizeRows(q, w);
    }
  }
  return out;
}

/** A language model's figures from its loss per token; a classifier's accuracy. */
function quality(file: ModelFile, r: EvalResult): Record<string, number> {
  return file.model.positions > 1 ? { loss: r.loss, bitsPerChar: bitsPerCharacter(r.loss, charsPerTokenOfFile(file)), perplexity: Math.exp(r.loss) } : { loss: r.loss, accuracy: r.accuracy };
}

function charsPerTokenOfFile(file: ModelFile): number {
  return charsPerTokenOf((file.config as { dataset?: unknown } | null)?.dataset);
}


/**
 * `inspect`: the file's tensors, parameter counts, and for each precision the parameters' size
 * beside the model's quality at it (val loss and bits per character for a language model, test
 * accuracy otherwise), measured on the job's test data when it is at hand.
 */
export function inspect(path: string, flags: { json?: boolean; data?: string }): void {
  const file = loadModelFile(path);
  const { model } = file;
  const header = readSafetensorsHeaderOrNull(path);
  const tensors = file.checkpoint
    ? file.checkpoint.tensors.map((t) => ({ name: t.name, dtype: 'F32', shape: t.shape, count: t.data.length }))
    : Object.entries(header ?? {}).filter(([k]) => k !== '__metadata__').map(([name, t]) => ({ name, dtype: String((t as { dtype: string }).dtype), shape: (t as { shape: number[] }).shape, count: (t as { shape: number[] }).shape.reduce((a, b) => a * b, 1) }));
  const weights = model.params.tensors.filter((t) => t.role === 'weight').reduce((s, t) => s + t.length, 0);
  const biases = model.params.length - weights;
  let data: Dataset | null = null;
  let noData = '';
  try {
    data = testSet(file, flags.data);
  } catch (err) {
    noData = (err as Error).message;
  }
  const original = Float32Array.from(model.params.values);
  const precisions = PRECISIONS.map((precision): { precision: Precision; bytes: number; loss?: number; bitsPerChar?: number; perplexity?: number; accuracy?: number } => {
    model.params.values.set(original);
    const bytes = quantizeModel(model, precision).reduce((n, t) => n + t.bytes.length, 0);
    return { precision, bytes, ...(data ? quality(file, evaluate(model, data)) : {}) };
  });
  model.params.values.set(original);
  const fileBytes = statSync(path).size;
  const m = file.checkpoint?.meta;
  if (flags.json) {
    const sizes = Object.fromEntries(precisions.map((p) => [p.precision, p.bytes]));
    process.stdout.write(`${JSON.stringify({ path, fileBytes, precision: file.precision, step: file.step, tensors, weights, biases, sizes, precisions, ...(m ? { meta: m } : { config: file.config, classNames: file.classNames }) })}\n`);
    return;
  }
  process.stdout.write(`${path}\n${table(['tensor', 'dtype', 'shape', 'count'], tensors.map((t) => [t.name, t.dtype, `[${t.shape.join(', ')}]`, String(t.count)]))}\n\n`);
  process.stdout.write(`${describeModel(model.spec)}\n${blockTable(model)}\n\n`);
  process.stdout.write(`parameters: ${model.params.length} (${weights} weights, ${biases} biases); ${file.checkpoint ? 'a checkpoint' : `weights at ${file.precision}`}, file ${mb(fileBytes)}${file.checkpoint ? ' with optimizer state' : ''}\n`);
  const lm = model.positions > 1;
  const rows = precisions.map((p) => [p.precision, mb(p.bytes), ...(data ? (lm ? [fmt4(p.loss), fmt3(p.bitsPerChar)] : [`${(100 * (p.accuracy ?? 0)).toFixed(2)}%`, fmt4(p.loss)]) : [])]);
  const qualityHeads = data ? (lm ? ['val loss', 'bits/char'] : ['test accuracy', 'test loss']) : [];
  process.stdout.write(`${table(['precision', 'parameters', ...qualityHeads], rows)}\n(int8/int4: one fp32 scale per row of each matrix; vectors stay fp32${data ? `; measured on ${data.size} ${lm ? 'validation windows' : 'test samples'}` : `; quality not measured: ${noData}`})\n`);
  if (m) {
    process.stdout.write(`step ${m.step}, epoch ${m.epoch}, sample ${m.cursor}, saved by ${m.worldSize} workers at ${m.savedAt}\n`);
    process.stdout.write(`metrics ${JSON.stringify(m.metrics)}\noptimizer ${m.optimizer.type} (step ${m.optimizer.step}, slots ${m.optimizer.slots.join(', ') || 'none'})\n`);
  } else process.stdout.write(`step ${file.step}\n`);
  // A BPE's merges (thousands of ids) are counted, not listed.
  process.stdout.write(`config ${JSON.stringify(file.config, (k, v) => (k === 'merges' && Array.isArray(v) ? `${v.length / 2} merges` : v))}\n`);
}

const fmt4 = (x: number | undefined): string => (x === undefined ? 'n/a' : x.toFixed(4));
const fmt3 = (x: number | undefined): string => (x === undefined ? 'n/a' : x.toFixed(3));

/** Parameters per top-level block of the model (a GPT's embedding, each attention and MLP block, the head). */
function blockTable(model: Model): string {
  const rows = model.layers.map((layer, i) => {
    const count = layer.parameters().reduce((n, d) => n + d.shape.reduce((a, b) => a * b, 1), 0);
    return [`layers.${i}`, describeBlock(model.spec.layers[i]), count.toLocaleString('en'), `${((100 * count) / model.params.length).toFixed(1)}%`];
  }).filter((r) => r[2] !== '0');
  return table(['block', 'kind', 'parameters', 'share'], rows);
}

function describeBlock(l: LayerSpec): string {
  if (l.type === 'residual') return `residual: ${l.layers.map((x) => x.type).join(' → ')}`;
  if (l.type === 'dense') return `dense ${l.units}`;
  if (l.type === 'embedding') return `embedding ${l.vocab}×${l.dim} + positions`;
  return l.type;
}

function readSafetensorsHeaderOrNull(path: string): Record<string, unknown> | null {
  try {
    return readSafetensorsHeader(path) as Record<string, unknown>;
  } catch {
    return null;
  }
}

/** The format of `export -o FILE`: as given, or by the file's extension; never one the name contradicts. */
type ExportFormat = 'safetensors' | 'json' | 'onnx';

function exportFormat(output: string, given?: ExportFormat): ExportFormat {
  const named = output.endsWith('.json') ? 'json' : output.endsWith('.safetensors') ? 'safetensors' : output.endsWith('.onnx') ? 'onnx' : undefined;
  if (given && named && given !== named) throw errorWithCode('ERR_ARGUMENT', `-o ${output} names a .${named} file, but --format is ${given}; name the file .${given}, or leave --format out`);
  return given ?? named ?? 'safetensors';
}

/** `export`: the weights alone, optionally quantized, with the model's quality before and after. */
export async function exportWeights(path: string, options: { output: string; format?: ExportFormat; quantize?: 'fp16' | 'int8' | 'int4'; data?: string }): Promise<void> {
  const flags = { ...options, output: outputPath('-o', options.output), format: exportFormat(options.output, options.format) };
  if (flags.format === 'onnx') return exportOnnx(path, flags);
  const file = loadModelFile(path);
  const { model } = file;
  const test = testSet(file, flags.data);
  const before = evaluate(model, test);
  const out = quantizeModel(model, flags.quantize ?? 'fp32');
  // Everything needed to use the model travels with it: no flag is needed to read it back.
  const metadata: Record<string, string> = {
    format: WEIGHTS_FORMAT,
    quantization: flags.quantize ?? 'none',
    step: String(file.step),
    source: path,
    model_spec: JSON.stringify(model.spec),
    ...(file.config !== null ? { config: JSON.stringify(file.config) } : {}),
    ...(file.classNames ? { class_names: JSON.stringify(file.classNames) } : {}),
    ...(file.scaling ? { scaling: JSON.stringify(file.scaling) } : {}),
  };
  if (flags.format === 'safetensors') writeSafetensors(flags.output, out, metadata);
  else {
    const tensors = Object.fromEntries(model.params.tensors.map((t) => [t.name, { shape: t.shape, values: Array.from(model.params.value(t.name)) }]));
    const parsed = Object.fromEntries(Object.entries(metadata).map(([k, v]) => [k, ['config', 'model_spec', 'class_names', 'scaling'].includes(k) ? JSON.parse(v) : v]));
    writeFileSync(flags.output, JSON.stringify({ ...parsed, tensors }));
  }
  // "After" is measured on the file just written, read back as every command reads it.
  const after = evaluate(loadModelFile(flags.output).model, test);
  const to = flags.quantize ?? 'fp32';
  const pct = (x: number): string => `${(100 * x).toFixed(2)}%`;
  const compared =
    model.positions > 1
      ? `${describeLanguageModelLoss(before.loss, charsPerTokenOfFile(file))} at ${file.precision}, ${describeLanguageModelLoss(after.loss, charsPerTokenOfFile(file))} at ${to} (${(after.loss - before.loss).toFixed(4)} nats/token) on ${test.size} validation windows`
      : `test accuracy ${pct(before.accuracy)} at ${file.precision}, ${pct(after.accuracy)} ${to} (${((after.accuracy - before.accuracy) * 100).toFixed(2)} points) on ${test.size} samples`;
  process.stdout.write(`${flags.output}: ${mb(statSync(flags.output).size)}; ${compared}\n`);
}

/**
 * `export --format onnx`: the model as a standard ONNX graph (float32 weights; a quantized file's
 * are its dequantized values), with what it takes to read its outputs in the model's metadata.
 */
async function exportOnnx(path: string, flags: { output: string; quantize?: string; data?: string }): Promise<void> {
  if (flags.quantize) throw errorWithCode('ERR_ARGUMENT', `--quantize ${flags.quantize} with --format onnx: the ONNX export holds float32 weights (quantize it with onnxruntime's tools, or export safetensors)`);
  if (flags.data) throw errorWithCode('ERR_ARGUMENT', '--data with --format onnx: the ONNX export is not scored (run it in onnxruntime); leave --data out');
  const file = loadModelFile(path);
  const { onnxModel, ONNX_OPSET } = await import('./onnx.js');
  const tokenizer = (file.config as { dataset?: { tokenizer?: unknown } } | null)?.dataset?.tokenizer;
  const metadata: Record<string, string> = {
    source: path,
    step: String(file.step),
    ...(file.classNames ? { class_names: JSON.stringify(file.classNames) } : {}),
    ...(tokenizer ? { tokenizer: JSON.stringify(tokenizer) } : {}),
  };
  const bytes = onnxModel(file.model, { ...(file.scaling ? { scaling: file.scaling } : {}), metadata });
  writeFileSync(flags.output, bytes);
  const lm = file.model.positions > 1;
  const input = lm ? 'input: int64 token ids [batch, sequence ≤ ' + file.model.inputSize + ']' : `input: float32 [batch, ${(file.model.spec.inputShape ?? [file.model.inputSize]).join(', ')}]${file.scaling ? ' (raw features: the standardization is in the graph)' : ''}`;
  const output = file.model.spec.loss === 'softmax_cross_entropy' ? `logits [batch, ${lm ? 'sequence, ' : ''}${file.model.outputSize / file.model.positions}]` : `output [batch, ${file.model.outputSize}]`;
  process.stdout.write(`${flags.output}: ${mb(bytes.length)}, ONNX opset ${ONNX_OPSET}; ${input}; ${output}\n`);
}

/** `evaluate`: the model's loss and accuracy (a language model's: val loss, bits per character, perplexity). */
export function evaluateCheckpoint(path: string, flags: { data?: string }): void {
  const file = loadModelFile(path);
  const r = evaluate(file.model, testSet(file, flags.data));
  process.stdout.write(`${JSON.stringify({ file: path, precision: file.precision, step: file.step, ...r, ...quality(file, r) })}\n`);
}

/** `predict`: the class of each input. */
export function predict(path: string, flags: { input: string }): void {
  const file = loadModelFile(path);
  const { model } = file;
  const names = file.classNames;
  const { x, names: inputs } = readInputs(flags.input, model.inputSize);
  // The features as the model saw them in training.
  if (file.scaling) {
    if (file.scaling.shift.length !== model.inputSize) throw Object.assign(new Error(`${path}: its feature scaling has ${file.scaling.shift.length} features, the model ${model.inputSize}`), { code: 'ERR_MODEL_MISMATCH' });
    applyScaling(x, file.scaling);
  }
  const rows = x.length / model.inputSize;
  const buf = model.backend.alloc(x.length);
  buf.set(x);
  const out = model.forward(buf, rows);
  for (let r = 0; r < rows; r++) {
    const o = out.subarray(r * model.outputSize, (r + 1) * model.outputSize);
    let best = 0;
    for (let c = 1; c < o.length; c++) if (o[c] > o[best]) best = c;
    const label = names?.[best] ?? best;
    process.stdout.write(inputs ? `${inputs[r]}\t${label}\n` : `${label}\n`);
  }
}

/** The inputs to predict: rows of features, and a label per row when they came from files (images). */
function readInputs(file: string, features: number): { x: Float32Array; names?: string[] } {
  if (statSync(file).isDirectory()) {
    const images = readdirSync(file).filter((f) => /\.(png|jpe?g)$/i.test(f)).sort();
    if (!images.length) throw Object.assign(new Error(`${file}: no PNG or JPEG images in this folder`), { code: 'ERR_DATA_FORMAT' });
    const x = new Float32Array(images.length * features);
    images.forEach((f, i) => x.set(imageFeatures(join(file, f), features), i * features));
    return { x, names: images.map((f) => join(file, f)) };
  }
  if (/\.(png|jpe?g)$/i.test(file)) return { x: imageFeatures(file, features), names: [file] };
  if (/\.csv$/i.test(file)) {
    // One sample per line, features only; a first line that is not numbers is a header.
    const lines = readFileSync(file, 'utf8').split(/\r?\n/).filter((l) => l.trim() !== '');
    const values: number[] = [];
    lines.forEach((line, i) => {
      const cells = line.split(',').map((c) => Number(c.trim()));
      if (i === 0 && cells.some(Number.isNaN)) return;
      if (cells.length === features + 1) throw errorWithCode('ERR_SHAPE', `${file}:${i + 1}: ${features + 1} columns, and the model takes ${features} features: drop the label column (predict reads features only)`);
      if (cells.length !== features || cells.some((v) => !Number.isFinite(v))) throw errorWithCode('ERR_SHAPE', `${file}:${i + 1}: expected ${features} numbers, got "${line.slice(0, 60)}"`);
      values.push(...cells);
    });
    return { x: Float32Array.from(values) };
  }
  const idx = readIdx(file);
  const n = idx.dims.slice(1).reduce((a, b) => a * b, 1);
  if (n !== features) throw new Error(`${file}: ${n} values per item, the model takes ${features}`);
  return { x: Float32Array.from(idx.data, idx.type === 0x08 ? (v: number) => v / 255 : (v: number) => v) };
}

/** An image as the model's features, in [0, 1]: one channel or three, as the model was trained. */
function imageFeatures(file: string, features: number): Float32Array {
  const { width, height, rgba } = decodeImage(file);
  const channels = features === width * height ? 1 : features === width * height * 3 ? 3 : 0;
  if (!channels) throw Object.assign(new Error(`${file}: a ${width}×${height} image gives ${width * height} (gray) or ${width * height * 3} (RGB) values, the model takes ${features}`), { code: 'ERR_SHAPE' });
  const out = new Float32Array(features);
  planarPixels(rgba, width * height, channels, out);
  return out;
}

/**
 * `generate`: continues a prompt with a language model, streaming its text as each token is
 * chosen; one position per token through the model's key/value cache.
 */
export function generate(path: string, flags: { prompt: string; tokens: number; temperature: number; topK?: number; seed: number }): void {
  const file = loadModelFile(path);
  const { model } = file;
  if (model.positions < 2 || !file.classNames) throw errorWithCode('ERR_MODEL_MISMATCH', `${path} holds no language model (${describeModel(model.spec)}): generate needs a GPT trained on text`);
  if (flags.temperature > MAX_TEMPERATURE) throw errorWithCode('ERR_ARGUMENT', `--temperature ${flags.temperature} is past ${MAX_TEMPERATURE}, where every token is as likely as any other; use 0 (greedy) to about 2`);
  const codec = textCodec(file, file.classNames);
  if (flags.topK !== undefined && flags.topK > codec.size) throw errorWithCode('ERR_ARGUMENT', `--top-k ${flags.topK} is more than the model's vocabulary of ${codec.size}`);
  if (flags.prompt.length === 0) throw errorWithCode('ERR_ARGUMENT', '--prompt is empty: give at least one character');
  const prompt = codec.encode(flags.prompt);
  const T = model.inputSize;
  if (prompt.length > T) process.stderr.write(`ringtrain: warning: the prompt has ${prompt.length} ${codec.unit}, the model's context ${T}: it sees the last ${T}\n`);
  process.stdout.write(flags.prompt);
  generateTokens(model, prompt, { tokens: flags.tokens, temperature: flags.temperature, ...(flags.topK ? { topK: flags.topK } : {}), rng: new Rng(flags.seed), onToken: (id) => process.stdout.write(codec.text(id)) });
  process.stdout.write(`${codec.text(null)}\n`);
}

/**
 * A language model's tokens to and from text: its characters, or its byte-level BPE (whose
 * tokens may split a character's bytes, so text is written as soon as it is whole).
 */
function textCodec(file: ModelFile, symbols: readonly string[]): { size: number; unit: string; encode(text: string): number[]; text(id: number | null): string } {
  const tokenizer = (file.config as { dataset?: { tokenizer?: TextTokenizer } } | null)?.dataset?.tokenizer;
  if (tokenizer?.type === 'bpe') {
    if (!tokenizer.merges) throw errorWithCode('ERR_CHECKPOINT_FORMAT', `${file.path}: its job says byte-level BPE but records no merges`);
    const bpe = new BpeTokenizer(tokenizer.merges);
    if (bpe.size !== symbols.length) throw errorWithCode('ERR_CHECKPOINT_FORMAT', `${file.path}: its BPE merges make ${bpe.size} tokens, its vocabulary has ${symbols.length}`);
    const decoder = new TextDecoder('utf-8');
    return { size: bpe.size, unit: 'tokens', encode: (text) => Array.from(bpe.encode(text)), text: (id) => (id === null ? decoder.decode() : decoder.decode(bpe.tokens[id], { stream: true })) };
  }
  const index = new Map(symbols.map((s, i) => [s, i]));
  return {
    size: symbols.length,
    unit: 'characters',
    encode(text) {
      const chars = Array.from(text);
      const foreign = [...new Set(chars.filter((c) => !index.has(c)))];
      if (foreign.length) throw errorWithCode('ERR_ARGUMENT', `--prompt: the character${foreign.length > 1 ? 's' : ''} ${foreign.map((c) => JSON.stringify(c)).join(', ')} ${foreign.length > 1 ? 'are' : 'is'} not in the model's vocabulary of ${symbols.length} (${JSON.stringify(symbols.join(''))})`);
      return chars.map((c) => index.get(c)!);
    },
    text: (id) => (id === null ? '' : symbols[id]),
  };
}
