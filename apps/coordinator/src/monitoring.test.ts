import { type MessageOf, PROTOCOL_VERSION } from '@ringtrain/protocol';
import { describe, expect, it } from 'vitest';
import { HealthWatch } from './health-watch.js';
import { PrometheusMetrics } from './prometheus.js';
import { StatusFeed } from './status-feed.js';
import { StragglerDetector } from './stragglers.js';
import { runningFeed, TEST_CONFIG } from './testing/running-feed.js';

const config = TEST_CONFIG;

function progress(rank: number, step: number, computeMs: number, over: Partial<MessageOf<'progress'>> = {}): MessageOf<'progress'> {
  return { type: 'progress', v: PROTOCOL_VERSION, generation: 1, rank, epoch: 0, step, steps: 10, loss: 1, samples: 80, correct: 40, dataMs: 0, computeMs, allreduceMs: 5, optimizerMs: 1, lr: 0.1, skipped: 0, ...over };
}

describe('straggler detection', () => {
  it('flags a rank consistently above 1.5× the median after warm-up, and clears it when it recovers', () => {
    const d = new StragglerDetector(4, { window: 3, consecutive: 2 });
    const round = (slowMs: number) => {
      for (let r = 0; r < 4; r++) d.add(r, r === 2 ? slowMs : 10);
      return d.evaluate();
    };
    // Warm-up rounds never flag, however slow.
    expect([round(40), round(40), round(40)]).toEqual([[], [], []]);
    expect(round(40)).toEqual([]); // one slow round is not "consistently"
    expect(round(40)).toEqual([{ rank: 2, slow: true, ratio: 4 }]);
    expect(d.isSlow(2)).toBe(true);
    expect(d.spread()).toEqual({ min: 10, median: 10, max: 40 });
    round(10);
    round(10);
    round(10);
    const back = round(10);
    expect(back).toEqual([{ rank: 2, slow: false, ratio: 1 }]);
  });

  it('compares with the lower median (in a ring of two the faster rank is the reference) and ignores sub-threshold jitter', () => {
    const d = new StragglerDetector(2, { window: 1, consecutive: 1 });
    d.add(0, 10);
    d.add(1, 16);
    d.evaluate(); // warm-up
    d.add(0, 10);
    d.add(1, 16);
    expect(d.evaluate()).toEqual([{ rank: 1, slow: true, ratio: 1.6 }]);
    const tiny = new StragglerDetector(2, { window: 1, consecutive: 1 });
    for (let i = 0; i < 3; i++) {
      tiny.add(0, 0.2);
      tiny.add(1, 0.6); // 3× but only 0.4 ms per step
      expect(tiny.evaluate()).toEqual([]);
    }
  });
});

describe('health warnings', () => {
  const t = (name: string, gradNorm: number | null, updateRatio: number | null, role: 'weight' | 'bias' = 'weight') => ({ name, role, weightNorm: 1, gradNorm, updateRatio });

  it('names the layer whose gradients explode or vanish, once per episode', () => {
    const w = new HealthWatch();
    expect(w.check({ step: 10, tensors: [t('a.weight', 0.5, 1e-3), t('a.bias', 0.1, 1e-3, 'bias')] })).toEqual([]);
    const big = w.check({ step: 20, tensors: [t('a.weight', 5e3, 1e-3), t('b.weight', 1e-9, 1e-9)] });
    expect(big.map((x) => [x.code, x.tensor])).toEqual([
      ['WARN_GRADIENT_EXPLODING', 'a.weight'],
      ['WARN_GRADIENT_VANISHING', 'b.weight'],
    ]);
    expect(big[0].message).toMatch(/gradient of a\.weight is exploding: norm 5\.00e\+3 at step 20/);
    // Still the same: no new warning. Cleared, then back: warns again.
    expect(w.check({ step: 30, tensors: [t('a.weight', 6e3, 1e-3), t('b.weight', 1e-9, 1e-9)] })).toEqual([]);
    expect(w.check({ step: 40, tensors: [t('a.weight', 1, 1e-3), t('b.weight', 1, 1e-3)] })).toEqual([]);
    expect(w.check({ step: 50, tensors: [t('a.weight', 1, 0.5)] }).map((x) => x.message)).toEqual([expect.stringMatching(/a\.weight moved by 0\.500 of its norm .* learning rate is too high/)]);
    // NaN travels as null.
    expect(w.check({ step: 60, tensors: [t('c.bias', null, null, 'bias')] }).map((x) => x.code)).toEqual(['WARN_GRADIENT_EXPLODING']);
  });
});

describe('status feed', () => {
  it('merges the ranks of a step, coalesces steps into one point per interval, and keeps them for new clients', () => {
    const { feed, events } = runningFeed();
    for (const step of [10, 20, 30]) {
      feed.progress(progress(0, step, 2, { loss: 1 }));
      feed.progress(progress(1, step, 4, { loss: 3 }));
    }
    expect(events.filter((e) => e.type === 'metrics')).toEqual([]); // coalesced until the interval ends
    feed.evaluation({ epoch: 0, step: 30, trainLoss: 2, testLoss: 1.5, testAccuracy: 0.5, samples: 100 }); // flushes first
    const metrics = events.filter((e) => e.type === 'metrics');
    expect(metrics).toHaveLength(1);
    const m = metrics[0].type === 'metrics' ? metrics[0].metrics : null;
    expect(m).toMatchObject({ step: 30, totalSteps: 100, samples: 480, loss: 2, skippedSteps: 0 });
    expect(m!.phases.computeMs).toBeCloseTo(0.3); // (0.2 + 0.4) / 2 ms per step
    const spread = metrics[0].type === 'metrics' ? metrics[0].computeSpread : null;
    expect([spread!.min, spread!.median, spread!.max].map((x) => x.toFixed(6))).toEqual(['0.200000', '0.200000', '0.400000']);
    // busbw: 4000 bytes in 0.5 ms per step, ×2(N−1)/N = 1 at N = 2.
    expect(m!.allreduceBusbw).toBeCloseTo(4000 / 0.0005);
    expect(events.at(-1)).toMatchObject({ type: 'evaluation' });
    const snap = feed.snapshot('read');
    expect(snap).toMatchObject({ state: 'running', worldSize: 2, access: 'read', metrics: m, evaluations: [{ step: 30 }] });
    expect(snap.ranks.map((r) => [r.rank, r.workerId, r.state, r.step])).toEqual([
      [0, 'b', 'training', 30],
      [1, 'a', 'training', 30],
    ]);
    feed.close();
  });

  it('a round needs every rank once: one rank reporting a step again and again completes nothing', () => {
    const { feed, events } = runningFeed();
    for (let i = 0; i < 5; i++) feed.progress(progress(1, 9e15, 1));
    feed.progress(progress(0, 10, 2));
    feed.progress(progress(1, 10, 2));
    feed.evaluation({ epoch: 0, step: 10, trainLoss: 2, testLoss: 1.5, testAccuracy: 0.5, samples: 100 }); // flushes the point
    const points = events.flatMap((e) => (e.type === 'metrics' ? [e.metrics.step] : []));
    expect(points).toEqual([10]);
    feed.close();
  });

  it('thins the history instead of growing without bound', () => {
    const feed = new StatusFeed({ runId: 'r', workers: 1, config, intervalMs: 60_000, maxHistory: 10 });
    feed.workerJoined({ workerId: 'a', host: 'h', pid: 1, address: 'ws://a' });
    feed.ranksAssigned(['a']);
    feed.started(1000, 0, 10);
    for (let i = 1; i <= 50; i++) {
      feed.progress(progress(0, i * 10, 1));
      feed.evaluation({ epoch: i, step: i * 10, trainLoss: 1, testLoss: 1, testAccuracy: 1, samples: 1 }); // one point each
    }
    const h = feed.snapshot('read').history;
    expect(h.length).toBeLessThanOrEqual(10);
    expect(h[0].step).toBe(10); // the start of the run is kept
    expect(h.at(-1)!.step).toBe(500);
    feed.close();
  });
});

describe('Prometheus metrics', () => {
  it('counts steps and samples from the points, phases as histograms, states as gauges', async () => {
    const prom = new PrometheusMetrics();
    prom.started(0);
    const phases = { dataMs: 0.1, computeMs: 2, allreduceMs: 3, optimizerMs: 0.5 };
    const point = { step: 30, epoch: 0, totalSteps: 100, samples: 480, loss: 0.5, samplesPerSecond: 1000, lr: 0.1, phases, allreduceBusbw: 1e6, etaSeconds: 1, skippedSteps: 0, rankComputeMs: [2, 2] };
    prom.observe({ type: 'metrics', metrics: point, ranks: [], computeSpread: null });
    prom.observe({ type: 'metrics', metrics: { ...point, step: 40, samples: 160 }, ranks: [], computeSpread: null });
    prom.observe({ type: 'state', state: 'running', generation: 1, error: null });
    prom.observe({ type: 'checkpoint', ok: true, step: 40, checkpoint: { step: 40, path: 'x', stallMs: 10, writeMs: 200 } });
    const text = await prom.registry.metrics();
    expect(text).toMatch(/^ringtrain_steps_total 40$/m);
    expect(text).toMatch(/^ringtrain_samples_total 640$/m);
    expect(text).toMatch(/^ringtrain_step_phase_seconds_count\{phase="allreduce"\} 40$/m);
    expect(text).toMatch(/^ringtrain_run_state\{state="running"\} 1$/m);
    expect(text).toMatch(/^ringtrain_run_state\{state="gathering"\} 0$/m);
    expect(text).toMatch(/^ringtrain_checkpoints_total\{result="saved"\} 1$/m);
    expect(text).toMatch(/^ringtrain_checkpoint_write_seconds_sum 0\.2$/m);
  });

  it('a point that claims 9e15 steps is counted, not looped over: the event loop returns at once', async () => {
    const prom = new PrometheusMetrics();
    prom.started(0);
    const phases = { dataMs: 0.1, computeMs: 2, allreduceMs: 3, optimizerMs: 0.5 };
    const t0 = performance.now();
    prom.observe({ type: 'metrics', metrics: { step: 9e15, epoch: 0, totalSteps: 100, samples: 1, loss: 0.5, samplesPerSecond: 1, lr: 0.1, phases, allreduceBusbw: 1, etaSeconds: 1, skippedSteps: 0, rankComputeMs: [] }, ranks: [], computeSpread: null });
    expect(performance.now() - t0).toBeLessThan(1000);
    expect(await prom.registry.metrics()).toMatch(/^ringtrain_step_phase_seconds_count\{phase="compute"\} 10000$/m);
  });

  it('a run that starts again from an earlier step (every worker lost) does not crash the counters', async () => {
    const prom = new PrometheusMetrics();
    prom.started(0);
    const phases = { dataMs: 0.1, computeMs: 2, allreduceMs: 3, optimizerMs: 0.5 };
    const point = { step: 30, epoch: 0, totalSteps: 100, samples: 480, loss: 0.5, samplesPerSecond: 1000, lr: 0.1, phases, allreduceBusbw: 1e6, etaSeconds: 1, skippedSteps: 0, rankComputeMs: [2, 2] };
    prom.observe({ type: 'metrics', metrics: point, ranks: [], computeSpread: null });
    expect(() => prom.observe({ type: 'metrics', metrics: { ...point, step: 5, samples: 80 }, ranks: [], computeSpread: null })).not.toThrow();
    prom.observe({ type: 'metrics', metrics: { ...point, step: 12, samples: 112 }, ranks: [], computeSpread: null });
    const text = await prom.registry.metrics();
    expect(text).toMatch(/^ringtrain_steps_total 37$/m);
  });
});
