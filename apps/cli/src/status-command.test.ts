import type { StatusEvent } from '@ringtrain/protocol';
import { describe, expect, it } from 'vitest';
import { printable } from './logger.js';
import { StatusView, statusUrl } from './status-command.js';

describe('ringtrain status', () => {
  it('takes the coordinator address as people type it', () => {
    expect(statusUrl('ws://10.0.0.5:29500')).toBe('ws://10.0.0.5:29500/status');
    expect(statusUrl('http://10.0.0.5:29500/?token=x')).toBe('ws://10.0.0.5:29500/status');
    expect(statusUrl('https://train.example:443/')).toBe('wss://train.example/status');
    expect(statusUrl('127.0.0.1:29500')).toBe('ws://127.0.0.1:29500/status');
  });

  it('draws state, progress with ETA, loss, ranks with their step times, warnings, and the end', () => {
    const base = { v: 1 as const, time: 0 };
    const phases = { dataMs: 0.1, computeMs: 2, allreduceMs: 1, optimizerMs: 0.2 };
    const rank = (r: number, state: 'training' | 'slow') => ({ rank: r, workerId: `h:${r}`, host: 'h', pid: r, address: 'ws://x', state, step: 50, phases });
    const config = { model: 'MLP 784-128-10 (relu)', positions: 1, parameters: 101_770, optimizer: 'sgd', lr: 0.1, batchSize: 64, epochs: 2, dataset: 'mnist', configHash: 'abc' };
    const point = { step: 50, epoch: 0, totalSteps: 200, samples: 640, loss: 0.25, samplesPerSecond: 12345, lr: 0.1, phases, allreduceBusbw: 5e8, etaSeconds: 90, skippedSteps: 0, rankComputeMs: [2.1, 2.1] };
    const events: StatusEvent[] = [
      { ...base, seq: 1, type: 'snapshot', resync: false, runId: 'abcdef0123', state: 'running', generation: 1, workers: 2, worldSize: 2, config, startedAt: 0, ranks: [rank(0, 'training'), rank(1, 'training')], metrics: null, history: [], evaluations: [], checkpoints: [], warnings: [], health: null, error: null, access: 'read' },
      { ...base, seq: 2, type: 'metrics', metrics: point, ranks: [rank(0, 'training'), rank(1, 'slow')], computeSpread: { min: 2, median: 2, max: 6 } },
      { ...base, seq: 3, type: 'warning', warning: { code: 'WARN_RANK_SLOW', message: 'rank 1 (h:1) is slow', rank: 1 } },
    ];
    const view = new StatusView('none');
    for (const e of events) view.apply(e);
    const text = view.render();
    expect(text).toMatch(/running \(generation 1\) · 2\/2 workers/);
    expect(text).toMatch(/\[█{8}░{22}\] +25\.0% +step 50\/200 +epoch 1\/2 +ETA 1 min 30 s/);
    expect(text).toMatch(/loss 0\.2500 · 12,345 samples\/s · all-reduce 500 MB\/s busbw/);
    expect(text).toMatch(/\| 1 +\| h:1 +\| SLOW +\| 50 +\| 0\.10 ms \| 2\.00 ms \| 1\.00 ms +\| 0\.20 ms +\|/);
    expect(text).toMatch(/min 2\.00 ms, median 2\.00 ms, max 6\.00 ms/);
    expect(text).toMatch(/WARN_RANK_SLOW: rank 1 \(h:1\) is slow/);
    view.apply({ ...base, seq: 4, type: 'end', state: 'failed', error: { code: 'ERR_PEER_LOST', message: 'rank 1 lost' }, steps: 60, seconds: 3, samplesPerSecond: 1, testAccuracy: null });
    expect(view.render()).toMatch(/run failed: ERR_PEER_LOST: rank 1 lost$/);
  });

  it("prints a peer's control characters as visible escapes: a worker id or a warning cannot rewrite the terminal", () => {
    expect(printable('rank\u001b[2J\nfake line\tend\u0007')).toBe('rank\\x1b[2J\\x0afake line end\\x07');
    const base = { v: 1 as const, time: 0 };
    const config = { model: 'MLP 4-2', positions: 1, parameters: 10, optimizer: 'sgd', lr: 0.1, batchSize: 8, epochs: 1, dataset: 'synthetic', configHash: 'abc' };
    const evil = { rank: 0, workerId: 'w\u001b[31m\nFAKE', host: 'h', pid: 1, address: 'ws://x', state: 'training' as const, step: 0, phases: null };
    const view = new StatusView('none');
    view.apply({ ...base, seq: 1, type: 'snapshot', resync: false, runId: 'abcdef12', state: 'running', generation: 1, workers: 1, worldSize: 1, config, startedAt: 0, ranks: [evil], metrics: null, history: [], evaluations: [], checkpoints: [], warnings: [{ code: 'WARN_X', message: 'a\u001b]0;title\u0007b' }], health: null, error: null, generations: [], ring: null, access: 'read' });
    const out = view.render();
    expect(out).not.toMatch(/[\u0000-\u0008\u000b-\u001f\u007f]/);
    expect(out).toContain('w\\x1b[31m\\x0aFAKE');
    expect(out).toContain('a\\x1b]0;title\\x07b');
  });
});
