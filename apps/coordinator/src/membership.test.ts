import { type ControlMessage, type MessageOf, PROTOCOL_VERSION } from '@ringtrain/protocol';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type Conn, type Effect, Membership, type MembershipOptions, type Timer } from './membership.js';

const HASH = 'ab'.repeat(16);
const options = (over: Partial<MembershipOptions> = {}): MembershipOptions => ({
  runId: 'run-1',
  incarnation: 'c0ffee00',
  configHash: HASH,
  min: 2,
  max: 4,
  maxRestarts: 3,
  assign: { config: {}, configHash: HASH, globalBatch: 256, progressEvery: 10, verifyEvery: 0, maxSteps: 0, healthEvery: 100 },
  joinTimeoutMs: 60_000,
  readyTimeoutMs: 60_000,
  lastCallMs: 2000,
  quorumMs: 1000,
  rejoinTimeoutMs: 300_000,
  ...over,
});

const hello = (conn: Conn): MessageOf<'hello'> => ({ type: 'hello', v: PROTOCOL_VERSION, workerId: `w${conn}`, ringAddress: `ws://h${conn}:1`, configHash: null, host: 'h', pid: conn });
const v = PROTOCOL_VERSION;

/** Drives a machine and keeps what the invariants need: every assign sent, per generation. */
class Harness {
  readonly m: Membership;
  readonly assigns = new Map<number, MessageOf<'assign'>[]>();
  readonly effects: Effect[] = [];
  readonly closed = new Set<Conn>();
  ended = false;
  constructor(o: MembershipOptions) {
    this.m = new Membership(o);
    this.record(this.m.start());
  }
  record(effects: Effect[]): Effect[] {
    for (const e of effects) {
      this.effects.push(e);
      if (e.type === 'send' && e.msg.type === 'assign') {
        const list = this.assigns.get(e.msg.generation) ?? [];
        list.push(e.msg);
        this.assigns.set(e.msg.generation, list);
      }
      if (e.type === 'close') this.closed.add(e.conn);
    }
    return effects;
  }
  /** A hello and, once the job came back, `prepared` (its replica built). */
  hello(conn: Conn, message: MessageOf<'hello'> = hello(conn)): Effect[] {
    const said = this.record(this.m.handle({ type: 'hello', conn, hello: message }));
    if (!said.some((e) => e.type === 'send' && e.msg.type === 'job')) return said;
    return [...said, ...this.send(conn, { type: 'prepared', v })];
  }
  send(conn: Conn, msg: ControlMessage): Effect[] {
    return this.record(this.m.handle({ type: 'message', conn, msg }));
  }
  /** Every ring member of the current generation reports ready with the same weights. */
  allReady(step = 0): void {
    for (const x of this.m.ring) this.send(x.conn, { type: 'ready', v, generation: x.generation, rank: x.rank, weightsHash: HASH, step, backend: 'wasm', totalSteps: 100, parameters: 10 });
  }
  timer(name: Timer): Effect[] {
    return this.record(this.m.handle({ type: 'timer', name }));
  }
}

/** The invariants that hold after every event, whatever the sequence. */
function checkInvariants(h: Harness): void {
  const ring = h.m.ring;
  // One live generation: while forming or running, its members hold ranks 0..n−1 once each.
  if (h.m.state === 'forming' || h.m.state === 'running') expect(ring.map((x) => x.rank)).toEqual(ring.map((_, i) => i));
  // At any time no rank of the current generation is held twice, and nobody is in a later one.
  for (const x of ring) expect(x.prepared).toBe(true);
  const ranks = ring.map((x) => x.rank);
  expect(new Set(ranks).size).toBe(ranks.length);
  for (const x of h.m.all) expect(x.generation).toBeLessThanOrEqual(h.m.generation);
  expect(ring.length).toBeLessThanOrEqual(h.m.options.max);
  // Each generation was assigned once: distinct ranks covering its world size, one ring id, generations increasing.
  for (const [gen, list] of h.assigns) {
    const ranks = list.map((a) => a.rank).sort((a, b) => a - b);
    expect(ranks).toEqual(list.map((_, i) => i));
    for (const a of list) {
      expect(a.worldSize).toBe(list.length);
      expect(a.ringId).toBe(`${a.runId.slice(0, 8)}.${HASH}/c0ffee00.${gen}`);
      expect(a.runId).toBe(h.m.runId);
    }
    expect(gen).toBeLessThanOrEqual(h.m.generation);
  }
  expect(h.m.restarts).toBeLessThanOrEqual(h.m.options.maxRestarts + 1);
}

describe('membership state machine', () => {
  it('admits a worker only once it has built its replica: the job goes out on hello, a place after `prepared`', () => {
    const h = new Harness(options({ min: 2, max: 2 }));
    h.hello(1);
    const e = h.record(h.m.handle({ type: 'hello', conn: 2, hello: hello(2) }));
    expect(e).toContainEqual({ type: 'send', conn: 2, msg: { type: 'job', v, config: {}, configHash: HASH, globalBatch: 256 } });
    expect(h.m.state).toBe('gathering');
    h.send(2, { type: 'prepared', v });
    expect(h.m.state).toBe('forming');
    h.allReady();
    // A newcomer while running does not disturb the ring until it is prepared.
    const late = new Harness(options({ min: 1, max: 3 }));
    late.hello(1);
    late.timer('lastCall');
    late.allReady();
    late.record(late.m.handle({ type: 'hello', conn: 2, hello: hello(2) }));
    expect(late.m.state).toBe('running');
    late.send(2, { type: 'prepared', v });
    expect(late.m.state).toBe('regrouping');
  });

  it('places each host’s workers next to each other in the ring, in joining order otherwise, and keeps them so after a loss', () => {
    const h = new Harness(options({ min: 3, max: 5 }));
    const on = (conn: Conn, hostId: string): MessageOf<'hello'> => ({ ...hello(conn), hostId });
    [on(1, 'aaaaaaaaaaaaaaaa'), on(2, 'bbbbbbbbbbbbbbbb'), on(3, 'aaaaaaaaaaaaaaaa'), on(4, 'cccccccccccccccc'), on(5, 'bbbbbbbbbbbbbbbb')].forEach((m, i) => h.hello(i + 1, m));
    expect(h.m.ring.map((x) => x.workerId)).toEqual(['w1', 'w3', 'w2', 'w5', 'w4']);
    const assigns = h.assigns.get(h.m.generation)!.sort((a, b) => a.rank - b.rank);
    expect(assigns.map((a) => a.prevAddress)).toEqual(['ws://h4:1', 'ws://h1:1', 'ws://h3:1', 'ws://h2:1', 'ws://h5:1']);
    checkInvariants(h);
    h.allReady();
    h.record(h.m.handle({ type: 'disconnect', conn: 3 }));
    for (const conn of [1, 2, 4, 5]) h.record(h.m.handle({ type: 'alive', conn }));
    expect(h.m.ring.map((x) => x.workerId)).toEqual(['w1', 'w2', 'w5', 'w4']);
    checkInvariants(h);
  });

  it('forms at MAX at once, or at MIN after the last call; assigns ranks in joining order', () => {
    const h = new Harness(options());
    h.hello(1);
    expect(h.m.state).toBe('gathering');
    const e = h.hello(2);
    expect(e).toContainEqual({ type: 'arm', timer: 'lastCall', ms: 2000 });
    h.timer('lastCall');
    expect(h.m.state).toBe('forming');
    expect(h.assigns.get(1)!.map((a) => [a.rank, a.prevAddress])).toEqual([
      [0, 'ws://h2:1'],
      [1, 'ws://h1:1'],
    ]);
    const full = new Harness(options({ min: 2, max: 2 }));
    full.hello(1);
    full.hello(2);
    expect(full.m.state).toBe('forming');
  });

  it('the segment size a ring timed goes to the later rings (which then need not time it); a probe over shared memory leaves it', () => {
    const h = new Harness(options({ min: 2, max: 3 }));
    [1, 2, 3].forEach((c) => h.hello(c));
    h.allReady();
    const probe = { type: 'ringProbe', v, generation: 1, rank: 0, worldSize: 3, latencyMs: 2, busbwMBps: 100, probeBytes: 1 << 18, segmentBytes: 256 << 10 } as const;
    // A probe from another rank than 0 is refused, and teaches nothing.
    h.send(2, { ...probe, rank: 1, transport: 'tcp', tuning: [{ segmentBytes: 64 << 10, ms: 3 }] });
    h.send(1, { ...probe, transport: 'tcp', tuning: [{ segmentBytes: 64 << 10, ms: 3 }, { segmentBytes: 256 << 10, ms: 2 }] });
    h.record(h.m.handle({ type: 'disconnect', conn: 3 }));
    for (const conn of [1, 2]) h.record(h.m.handle({ type: 'alive', conn }));
    expect(h.assigns.get(1)!.map((a) => a.tunedSegment)).toEqual([undefined, undefined, undefined]);
    expect(h.assigns.get(2)!.map((a) => a.tunedSegment)).toEqual([
      { bytes: 256 << 10, transport: 'tcp' },
      { bytes: 256 << 10, transport: 'tcp' },
    ]);
    h.allReady();
    h.send(1, { ...probe, generation: 2, worldSize: 2, transport: 'shared memory', segmentBytes: 1 << 20 });
    h.hello(4);
    h.timer('join');
    for (const conn of [1, 2]) h.record(h.m.handle({ type: 'alive', conn }));
    const third = h.assigns.get(h.m.generation)!;
    expect(third.length).toBe(3);
    for (const a of third) expect(a.tunedSegment).toEqual({ bytes: 256 << 10, transport: 'tcp' });
  });

  it('a lost member: the survivors regroup at once when all answered, counted against the budget', () => {
    const h = new Harness(options({ min: 2, max: 3 }));
    [1, 2, 3].forEach((c) => h.hello(c));
    h.allReady();
    expect(h.m.state).toBe('running');
    h.record(h.m.handle({ type: 'disconnect', conn: 2 }));
    expect(h.m.state).toBe('regrouping');
    h.record(h.m.handle({ type: 'alive', conn: 1 }));
    expect(h.m.state).toBe('regrouping');
    const e = h.send(3, { type: 'aborted', v, generation: 1, rank: 2, step: 40, code: 'ERR_PEER_LOST', message: 'lost rank 1', peer: 1 });
    expect(h.m.state).toBe('forming');
    expect(h.m.restarts).toBe(1);
    expect(h.assigns.get(2)!.map((a) => [a.rank, a.worldSize])).toEqual([
      [0, 2],
      [1, 2],
    ]);
    const record = e.find((x) => x.type === 'generation');
    expect(record).toMatchObject({ record: { generation: 2, cause: 'fault', worldSize: 2, fault: { code: 'ERR_PEER_LOST', rank: 1, pid: 2 } } });
  });

  it('a ring of newcomers only (every holder lost at once) resumes from the newest checkpoint; one with a survivor shares its state', () => {
    const resume = { path: '/ck/ckpt-step-0000000040.safetensors', state: { globalStep: 40, epoch: 0, cursor: 5120, optimizerStep: 40, dropoutRng: [1, 2, 3, 4] } };
    const h = new Harness(options({ min: 2, max: 2 }));
    [1, 2].forEach((c) => h.hello(c));
    h.allReady();
    h.record(h.m.handle({ type: 'checkpointed', resume }));
    // A survivor and a newcomer: the survivor shares what it holds; no resume.
    h.record(h.m.handle({ type: 'disconnect', conn: 2 }));
    h.record(h.m.handle({ type: 'alive', conn: 1 }));
    h.hello(3);
    expect(h.m.state).toBe('forming');
    expect(h.assigns.get(2)!.map((a) => a.resume)).toEqual([undefined, undefined]);
    expect(h.effects.some((e) => e.type === 'stateLost')).toBe(false);
    // Then both at once: the two newcomers go on from the checkpoint, and the machine says so.
    h.allReady();
    h.record(h.m.handle({ type: 'disconnect', conn: 1 }));
    h.record(h.m.handle({ type: 'disconnect', conn: 3 }));
    [4, 5].forEach((c) => h.hello(c));
    expect(h.assigns.get(3)!.map((a) => a.resume)).toEqual([resume, resume]);
    expect(h.effects).toContainEqual({ type: 'stateLost', generation: 3, resume });
    // With no checkpoint, the same loss is said, with nothing to resume from.
    const bare = new Harness(options({ min: 1, max: 1 }));
    bare.hello(1);
    bare.allReady();
    bare.record(bare.m.handle({ type: 'disconnect', conn: 1 }));
    bare.hello(2);
    expect(bare.effects).toContainEqual({ type: 'stateLost', generation: 2, resume: null });
    expect(bare.assigns.get(2)![0].resume).toBeUndefined();
  });

  it('a member that does not answer the regroup is dropped at the quorum deadline', () => {
    const h = new Harness(options({ min: 2, max: 3 }));
    [1, 2, 3].forEach((c) => h.hello(c));
    h.allReady();
    const asked = h.send(1, { type: 'aborted', v, generation: 1, rank: 0, step: 7, code: 'ERR_PEER_LOST', message: 'rank 1 silent', peer: 1 });
    // The regroup's question names the member the fault is blamed on (the network side drops it sooner when it is silent there too).
    expect(asked.filter((x) => x.type === 'ping')).toEqual([{ type: 'ping', suspect: 2 }]);
    h.record(h.m.handle({ type: 'alive', conn: 3 }));
    expect(h.m.state).toBe('regrouping');
    h.timer('quorum');
    expect(h.closed.has(2)).toBe(true);
    expect(h.m.state).toBe('forming');
    expect(h.m.ring.map((x) => x.workerId)).toEqual(['w1', 'w3']);
  });

  it('a member lost during a regroup begun for a join makes it a fault, counted once', () => {
    const h = new Harness(options({ min: 1, max: 3 }));
    h.hello(1);
    h.hello(2);
    h.timer('lastCall');
    h.allReady();
    h.hello(3); // prepared while running: a join regroup
    expect(h.m.state).toBe('regrouping');
    h.record(h.m.handle({ type: 'alive', conn: 1 }));
    const e = h.timer('quorum'); // conn 2 never answered (hung)
    expect(h.closed.has(2)).toBe(true);
    expect(h.m.restarts).toBe(1);
    expect(e).toContainEqual(expect.objectContaining({ type: 'generation', record: expect.objectContaining({ cause: 'fault', worldSize: 2, fault: expect.objectContaining({ rank: 1, pid: 2 }) }) }));
  });

  it('below MIN it waits; a join resumes it; the rejoin deadline fails it', () => {
    const h = new Harness(options({ min: 2, max: 2 }));
    h.hello(1);
    h.hello(2);
    h.allReady();
    h.record(h.m.handle({ type: 'disconnect', conn: 2 }));
    h.record(h.m.handle({ type: 'alive', conn: 1 }));
    expect(h.m.state).toBe('waiting');
    h.hello(5);
    expect(h.m.state).toBe('forming');
    expect(h.m.ring.map((x) => x.workerId)).toEqual(['w1', 'w5']);
    h.allReady(30);
    h.record(h.m.handle({ type: 'disconnect', conn: 5 }));
    h.record(h.m.handle({ type: 'alive', conn: 1 }));
    expect(h.m.state).toBe('waiting');
    const end = h.timer('rejoin');
    expect(h.m.state).toBe('failed');
    expect(end).toContainEqual(expect.objectContaining({ type: 'state', state: 'failed', error: expect.objectContaining({ code: 'ERR_TOO_FEW_WORKERS' }) }));
  });

  it('paused below MIN with checkpoints configured, the surviving member is asked to save what it holds', () => {
    const checkpoint = { dir: '/tmp/x', everySteps: 0, atEpochEnd: true, keepLast: 3, keepBest: 1, metric: 'test_accuracy' as const, onError: 'stop' as const };
    const h = new Harness(options({ min: 2, max: 2, assign: { ...options().assign, checkpoint } }));
    h.hello(1);
    h.hello(2);
    h.allReady();
    h.record(h.m.handle({ type: 'disconnect', conn: 1 }));
    const e = h.record(h.m.handle({ type: 'alive', conn: 2 }));
    expect(h.m.state).toBe('waiting');
    expect(e).toContainEqual({ type: 'send', conn: 2, msg: { type: 'checkpointNow', v } });
    const saved = h.send(2, { type: 'saved', v, generation: 1, rank: 1, step: 40, path: '/tmp/x/ckpt', stallMs: 1, writeMs: 2 });
    expect(saved).toContainEqual(expect.objectContaining({ type: 'report' }));
  });

  it('joins and clean leaves are free; faults beyond --max-restarts fail the run naming the last', () => {
    const h = new Harness(options({ min: 1, max: 3, maxRestarts: 1 }));
    h.hello(1);
    h.hello(2);
    h.timer('lastCall');
    h.allReady();
    h.hello(3); // a join while running: regroup, not counted
    h.record(h.m.handle({ type: 'alive', conn: 1 }));
    h.record(h.m.handle({ type: 'alive', conn: 2 }));
    expect(h.m.state).toBe('forming');
    h.allReady(10);
    h.send(3, { type: 'leave', v, generation: h.m.generation, rank: 2, step: 20, reason: 'SIGTERM' });
    h.record(h.m.handle({ type: 'alive', conn: 1 }));
    h.record(h.m.handle({ type: 'alive', conn: 2 }));
    expect(h.m.restarts).toBe(0);
    h.allReady(20);
    h.record(h.m.handle({ type: 'disconnect', conn: 2 }));
    expect(h.m.restarts).toBe(1);
    h.record(h.m.handle({ type: 'alive', conn: 1 }));
    h.allReady(30);
    const end = h.record(h.m.handle({ type: 'disconnect', conn: 1 }));
    expect(h.m.state).toBe('failed');
    expect(end).toContainEqual(expect.objectContaining({ type: 'state', error: expect.objectContaining({ code: 'ERR_RESTART_BUDGET', message: expect.stringMatching(/more than --max-restarts 1.*rank 0 \(w1/) }) }));
  });

  it('a worker that cannot prepare the job is refused, and its cause is what the run fails with when no worker can join', () => {
    const h = new Harness(options({ min: 2, max: 2, joinTimeoutMs: 1000 }));
    h.hello(1);
    h.record(h.m.handle({ type: 'hello', conn: 2, hello: hello(2) }));
    const cause = 'dataset d has 48 samples, fewer than one global batch of 128';
    // One token holder cannot end the run by saying so: it is refused, and the run waits on.
    const e = h.send(2, { type: 'failed', v, code: 'ERR_SHAPE', message: cause });
    expect(e).toContainEqual({ type: 'unprepared', conn: 2, fault: { code: 'ERR_SHAPE', message: `w2 could not prepare the job: ${cause}`, workerId: 'w2', host: 'h', pid: 2 } });
    expect(h.m.state).toBe('gathering');
    // The rendezvous deadline names the cause.
    h.timer('join');
    expect(h.effects).toContainEqual(expect.objectContaining({ type: 'state', state: 'failed', error: expect.objectContaining({ code: 'ERR_RENDEZVOUS', message: `only 1 of 2 workers joined within 1000 ms; ERR_SHAPE: w2 could not prepare the job: ${cause}` }) }));
    // launch with no worker left fails at once, with the workers' own cause.
    const gone = new Harness(options({ min: 2, max: 2 }));
    gone.record(gone.m.handle({ type: 'hello', conn: 1, hello: hello(1) }));
    gone.send(1, { type: 'failed', v, code: 'ERR_SHAPE', message: cause });
    gone.record(gone.m.handle({ type: 'workersGone', why: 'worker pid 7 ended (exit code 1)' }));
    expect(gone.effects).toContainEqual(expect.objectContaining({ type: 'state', state: 'failed', error: expect.objectContaining({ code: 'ERR_SHAPE', message: `w1 could not prepare the job: ${cause}`, workerId: 'w1' }) }));
    // Without a reported cause, the launch's own account of how its workers ended.
    const crashed = new Harness(options({ min: 2, max: 2 }));
    crashed.record(crashed.m.handle({ type: 'workersGone', why: 'worker pid 7 ended (signal SIGSEGV)' }));
    expect(crashed.effects).toContainEqual(expect.objectContaining({ type: 'state', state: 'failed', error: { code: 'ERR_WORKERS_GONE', message: 'every worker ended and none is left to start: worker pid 7 ended (signal SIGSEGV)' } }));
  });

  it('refuses what is out of place, never throwing: a ready before the ring forms, a done from a stranger, a progress naming another rank', () => {
    const h = new Harness(options({ min: 2, max: 2 }));
    h.hello(1);
    // ready while gathering (no rank yet)
    let e = h.send(1, { type: 'ready', v, generation: 0, rank: 0, weightsHash: HASH, step: 0, backend: 'x', totalSteps: 1, parameters: 1 });
    expect(e).toContainEqual(expect.objectContaining({ type: 'refused', code: 'ERR_OUT_OF_PLACE' }));
    expect(h.m.state).toBe('gathering');
    h.hello(2);
    h.allReady();
    // done from a connection that never said hello
    e = h.send(99, { type: 'done', v, generation: 1, rank: 0, steps: 1, weightsHash: HASH, replicaChecks: 1 });
    expect(e).toEqual([expect.objectContaining({ type: 'refused', conn: 99 })]);
    // progress naming rank 9999, and naming the other rank
    for (const rank of [9999, 1]) {
      e = h.send(1, { type: 'progress', v, generation: 1, rank, epoch: 0, step: 10, loss: 1, samples: 64, correct: 1, steps: 1, dataMs: 0, computeMs: 0, allreduceMs: 0, optimizerMs: 0, lr: 0.1, skipped: 0 });
      expect(e).toEqual([expect.objectContaining({ type: 'refused', code: 'ERR_OUT_OF_PLACE' })]);
    }
    // checkpoints are rank 0's: a saved or saveFailed from rank 1 is refused (a forged one would end a stop early)
    e = h.send(2, { type: 'saved', v, generation: 1, rank: 1, step: 10, path: '/elsewhere/forged.safetensors', stallMs: 0, writeMs: 0 });
    expect(e).toEqual([expect.objectContaining({ type: 'refused', code: 'ERR_OUT_OF_PLACE', reason: expect.stringMatching(/saved from rank 1: only rank 0 writes checkpoints/) })]);
    e = h.send(2, { type: 'saveFailed', v, generation: 1, rank: 1, step: 10, message: 'disk full' });
    expect(e).toEqual([expect.objectContaining({ type: 'refused', code: 'ERR_OUT_OF_PLACE' })]);
    // a worker may not send coordinator messages
    e = h.send(1, { type: 'checkpointNow', v });
    expect(e).toEqual([expect.objectContaining({ type: 'refused' })]);
    expect(h.m.state).toBe('running');
    // a hello beyond MAX is rejected
    e = h.hello(3);
    expect(e).toContainEqual(expect.objectContaining({ type: 'send', conn: 3, msg: expect.objectContaining({ type: 'reject', code: 'ERR_FULL' }) }));
  });

  it('finishes only when every rank of the generation is done with the same weights', () => {
    const h = new Harness(options({ min: 2, max: 2 }));
    h.hello(1);
    h.hello(2);
    h.allReady();
    h.send(1, { type: 'done', v, generation: 1, rank: 0, steps: 100, weightsHash: HASH, replicaChecks: 3 });
    expect(h.m.state).toBe('running');
    h.send(2, { type: 'done', v, generation: 1, rank: 1, steps: 100, weightsHash: HASH, replicaChecks: 3 });
    expect(h.m.state).toBe('finished');
    const diverged = new Harness(options({ min: 2, max: 2 }));
    diverged.hello(1);
    diverged.hello(2);
    diverged.allReady();
    diverged.send(1, { type: 'done', v, generation: 1, rank: 0, steps: 100, weightsHash: HASH, replicaChecks: 3 });
    diverged.send(2, { type: 'done', v, generation: 1, rank: 1, steps: 100, weightsHash: 'cd'.repeat(16), replicaChecks: 3 });
    expect(diverged.m.state).toBe('failed');
  });

  it('a restarted coordinator re-adopts the run its workers hold; a worker of another run is refused', () => {
    const h = new Harness(options({ min: 2, max: 2 }));
    const held = (conn: Conn, runId: string, generation: number): MessageOf<'hello'> => ({ ...hello(conn), held: { runId, generation, step: 71, weightsHash: HASH } });
    const e = h.hello(1, held(1, 'old-run', 3));
    expect(e).toContainEqual({ type: 'adopted', runId: 'old-run', generation: 3, step: 71 });
    h.hello(2, held(2, 'old-run', 2));
    expect(h.m.runId).toBe('old-run');
    expect(h.assigns.get(4)!.map((a) => [a.runId, a.ringId])).toEqual([
      ['old-run', `old-run.${HASH}/c0ffee00.4`],
      ['old-run', `old-run.${HASH}/c0ffee00.4`],
    ]);
    const other = new Harness(options({ min: 1, max: 3 }));
    other.hello(1);
    other.timer('lastCall');
    const refused = other.hello(2, held(2, 'old-run', 3));
    expect(refused).toContainEqual(expect.objectContaining({ type: 'send', conn: 2, msg: expect.objectContaining({ type: 'reject', code: 'ERR_OTHER_RUN' }) }));
  });

  it('property: over random event sequences, never two live generations, a rank never assigned twice, never a throw', () => {
    const conn = fc.integer({ min: 1, max: 7 });
    const event = fc.oneof(
      conn.map((c) => ({ kind: 'hello' as const, c })),
      conn.map((c) => ({ kind: 'helloOnly' as const, c })),
      conn.map((c) => ({ kind: 'prepared' as const, c })),
      conn.map((c) => ({ kind: 'disconnect' as const, c })),
      conn.map((c) => ({ kind: 'silent' as const, c })),
      conn.map((c) => ({ kind: 'alive' as const, c })),
      fc.record({ kind: fc.constant('ready' as const), c: conn, good: fc.boolean() }),
      fc.record({ kind: fc.constant('done' as const), c: conn, good: fc.boolean() }),
      fc.record({ kind: fc.constant('aborted' as const), c: conn, peer: fc.integer({ min: 0, max: 6 }) }),
      fc.record({ kind: fc.constant('leave' as const), c: conn }),
      fc.record({ kind: fc.constant('progress' as const), c: conn, rank: fc.integer({ min: 0, max: 9999 }) }),
      fc.constantFrom<Timer>('join', 'lastCall', 'ready', 'quorum', 'rejoin').map((name) => ({ kind: 'timer' as const, name })),
    );
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 4 }), fc.array(event, { maxLength: 60 }), (min, extra, budget, events) => {
        const h = new Harness(options({ min, max: min + extra, maxRestarts: budget }));
        for (const ev of events) {
          const m = h.m.memberOf('c' in ev ? ev.c : -1);
          const gen = m?.generation ?? 0;
          const rank = m && m.rank >= 0 ? m.rank : 0;
          switch (ev.kind) {
            case 'hello':
              h.hello(ev.c);
              break;
            case 'helloOnly':
              h.record(h.m.handle({ type: 'hello', conn: ev.c, hello: hello(ev.c) }));
              break;
            case 'prepared':
              h.send(ev.c, { type: 'prepared', v });
              break;
            case 'disconnect':
            case 'silent':
            case 'alive':
              h.record(h.m.handle(ev.kind === 'silent' ? { type: 'silent', conn: ev.c, ms: 3000 } : { type: ev.kind, conn: ev.c }));
              break;
            case 'ready':
              h.send(ev.c, { type: 'ready', v, generation: ev.good ? gen : gen + 1, rank, weightsHash: HASH, step: 0, backend: 'wasm', totalSteps: 10, parameters: 1 });
              break;
            case 'done':
              h.send(ev.c, { type: 'done', v, generation: gen, rank, steps: 10, weightsHash: ev.good ? HASH : 'cd'.repeat(16), replicaChecks: 1 });
              break;
            case 'aborted':
              h.send(ev.c, { type: 'aborted', v, generation: gen, rank, step: 3, code: 'ERR_PEER_LOST', message: 'x', peer: ev.peer });
              break;
            case 'leave':
              h.send(ev.c, { type: 'leave', v, generation: gen, rank, step: 3, reason: 'x' });
              break;
            case 'progress':
              h.send(ev.c, { type: 'progress', v, generation: gen, rank: ev.rank, epoch: 0, step: 1, loss: 1, samples: 1, correct: 0, steps: 1, dataMs: 0, computeMs: 0, allreduceMs: 0, optimizerMs: 0, lr: 0.1, skipped: 0 });
              break;
            case 'timer':
              h.timer(ev.name);
              break;
          }
          checkInvariants(h);
          // A report reaches the run record only from the rank it names, in the current generation.
          for (const e of h.effects.splice(0)) {
            if (e.type !== 'report' || !('rank' in e.msg)) continue;
            expect(e.msg.rank).toBe(e.member.rank);
            expect(e.msg.generation).toBe(e.member.generation);
          }
        }
      }),
      { numRuns: 400 },
    );
  });
});
