import { randomBytes } from 'node:crypto';
import { closeSync, constants, openSync, readFileSync, readlinkSync, unlinkSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { join } from 'node:path';
import { CollectiveError } from './errors.js';
import { type Fingerprint, describeFingerprint } from './operations.js';
import { sharedMemoryNative } from './reduce-kernel.js';
import { RingLayout } from './ring-layout.js';

/** What establishing needs of the ring: its place and a way to exchange a few bytes with every rank. */
export interface GroupHost {
  readonly rank: number;
  readonly worldSize: number;
  allgather(bytes: Uint8Array): Promise<Uint8Array[]>;
}

export interface SharedMemoryOptions {
  /** Largest tensor, in float32 elements, to all-reduce through shared memory (larger ones take the ring). */
  capacity: number;
  /** Where the files are made (default RINGTRAIN_SHARED_MEMORY_DIR, else /dev/shm, a tmpfs). */
  dir?: string;
  /**
   * Microseconds to spin before sleeping when a peer has not arrived (default 300: a futex wake-up
   * costs ~0.1 ms on a busy small VM, and spinning 300 against 50 µs trained 5% faster at N = 2;
   * 0 on a host with more ranks than cores, where spinning takes a core from a rank still computing).
   */
  spinMicros?: number;
}

// The control words at the start of each rank's file (int32 indices); ARRIVED and DONE on their own cache lines.
const MAGIC = 0;
const NONCE = 1; // 4 words
const ARRIVED = 16;
const STEP = 17;
const LENGTH = 18;
const AVERAGE = 19;
const HASH_HI = 20;
const HASH_LO = 21;
const DONE = 32;
const FINITE = 33;
/** The sequence number of the all-reduce this rank gave up on (a failure, a deadline). */
const GAVE_UP = 34;
const CONTROL_BYTES = 192;
const MAGIC_VALUE = 0x52544d53; // "RTMS"
/** How long one blocking wait may hold the event loop before it lets sockets run (aborts, lost peers, heartbeats). */
const SLICE_MICROS = 2000;

const align = (bytes: number): number => Math.ceil(bytes / 64) * 64;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * What names a host for shared memory: the boot, and the network and mount namespaces (ranks in
 * separate containers or network namespaces are separate hosts, even on one machine). Null where
 * it cannot be read.
 */
export function hostKey(): string | null {
  try {
    const boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    return `${boot}/${readlinkSync('/proc/self/ns/net')}/${readlinkSync('/proc/self/ns/mnt')}/${process.getuid?.() ?? ''}`;
  } catch {
    return null;
  }
}

/** One rank's file, mapped: its control words, its contribution and the chunk it finishes. */
interface Region {
  words: Int32Array;
  data: Float32Array;
  result: Float32Array;
}

function regionOf(buffer: ArrayBuffer, capacity: number, world: number): Region {
  const resultAt = CONTROL_BYTES + align(capacity * 4);
  return {
    words: new Int32Array(buffer, 0, CONTROL_BYTES / 4),
    data: new Float32Array(buffer, CONTROL_BYTES, capacity),
    result: new Float32Array(buffer, resultAt, Math.ceil(capacity / world)),
  };
}

const fileBytes = (capacity: number, world: number): number => CONTROL_BYTES + align(capacity * 4) + align(Math.ceil(capacity / world) * 4);

function mapFile(path: string, bytes: number, create: boolean): ArrayBuffer {
  const fd = openSync(path, create ? constants.O_RDWR | constants.O_CREAT | constants.O_EXCL : constants.O_RDWR, 0o600);
  try {
    return sharedMemoryNative!.mapShared(fd, bytes);
  } finally {
    closeSync(fd);
  }
}

/**
 * The ranks of a ring that all run on one host, all-reducing through shared memory instead of
 * loopback TCP (as NCCL and MPI do inside a node): each rank's file holds its contribution; after
 * all have arrived, each rank sums the chunk it owns in the ring, in the ring's order (chunk c from
 * rank c onwards, finished by rank c−1), so the bits are those the TCP ring would give; after all
 * are done, each copies every chunk from its owner. Two waits per all-reduce, on futexes.
 *
 * The ring's WebSocket connections stay open beside it: they carry aborts, and their heartbeats
 * find a dead or stopped peer, which fails the wait here as it would fail a TCP all-reduce.
 */
export class SharedMemoryGroup {
  private sequence = 0;
  private readonly regions: Region[];

  private constructor(
    readonly rank: number,
    readonly world: number,
    readonly capacity: number,
    buffers: ArrayBuffer[],
    private readonly spinMicros: number,
  ) {
    this.regions = buffers.map((b) => regionOf(b, capacity, world));
  }

  /**
   * Every rank of the ring calls it (it is a collective of three small all-gathers). Resolves with
   * the group where every rank is on this host and mapped every other rank's file, else with why
   * not; every rank reaches the same answer.
   */
  static async establish(host: GroupHost, options: SharedMemoryOptions): Promise<SharedMemoryGroup | { reason: string }> {
    const { rank, worldSize: world } = host;
    const capacity = Math.max(1, Math.floor(options.capacity));
    const bytes = fileBytes(capacity, world);
    const disabled = process.env.RINGTRAIN_SHARED_MEMORY === '0' ? 'RINGTRAIN_SHARED_MEMORY=0' : !sharedMemoryNative ? 'the native addon is not loaded' : null;
    const key = disabled ? '' : (hostKey() ?? '');
    const keys = (await host.allgather(encoder.encode(disabled ? `!${disabled}` : key))).map((k) => decoder.decode(k));
    const off = keys.findIndex((k) => k.startsWith('!') || k === '');
    if (off >= 0) return { reason: `rank ${off}: ${keys[off].slice(1) || 'its host cannot be identified'}` };
    if (keys.some((k) => k !== keys[0])) return { reason: 'the ranks are not all on one host' };

    // Each rank makes its own file, so no two ever race to create one.
    const nonce = randomBytes(16);
    const path = join(options.dir ?? process.env.RINGTRAIN_SHARED_MEMORY_DIR ?? '/dev/shm', `ringtrain-${process.pid}-${randomBytes(6).toString('hex')}`);
    let own: ArrayBuffer | null = null;
    let error = '';
    try {
      own = mapFile(path, bytes, true);
      const words = regionOf(own, capacity, world).words;
      words[MAGIC] = MAGIC_VALUE;
      new Uint8Array(words.buffer, NONCE * 4, 16).set(nonce);
    } catch (err) {
      error = `cannot make ${path}: ${(err as Error).message}`;
    }
    try {
      const offers = (await host.allgather(encoder.encode(JSON.stringify(own ? { path, nonce: nonce.toString('hex') } : { error })))).map((b) => JSON.parse(decoder.decode(b)) as { path?: string; nonce?: string; error?: string });
      const failed = offers.findIndex((o) => o.error !== undefined || typeof o.path !== 'string' || typeof o.nonce !== 'string');
      if (failed >= 0) return { reason: `rank ${failed}: ${offers[failed].error ?? 'a malformed offer'}` };
      // Open every other rank's file and check it is the one that rank made (its nonce).
      const buffers: ArrayBuffer[] = [];
      let problem = '';
      for (let r = 0; r < world; r++) {
        if (r === rank) {
          buffers.push(own!);
          continue;
        }
        try {
          const buffer = mapFile(offers[r].path!, bytes, false);
          const words = regionOf(buffer, capacity, world).words;
          if (words[MAGIC] !== MAGIC_VALUE || Buffer.from(words.buffer, NONCE * 4, 16).toString('hex') !== offers[r].nonce) throw new Error('it holds another rank’s data');
          buffers.push(buffer);
        } catch (err) {
          problem ||= `cannot map rank ${r}'s ${offers[r].path}: ${(err as Error).message}`;
        }
      }
      const verdicts = (await host.allgather(encoder.encode(problem))).map((b) => decoder.decode(b));
      const refused = verdicts.findIndex((v) => v !== '');
      if (refused >= 0) return { reason: `rank ${refused}: ${verdicts[refused]}` };
      return new SharedMemoryGroup(rank, world, capacity, buffers, options.spinMicros ?? (world <= availableParallelism() ? 300 : 0));
    } finally {
      // Every rank has mapped it (or given up): the name is no longer needed, and nothing is left
      // behind in /dev/shm however the run ends. The memory lives until the last mapping goes.
      if (own) {
        try {
          unlinkSync(path);
        } catch {
          // already gone
        }
      }
    }
  }

  /**
   * Sums (or averages) `data` over the group in place; this rank has arrived when the call returns. `failure` reports the ring's failure (an
   * abort, a lost peer), checked between waits; the deadline is absolute (performance.now()).
   * Resolves with whether every element of the result is finite.
   */
  async allreduce(data: Float32Array, average: boolean, fp: Fingerprint, deadline: number, failure: () => CollectiveError | null): Promise<boolean> {
    const { rank, world, regions } = this;
    if (data.length > this.capacity) throw new RangeError(`${data.length} elements exceed the shared memory's ${this.capacity}`);
    const s = (this.sequence = (this.sequence + 1) | 0);
    const own = regions[rank];
    own.data.set(data);
    const w = own.words;
    w[STEP] = fp.step;
    w[LENGTH] = data.length;
    w[AVERAGE] = average ? 1 : 0;
    w[HASH_HI] = Number.parseInt(fp.layoutHash.slice(0, 8), 16) | 0;
    w[HASH_LO] = Number.parseInt(fp.layoutHash.slice(8, 16), 16) | 0;
    sharedMemoryNative!.publish(w, ARRIVED, s);
    // Arrived: the caller goes on until it awaits; the waiting starts after.
    await undefined;
    await this.waitAll(ARRIVED, s, fp, deadline, failure);
    const odd = this.oddFingerprint(fp);
    if (odd) throw odd;
    // The chunk this rank owns in the ring, summed as the ring would: from rank c on round to c−1.
    const layout = new RingLayout(data.length, world, data.length || 1);
    const c = (rank + 1) % world;
    const start = layout.chunkStart(c);
    const sum = own.result.subarray(0, layout.chunkLength(c));
    const parts = Array.from({ length: world }, (_, i) => regions[(c + i) % world].data.subarray(start, start + sum.length));
    const finite = sharedMemoryNative!.sumInOrder(sum, parts, average ? world : 1);
    w[FINITE] = finite ? 1 : 0;
    sharedMemoryNative!.publish(w, DONE, s);
    await this.waitAll(DONE, s, fp, deadline, failure);
    let allFinite = true;
    for (let chunk = 0; chunk < world; chunk++) {
      const owner = regions[(chunk - 1 + world) % world];
      data.set(owner.result.subarray(0, layout.chunkLength(chunk)), layout.chunkStart(chunk));
      allFinite &&= owner.words[FINITE] === 1;
    }
    // A rank that was stopped (SIGSTOP, a long pause) can wake to find every DONE published by
    // peers who have since given up on it and gone on without it: it must not take the step.
    const quitter = this.gaveUp(s);
    if (quitter >= 0) throw this.abandoned(quitter, fp);
    return allFinite;
  }

  /**
   * Ranks at another step, length, layout or reduction than rank 0, as ERR_FINGERPRINT_MISMATCH, or
   * null. Every rank compares every rank with rank 0, so all report the same odd one.
   */
  private oddFingerprint(fp: Fingerprint): CollectiveError | null {
    const describe = (x: Int32Array): string =>
      `allreduce step ${x[STEP] >>> 0} length ${x[LENGTH]} layout ${(x[HASH_HI] >>> 0).toString(16).padStart(8, '0')}${(x[HASH_LO] >>> 0).toString(16).padStart(8, '0')} (${x[AVERAGE] ? 'mean' : 'sum'})`;
    const first = this.regions[0].words;
    const r = this.regions.findIndex((region) => [STEP, LENGTH, AVERAGE, HASH_HI, HASH_LO].some((i) => region.words[i] !== first[i]));
    if (r < 0) return null;
    return new CollectiveError('ERR_FINGERPRINT_MISMATCH', `ranks disagree: rank ${r} is at ${describe(this.regions[r].words)}; rank 0 is at ${describe(first)} (seen by rank ${this.rank}, seq ${fp.seq})`, {
      rank: this.rank,
      peer: r,
      seq: fp.seq,
      step: fp.step,
      op: 'allreduce',
    });
  }

  /** The first rank that gave up on all-reduce s, or −1. */
  private gaveUp(s: number): number {
    return this.regions.findIndex((r, rank) => rank !== this.rank && r.words[GAVE_UP] === s && s !== 0);
  }

  private abandoned(rank: number, fp: Fingerprint): CollectiveError {
    return new CollectiveError('ERR_PEER_LOST', `rank ${this.rank}: rank ${rank} gave up on ${describeFingerprint(fp)} in shared memory (it lost a peer or passed its deadline)`, { rank: this.rank, peer: rank, op: 'allreduce', seq: fp.seq, step: fp.step });
  }

  /**
   * Until every rank's `index` word reaches s: blocking waits of at most a slice, the event loop
   * run between them (the root cause of a failure comes from there, as on TCP). Giving up is
   * written down, so that no rank completes this all-reduce afterwards.
   */
  private async waitAll(index: number, s: number, fp: Fingerprint, deadline: number, failure: () => CollectiveError | null): Promise<void> {
    try {
      await this.waitEach(index, s, fp, deadline, failure);
    } catch (err) {
      sharedMemoryNative!.publish(this.regions[this.rank].words, GAVE_UP, s);
      throw err;
    }
  }

  private async waitEach(index: number, s: number, fp: Fingerprint, deadline: number, failure: () => CollectiveError | null): Promise<void> {
    for (let r = 0; r < this.world; r++) {
      if (r === this.rank) continue;
      let spin = this.spinMicros;
      for (;;) {
        const seen = sharedMemoryNative!.waitAtLeast(this.regions[r].words, index, s, spin, SLICE_MICROS);
        if (((seen - s) | 0) >= 0) break;
        spin = 0;
        await nextTurn();
        const failed = failure();
        if (failed) throw failed;
        if (performance.now() > deadline) {
          throw new CollectiveError('ERR_COLLECTIVE_TIMEOUT', `rank ${this.rank}: ${describeFingerprint(fp)} timed out waiting on rank ${r} in shared memory (${index === ARRIVED ? 'to arrive' : 'to finish its chunk'})`, {
            rank: this.rank,
            peer: r,
            op: 'allreduce',
            seq: fp.seq,
            step: fp.step,
          });
        }
      }
    }
  }
}
