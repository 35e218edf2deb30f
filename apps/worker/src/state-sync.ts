import { createHash } from 'node:crypto';
import type { Communicator } from '@ringtrain/allreduce';
import type { RngState } from '@ringtrain/core';
import type { Trainer, TrainerState } from '@ringtrain/trainer';
import { WorkerError } from './errors.js';

/** Where a new generation's training state came from. */
export interface SyncResult {
  /** The rank whose state every rank now holds, or -1 when none held any (the run's start). */
  source: number;
  step: number;
  /** SHA-256 of everything that was shared: weights, optimizer slots and the trainer state. */
  stateHash: string;
}

/**
 * A new generation's first collective: every rank ends up with the live training state of the most
 * advanced replica (the lowest rank among those with the most steps), over the ring, with no file.
 *
 * Why the most advanced: a fault can land inside an all-reduce, and a ring all-gather can finish on
 * some ranks and not others. A rank that finished has the complete sum, so its step is the right
 * one; the others' weights are still those of the step before (the optimizer runs only after a
 * complete all-reduce). Taking the most advanced state loses nothing and repeats nothing.
 *
 * Shared: the weights, every optimizer slot, the step, epoch, sample cursor, optimizer step count
 * and dropout RNG state. Then every rank hashes all of it and the hashes are compared.
 *
 * `held` says whether this replica holds state from an earlier generation; when no rank does,
 * `initialise` runs instead (rank 0's fresh weights, or a checkpoint) and the result is verified alike.
 */
export async function syncState(comm: Communicator, trainer: Trainer, held: boolean, initialise: () => Promise<void>): Promise<SyncResult> {
  const params = trainer.model.params;
  const layoutHash = params.layoutHash();
  const offers = (await comm.allgather(new Uint8Array(Float64Array.of(held ? 1 : 0, trainer.globalStep).buffer))).map((b) => {
    if (b.byteLength !== 16) throw new WorkerError('ERR_PROTOCOL', `a state offer of ${b.byteLength} bytes, expected 16`);
    const f = new Float64Array(Uint8Array.from(b).buffer);
    return { held: f[0] === 1, step: f[1] };
  });
  let source = -1;
  offers.forEach((o, r) => {
    if (o.held && (source < 0 || o.step > offers[source].step)) source = r;
  });
  if (source < 0) {
    await initialise();
  } else {
    const mine = comm.rank === source ? Buffer.from(JSON.stringify(trainer.state())) : new Uint8Array(0);
    const headers = await comm.allgather(mine);
    const state = parseState(headers[source], source);
    // Receivers fill copies and take them only once everything arrived: a sync that fails half-way
    // must not leave a replica that holds state with a mix of two steps' weights.
    const buffers = [params.values, ...sortedSlots(trainer).map(([, b]) => b)];
    const received = comm.rank === source ? buffers : buffers.map((b) => new Float32Array(b.length));
    for (const b of received) await comm.broadcast(b, { root: source, layoutHash });
    if (comm.rank !== source) {
      buffers.forEach((b, i) => b.set(received[i]));
      trainer.restore(state);
    }
  }
  const stateHash = hashState(trainer);
  const all = (await comm.allgather(Buffer.from(stateHash, 'hex'))).map((b) => Buffer.from(b).toString('hex'));
  const differing = all.map((h, r) => [r, h] as const).filter(([, h]) => h !== all[0]);
  if (differing.length) {
    throw new WorkerError('ERR_REPLICA_DIVERGED', `the training state differs after it was shared from rank ${source}: rank 0 has ${all[0].slice(0, 16)}…, ${differing.map(([r, h]) => `rank ${r} has ${h.slice(0, 16)}…`).join(', ')}`);
  }
  return { source, step: trainer.globalStep, stateHash };
}

function sortedSlots(trainer: Trainer): [string, Float32Array][] {
  return Object.entries(trainer.optimizer.state.slots).sort(([a], [b]) => a.localeCompare(b));
}

/** SHA-256 over the weights, each optimizer slot (in name order) and the trainer state. */
export function hashState(trainer: Trainer): string {
  const h = createHash('sha256');
  const bytes = (a: Float32Array): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  h.update(bytes(trainer.model.params.values));
  for (const [name, buffer] of sortedSlots(trainer)) h.update(name).update(bytes(buffer));
  h.update(JSON.stringify(trainer.state()));
  return h.digest('hex');
}

/** A peer's trainer state: checked field by field before it is trusted. */
function parseState(bytes: Uint8Array | undefined, source: number): TrainerState {
  let s: Partial<TrainerState>;
  try {
    s = JSON.parse(Buffer.from(bytes ?? new Uint8Array(0)).toString('utf8')) as Partial<TrainerState>;
  } catch (err) {
    throw new WorkerError('ERR_PROTOCOL', `rank ${source} sent an unreadable training state: ${(err as Error).message}`);
  }
  const count = (x: unknown): x is number => Number.isSafeInteger(x) && (x as number) >= 0;
  const rng = s.dropoutRng as unknown;
  if (!count(s.globalStep) || !count(s.epoch) || !count(s.cursor) || !count(s.optimizerStep) || !Array.isArray(rng) || rng.length !== 4 || !rng.every((x) => count(x) && x <= 0xffffffff)) {
    throw new WorkerError('ERR_PROTOCOL', `rank ${source} sent an invalid training state: ${JSON.stringify(s).slice(0, 200)}`);
  }
  return { globalStep: s.globalStep, epoch: s.epoch, cursor: s.cursor, optimizerStep: s.optimizerStep, dropoutRng: rng as RngState };
}
