import { createHash } from 'node:crypto';
import { CoreError, describeIssues, expandShortForms, type ModelSpec, modelSpecSchema, optimizerConfigSchema, parseModelSpec, scheduleConfigSchema, schemaVocabulary, type SchemaVocabulary } from '@ringtrain/core';
import { datasetConfigSchema } from '@ringtrain/data';
import { z } from 'zod';

/**
 * The default job: the MLP 784-128-10 on the embedded MNIST, as in the README. lr 0.1 and 15 epochs
 * reach ≥ 95% test accuracy at 1, 2 and 4 workers (the global batch grows with the workers).
 */
export const DEFAULT_JOB = {
  model: {
    inputSize: 784,
    layers: [{ type: 'dense', units: 128 }, { type: 'relu' }, { type: 'dense', units: 10 }],
    loss: 'softmax_cross_entropy',
  },
  dataset: { source: 'mnist-small' },
  optimizer: { type: 'sgd', lr: 0.1, momentum: 0.9 },
  schedule: { type: 'constant' },
  batchSize: 64,
  epochs: 15,
  seed: 1,
} as const;

const compressionType = z.enum(['none', 'fp16', 'bf16', 'int8']);

/**
 * How replicas stay in step: an all-reduce of the gradients every step (the default), or DiLoCo:
 * H local steps on each replica, then an all-reduce of the change in weights (the pseudo-gradient)
 * and an outer optimizer step (Nesterov momentum, as in DiLoCo), for slow links.
 */
export const syncConfigSchema = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('allreduce') }),
  z.strictObject({
    type: z.literal('diloco'),
    innerSteps: z.number().int().positive().max(100_000),
    outerOptimizer: z.strictObject({ type: z.literal('nesterov'), lr: z.number().positive(), momentum: z.number().min(0).lt(1) }).default({ type: 'nesterov', lr: 0.7, momentum: 0.9 }),
  }),
]);
export type SyncConfig = z.infer<typeof syncConfigSchema>;

export const jobConfigSchema = z.strictObject({
  /** A model spec, or a short form of one (`{ "type": "gpt", … }`) that expands into it. */
  model: z.preprocess((m) => expandShortForms(m), modelSpecSchema),
  dataset: datasetConfigSchema,
  optimizer: optimizerConfigSchema,
  schedule: scheduleConfigSchema.default({ type: 'constant' }),
  /** Samples per step (per worker, in a cluster; with `globalBatchSize`, samples per micro-batch when deterministic). */
  batchSize: z.number().int().positive().max(65536),
  /** Samples per step over all workers, split over however many there are (default: batchSize × workers): the same job on any number of workers. */
  globalBatchSize: z.number().int().positive().max(1 << 24).optional(),
  /**
   * Bit-identical weights whatever the number of workers, through faults and resizes: each global
   * batch is cut into micro-batches of `batchSize`, which workers compute one at a time, and their
   * gradients are summed in fixed point (integer sums, exact in any order). Needs `globalBatchSize`.
   */
  deterministic: z.boolean().optional(),
  epochs: z.number().int().positive(),
  /** Stop after this many steps, if it comes before the last epoch's end (a language model's run is counted in steps). */
  steps: z.number().int().positive().optional(),
  seed: z.number().int().min(0).max(2 ** 32 - 1),
  /** Rescale gradients to this global L2 norm when larger. */
  clipGradNorm: z.number().positive().optional(),
  evalBatchSize: z.number().int().positive().default(1000),
  /** Evaluate on the test (validation) split every this many steps too, not only at each epoch's end and the run's (nanoGPT's eval_interval). */
  evalEvery: z.number().int().positive().optional(),
  /** A NaN or ±Inf loss or gradient: stop the run naming the rank and step, or skip that step on every rank. */
  nonFinite: z.enum(['stop', 'skip']).default('stop'),
  backend: z.enum(['auto', 'native', 'wasm', 'reference']).default('auto'),
  /**
   * How gradients travel in the ring: float32 ("none"), or fp16/bf16 (half the bytes) or int8 (a
   * quarter, with a scale per segment). Error feedback carries what each encoding loses into the
   * next step's; on by default for int8.
   */
  gradientCompression: z.union([compressionType, z.strictObject({ type: compressionType, errorFeedback: z.boolean().optional() })]).optional(),
  sync: syncConfigSchema.optional(),
  /**
   * Overlap: over the TCP ring, gradients are all-reduced in ranges of at least this many bytes as
   * the backward pass finishes them, while it computes the layers below (default: picked from the
   * ring's own measurement at the start of each generation; 0: one all-reduce after the whole
   * backward pass).
   */
  bucketBytes: z.number().int().min(0).max(2 ** 30).optional(),
});

/** The wire format of a job's gradients and whether error feedback is on (by default for int8). */
export function gradientCompressionOf(config: Pick<JobConfig, 'gradientCompression'>): { wire: 'float32' | 'fp16' | 'bf16' | 'int8'; errorFeedback: boolean } {
  const c = config.gradientCompression ?? 'none';
  const { type, errorFeedback } = typeof c === 'string' ? { type: c, errorFeedback: undefined } : c;
  return { wire: type === 'none' ? 'float32' : type, errorFeedback: type !== 'none' && (errorFeedback ?? type === 'int8') };
}

/** Everything that determines a training run; JSON, so it can be shipped, hashed and recorded. */
export type JobConfig = Omit<z.infer<typeof jobConfigSchema>, 'model'> & { model: ModelSpec };

/** The job config's field names and kinds, for "did you mean" (made at the first invalid config). */
let jobVocabulary: SchemaVocabulary | undefined;

/** Validates a job config (after defaults and overrides are merged), or throws naming every bad field. */
export function parseJobConfig(input: unknown): JobConfig {
  const parsed = jobConfigSchema.safeParse(input, { reportInput: true });
  if (!parsed.success) throw new CoreError('ERR_SPEC', `invalid job config: ${describeIssues(parsed.error, (jobVocabulary ??= schemaVocabulary(jobConfigSchema)))}`);
  if (parsed.data.deterministic) checkDeterministic(parsed.data);
  // The checks a schema cannot express (a layer that learns, shapes that fit), and inputSize from inputShape.
  return { ...parsed.data, model: parseModelSpec(parsed.data.model) };
}

/** Most micro-batches a deterministic step may have: each worker's integer sums stay exact in float32 on the wire. */
export const MAX_MICRO_BATCHES = 256;

/** What deterministic mode needs: a global batch of whole micro-batches, float32 gradients, all-reduce each step. */
function checkDeterministic(c: z.infer<typeof jobConfigSchema>): void {
  const fail = (why: string): never => {
    throw new CoreError('ERR_SPEC', `invalid job config: deterministic ${why}`);
  };
  if (c.globalBatchSize === undefined) fail('needs globalBatchSize (--global-batch): the same global batch on any number of workers');
  const micro = c.globalBatchSize! / c.batchSize;
  if (!Number.isInteger(micro)) fail(`cuts the global batch of ${c.globalBatchSize} into micro-batches of batchSize ${c.batchSize}, which must divide it`);
  if (micro > MAX_MICRO_BATCHES) fail(`takes at most ${MAX_MICRO_BATCHES} micro-batches a step (globalBatchSize ${c.globalBatchSize} / batchSize ${c.batchSize} = ${micro}); give a larger --batch-size`);
  if (gradientCompressionOf(c).wire !== 'float32') fail(`sums gradients exactly in fixed point, which a ${gradientCompressionOf(c).wire} wire would round: leave gradientCompression out`);
  if (c.sync?.type === 'diloco') fail('all-reduces every step; DiLoCo replicas differ inside a round: leave sync out');
}

/**
 * Deep merge of plain objects; arrays and scalars in `over` replace those in `base`, and so does an
 * object of another kind (a different `type` or `source`: an adamw optimizer replaces the default
 * sgd one whole instead of inheriting its momentum).
 */
export function mergeConfig(base: unknown, over: unknown): unknown {
  if (!isPlainObject(base) || !isPlainObject(over)) return over === undefined ? base : over;
  for (const key of ['type', 'source']) if (over[key] !== undefined && over[key] !== base[key]) return over;
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) out[k] = mergeConfig(base[k], v);
  return out;
}

function isPlainObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

/**
 * Where two configs differ, field by field ("optimizer.lr: 0.5 here, 0.1 there"): what a person
 * needs when two processes disagree about a job, instead of two hashes. Long values are cut.
 */
export function configDifferences(here: unknown, there: unknown, path = ''): string[] {
  if (isPlainObject(here) && isPlainObject(there)) {
    const keys = [...new Set([...Object.keys(here), ...Object.keys(there)])].sort();
    return keys.flatMap((k) => configDifferences(here[k], there[k], path ? `${path}.${k}` : k));
  }
  if (canonicalJson(here ?? null) === canonicalJson(there ?? null)) return [];
  const show = (v: unknown): string => {
    const s = v === undefined ? '(none)' : JSON.stringify(v);
    return s.length > 40 ? `${s.slice(0, 37)}…` : s;
  };
  return [`${path || '(the whole config)'}: ${show(here)} here, ${show(there)} there`];
}

/** SHA-256 of the canonical JSON (sorted keys): equal configs hash equal wherever they were written. */
export function jobConfigHash(config: JobConfig): string {
  return createHash('sha256').update(canonicalJson(config)).digest('hex').slice(0, 16);
}

/**
 * What makes two configs the same job for `--resume latest`: everything but what a resume may
 * change (`epochs`, to extend the run, and `backend`, which computes the same maths).
 */
export function jobIdentityHash(config: unknown): string {
  const { epochs: _e, backend: _b, ...rest } = (isPlainObject(config) ? config : {}) as Record<string, unknown>;
  return createHash('sha256').update(canonicalJson(rest)).digest('hex').slice(0, 16);
}

function canonicalJson(x: unknown): string {
  if (Array.isArray(x)) return `[${x.map(canonicalJson).join(',')}]`;
  if (isPlainObject(x)) {
    return `{${Object.keys(x)
      .filter((k) => x[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonicalJson(x[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(x);
}
