import { z } from 'zod';

/**
 * The status socket (`ws://coordinator/status`): JSON text messages, each an object with `v` (this
 * schema's version), `type`, `seq` (per connection, from 1; a gap means events were coalesced) and
 * `time` (ms since the epoch). The first message is a `snapshot`; a client that falls behind gets a
 * new snapshot (`resync: true`) instead of the events it missed. See docs/status.md.
 */
export const STATUS_VERSION = 1;

export const runStates = ['gathering', 'forming', 'running', 'regrouping', 'waiting', 'finished', 'failed', 'stopped'] as const;
export const rankStates = ['joined', 'ready', 'training', 'slow', 'done', 'lost', 'failed'] as const;

/**
 * The schemas, built on first use: no worker and no training step needs them (they check what
 * clients and the coordinator's files say), and building them took every process ~35 ms to start.
 */
function defineSchemas() {
  const num = z.number();
  /** Norms and losses of a diverging run are NaN or ±Inf; JSON carries those as null. */
  const reading = z.number().nullable();
  const count = z.number().int().min(0);
  const rankNo = z.number().int().min(0);

  /** Per-step milliseconds in each phase. */
  const phasesSchema = z.strictObject({ dataMs: num, computeMs: num, allreduceMs: num, optimizerMs: num });

  const rankInfoSchema = z.strictObject({
    rank: z.number().int().min(-1),
    workerId: z.string(),
    host: z.string(),
    pid: count,
    address: z.string(),
    state: z.enum(rankStates),
    step: count,
    /** Per-step phase times over the straggler window (null before the first report). */
    phases: phasesSchema.nullable(),
  });

  /** What the ring measured of itself at the start of a generation (see the ringProbe message). */
  const ringProbeSchema = z.strictObject({ generation: count, worldSize: count, latencyMs: num, busbwMBps: num, probeBytes: count, segmentBytes: count, transport: z.enum(['tcp', 'shared memory', 'hosts']), hosts: count.optional(), tuning: z.array(z.strictObject({ segmentBytes: count, ms: num })).max(8).optional(), bucketBytes: count.optional() });

  const configSummarySchema = z.strictObject({
    model: z.string(),
    /** Predictions per sample: a language model's context (its loss is per token), else 1. */
    positions: count,
    parameters: count,
    optimizer: z.string(),
    lr: num,
    batchSize: count,
    epochs: count,
    dataset: z.string(),
    configHash: z.string(),
    /** Samples per step over all workers, when the job states it (the same job on any number of workers). */
    globalBatch: count.optional(),
    /** Bit-identical weights whatever the number of workers (`--deterministic`). */
    deterministic: z.boolean().optional(),
  });

  /** One point of the training curves: averages over the ranks and over the steps since the previous point. */
  const metricsPointSchema = z.strictObject({
    step: count,
    epoch: count,
    totalSteps: count,
    /** Training samples over all ranks in the steps since the previous point. */
    samples: count,
    loss: reading,
    /** Training throughput over all ranks, from their step times (evaluation and checkpoint pauses excluded). */
    samplesPerSecond: num,
    lr: num,
    phases: phasesSchema,
    /** nccl-tests bus bandwidth of the gradient all-reduce, bytes/s. */
    allreduceBusbw: num,
    etaSeconds: num.nullable(),
    skippedSteps: count,
    /** Each rank's own compute (data + forward/backward) ms per step, by rank: stragglers over time. */
    rankComputeMs: z.array(num),
  });

  /** An evaluation on the test (validation) split; a language model's also in bits per character and perplexity. */
  const evaluationSchema = z.strictObject({ epoch: count, step: count, trainLoss: reading, testLoss: num, testAccuracy: num, samples: count, bitsPerChar: num.optional(), perplexity: num.optional() });
  const checkpointInfoSchema = z.strictObject({ step: count, path: z.string(), stallMs: num, writeMs: num });
  const warningSchema = z.strictObject({
    code: z.string(),
    message: z.string(),
    rank: rankNo.optional(),
    step: count.optional(),
    tensor: z.string().optional(),
  });
  const tensorHealthSchema = z.strictObject({ name: z.string(), role: z.enum(['weight', 'bias']), weightNorm: reading, gradNorm: reading, updateRatio: reading });
  const healthReportSchema = z.strictObject({ step: count, tensors: z.array(tensorHealthSchema) });
  const runErrorSchema = z.strictObject({ code: z.string(), message: z.string(), rank: rankNo.optional() });

  /** A membership change: why the new generation formed, and for a fault, what failed first. */
  const generationChangeSchema = z.strictObject({
    generation: count,
    cause: z.enum(['start', 'fault', 'join', 'leave']),
    worldSize: count,
    /** Worker ids in rank order. */
    ranks: z.array(z.string()),
    /** Membership changes caused by faults so far (the --max-restarts budget). */
    restarts: count,
    /** The step the new generation continues from. */
    step: count,
    /** From the fault (or join, or leave) to training again. */
    recoveryMs: num,
    fault: z
      .strictObject({
        code: z.string(),
        message: z.string(),
        rank: rankNo.optional(),
        workerId: z.string().optional(),
        host: z.string().optional(),
        pid: count.optional(),
        /** How the process ended ("exit code 1", "signal SIGKILL"), where the launcher owns it. */
        exit: z.string().optional(),
        /** Its last lines of stderr, where the launcher owns it. */
        stderr: z.array(z.string()).optional(),
      })
      .nullable(),
  });

  const base = { v: z.literal(STATUS_VERSION), seq: z.number().int().positive(), time: num };

  /**
   * A run's status history as the coordinator keeps it beside the checkpoints
   * (`status-<run id>.json`), for a coordinator restarted on the same run.
   */
  const runJournalSchema = z.strictObject({
    format: z.literal('ringtrain-run-journal-1'),
    runId: z.string().min(1).max(64),
    startedAt: num.nullable(),
    history: z.array(metricsPointSchema).max(10_000),
    evaluations: z.array(evaluationSchema).max(100_000),
    checkpoints: z.array(checkpointInfoSchema).max(1000),
    warnings: z.array(warningSchema).max(1000),
    generations: z.array(generationChangeSchema).max(1000),
    /** The final summary's figures, indexed by epoch; null for an epoch not evaluated yet (and for a NaN loss: JSON has no NaN). */
    epochs: z.array(z.strictObject({ trainLoss: reading, testLoss: reading, testAccuracy: reading, testSamples: count }).nullable()).max(100_000),
  });

  const statusEventSchema = z.discriminatedUnion('type', [
    z.strictObject({
      ...base,
      type: z.literal('snapshot'),
      /** True when sent again to a client that fell behind (events since its last message were dropped). */
      resync: z.boolean(),
      runId: z.string(),
      state: z.enum(runStates),
      generation: count,
      workers: count,
      worldSize: count,
      config: configSummarySchema,
      startedAt: num.nullable(),
      ranks: z.array(rankInfoSchema),
      metrics: metricsPointSchema.nullable(),
      /** The curves so far (thinned to at most a few thousand points on long runs). */
      history: z.array(metricsPointSchema),
      evaluations: z.array(evaluationSchema),
      checkpoints: z.array(checkpointInfoSchema),
      warnings: z.array(warningSchema),
      health: healthReportSchema.nullable(),
      error: runErrorSchema.nullable(),
      /** Every membership change so far (the first is the start). */
      generations: z.array(generationChangeSchema),
      /** The ring's own measurement at the start of this generation, once it has one. */
      ring: ringProbeSchema.nullable(),
      /** What the client may do: "read", or "admin" (stop, checkpoint). */
      access: z.enum(['read', 'admin']),
    }),
    z.strictObject({ ...base, type: z.literal('state'), state: z.enum(runStates), generation: count, error: runErrorSchema.nullable() }),
    z.strictObject({ ...base, type: z.literal('rank'), rank: rankInfoSchema, reason: z.string().optional() }),
    z.strictObject({ ...base, type: z.literal('generation'), change: generationChangeSchema }),
    z.strictObject({
      ...base,
      type: z.literal('metrics'),
      metrics: metricsPointSchema,
      ranks: z.array(rankInfoSchema),
      /** Ranks' own compute ms per step (data + forward/backward) over the straggler window: min, median, max. */
      computeSpread: z.strictObject({ min: num, median: num, max: num }).nullable(),
    }),
    z.strictObject({ ...base, type: z.literal('evaluation'), evaluation: evaluationSchema }),
    z.strictObject({ ...base, type: z.literal('checkpoint'), ok: z.boolean(), checkpoint: checkpointInfoSchema.optional(), step: count, error: z.string().optional() }),
    z.strictObject({ ...base, type: z.literal('health'), health: healthReportSchema }),
    z.strictObject({ ...base, type: z.literal('ring'), ring: ringProbeSchema }),
    z.strictObject({ ...base, type: z.literal('warning'), warning: warningSchema }),
    z.strictObject({
      ...base,
      type: z.literal('end'),
      state: z.enum(runStates),
      error: runErrorSchema.nullable(),
      steps: count,
      seconds: num,
      samplesPerSecond: num,
      testAccuracy: num.nullable(),
    }),
    z.strictObject({ ...base, type: z.literal('commandResult'), id: z.number().int(), ok: z.boolean(), code: z.string().optional(), message: z.string() }),
  ]);

  /** Client → coordinator: a control action (needs the admin token). */
  const statusCommandSchema = z.strictObject({ type: z.literal('command'), id: z.number().int().min(0), action: z.enum(['stop', 'checkpoint']) });
  return { phasesSchema, rankInfoSchema, ringProbeSchema, configSummarySchema, metricsPointSchema, evaluationSchema, checkpointInfoSchema, warningSchema, tensorHealthSchema, healthReportSchema, runErrorSchema, generationChangeSchema, runJournalSchema, statusEventSchema, statusCommandSchema };
}

type Schemas = ReturnType<typeof defineSchemas>;
let schemas: Schemas | undefined;

/** The status socket's schemas (made once, on first call). */
export function statusSchemas(): Schemas {
  return (schemas ??= defineSchemas());
}

export type StatusEvent = z.infer<Schemas['statusEventSchema']>;
export type StatusEventOf<T extends StatusEvent['type']> = Extract<StatusEvent, { type: T }>;
/** An event as the coordinator produces it, before a connection numbers and stamps it. */
export type StatusEventBody<T extends StatusEvent['type'] = StatusEvent['type']> = T extends StatusEvent['type'] ? Omit<StatusEventOf<T>, 'v' | 'seq' | 'time'> : never;
export type StatusCommand = z.infer<Schemas['statusCommandSchema']>;
export type RankInfo = z.infer<Schemas['rankInfoSchema']>;
export type RankState = (typeof rankStates)[number];
export type RunState = (typeof runStates)[number];
export type MetricsPoint = z.infer<Schemas['metricsPointSchema']>;
export type Phases = z.infer<Schemas['phasesSchema']>;
export type Evaluation = z.infer<Schemas['evaluationSchema']>;
export type CheckpointInfo = z.infer<Schemas['checkpointInfoSchema']>;
export type StatusWarning = z.infer<Schemas['warningSchema']>;
export type HealthReport = z.infer<Schemas['healthReportSchema']>;
export type ConfigSummary = z.infer<Schemas['configSummarySchema']>;
export type RunError = z.infer<Schemas['runErrorSchema']>;
export type RingProbe = z.infer<Schemas['ringProbeSchema']>;
export type RunJournalFile = z.infer<Schemas['runJournalSchema']>;
export type GenerationChange = z.infer<Schemas['generationChangeSchema']>;

/** The events as a JSON Schema (draft 2020-12), for clients in other languages; served at /api/status-schema. */
export function statusJsonSchema(): object {
  return { title: `ringtrain status events v${STATUS_VERSION}`, ...z.toJSONSchema(statusSchemas().statusEventSchema) };
}

/** Parses one status message (a client's check that the coordinator speaks this schema). */
export function parseStatusEvent(text: string): StatusEvent {
  const parsed = statusSchemas().statusEventSchema.safeParse(JSON.parse(text));
  if (!parsed.success) {
    throw new Error(`invalid status event: ${parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`);
  }
  return parsed.data;
}
