import { Communicator, MemoryHub } from '@ringtrain/allreduce';
import { DEFAULT_JOB, parseJobConfig, Trainer } from '@ringtrain/trainer';
import { describe, expect, it } from 'vitest';
import { flipLastBit, verifyReplicas } from './replica-loop.js';

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
