import { Communicator, MemoryHub } from '@ringtrain/allreduce';
import { type MessageOf, PROTOCOL_VERSION } from '@ringtrain/protocol';
import { DEFAULT_JOB, parseJobConfig, Trainer } from '@ringtrain/trainer';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import type { ControlChannel } from './control-channel.js';
import { faultsFromEnv } from './faults.js';
import { flipLastBit, runReplicaLoop, verifyReplicas } from './replica-loop.js';

/** Three real replicas of the default job (identical by seed), joined by the in-memory ring. */
function replicas(): { trainers: Trainer[]; comms: Communicator[] } {
  const hub = new MemoryHub(3);
  const config = parseJobConfig(DEFAULT_JOB);
  return { trainers: [0, 1, 2].map(() => new Trainer(config)), comms: hub.transports.map((t) => new Communicator(t, { timeoutMs: 5000 })) };
}

describe('replica check', () => {
  it('passes identical replicas and returns their common hash', async () => {
    const { trainers, comms } = replicas();
    const hashes = await Promise.all(comms.map((c, r) => verifyReplicas(c, trainers[r], 'step 10')));
    expect(new Set(hashes).size).toBe(1);
    expect(hashes[0]).toBe(trainers[0].model.params.valuesHash());
  });

  it.each([0, 1, 2])('one bit of one weight on rank %i fails the check on every rank, naming that rank', async (bad) => {
    const { trainers, comms } = replicas();
    flipLastBit(trainers[bad].model.params.values);
    const results = await Promise.allSettled(comms.map((c, r) => verifyReplicas(c, trainers[r], 'step 20')));
    for (const res of results) {
      expect(res.status).toBe('rejected');
      const err = (res as PromiseRejectedResult).reason as { code: string; message: string };
      expect(err.code).toBe('ERR_REPLICA_DIVERGED');
      expect(err.message).toMatch(new RegExp(`^replicas differ at step 20: rank ${bad} has [0-9a-f]{16}…; ranks ${[0, 1, 2].filter((r) => r !== bad).join(', ')} [0-9a-f]{16}…$`));
    }
  });

  it('flipLastBit moves the last weight by one ulp and nothing else', () => {
    const v = Float32Array.of(1, 2, 3);
    flipLastBit(v);
    expect(v[0]).toBe(1);
    expect(v[1]).toBe(2);
    expect(v[2]).not.toBe(3);
    expect(Math.abs(v[2] - 3)).toBeLessThan(1e-6);
  });
});

describe('the replica loop and the event loop', () => {
  it('lets timers run at least every ~50 ms of steps, even when no collective ever waits (heartbeats must go out)', async () => {
    // Alone, no collective yields; through shared memory a rank whose peers arrived first is in the
    // same state. Progress reports far apart, so nothing else yields either.
    // Steps of tens of milliseconds, all within the first epoch (an epoch's evaluation yields).
    const model = { inputSize: 784, layers: [{ type: 'dense', units: 2048 }, { type: 'relu' }, { type: 'dense', units: 10 }], loss: 'softmax_cross_entropy' };
    const trainer = new Trainer(parseJobConfig({ ...DEFAULT_JOB, model, batchSize: 256 }));
    const comm = new Communicator(new MemoryHub(1).transports[0], { timeoutMs: 5000 });
    const assign = { type: 'assign', v: PROTOCOL_VERSION, generation: 1, rank: 0, worldSize: 1, progressEvery: 1_000_000, verifyEvery: 0, maxSteps: 0, healthEvery: 0 } as unknown as MessageOf<'assign'>;
    const channel = { send: () => {}, has: () => false, take: () => undefined, error: null } as unknown as ControlChannel;
    let last = performance.now();
    let longest = 0;
    const timer = setInterval(() => {
      longest = Math.max(longest, performance.now() - last);
      last = performance.now();
    }, 5);
    const started = performance.now();
    try {
      await runReplicaLoop({ assign, trainer, comm, channel, writer: null, faults: faultsFromEnv({}), log: pino({ level: 'silent' }), totalSteps: 20, leaving: () => false, evaluated: { evaluatedThrough: 0 }, bucketBytes: 0 });
    } finally {
      clearInterval(timer);
    }
    const took = performance.now() - started;
    expect(took, 'the steps must take long enough for the check to mean something').toBeGreaterThan(200);
    // Relative, so that a loaded machine cannot eat the margin: without the turns the timer waits for
    // the whole loop (543 of 560 ms measured); with them, for about 50 ms and a step.
    expect(longest).toBeLessThan(took / 2);
  }, 30_000);
});
