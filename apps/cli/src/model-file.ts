import { closeSync, openSync, readFileSync, readSync } from 'node:fs';
import { type Checkpoint, loadCheckpoint, readCheckpointMeta, readSafetensorsHeader, WEIGHTS_FORMAT } from '@ringtrain/checkpoint';
import { createBackend, Model, type ModelSpec, parameterCount, parseModelSpec } from '@ringtrain/core';
import { errorWithCode } from './cli-error.js';
import { loadWeightsInto } from './weights-file.js';

export type Precision = 'fp32' | 'fp16' | 'int8' | 'int4';

/**
 * A trained model from any file ringtrain writes: a checkpoint, or the weights alone
 * (`--save-final`, `export`) at any precision, in safetensors or JSON. Everything needed to use it
 * comes with it: the job (its dataset, for evaluation), class names or a text's characters, and
 * the features' scaling.
 */
export interface ModelFile {
  path: string;
  model: Model;
  precision: Precision;
  step: number;
  /** The job config the model was trained with (null in an export made before exports carried it). */
  config: unknown;
  classNames?: string[];
  scaling?: { shift: number[]; scale: number[] };
  /** The checkpoint itself, when the file is one (it also holds the optimizer's state). */
  checkpoint?: Checkpoint;
}

const mismatch = (path: string, why: string): never => {
  throw errorWithCode('ERR_MODEL_MISMATCH', `${path}: ${why}`);
};

/**
 * What a checkpoint or a safetensors weights file says of its model, from its header alone (no
 * tensor is read): the job it was trained with, its classes or characters, its precision.
 */
export function readModelFileMeta(path: string): { config: unknown; classNames?: string[]; precision: Precision } {
  const meta = (readSafetensorsHeader(path).__metadata__ ?? {}) as Record<string, string>;
  if (meta.format === WEIGHTS_FORMAT) return weightsMeta(path, meta);
  const m = readCheckpointMeta(path);
  return { config: m.config, precision: 'fp32', ...(m.classNames ? { classNames: m.classNames } : {}) };
}

/** A weights file's metadata, checked: its job (null where an older export has none), model spec, precision, classes, scaling. */
function weightsMeta(path: string, meta: Record<string, string>): { config: unknown; spec: unknown; precision: Precision; step: number; classNames?: string[]; scaling?: ModelFile['scaling'] } {
  const parse = (key: string): unknown => {
    if (meta[key] === undefined) return undefined;
    try {
      return JSON.parse(meta[key]);
    } catch {
      return mismatch(path, `its ${key} is not JSON`);
    }
  };
  const config = (parse('config') ?? null) as { model?: unknown } | null;
  const spec = config?.model ?? parse('model_spec');
  if (spec === undefined) mismatch(path, 'a weights file without its model (no config or model_spec in its metadata)');
  const precision = (meta.quantization === undefined || meta.quantization === 'none' ? 'fp32' : meta.quantization) as Precision;
  if (!['fp32', 'fp16', 'int8', 'int4'].includes(precision)) mismatch(path, `unknown quantization ${JSON.stringify(meta.quantization)}`);
  const classNames = parse('class_names') as string[] | undefined;
  if (classNames !== undefined && !(Array.isArray(classNames) && classNames.every((c) => typeof c === 'string'))) mismatch(path, 'its class_names are not a list of names');
  const scaling = parse('scaling') as ModelFile['scaling'];
  return { config, spec, precision, step: Number(meta.step ?? 0), ...(classNames ? { classNames } : {}), ...(scaling ? { scaling } : {}) };
}

/** Loads a checkpoint or a weights file; refuses anything else, naming what it found. */
export function loadModelFile(path: string): ModelFile {
  if (startsWithBrace(path)) {
    const { meta, held } = jsonWeightsMeta(path);
    return fromWeights(path, meta, held, 'json');
  }
  const header = readSafetensorsHeader(path) as Record<string, unknown>;
  const meta = (header.__metadata__ ?? {}) as Record<string, string>;
  if (meta.format === WEIGHTS_FORMAT) return fromWeights(path, meta, heldBySafetensors(header), 'safetensors');
  const checkpoint = loadCheckpoint(path);
  const model = checkedModel(path, checkpoint.meta.modelSpec, checkpoint.tensors.filter((t) => !t.name.startsWith('optimizer.')).reduce((n, t) => n + t.data.length, 0), 'its tensors hold');
  for (const t of model.params.tensors) {
    const src = checkpoint.tensors.find((x) => x.name === t.name) ?? mismatch(path, `no tensor ${t.name}`);
    if (src.shape.join('x') !== t.shape.join('x')) mismatch(path, `tensor ${t.name} has shape [${src.shape.join(', ')}], the model spec needs [${t.shape.join(', ')}]`);
    model.params.value(t.name).set(src.data);
  }
  const m = checkpoint.meta;
  return { path, model, precision: 'fp32', step: m.step, config: m.config, checkpoint, ...(m.classNames ? { classNames: m.classNames } : {}), ...(m.scaling ? { scaling: m.scaling } : {}) };
}

/** The model a spec describes, allocated only once the spec is valid and its parameters are those the file can hold. */
function checkedModel(path: string, specJson: unknown, held: number, what: string, exact = true): Model {
  let spec: ModelSpec;
  try {
    spec = parseModelSpec(specJson);
  } catch (err) {
    return mismatch(path, (err as Error).message);
  }
  const needed = parameterCount(spec);
  if (exact ? held !== needed : held < needed) mismatch(path, `its model spec has ${needed} parameters, ${what} ${held}`);
  return new Model(spec, createBackend('auto').backend, { seed: 0 });
}

/** `held`: values the file's tensors can stand for, an upper bound on the parameters its spec may claim. */
function fromWeights(path: string, meta: Record<string, string>, held: number, format: 'safetensors' | 'json'): ModelFile {
  const { config, spec, step, ...rest } = weightsMeta(path, meta);
  // Before allocating: the spec may not claim more parameters than the file's tensors hold
  // (each tensor's shape is checked exactly as it is decoded).
  const model = checkedModel(path, spec, held, 'the file holds at most', false);
  loadWeightsInto(model, path, format);
  return { path, model, step, config, ...rest };
}

/** Values a safetensors file's tensors can stand for (an int4 byte holds two). */
function heldBySafetensors(header: Record<string, unknown>): number {
  let n = 0;
  for (const [name, tensor] of Object.entries(header)) {
    const t = tensor as { dtype?: string; shape?: number[] };
    if (name === '__metadata__' || name.endsWith('.scale') || !Array.isArray(t.shape)) continue;
    n += t.shape.reduce((a, b) => a * b, 1) * (t.dtype === 'U8' ? 2 : 1);
  }
  return n;
}

/** An export in JSON (`--format json`): its metadata (without its tensors), and how many values they hold. */
function jsonWeightsMeta(path: string): { meta: Record<string, string>; held: number } {
  let doc: Record<string, unknown>;
  try {
    doc = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    return mismatch(path, `not a ringtrain weights file: ${(err as Error).message}`);
  }
  if (doc.format !== WEIGHTS_FORMAT) mismatch(path, `not a ringtrain weights file (format ${JSON.stringify(doc.format ?? null)}, expected ${WEIGHTS_FORMAT})`);
  const meta: Record<string, string> = {};
  for (const [k, v] of Object.entries(doc)) if (k !== 'tensors') meta[k] = typeof v === 'string' ? v : JSON.stringify(v);
  const tensors = Object.values((doc.tensors ?? {}) as Record<string, { values?: unknown }>);
  return { meta, held: tensors.reduce((n, t) => n + (Array.isArray(t.values) ? t.values.length : 0), 0) };
}

/** True for a JSON file; false for anything else, a folder or a missing file included (the safetensors reader names those). */
function startsWithBrace(path: string): boolean {
  let fd: number | undefined;
  try {
    fd = openSync(path, 'r');
    const b = Buffer.alloc(1);
    return readSync(fd, b, 0, 1, 0) === 1 && b[0] === 0x7b;
  } catch {
    return false;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}
