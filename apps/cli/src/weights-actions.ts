import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Checkpoint, loadCheckpoint, type RawTensor, writeSafetensors } from '@ringtrain/checkpoint';
import { createBackend, dequantizeRows, describeModel, fromFloat16, generateTokens, Model, type ModelSpec, packInt4, parameterCount, parseModelSpec, quantizeRows, Rng, toFloat16 } from '@ringtrain/core';
import { applyScaling, Batcher, type Dataset, decodeImage, loadDataset, planarPixels, readIdx } from '@ringtrain/data';
import { type EvalResult, evaluateRange } from '@ringtrain/trainer';
import { parseDataFlag } from './job-flags.js';
import { checkpointJob } from './job-options.js';
import { errorWithCode } from './cli-error.js';
import { outputPath } from './output-path.js';
import { table } from './table.js';
import { asMatrix, loadWeightsInto } from './weights-file.js';

// What the weights commands do, loaded when one runs (weights-commands.ts defines them).

/**
 * A model rebuilt from a checkpoint's spec, with its weights. The spec is checked, and must describe
 * exactly the parameters the file holds, before the model is allocated: a small file that claims a
 * huge model is refused, not trained on uninitialised memory.
 */
function modelOf(ckpt: Checkpoint): Model {
  const fail = (why: string): never => {
    throw Object.assign(new Error(`${ckpt.path}: ${why}`), { code: 'ERR_MODEL_MISMATCH' });
  };
  let spec: ModelSpec;
  try {
    spec = parseModelSpec(ckpt.meta.modelSpec);
  } catch (err) {
    return fail((err as Error).message);
  }
  const held = ckpt.tensors.filter((t) => !t.name.startsWith('optimizer.')).reduce((n, t) => n + t.data.length, 0);
  if (held !== parameterCount(spec)) fail(`its model spec has ${parameterCount(spec)} parameters, its tensors hold ${held}`);
  const model = new Model(spec, createBackend('auto').backend, { seed: 0 });
  for (const t of model.params.tensors) {
    const src = ckpt.tensors.find((x) => x.name === t.name);
    if (!src) fail(`no tensor ${t.name}`);
    if (src!.shape.join('x') !== t.shape.join('x')) fail(`tensor ${t.name} has shape [${src!.shape.join(', ')}], the model spec needs [${t.shape.join(', ')}]`);
    model.params.value(t.name).set(src!.data);
  }
  return model;
}

/** Loss and accuracy of `model` over all of `ds`. */
function evaluate(model: Model, ds: Dataset): EvalResult {
  return evaluateRange(model, new Batcher(ds, 1000, (n) => model.backend.alloc(n)));
}

function testSet(ckpt: Checkpoint, data?: string): Dataset {
  const config = checkpointJob(ckpt.path, ckpt.meta.config);
  const source = data ? parseDataFlag(data) : config.dataset;
  return loadDataset(source).test;
}

const mb = (bytes: number): string => (bytes >= 1e6 ? `${(bytes / 1e6).toFixed(2)} MB` : `${(bytes / 1e3).toFixed(1)} kB`);

/** Bytes the parameters take at a precision: int8/int4 weights carry one fp32 scale per output row; biases stay fp32. */
function sizeAt(ckpt: Checkpoint, precision: 'fp32' | 'fp16' | 'int8' | 'int4'): number {
  let bytes = 0;
  for (const t of ckpt.tensors) {
    if (t.name.startsWith('optimizer.')) continue;
    const n = t.data.length;
    const matrix = asMatrix(t.shape);
    if (precision === 'fp32' || (!matrix && precision !== 'fp16')) bytes += n * 4;
    else if (precision === 'fp16') bytes += n * 2;
    else bytes += (precision === 'int8' ? n : matrix![0] * Math.ceil(matrix![1] / 2)) + matrix![0] * 4;
  }
  return bytes;
}

/** `inspect`: tensors, parameter counts, sizes at each precision, the metadata. */
export function inspect(path: string, flags: { json?: boolean }): void {
  const ckpt = loadCheckpoint(path);
  const params = ckpt.tensors.filter((t) => !t.name.startsWith('optimizer.'));
  const weights = params.filter((t) => t.name.endsWith('.weight')).reduce((s, t) => s + t.data.length, 0);
  const biases = params.filter((t) => !t.name.endsWith('.weight')).reduce((s, t) => s + t.data.length, 0);
  const sizes = { fp32: sizeAt(ckpt, 'fp32'), fp16: sizeAt(ckpt, 'fp16'), int8: sizeAt(ckpt, 'int8'), int4: sizeAt(ckpt, 'int4') };
  const fileBytes = statSync(path).size;
  const m = ckpt.meta;
  if (flags.json) {
    process.stdout.write(`${JSON.stringify({ path, fileBytes, tensors: ckpt.tensors.map((t) => ({ name: t.name, shape: t.shape, count: t.data.length })), weights, biases, sizes, meta: m })}\n`);
    return;
  }
  const rows = ckpt.tensors.map((t) => [t.name, `[${t.shape.join(', ')}]`, String(t.data.length)]);
  process.stdout.write(`${path}\n${table(['tensor', 'shape', 'count'], rows)}\n\n`);
  process.stdout.write(`parameters: ${weights + biases} (${weights} weights, ${biases} biases); file ${mb(fileBytes)} with optimizer state\n`);
  process.stdout.write(`parameters at FP32 ${mb(sizes.fp32)}, FP16 ${mb(sizes.fp16)}, INT8 ${mb(sizes.int8)}, INT4 ${mb(sizes.int4)} (INT8/INT4 with per-row FP32 scales; biases FP32)\n`);
  process.stdout.write(`step ${m.step}, epoch ${m.epoch}, sample ${m.cursor}, saved by ${m.worldSize} workers at ${m.savedAt}\n`);
  process.stdout.write(`metrics ${JSON.stringify(m.metrics)}\noptimizer ${m.optimizer.type} (step ${m.optimizer.step}, slots ${m.optimizer.slots.join(', ') || 'none'})\nconfig ${JSON.stringify(m.config)}\n`);
}

/** The format of `export -o FILE`: as given, or by the file's extension; never one the name contradicts. */
function exportFormat(output: string, given?: 'safetensors' | 'json'): 'safetensors' | 'json' {
  const named = output.endsWith('.json') ? 'json' : output.endsWith('.safetensors') ? 'safetensors' : undefined;
  if (given && named && given !== named) throw errorWithCode('ERR_ARGUMENT', `-o ${output} names a .${named} file, but --format is ${given}; name the file .${given}, or leave --format out`);
  return given ?? named ?? 'safetensors';
}

/** `export`: the weights alone, optionally quantized, with the test accuracy before and after. */
export function exportWeights(path: string, options: { output: string; format?: 'safetensors' | 'json'; quantize?: 'fp16' | 'int8' | 'int4'; data?: string }): void {
  const flags = { ...options, output: outputPath('-o', options.output), format: exportFormat(options.output, options.format) };
  const ckpt = loadCheckpoint(path);
  const model = modelOf(ckpt);
  const test = testSet(ckpt, flags.data);
  const before = evaluate(model, test);
  const out: RawTensor[] = [];
  for (const t of model.params.tensors) {
    const w = model.params.value(t.name);
    const matrix = asMatrix(t.shape);
    if (!flags.quantize || !matrix) {
      out.push({ name: t.name, dtype: 'F32', shape: t.shape, bytes: new Uint8Array(w.slice().buffer) });
    } else if (flags.quantize === 'fp16') {
      const h = Uint16Array.from(w, toFloat16);
      out.push({ name: t.name, dtype: 'F16', shape: t.shape, bytes: new Uint8Array(h.buffer) });
      w.set(Float32Array.from(h, fromFloat16)); // the JSON format writes the values the file stands for
    } else {
      const bits = flags.quantize === 'int8' ? 8 : 4;
      // Per output row: a dense layer's output unit, a convolution's output channel.
      const [rows, cols] = matrix;
      const q = quantizeRows(w, rows, cols, bits);
      const bytes = bits === 8 ? new Uint8Array(q.values.buffer) : packInt4(q);
      out.push({ name: t.name, dtype: bits === 8 ? 'I8' : 'U8', shape: bits === 8 ? t.shape : [rows, Math.ceil(cols / 2)], bytes });
      out.push({ name: `${t.name}.scale`, dtype: 'F32', shape: [rows], bytes: new Uint8Array(q.scales.buffer) });
      dequantizeRows(q, w);
    }
  }
  const metadata = { format: 'ringtrain-weights/1', quantization: flags.quantize ?? 'none', model_spec: JSON.stringify(ckpt.meta.modelSpec), source: path, step: String(ckpt.meta.step) };
  if (flags.format === 'safetensors') writeSafetensors(flags.output, out, metadata);
  else {
    const tensors = Object.fromEntries(model.params.tensors.map((t) => [t.name, { shape: t.shape, values: Array.from(model.params.value(t.name)) }]));
    writeFileSync(flags.output, JSON.stringify({ ...metadata, model_spec: ckpt.meta.modelSpec, tensors }));
  }
  // "After" is measured on the file just written, decoded as a user's loader would decode it.
  const written = modelOf(ckpt);
  loadWeightsInto(written, flags.output, flags.format);
  const after = evaluate(written, test);
  const pct = (x: number): string => `${(100 * x).toFixed(2)}%`;
  process.stdout.write(`${flags.output}: ${mb(statSync(flags.output).size)}; test accuracy ${pct(before.accuracy)} at fp32, ${pct(after.accuracy)} ${flags.quantize ?? 'fp32'} (${((after.accuracy - before.accuracy) * 100).toFixed(2)} points) on ${test.size} samples\n`);
}

/** `evaluate`: a checkpoint's test loss and accuracy. */
export function evaluateCheckpoint(path: string, flags: { data?: string }): void {
  const ckpt = loadCheckpoint(path);
  const r = evaluate(modelOf(ckpt), testSet(ckpt, flags.data));
  process.stdout.write(`${JSON.stringify({ checkpoint: path, step: ckpt.meta.step, ...r })}\n`);
}

/** `predict`: the class of each input. */
export function predict(path: string, flags: { input: string }): void {
  const ckpt = loadCheckpoint(path);
  const model = modelOf(ckpt);
  const names = ckpt.meta.classNames;
  const { x, names: inputs } = readInputs(flags.input, model.inputSize);
  // The features as the model saw them in training.
  if (ckpt.meta.scaling) {
    if (ckpt.meta.scaling.shift.length !== model.inputSize) throw Object.assign(new Error(`${path}: its feature scaling has ${ckpt.meta.scaling.shift.length} features, the model ${model.inputSize}`), { code: 'ERR_MODEL_MISMATCH' });
    applyScaling(x, ckpt.meta.scaling);
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
      if (cells.length !== features || cells.some((v) => !Number.isFinite(v))) throw new Error(`${file}:${i + 1}: expected ${features} numbers, got "${line.slice(0, 60)}"`);
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

/** `generate`: continues a prompt with a language model's checkpoint, character by character. */
export function generate(path: string, flags: { prompt: string; tokens: number; temperature: number; seed: number }): void {
  const ckpt = loadCheckpoint(path);
  const model = modelOf(ckpt);
  const symbols = ckpt.meta.classNames;
  if (model.positions < 2 || !symbols) throw errorWithCode('ERR_MODEL_MISMATCH', `${path} holds no language model (${describeModel(model.spec)}): generate needs a GPT trained on text`);
  const index = new Map(symbols.map((s, i) => [s, i]));
  const prompt = Array.from(flags.prompt, (c) => {
    const id = index.get(c);
    if (id === undefined) throw errorWithCode('ERR_ARGUMENT', `--prompt: the character ${JSON.stringify(c)} is not in the model's vocabulary of ${symbols.length} (${JSON.stringify(symbols.join(''))})`);
    return id;
  });
  const ids = generateTokens(model, prompt, { tokens: flags.tokens, temperature: flags.temperature, rng: new Rng(flags.seed) });
  process.stdout.write(`${flags.prompt}${ids.map((i) => symbols[i]).join('')}\n`);
}
