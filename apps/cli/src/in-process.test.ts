import { Coordinator } from '@ringtrain/coordinator';
import { DEFAULT_JOB, parseJobConfig } from '@ringtrain/trainer';
import { runWorker, type WorkerResult } from '@ringtrain/worker';
import pino from 'pino';
import { describe, expect, it } from 'vitest';

const log = pino({ level: 'silent' });

// The coordinator and its workers in one process, over real loopback sockets: a run and a
// membership change that can be stepped through in a debugger, with no process to attach to.
describe('coordinator and workers in one process', () => {
  it('3 workers train; one leaves at a step boundary; the others finish with identical weights', async () => {
    const config = parseJobConfig({ ...DEFAULT_JOB, epochs: 2 });
    const coordinator = new Coordinator({ config, workers: 3, minWorkers: 2, maxSteps: 60, token: 't', logger: log, lastCallMs: 200 });
    try {
      const address = await coordinator.listen();
      const run = coordinator.run();
      const leave = new AbortController();
      let reached = 0;
      coordinator.onProgress = (stats) => {
        reached = stats.step;
        if (stats.step >= 20) leave.abort();
      };
      const workers = [0, 1, 2].map((i) => runWorker({ coordinator: address, token: 't', logger: log, coordinatorTimeoutMs: 0, ...(i === 2 ? { leave: leave.signal } : {}) }));
      const results: WorkerResult[] = await Promise.all(workers);
      const stats = await run;
      expect(reached).toBeGreaterThanOrEqual(20);
      const left = results.filter((r) => r.left);
      const stayed = results.filter((r) => !r.left);
      expect(left).toHaveLength(1);
      expect(left[0].steps).toBeLessThan(60);
      expect(stayed.map((r) => r.steps)).toEqual([60, 60]);
      expect(stayed[0].weightsHash).toBe(stayed[1].weightsHash);
      expect(stats.weightsHash).toBe(stayed[0].weightsHash);
      expect(stats.step).toBe(60);
    } finally {
      await coordinator.close();
    }
  }, 60_000);
});
