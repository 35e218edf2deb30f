import { type CheckpointMeta, loadCheckpoint, type NamedTensor, readSafetensors, readSafetensorsHeader, saveCheckpoint, WEIGHTS_FORMAT, writeSafetensors } from '@ringtrain/checkpoint';
import type { Communicator } from '@ringtrain/allreduce';
import type { MessageOf } from '@ringtrain/protocol';
import { type ModelSpec, vocabularyOf, withVocabulary } from '@ringtrain/core';
import { jobConfigHash, type Trainer } from '@ringtrain/trainer';
import { WorkerError } from './errors.js';

type Policy = NonNullable<MessageOf<'assign'>['checkpoint']>;

const SLOT_PREFIX = 'optimizer.';

/** Parameters by name and every optimizer slot as `optimizer.<slot>.<parameter>`: views, no copies. */
function namedViews(trainer: Trainer): NamedTensor[] {
  const params = trainer.model.params;
  const out: NamedTensor[] = params.tensors.map((t) => ({ name: t.name, shape: t.shape, data: params.value(t.name) }));
  for (const [slot, buffer] of Object.entries(trainer.optimizer.state.slots).sort()) {
    for (const t of params.tensors) out.push({ name: `${SLOT_PREFIX}${slot}.${t.name}`, shape: t.shape, data: params.viewOf(buffer, t.name) });
  }
  return out;
}

/**
 * Rank 0's periodic saves. Training waits only while the buffers are copied into a snapshot (kept
 * and reused, so later copies touch no new memory); the write runs in the background, one at a time.
 */
export class CheckpointWriter {
  private snapshot: NamedTensor[] | null = null;
  private writing: Promise<unknown> = Promise.resolve();

  /** `runId` is the run's; the lineage is the first run's of a chain of resumes (the policy says, or this run starts one). */
  constructor(
    private readonly trainer: Trainer,
    private readonly policy: Policy,
    private readonly runId: string,
  ) {}

  /** Copies the state and starts the write; `written` settles when the file is on disk. */
  async save(metrics: Record<string, number>): Promise<{ stallMs: number; written: Promise<{ path: string; writeMs: number }> }> {
    await this.writing;
    const t0 = performance.now();
    const views = namedViews(this.trainer);
    this.snapshot ??= views.map((t) => ({ ...t, data: new Float32Array(t.data.length) }));
    views.forEach((t, i) => this.snapshot![i].data.set(t.data));
    const state = this.trainer.state();
    const stallMs = performance.now() - t0;
    const config = this.trainer.config;
    const meta: CheckpointMeta = {
      step: state.globalStep,
      epoch: state.epoch,
      cursor: state.cursor,
      worldSize: this.trainer.worldSize,
      runId: this.runId,
      lineage: this.policy.lineage ?? this.runId,
      configHash: jobConfigHash(config),
      config,
      modelSpec: config.model,
      optimizer: { type: config.optimizer.type, step: state.optimizerStep, slots: Object.keys(this.trainer.optimizer.state.slots).sort() },
      rng: { dropout: state.dropoutRng },
      metrics,
      savedAt: new Date().toISOString(),
      ...(this.trainer.data.train.classNames ? { classNames: [...this.trainer.data.train.classNames] } : {}),
      ...(this.trainer.data.scaling ? { scaling: this.trainer.data.scaling } : {}),
    };
    const { keepLast, keepBest, metric } = this.policy;
    const written = saveCheckpoint(this.policy.dir, this.snapshot, meta, { keepLast, keepBest, metric }).then((path) => ({ path, writeMs: performance.now() - t0 }));
    this.writing = written.catch(() => {});
    return { stallMs, written };
  }

  /** Resolves when the last write has finished (or failed). */
  async flush(): Promise<void> {
    await this.writing;
  }
}

/** The trained weights alone (safetensors, `ringtrain-weights/1`), as `--save-final` writes them. */
export function writeFinalWeights(trainer: Trainer, path: string): void {
  const params = trainer.model.params;
  const { classNames } = trainer.data.train;
  writeSafetensors(
    path,
    params.tensors.map((t) => ({ name: t.name, shape: t.shape, data: params.value(t.name) })),
    {
      format: WEIGHTS_FORMAT,
      step: String(trainer.globalStep),
      worldSize: String(trainer.worldSize),
      configHash: jobConfigHash(trainer.config),
      config: JSON.stringify(trainer.config),
      ...(classNames ? { class_names: JSON.stringify(classNames) } : {}),
      ...(trainer.data.scaling ? { scaling: JSON.stringify(trainer.data.scaling) } : {}),
    },
  );
}

/** True when `job` is the trained language model `trained` with more tokens (its vocabulary extended). */
function grownVocabulary(trained: unknown, job: ModelSpec): boolean {
  const [from, to] = [vocabularyOf(trained as ModelSpec), vocabularyOf(job)];
  return from !== null && to !== null && from < to && JSON.stringify(withVocabulary(trained as ModelSpec, to)) === JSON.stringify(job);
}

/**
 * The weights of a checkpoint, or of an fp32 weights file (`--save-final`, `export` without
 * --quantize), with the model spec they are for: what --init-from starts a run from.
 */
function readTrainedWeights(path: string): { meta: { modelSpec: unknown }; tensors: { name: string; shape: number[]; data: Float32Array }[] } {
  const format = (readSafetensorsHeader(path).__metadata__ as Record<string, string> | undefined)?.format;
  if (format !== WEIGHTS_FORMAT) return loadCheckpoint(path);
  const file = readSafetensors(path, { requireChecksum: true });
  const m = file.metadata;
  let modelSpec: unknown;
  try {
    modelSpec = m.config !== undefined ? (JSON.parse(m.config) as { model?: unknown }).model : JSON.parse(m.model_spec ?? 'null');
  } catch {
    throw new WorkerError('ERR_MODEL_MISMATCH', `${path}: its metadata's model is not JSON`);
  }
  if (m.quantization !== undefined && m.quantization !== 'none') throw new WorkerError('ERR_MODEL_MISMATCH', `${path}: its weights are ${m.quantization}; start from a checkpoint or an fp32 weights file`);
  return { meta: { modelSpec }, tensors: file.tensors };
}

/**
 * Rank 0 reads a checkpoint into its replica (weights, and optimizer slots unless `weightsOnly`),
 * refusing one whose model differs. Every rank then receives rank 0's buffers by broadcast.
 */
export async function restoreTensors(comm: Communicator, trainer: Trainer, path: string, weightsOnly: boolean): Promise<void> {
  const params = trainer.model.params;
  const slots = Object.entries(trainer.optimizer.state.slots).sort(([a], [b]) => a.localeCompare(b));
  if (comm.rank === 0) {
    const ckpt = weightsOnly ? readTrainedWeights(path) : loadCheckpoint(path);
    const byName = new Map(ckpt.tensors.map((t) => [t.name, t]));
    const grown = weightsOnly && grownVocabulary(ckpt.meta.modelSpec, trainer.config.model);
    if (!grown && JSON.stringify(ckpt.meta.modelSpec) !== JSON.stringify(trainer.config.model)) {
      throw new WorkerError('ERR_MODEL_MISMATCH', `${path} holds a different model (${JSON.stringify(ckpt.meta.modelSpec)}) than the job's (${JSON.stringify(trainer.config.model)})`);
    }
    const wanted = namedViews(trainer).filter((t) => !weightsOnly || !t.name.startsWith(SLOT_PREFIX));
    for (const t of wanted) {
      const src = byName.get(t.name);
      if (!src) throw new WorkerError('ERR_MODEL_MISMATCH', `${path} has no tensor ${t.name}${t.name.startsWith(SLOT_PREFIX) ? ' (the optimizer differs; use --init-from to load weights only)' : ''}`);
      // A grown vocabulary: the trained rows of the embedding and the head come first; the new
      // tokens' rows keep their fresh initialisation.
      const rowsGrew = grown && src.shape.length === t.shape.length && src.shape[0] < t.shape[0] && src.shape.slice(1).join('x') === t.shape.slice(1).join('x');
      if (!rowsGrew && src.shape.join('x') !== t.shape.join('x')) throw new WorkerError('ERR_MODEL_MISMATCH', `${path}: ${t.name} has shape [${src.shape}], the model needs [${t.shape}]`);
      t.data.set(src.data);
    }
  }
  const layoutHash = params.layoutHash();
  await comm.broadcast(params.values, { root: 0, layoutHash });
  if (!weightsOnly) for (const [, buffer] of slots) await comm.broadcast(buffer, { root: 0, layoutHash });
}
