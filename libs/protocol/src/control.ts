import { Packr } from 'msgpackr';
import { z } from 'zod';
import { ProtocolError } from './errors.js';
import { DEFAULT_LIMITS, type Limits, PROTOCOL_VERSION } from './limits.js';

/**
 * A control message: "RTC0", a version byte, 3 reserved bytes, then a msgpack object with `type`
 * and `v`, validated against its schema on receipt.
 */
export const CONTROL_MAGIC = 0x30435452; // "RTC0" little-endian
const CONTROL_HEADER_BYTES = 8;

const rank = z.number().int().min(0).max(65535);

// ---- Coordinator ⇄ worker (the control connection; see docs/protocol.md) ----

const v = z.literal(PROTOCOL_VERSION);
const generation = z.number().int().min(0);
const hash = z.string().regex(/^[0-9a-f]{16,64}$/);
/**
 * A run's id has one format, the coordinator's `randomUUID()`, checked at decode: a run id becomes
 * part of file names (`status-<run id>.json`, checkpoint lineage), so no other peer string may pass.
 */
export const RUN_ID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const runId = z.string().regex(RUN_ID_PATTERN, 'a run id (a UUID)');
const finite = z.number().finite();
const count = z.number().int().min(0);

/** Any number, NaN and ±Inf included: a report about diverging values must be able to carry them. */
const anyNumber = z.custom<number>((x) => typeof x === 'number', 'expected a number');

/**
 * Each message type's schema, built the first time a message of that type is checked: a worker
 * receives 7 of the 21 types, and building them all cost every process ~30 ms of CPU at start.
 */
const MESSAGE_SCHEMAS = {
  /** A collective failed on `origin`: every rank that hears it fails the same operations and passes it on. */
  abort: () =>
    z.strictObject({
      type: z.literal('abort'),
      v: z.literal(PROTOCOL_VERSION),
      origin: rank,
      code: z.string().min(1).max(64),
      message: z.string().max(4096),
      /** The peer the origin lost or disagreed with, if any. */
      peer: rank.optional(),
      seq: z.number().int().min(0).optional(),
    }),
  /** Worker → coordinator, first message: who it is and where its ring endpoint listens. */
  hello: () =>
    z.strictObject({
      type: z.literal('hello'),
      v,
      workerId: z.string().min(1).max(128),
      ringAddress: z.string().max(512).regex(/^wss?:\/\/[^\s/?#]+(\/\S*)?$/, 'a ws:// or wss:// address'),
      /** Hash of the job config the worker was started with; null takes the coordinator's. */
      configHash: hash.nullable(),
      host: z.string().max(256),
      /**
       * Names the machine (and network namespace) the worker runs on, hashed: the coordinator places a
       * host's workers next to each other in the ring, so that they can sum in shared memory.
       */
      hostId: z.string().regex(/^[0-9a-f]{16}$/).optional(),
      pid: z.number().int().min(0),
      /** The training state this worker holds from an earlier generation (a restarted coordinator re-adopts it). */
      held: z.strictObject({ runId, generation: z.number().int().min(0), step: z.number().int().min(0), weightsHash: z.string().regex(/^[0-9a-f]{16,64}$/) }).optional(),
    }),
  /** Coordinator → worker: refused (version, config, token, too many workers), with the reason. */
  /** `config`: the coordinator's job, with ERR_CONFIG_MISMATCH, so that the worker can name the fields that differ. */
  reject: () => z.strictObject({ type: z.literal('reject'), v, code: z.string().max(64), reason: z.string().max(4096), config: z.unknown().optional() }),
  /**
   * Coordinator → worker, after its hello: the job, so that it loads its data and builds its replica
   * before it is given a place (a ring never waits for a newcomer to load).
   */
  job: () => z.strictObject({ type: z.literal('job'), v, config: z.unknown(), configHash: hash, globalBatch: z.number().int().positive() }),
  /** Worker → coordinator: its replica is built; it can take a place in the next generation. */
  prepared: () => z.strictObject({ type: z.literal('prepared'), v }),
  /** Coordinator → worker: its place in a generation of the ring, and the job. A newer one replaces it at once. */
  assign: () =>
    z.strictObject({
      type: z.literal('assign'),
      v,
      generation,
      rank,
      worldSize: z.number().int().min(1).max(65535),
      prevAddress: z.string().max(512),
      ringId: z.string().max(256),
      config: z.unknown(),
      configHash: hash,
      /** The run this generation belongs to (stays the same across generations and coordinator restarts). */
      runId,
      /** Samples per step over all ranks: fixed for the run, split over this generation's ranks. */
      globalBatch: z.number().int().positive(),
      /** Report progress every this many steps; check replica hashes every this many (0: at epoch ends). */
      progressEvery: z.number().int().positive(),
      verifyEvery: z.number().int().min(0),
      /** Stop after this many steps (0: run all epochs). */
      maxSteps: z.number().int().min(0),
      /** Rank 0 measures every tensor's norms every this many steps (0: never). */
      healthEvery: z.number().int().min(0),
      /** Where rank 0 writes the final weights (safetensors), if anywhere. */
      saveFinal: z.string().max(4096).optional(),
      /** Periodic checkpoints, written by rank 0. */
      checkpoint: z
        .strictObject({
          dir: z.string().min(1).max(4096),
          everySteps: count,
          atEpochEnd: z.boolean(),
          keepLast: z.number().int().min(1),
          keepBest: count,
          metric: z.enum(['test_accuracy', 'test_loss']),
          onError: z.enum(['stop', 'warn']),
          /** The run these checkpoints descend from, when resumed (default: this run); retention deletes only its files. */
          lineage: runId.optional(),
        })
        .optional(),
      /** Continue from a checkpoint (rank 0 reads its tensors and broadcasts them)… */
      resume: z
        .strictObject({
          path: z.string().max(4096),
          state: z.strictObject({ globalStep: count, epoch: count, cursor: count, optimizerStep: count, dropoutRng: z.array(z.number().int().min(0).max(0xffffffff)).length(4) }),
        })
        .optional(),
      /** …or start from its weights only (fine-tuning). */
      initFrom: z.string().max(4096).optional(),
      /**
       * The segment size an earlier ring of this run picked by timing, and over what: a new ring over
       * the same takes it instead of timing the sizes again (a second at 50 Mbit/s, at every regroup).
       */
      tunedSegment: z.strictObject({ bytes: z.number().int().min(4).max(2 ** 30), transport: z.enum(['tcp', 'hosts']), hosts: z.number().int().min(2).max(65536).optional() }).optional(),
    }),
  /** Worker → coordinator: ring formed, initial weights received and verified. */
  ready: () =>
    z.strictObject({
      type: z.literal('ready'),
      v,
      generation,
      rank,
      weightsHash: hash,
      /** Steps completed: the step this generation continues from. */
      step: count,
      /** The compute backend it resolved: replicas on different backends round differently. */
      backend: z.string().max(256),
      /** Steps the run will take (for progress displays). */
      totalSteps: count,
      /** Parameters in the model: each all-reduce moves 4 bytes per parameter. */
      parameters: count,
    }),
  /** Coordinator → workers: every rank is ready; train. */
  start: () => z.strictObject({ type: z.literal('start'), v, generation }),
  /** Worker → coordinator: training figures since its last report. */
  progress: () =>
    z.strictObject({
      type: z.literal('progress'),
      v,
      generation,
      rank,
      epoch: count,
      step: count,
      loss: finite,
      samples: count,
      correct: count,
      /** Steps since the last report; the times below are summed over them. */
      steps: z.number().int().positive(),
      dataMs: finite,
      computeMs: finite,
      allreduceMs: finite,
      optimizerMs: finite,
      /** Learning rate of the last step, and steps skipped (non-finite values) since the last report. */
      lr: finite,
      skipped: count,
    }),
  /** Rank 0 → coordinator, every healthEvery steps: each tensor's norms after that step. */
  health: () =>
    z.strictObject({
      type: z.literal('health'),
      v,
      generation,
      rank,
      step: count,
      tensors: z
        .array(z.strictObject({ name: z.string().max(256), role: z.enum(['weight', 'bias']), weightNorm: anyNumber, gradNorm: anyNumber, updateRatio: anyNumber }))
        .max(4096),
    }),
  /**
   * Rank 0 → coordinator, at the start of each generation: what the ring measured of itself (the
   * median time of an all-reduce of one float, and the bus bandwidth of one of `probeBytes`).
   */
  ringProbe: () =>
    z.strictObject({
      type: z.literal('ringProbe'),
      v,
      generation,
      rank,
      worldSize: z.number().int().min(2).max(65536),
      latencyMs: finite.min(0),
      busbwMBps: finite.min(0),
      probeBytes: count,
      segmentBytes: count,
      /**
       * How the ring's all-reduces travel: TCP between ranks; shared memory where all are on one host;
       * or across hosts, shared memory inside each host and TCP between them.
       */
      transport: z.enum(['tcp', 'shared memory', 'hosts']),
      /** With transport `hosts`: how many hosts the ring spans. */
      hosts: z.number().int().min(2).max(65536).optional(),
      /** Why not shared memory (the same on every rank), where it is TCP. */
      why: z.string().max(4000).optional(),
      /** The segment sizes tried before `segmentBytes` was chosen, and each one's all-reduce time (ms). */
      tuning: z.array(z.strictObject({ segmentBytes: count, ms: finite.min(0) })).max(8).optional(),
      /** `segmentBytes` is the one an earlier ring of the run chose over the same transport (its assign's tunedSegment). */
      tunedBefore: z.boolean().optional(),
      /** Overlap: the gradient's ranges of at least this many bytes are all-reduced while the backward pass goes on (absent: off). */
      bucketBytes: count.optional(),
    }),
  /** Worker → coordinator: its loss or gradient was NaN/±Inf at a step, and what the run does about it. */
  nonFinite: () =>
    z.strictObject({
      type: z.literal('nonFinite'),
      v,
      generation,
      rank,
      step: count,
      /** gradientSum: every rank's own gradient was finite, their sum in the all-reduce overflowed. */
      what: z.enum(['loss', 'gradient', 'gradientSum']),
      tensor: z.string().max(256).optional(),
      value: anyNumber,
      action: z.enum(['stop', 'skip']),
    }),
  /** Rank 0 → coordinator: a checkpoint could not be written (under onError "warn"; "stop" fails the run). */
  saveFailed: () => z.strictObject({ type: z.literal('saveFailed'), v, generation, rank, step: count, message: z.string().max(4096) }),
  /** Coordinator → rank 0: write a checkpoint after the current step (an admin asked). */
  checkpointNow: () => z.strictObject({ type: z.literal('checkpointNow'), v }),
  /**
   * Worker → coordinator: its share of an evaluation (sums, so the coordinator can add them up),
   * after `step`: at an epoch's end (and the run's), or one of the job's `evalEvery` within it.
   */
  evaluated: () => z.strictObject({ type: z.literal('evaluated'), v, generation, rank, epoch: count, step: count, atEpochEnd: z.boolean(), lossSum: finite, correct: count, samples: count }),
  /** Rank 0 → coordinator: a checkpoint is on disk. */
  saved: () => z.strictObject({ type: z.literal('saved'), v, generation, rank, step: count, path: z.string().max(4096), stallMs: finite, writeMs: finite }),
  /** Worker → coordinator: finished, with the final weights' hash. */
  done: () => z.strictObject({ type: z.literal('done'), v, generation, rank, steps: count, weightsHash: hash, replicaChecks: count }),
  /** Worker → coordinator: it failed, and why (the earliest failure is the root cause). */
  failed: () => z.strictObject({ type: z.literal('failed'), v, generation: generation.optional(), rank: rank.optional(), code: z.string().max(64), message: z.string().max(4096) }),
  /**
   * Worker → coordinator: this generation's ring failed under it (a lost or silent peer); its weights
   * are those of its last complete step, and it waits for the next generation.
   */
  aborted: () =>
    z.strictObject({
      type: z.literal('aborted'),
      v,
      generation,
      rank,
      /** Steps this replica has completed. */
      step: count,
      code: z.string().max(64),
      message: z.string().max(4096),
      /** The ring peer it lost, when known. */
      peer: rank.optional(),
    }),
  /** Worker → coordinator: it leaves the run cleanly after `step` (SIGTERM, preemption); not a failure. */
  leave: () => z.strictObject({ type: z.literal('leave'), v, generation, rank, step: count, reason: z.string().max(4096) }),
  /** Coordinator → workers: stop now (a failure elsewhere, or the user). */
  stop: () => z.strictObject({ type: z.literal('stop'), v, code: z.string().max(64), reason: z.string().max(4096) }),
};

type MessageSchemas = { [T in keyof typeof MESSAGE_SCHEMAS]: ReturnType<(typeof MESSAGE_SCHEMAS)[T]> };
const built: { [T in keyof MessageSchemas]?: MessageSchemas[T] } = {};

/** The schema of a message type, made once; undefined for a type that does not exist. */
function schemaOf(type: unknown): z.ZodType | undefined {
  if (typeof type !== 'string' || !Object.hasOwn(MESSAGE_SCHEMAS, type)) return undefined;
  const t = type as keyof MessageSchemas;
  return (built[t] ??= MESSAGE_SCHEMAS[t]() as never);
}

export type ControlMessage = { [T in keyof MessageSchemas]: z.infer<MessageSchemas[T]> }[keyof MessageSchemas];
export type AbortMessage = z.infer<MessageSchemas['abort']>;
/** The control message of a given type. */
export type MessageOf<T extends ControlMessage['type']> = Extract<ControlMessage, { type: T }>;

// moreTypes keeps typed arrays typed (otherwise they come back as Buffer).
const packr = new Packr({ moreTypes: true, useRecords: false });

export function encodeControl(msg: ControlMessage): Buffer {
  const body = packr.pack(msg);
  const header = Buffer.alloc(CONTROL_HEADER_BYTES);
  header.writeUInt32LE(CONTROL_MAGIC, 0);
  header.writeUInt8(PROTOCOL_VERSION, 4);
  return Buffer.concat([header, body]);
}

/** True when `buf` starts like a control message (the rest is checked by decodeControl). */
export function isControl(buf: Uint8Array): boolean {
  return buf.length >= 4 && buf[0] === 0x52 && buf[1] === 0x54 && buf[2] === 0x43 && buf[3] === 0x30;
}

export function decodeControl(buf: Uint8Array, limits: Limits = DEFAULT_LIMITS): ControlMessage {
  if (buf.length > limits.maxMessageBytes) throw new ProtocolError('ERR_MESSAGE_TOO_LARGE', `control message of ${buf.length} bytes exceeds the limit of ${limits.maxMessageBytes}`);
  if (buf.length < CONTROL_HEADER_BYTES) throw new ProtocolError('ERR_FRAME_TRUNCATED', `control message of ${buf.length} bytes is shorter than its ${CONTROL_HEADER_BYTES}-byte header`);
  if (!isControl(buf)) throw new ProtocolError('ERR_BAD_MAGIC', 'bad control message magic');
  if (buf[4] !== PROTOCOL_VERSION) throw new ProtocolError('ERR_BAD_VERSION', `control message of protocol version ${buf[4]}, expected ${PROTOCOL_VERSION}`);
  let body: unknown;
  try {
    body = packr.unpack(buf.subarray(CONTROL_HEADER_BYTES));
  } catch (err) {
    throw new ProtocolError('ERR_MESSAGE_DECODE', `control message body is not valid msgpack: ${(err as Error).message}`, { cause: err });
  }
  const type = typeof body === 'object' && body !== null ? (body as { type?: unknown }).type : undefined;
  const schema = schemaOf(type);
  if (!schema) {
    // Described, never serialized: the value is the sender's (a BigInt, say, which JSON cannot write).
    const got = typeof type === 'string' ? `"${type.slice(0, 64)}"` : type === undefined ? 'none' : `a ${typeof type}`;
    throw new ProtocolError('ERR_MESSAGE_INVALID', `invalid control message: type: expected one of ${Object.keys(MESSAGE_SCHEMAS).join(', ')}, got ${got}`);
  }
  const parsed = schema.safeParse(body);
  if (!parsed.success) {
    const why = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    throw new ProtocolError('ERR_MESSAGE_INVALID', `invalid control message: ${why}`);
  }
  return parsed.data as ControlMessage;
}
