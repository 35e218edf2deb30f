import { randomBytes } from 'node:crypto';
import { closeSync, constants, openSync, readFileSync, readlinkSync, statSync, unlinkSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { join } from 'node:path';
import { CollectiveError } from './errors.js';
import { type Fingerprint, describeFingerprint } from './operations.js';
import { sharedMemoryNative } from './reduce-kernel.js';
import { RingLayout } from './ring-layout.js';
import { sweepStaleFiles } from './stale-files.js';

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
  /**
   * Which host this rank is on (default: hostKey()). Ranks that give the same key try shared
   * memory with each other; a key that ranks on different machines share is caught when they
   * cannot open each other's files (then every rank stays on TCP).
   */
  hostKey?: string;
}

/**
 * Where the ranks of a ring sit when they span several hosts, each host's ranks next to each other
 * in the ring: this rank's host is block `host` of `hosts`, ranks first..first+size−1.
 */
export interface HostBlocks {
  hosts: number;
  host: number;
  first: number;
  size: number;
}

/** The blocks of a ring whose ranks report `keys`, or why it has none worth using. */
export function hostBlocks(keys: string[], rank: number): HostBlocks | { reason: string } {
  const starts: number[] = [];
  for (let r = 0; r < keys.length; r++) if (r === 0 || keys[r] !== keys[r - 1]) starts.push(r);
  const runKeys = starts.map((r) => keys[r]);
  if (new Set(runKeys).size !== runKeys.length) return { reason: 'the ranks of one host are not next to each other in the ring' };
  if (starts.length === keys.length) return { reason: 'the ranks are not all on one host' };
  let host = 0;
  while (host + 1 < starts.length && starts[host + 1] <= rank) host++;
  const first = starts[host];
  return { hosts: starts.length, host, first, size: (starts[host + 1] ?? keys.length) - first };
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
// A host's first rank's words, when the ring spans hosts (host-ring.ts), each on its own cache line:
/** How many of the host ring's sends this rank has written down for its host's last rank to make (a running count). */
const SENDS = 48;
/** The sequence number of the last all-reduce whose result is complete in the host's accumulator… */
const FINISHED = 64;
/** …and whether every element of it is finite. */
const HOST_FINITE = 65;
const CONTROL_BYTES = 320;
const MAGIC_VALUE = 0x52544d53; // "RTMS"
/** How long one blocking wait may hold the event loop before it lets sockets run (aborts, lost peers, heartbeats). */
const SLICE_MICROS = 2000;

const align = (bytes: number): number => Math.ceil(bytes / 64) * 64;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * What names a host for shared memory: the boot, the network namespace (ranks in separate
 * containers or network namespaces are separate hosts, even on one machine), the user, and which
 * tmpfs /dev/shm is (its device and inode: processes in different mount namespaces, as
 * `ip netns exec` makes, still share it; containers each with their own do not). Null where it
 * cannot be read.
 */
export function hostKey(): string | null {
  try {
    const boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    const shm = statSync('/dev/shm', { throwIfNoEntry: false });
    return `${boot}/${readlinkSync('/proc/self/ns/net')}/${process.getuid?.() ?? ''}/${shm ? `${shm.dev}:${shm.ino}` : ''}`;
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

/**
 * What a host's first rank's file holds besides, where the ring spans hosts: the host's sum (then
 * the result), the host ring's sends it has written down for the host's last rank to make, and
 * (compressed) the encoded segments those sends carry.
 */
export interface HostArea {
  accumulator: Float32Array;
  sends: Int32Array;
  wire: Uint8Array;
}

/** Room for the host ring's sends of an all-reduce of `capacity` floats in segments of 1 KiB or more (a send takes 4 bytes), at `hosts` hosts. */
const sendSlots = (capacity: number, hosts: number): number => 2 * (hosts + Math.ceil(capacity / 256));

function regionOf(buffer: ArrayBuffer, capacity: number, world: number): Region {
  const resultAt = CONTROL_BYTES + align(capacity * 4);
  return {
    words: new Int32Array(buffer, 0, CONTROL_BYTES / 4),
    data: new Float32Array(buffer, CONTROL_BYTES, capacity),
    result: new Float32Array(buffer, resultAt, Math.ceil(capacity / world)),
  };
}

const regionBytes = (capacity: number, world: number): number => CONTROL_BYTES + align(capacity * 4) + align(Math.ceil(capacity / world) * 4);

/**
 * Where a host's area lies in its first rank's file, after the region: the accumulator, the sends
 * (see sendSlots), and room for the encoded segments (fp16 and bf16 take 2 bytes a float, int8 1
 * and a 4-byte scale per segment); `end` is the file's size.
 */
function hostAreaLayout(capacity: number, world: number, hosts: number) {
  const slots = sendSlots(capacity, hosts);
  const wireBytes = 2 * capacity + 4 * slots;
  const accumulatorAt = regionBytes(capacity, world);
  const sendsAt = accumulatorAt + align(capacity * 4);
  const wireAt = sendsAt + align(slots * 4);
  return { slots, wireBytes, accumulatorAt, sendsAt, wireAt, end: wireAt + align(wireBytes) };
}

function hostAreaOf(buffer: ArrayBuffer, capacity: number, world: number, hosts: number): HostArea {
  const at = hostAreaLayout(capacity, world, hosts);
  return { accumulator: new Float32Array(buffer, at.accumulatorAt, capacity), sends: new Int32Array(buffer, at.sendsAt, at.slots), wire: new Uint8Array(buffer, at.wireAt, at.wireBytes) };
}

/** A rank's file: its region, and on a host's first rank of a ring that spans hosts, the host's area. */
const fileBytes = (capacity: number, world: number, hosts: number | null): number => (hosts === null ? regionBytes(capacity, world) : hostAreaLayout(capacity, world, hosts).end);

function mapFile(path: string, bytes: number, create: boolean): ArrayBuffer {
  const fd = openSync(path, create ? constants.O_RDWR | constants.O_CREAT | constants.O_EXCL : constants.O_RDWR, 0o600);
  try {
    return sharedMemoryNative!.mapShared(fd, bytes);
  } finally {
    closeSync(fd);
  }
}

/**
 * The ranks of a ring that run on one host, all-reducing through shared memory instead of
 * loopback TCP (as NCCL and MPI do inside a node): each rank's file holds its contribution; after
 * all have arrived, each rank sums the chunk it owns in the ring, in the ring's order (chunk c from
 * rank c onwards, finished by rank c−1), so the bits are those the TCP ring would give; after all
 * are done, each copies every chunk from its owner. Two waits per all-reduce, on futexes.
 *
 * Where the ring spans hosts, each host's ranks form a group (`blocks` says where it sits), and
 * host-ring.ts sums within the host here and between hosts over the ring's TCP links.
 *
 * The ring's WebSocket connections stay open beside it: they carry aborts, and their heartbeats
 * find a dead or stopped peer, which fails the wait here as it would fail a TCP all-reduce.
 */
export class SharedMemoryGroup {
  private sequence = 0;
  private readonly regions: Region[];
  /** The host's area, in its first rank's file, where the ring spans hosts. */
  readonly hostArea: HostArea | null;

  private constructor(
    /** This rank's place in the group (its ring rank, where the group is the whole ring). */
    readonly rank: number,
    readonly world: number,
    readonly capacity: number,
    buffers: ArrayBuffer[],
    private readonly spinMicros: number,
    /** Where the group sits in a ring that spans hosts; null where it is the whole ring. */
    readonly blocks: HostBlocks | null,
  ) {
    this.regions = buffers.map((b) => regionOf(b, capacity, world));
    this.hostArea = blocks ? hostAreaOf(buffers[0], capacity, world, blocks.hosts) : null;
  }

  /**
   * Every rank of the ring calls it (it is a collective of three small all-gathers). Resolves with
   * this rank's group where every rank of its host mapped every other's file, else with why not;
   * every rank reaches the same answer. The group is the whole ring where all ranks are on one host,
   * else this host's ranks, where each host's ranks are next to each other and some host has two.
   */
  static async establish(host: GroupHost, options: SharedMemoryOptions): Promise<SharedMemoryGroup | { reason: string }> {
    const { rank, worldSize } = host;
    const capacity = Math.max(1, Math.floor(options.capacity));
    const disabled = process.env.RINGTRAIN_SHARED_MEMORY === '0' ? 'RINGTRAIN_SHARED_MEMORY=0' : !sharedMemoryNative ? 'the native addon is not loaded' : null;
    const key = disabled ? '' : (options.hostKey ?? hostKey() ?? '');
    const keys = (await host.allgather(encoder.encode(disabled ? `!${disabled}` : key))).map((k) => decoder.decode(k));
    const off = keys.findIndex((k) => k.startsWith('!') || k === '');
    if (off >= 0) return { reason: `rank ${off}: ${keys[off].slice(1) || 'its host cannot be identified'}` };
    const found = keys.every((k) => k === keys[0]) ? null : hostBlocks(keys, rank);
    if (found && 'reason' in found) return found;
    const blocks = found;
    // The ring ranks of this rank's group, and this rank's place in it.
    const first = blocks?.first ?? 0;
    const world = blocks?.size ?? worldSize;
    const local = rank - first;
    const bytesOf = (r: number): number => fileBytes(capacity, world, blocks && r === 0 ? blocks.hosts : null);

    // Each rank makes its own file, so no two ever race to create one.
    const dir = options.dir ?? process.env.RINGTRAIN_SHARED_MEMORY_DIR ?? '/dev/shm';
    sweepStaleFiles(dir);
    const nonce = randomBytes(16);
    const path = join(dir, `ringtrain-${process.pid}-${randomBytes(6).toString('hex')}`);
    let own: ArrayBuffer | null = null;
    let error = '';
    try {
      own = mapFile(path, bytesOf(local), true);
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
      // Open every other file of the group and check it is the one that rank made (its nonce).
      const buffers: ArrayBuffer[] = [];
      let problem = '';
      for (let r = 0; r < world; r++) {
        if (r === local) {
          buffers.push(own!);
          continue;
        }
        const offer = offers[first + r];
        try {
          const buffer = mapFile(offer.path!, bytesOf(r), false);
          const words = regionOf(buffer, capacity, world).words;
          if (words[MAGIC] !== MAGIC_VALUE || Buffer.from(words.buffer, NONCE * 4, 16).toString('hex') !== offer.nonce) throw new Error('it holds another rank’s data');
          buffers.push(buffer);
        } catch (err) {
          problem ||= `cannot map rank ${first + r}'s ${offer.path}: ${(err as Error).message}`;
        }
      }
      const verdicts = (await host.allgather(encoder.encode(problem))).map((b) => decoder.decode(b));
      const refused = verdicts.findIndex((v) => v !== '');
      if (refused >= 0) return { reason: `rank ${refused}: ${verdicts[refused]}` };
      return new SharedMemoryGroup(local, world, capacity, buffers, options.spinMicros ?? (world <= availableParallelism() ? 300 : 0), blocks);
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
    const s = await this.arriveAll(data, average, fp, deadline, failure);
    // The chunk this rank owns in the ring, summed as the ring would: from rank c on round to c−1.
    const layout = new RingLayout(data.length, world, data.length || 1);
    const c = (rank + 1) % world;
    const start = layout.chunkStart(c);
    const own = regions[rank];
    const sum = own.result.subarray(0, layout.chunkLength(c));
    const parts = Array.from({ length: world }, (_, i) => regions[(c + i) % world].data.subarray(start, start + sum.length));
    const finite = sharedMemoryNative!.sumInOrder(sum, parts, average ? world : 1);
    own.words[FINITE] = finite ? 1 : 0;
    sharedMemoryNative!.publish(own.words, DONE, s);
    await this.waitAll(DONE, s, fp, deadline, failure);
    let allFinite = true;
    for (let chunk = 0; chunk < world; chunk++) {
      const owner = regions[(chunk - 1 + world) % world];
      data.set(owner.result.subarray(0, layout.chunkLength(chunk)), layout.chunkStart(chunk));
      allFinite &&= owner.words[FINITE] === 1;
    }
    this.checkNotAbandoned(s, fp);
    return allFinite;
  }

  /**
   * The host's half of an all-reduce across hosts (host-ring.ts): every rank of the group has
   * arrived with `data`, and their sum is in the host's accumulator (each rank sums its share of
   * it, in group order). Returns the all-reduce's sequence number, for the waits that follow.
   */
  async sumHost(data: Float32Array, average: boolean, fp: Fingerprint, deadline: number, failure: () => CollectiveError | null): Promise<number> {
    const { rank, world, regions } = this;
    const s = await this.arriveAll(data, average, fp, deadline, failure);
    const layout = new RingLayout(data.length, world, data.length || 1);
    const [start, n] = [layout.chunkStart(rank), layout.chunkLength(rank)];
    sharedMemoryNative!.sumInOrder(this.hostArea!.accumulator.subarray(start, start + n), regions.map((r) => r.data.subarray(start, start + n)), 1);
    sharedMemoryNative!.publish(regions[rank].words, DONE, s);
    await this.waitAll(DONE, s, fp, deadline, failure);
    return s;
  }

  /** The host's first rank: the host ring's send number `slot` of this all-reduce is `descriptor`; `count` sends are now written down (a running count). */
  writeSend(slot: number, descriptor: number, count: number): void {
    this.hostArea!.sends[slot] = descriptor;
    sharedMemoryNative!.publish(this.regions[0].words, SENDS, count);
  }

  /** The host's last rank: until the running count of sends written down reaches `count`; resolves with the count seen (it may be higher). */
  async waitSends(count: number, s: number, fp: Fingerprint, deadline: number, failure: () => CollectiveError | null): Promise<number> {
    await this.giveUpOnFailure(s, () => this.waitFor(0, SENDS, count, fp, deadline, failure, 'to receive from the host before it'));
    return this.regions[0].words[SENDS];
  }

  /** The host's first rank: the result of all-reduce s is complete in the accumulator. */
  finishHost(s: number, finite: boolean): void {
    const words = this.regions[0].words;
    words[HOST_FINITE] = finite ? 1 : 0;
    sharedMemoryNative!.publish(words, FINISHED, s);
  }

  /**
   * Every rank of the host, once its part in all-reduce s is done: waits for the host's first rank
   * to finish it, copies the result into `data` (divided by `divisor`), and resolves with whether
   * every element is finite.
   */
  async takeHostResult(s: number, data: Float32Array, divisor: number, fp: Fingerprint, deadline: number, failure: () => CollectiveError | null): Promise<boolean> {
    if (this.rank !== 0) await this.giveUpOnFailure(s, () => this.waitFor(0, FINISHED, s, fp, deadline, failure, 'to finish the all-reduce between hosts'));
    const result = this.hostArea!.accumulator.subarray(0, data.length);
    if (divisor === 1) data.set(result);
    else for (let i = 0; i < data.length; i++) data[i] = result[i] / divisor;
    const finite = this.regions[0].words[HOST_FINITE] === 1;
    this.checkNotAbandoned(s, fp);
    return finite;
  }

  /**
   * This rank arrives with `data` (before the call returns: the caller goes on until it awaits, and
   * the waiting starts after); resolves with the all-reduce's sequence number once every rank of the
   * group has arrived with the same fingerprint.
   */
  private async arriveAll(data: Float32Array, average: boolean, fp: Fingerprint, deadline: number, failure: () => CollectiveError | null): Promise<number> {
    const s = this.arrive(data, average, fp);
    await undefined;
    await this.waitAll(ARRIVED, s, fp, deadline, failure);
    const odd = this.oddFingerprint(fp);
    if (odd) throw odd;
    return s;
  }

  /** The next all-reduce's sequence number, once this rank's contribution and fingerprint are written and published. */
  private arrive(data: Float32Array, average: boolean, fp: Fingerprint): number {
    if (data.length > this.capacity) throw new RangeError(`${data.length} elements exceed the shared memory's ${this.capacity}`);
    const s = (this.sequence = (this.sequence + 1) | 0);
    const own = this.regions[this.rank];
    own.data.set(data);
    const w = own.words;
    w[STEP] = fp.step;
    w[LENGTH] = data.length;
    w[AVERAGE] = average ? 1 : 0;
    w[HASH_HI] = Number.parseInt(fp.layoutHash.slice(0, 8), 16) | 0;
    w[HASH_LO] = Number.parseInt(fp.layoutHash.slice(8, 16), 16) | 0;
    sharedMemoryNative!.publish(w, ARRIVED, s);
    return s;
  }

  /** The ring rank of group member r. */
  private ringRank(r: number): number {
    return (this.blocks?.first ?? 0) + r;
  }

  /**
   * Ranks at another step, length, layout or reduction than the group's first, as
   * ERR_FINGERPRINT_MISMATCH, or null. Every rank compares every rank with the first, so all report the same odd one.
   */
  private oddFingerprint(fp: Fingerprint): CollectiveError | null {
    const describe = (x: Int32Array): string =>
      `allreduce step ${x[STEP] >>> 0} length ${x[LENGTH]} layout ${(x[HASH_HI] >>> 0).toString(16).padStart(8, '0')}${(x[HASH_LO] >>> 0).toString(16).padStart(8, '0')} (${x[AVERAGE] ? 'mean' : 'sum'})`;
    const first = this.regions[0].words;
    const r = this.regions.findIndex((region) => [STEP, LENGTH, AVERAGE, HASH_HI, HASH_LO].some((i) => region.words[i] !== first[i]));
    if (r < 0) return null;
    return new CollectiveError('ERR_FINGERPRINT_MISMATCH', `ranks disagree: rank ${this.ringRank(r)} is at ${describe(this.regions[r].words)}; rank ${this.ringRank(0)} is at ${describe(first)} (seen by rank ${this.ringRank(this.rank)}, seq ${fp.seq})`, {
      rank: this.ringRank(this.rank),
      peer: this.ringRank(r),
      seq: fp.seq,
      step: fp.step,
      op: 'allreduce',
    });
  }

  /**
   * A rank that was stopped (SIGSTOP, a long pause) can wake to find all-reduce s completed by
   * peers who have since given up on it and gone on without it: it must not take the step.
   */
  private checkNotAbandoned(s: number, fp: Fingerprint): void {
    const quitter = this.regions.findIndex((r, rank) => rank !== this.rank && r.words[GAVE_UP] === s && s !== 0);
    if (quitter < 0) return;
    const [me, them] = [this.ringRank(this.rank), this.ringRank(quitter)];
    throw new CollectiveError('ERR_PEER_LOST', `rank ${me}: rank ${them} gave up on ${describeFingerprint(fp)} in shared memory (it lost a peer or passed its deadline)`, { rank: me, peer: them, op: 'allreduce', seq: fp.seq, step: fp.step });
  }

  /**
   * Until every rank's `index` word reaches s: blocking waits of at most a slice, the event loop
   * run between them (the root cause of a failure comes from there, as on TCP). Giving up is
   * written down, so that no rank completes this all-reduce afterwards.
   */
  private async waitAll(index: number, s: number, fp: Fingerprint, deadline: number, failure: () => CollectiveError | null): Promise<void> {
    await this.giveUpOnFailure(s, async () => {
      for (let r = 0; r < this.world; r++) if (r !== this.rank) await this.waitFor(r, index, s, fp, deadline, failure, index === ARRIVED ? 'to arrive' : 'to finish its chunk');
    });
  }

  private async giveUpOnFailure(s: number, wait: () => Promise<void>): Promise<void> {
    try {
      await wait();
    } catch (err) {
      sharedMemoryNative!.publish(this.regions[this.rank].words, GAVE_UP, s);
      throw err;
    }
  }

  /** Until member r's `index` word reaches `target` (compared as a running 32-bit count). */
  private async waitFor(r: number, index: number, target: number, fp: Fingerprint, deadline: number, failure: () => CollectiveError | null, what: string): Promise<void> {
    let spin = this.spinMicros;
    for (;;) {
      const seen = sharedMemoryNative!.waitAtLeast(this.regions[r].words, index, target, spin, SLICE_MICROS);
      if (((seen - target) | 0) >= 0) return;
      spin = 0;
      await nextTurn();
      const failed = failure();
      if (failed) throw failed;
      if (performance.now() > deadline) {
        const [me, them] = [this.ringRank(this.rank), this.ringRank(r)];
        throw new CollectiveError('ERR_COLLECTIVE_TIMEOUT', `rank ${me}: ${describeFingerprint(fp)} timed out waiting on rank ${them} in shared memory (${what})`, { rank: me, peer: them, op: 'allreduce', seq: fp.seq, step: fp.step });
      }
    }
  }
}
