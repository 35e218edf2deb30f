import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { CheckpointError } from './errors.js';
import { type NamedTensor, readSafetensors, readSafetensorsHeader, writeSafetensors, writeSafetensorsAsync } from './safetensors.js';

export const CHECKPOINT_FORMAT = 'ringtrain-checkpoint/2';
/** The trained weights alone (`--save-final`, `export`), at any precision. */
export const WEIGHTS_FORMAT = 'ringtrain-weights/1';
/** Version 1 had no header checksum; its files are still read, with the data checksum alone. */
const FORMATS = [CHECKPOINT_FORMAT, 'ringtrain-checkpoint/1'];

/** Everything about a training state that is not a tensor. */
export interface CheckpointMeta {
  step: number;
  epoch: number;
  /** Samples of the current epoch's order already consumed. */
  cursor: number;
  worldSize: number;
  /** The run that wrote it, and the run it descends from (the first run of a chain of resumes): retention touches only its own lineage. */
  runId: string;
  lineage: string;
  configHash: string;
  /** The job config (JSON) and the model spec within it. */
  config: unknown;
  modelSpec: unknown;
  optimizer: { type: string; step: number; slots: string[] };
  rng: { dropout: number[] };
  metrics: Record<string, number>;
  savedAt: string;
  /** The name of each class, when the data named them (`predict` prints these). */
  classNames?: string[];
  /** How the features were rescaled before training: new inputs get the same (`predict`). */
  scaling?: { shift: number[]; scale: number[] };
}

export interface Checkpoint {
  path: string;
  meta: CheckpointMeta;
  /** Parameters by name, and optimizer slots as `optimizer.<slot>.<parameter>`. */
  tensors: NamedTensor[];
}

export interface RetentionPolicy {
  /** Keep the newest K checkpoints (default 3). */
  keepLast?: number;
  /** Also keep the best M by `metric` (default 0). */
  keepBest?: number;
  /** `test_accuracy` (higher is better) or `test_loss` (lower is better). */
  metric?: 'test_accuracy' | 'test_loss';
}

const NAME = /^ckpt-step-(\d{10})\.safetensors$/;
export const checkpointName = (step: number): string => `ckpt-step-${String(step).padStart(10, '0')}.safetensors`;

function toMetadata(meta: CheckpointMeta): Record<string, string> {
  return {
    format: CHECKPOINT_FORMAT,
    step: String(meta.step),
    epoch: String(meta.epoch),
    cursor: String(meta.cursor),
    world_size: String(meta.worldSize),
    run_id: meta.runId,
    lineage: meta.lineage,
    config_hash: meta.configHash,
    config: JSON.stringify(meta.config),
    model_spec: JSON.stringify(meta.modelSpec),
    optimizer: JSON.stringify(meta.optimizer),
    rng: JSON.stringify(meta.rng),
    metrics: JSON.stringify(meta.metrics),
    saved_at: meta.savedAt,
    ...(meta.classNames ? { class_names: JSON.stringify(meta.classNames) } : {}),
    ...(meta.scaling ? { scaling: JSON.stringify(meta.scaling) } : {}),
  };
}

/** Reads and verifies a checkpoint (structure, checksum, then its metadata). */
export function loadCheckpoint(path: string): Checkpoint {
  const format = (readSafetensorsHeader(path).__metadata__ as Record<string, string> | undefined)?.format;
  if (!FORMATS.includes(String(format))) throw new CheckpointError('ERR_CHECKPOINT_FORMAT', `${path}: not a ringtrain checkpoint (format ${JSON.stringify(format ?? null)}, expected ${CHECKPOINT_FORMAT})`);
  const file = readSafetensors(path, { requireChecksum: true, requireHeaderChecksum: format === CHECKPOINT_FORMAT });
  const m = file.metadata;
  if (m.format !== format) throw new CheckpointError('ERR_CHECKPOINT_FORMAT', `${path}: not a ringtrain checkpoint (format ${JSON.stringify(m.format ?? null)}, expected ${CHECKPOINT_FORMAT})`);
  return { path, meta: parseMeta(path, m), tensors: file.tensors };
}

/**
 * A checkpoint's metadata from its header alone: neither its data nor its checksums are read (a
 * coordinator noting each save must not spend seconds hashing a large file; whoever loads the
 * tensors verifies them then).
 */
export function readCheckpointMeta(path: string): CheckpointMeta {
  const m = readSafetensorsHeader(path).__metadata__ as Record<string, string> | undefined;
  if (!m || !FORMATS.includes(String(m.format))) throw new CheckpointError('ERR_CHECKPOINT_FORMAT', `${path}: not a ringtrain checkpoint (format ${JSON.stringify(m?.format ?? null)}, expected ${CHECKPOINT_FORMAT})`);
  return parseMeta(path, m);
}

function parseMeta(path: string, m: Record<string, string>): CheckpointMeta {
  try {
    return {
      step: int(m.step, 'step'),
      epoch: int(m.epoch, 'epoch'),
      cursor: int(m.cursor, 'cursor'),
      worldSize: int(m.world_size, 'world_size'),
      // Checkpoints written before lineages existed belong to none, so retention never deletes them.
      runId: m.run_id ?? '',
      lineage: m.lineage ?? '',
      configHash: m.config_hash,
      config: json(m.config, 'config', isObject),
      modelSpec: json(m.model_spec, 'model_spec', isObject),
      optimizer: json(m.optimizer, 'optimizer', (o) => isObject(o) && typeof o.type === 'string' && Number.isSafeInteger(o.step) && Array.isArray(o.slots) && o.slots.every((x) => typeof x === 'string')),
      rng: json(m.rng, 'rng', (r) => isObject(r) && Array.isArray(r.dropout) && r.dropout.length === 4 && r.dropout.every((x) => Number.isInteger(x) && x >= 0 && x <= 0xffffffff)),
      metrics: json(m.metrics, 'metrics', (x) => isObject(x) && Object.values(x).every((v) => typeof v === 'number')),
      savedAt: String(m.saved_at ?? ''),
      ...(m.scaling !== undefined ? { scaling: json<{ shift: number[]; scale: number[] }>(m.scaling, 'scaling', (x) => isObject(x) && Array.isArray(x.shift) && Array.isArray(x.scale) && x.shift.length === x.scale.length && [...x.shift, ...x.scale].every((v) => typeof v === 'number' && Number.isFinite(v)) && (x.scale as number[]).every((v) => v !== 0)) } : {}),
      ...(m.class_names !== undefined ? { classNames: json<string[]>(m.class_names, 'class_names', (x) => Array.isArray(x) && (x as unknown[]).every((n) => typeof n === 'string')) } : {}),
    };
  } catch (err) {
    throw new CheckpointError('ERR_CHECKPOINT_FORMAT', `${path}: bad checkpoint metadata: ${(err as Error).message}`, { cause: err });
  }
}

const isObject = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);

/** A metadata value that must be JSON of a certain shape (the caller reads it without further checks). */
function json<T>(v: string | undefined, name: string, ok: (x: Record<string, unknown>) => boolean): T {
  let x: unknown;
  try {
    x = JSON.parse(v ?? '');
  } catch {
    throw new Error(`${name} is not JSON`);
  }
  if (!ok(x as Record<string, unknown>)) throw new Error(`${name} = ${String(v).slice(0, 80)} is not what a checkpoint records`);
  return x as T;
}

function int(v: string | undefined, name: string): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`${name} = ${JSON.stringify(v)} is not a count`);
  return n;
}

/** Checkpoints in `dir`, newest first (by the step in their names); a missing `dir` holds none when `missingIsEmpty`. */
export function listCheckpoints(dir: string, missingIsEmpty = false): { path: string; step: number }[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (err) {
    if (missingIsEmpty && (err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new CheckpointError('ERR_CHECKPOINT_IO', `cannot list ${dir}: ${(err as Error).message}`, { cause: err });
  }
  return names
    .map((n) => [n, NAME.exec(n)] as const)
    .filter((x): x is readonly [string, RegExpExecArray] => x[1] !== null)
    .map(([n, m]) => ({ path: join(dir, n), step: Number(m[1]) }))
    .sort((a, b) => b.step - a.step);
}

/**
 * The newest checkpoint in `dir` that loads, verifies and that `accept` takes (by default, any);
 * the newer ones that do not are returned in `skipped` with the reason, so the caller can say so.
 * `accept` returns null to take a checkpoint, or why it is not one of the caller's.
 */
export function findLatestCheckpoint(dir: string, accept: (meta: CheckpointMeta) => string | null = () => null): { checkpoint: Checkpoint; skipped: { path: string; reason: string }[] } {
  const skipped: { path: string; reason: string }[] = [];
  for (const { path } of listCheckpoints(dir)) {
    let checkpoint: Checkpoint;
    try {
      checkpoint = loadCheckpoint(path);
    } catch (err) {
      skipped.push({ path, reason: (err as Error).message });
      continue;
    }
    const refused = accept(checkpoint.meta);
    if (refused === null) return { checkpoint, skipped };
    skipped.push({ path, reason: `${path}: ${refused}` });
  }
  throw new CheckpointError('ERR_CHECKPOINT_NOT_FOUND', `no usable checkpoint in ${dir}${skipped.length ? ` (${skipped.length} passed over: ${skipped.map((s) => s.reason).join('; ')})` : ' (it holds none)'}`);
}

/**
 * Writes `ckpt-step-<step>.safetensors` in `dir` (created if missing; atomically), then applies
 * retention to the checkpoints of the same lineage, never to the file just written.
 */
export async function saveCheckpoint(dir: string, tensors: NamedTensor[], meta: CheckpointMeta, policy: RetentionPolicy = {}, background = true): Promise<string> {
  const path = join(dir, checkpointName(meta.step));
  try {
    mkdirSync(dir, { recursive: true });
  } catch (err) {
    throw new CheckpointError('ERR_CHECKPOINT_IO', `cannot write ${path}: cannot create the folder ${dir} (${(err as NodeJS.ErrnoException).code})`, { cause: err });
  }
  if (background) await writeSafetensorsAsync(path, tensors, toMetadata(meta));
  else writeSafetensors(path, tensors, toMetadata(meta));
  applyRetention(dir, policy, meta.lineage, path);
  return path;
}

/**
 * Among the checkpoints of `lineage` in `dir`, deletes all but the newest `keepLast`, the best
 * `keepBest` by the metric, and `justWritten`. Files of other runs, and files whose header cannot be
 * read, are never touched: a shared folder keeps every other job's checkpoints.
 */
export function applyRetention(dir: string, policy: RetentionPolicy, lineage: string, justWritten?: string): void {
  if (!lineage) return;
  const own = listCheckpoints(dir)
    .map((c) => ({ ...c, header: headerMetadata(c.path) }))
    .filter((c) => c.header?.lineage === lineage);
  const keep = new Set(own.slice(0, policy.keepLast ?? 3).map((c) => c.path));
  if (justWritten) keep.add(justWritten);
  if (policy.keepBest) {
    const metric = policy.metric ?? 'test_accuracy';
    const scored = own
      .map((c) => ({ ...c, score: metricOf(c.header!, metric) }))
      .filter((c) => c.score !== undefined)
      .sort((a, b) => (metric === 'test_loss' ? a.score! - b.score! : b.score! - a.score!));
    for (const c of scored.slice(0, policy.keepBest)) keep.add(c.path);
  }
  for (const c of own) if (!keep.has(c.path)) rmSync(c.path, { force: true });
}

/** A checkpoint's `__metadata__` from its header only (no need to read or verify its data), or null. */
function headerMetadata(path: string): Record<string, string> | null {
  try {
    const m = readSafetensorsHeader(path).__metadata__;
    return typeof m === 'object' && m !== null ? (m as Record<string, string>) : null;
  } catch {
    return null;
  }
}

function metricOf(header: Record<string, string>, metric: string): number | undefined {
  try {
    const v = JSON.parse(header.metrics)[metric];
    return typeof v === 'number' ? v : undefined;
  } catch {
    return undefined;
  }
}
