import { type MessageOf, PROTOCOL_VERSION } from '@ringtrain/protocol';
import { DEFAULT_JOB, parseJobConfig } from '@ringtrain/trainer';
import { describe, expect, it } from 'vitest';
import { networkAdvice, networkBound, SLOW_RING_MBPS } from './network-bound.js';
import { runningFeed } from './testing/running-feed.js';

const phases = (allreduceMs: number, computeMs = 1) => ({ dataMs: 0.1, computeMs, allreduceMs, optimizerMs: 0.2 });
const probe = (busbwMBps: number) => ({ generation: 1, worldSize: 2, latencyMs: 0.3, busbwMBps, probeBytes: 1 << 20, segmentBytes: 1 << 20, transport: 'tcp' as const });

describe('network-bound runs', () => {
  it('are those where every rank spends half its step or more in the all-reduce over a ring that measured itself slow', () => {
    const bound = networkBound([phases(10), phases(9)], probe(30));
    expect(bound?.allreduceMs).toBeCloseTo(9.5, 12);
    expect(bound?.stepMs).toBeCloseTo(9.5 + 1.3, 12);
    // A fast ring (one busy host measures 90–110 MB/s; 1 Gbit/s and up): there compression cuts little.
    expect(networkBound([phases(10), phases(9)], probe(SLOW_RING_MBPS))).toBeNull();
    // A straggler: the others wait for it in their all-reduce, but it does not.
    expect(networkBound([phases(10), phases(0.5, 12)], probe(50))).toBeNull();
    expect(networkBound([phases(10)], probe(50))).toBeNull();
    expect(networkBound([phases(10), phases(9)], null)).toBeNull();
  });

  it('the advice names what the job does not use yet', () => {
    const job = (over: object) => parseJobConfig({ ...DEFAULT_JOB, ...over });
    expect(networkAdvice(job({}))).toMatch(/^--gradient-compression fp16 halves .* int8 quarters them; on links of 100 Mbit\/s or less, DiLoCo/);
    expect(networkAdvice(job({ gradientCompression: 'fp16' }))).toMatch(/^--gradient-compression int8 sends half of what fp16 does; .*DiLoCo/);
    expect(networkAdvice(job({ gradientCompression: 'int8' }))).toMatch(/^on links of 100 Mbit\/s or less, DiLoCo/);
    expect(networkAdvice(job({ sync: { type: 'diloco', innerSteps: 8 } }))).toBe('more innerSteps all-reduce less often; --gradient-compression int8 sends a quarter of the bytes');
  });

  it('the status feed keeps the ring measurement and warns once, after every rank has a few reports', () => {
    const { feed, events } = runningFeed({ networkAdvice: 'try fp16' });
    feed.ringProbe(probe(30));
    expect(feed.snapshot('read').ring).toEqual(probe(30));
    expect(events.filter((e) => e.type === 'ring')).toHaveLength(1);
    const report = (rank: number, step: number): MessageOf<'progress'> => ({ type: 'progress', v: PROTOCOL_VERSION, generation: 1, rank, epoch: 0, step, steps: 10, loss: 1, samples: 80, correct: 40, dataMs: 1, computeMs: 10, allreduceMs: 100, optimizerMs: 2, lr: 0.1, skipped: 0 });
    const warnings = () => events.filter((e) => e.type === 'warning');
    for (const step of [10, 20]) for (const rank of [0, 1]) feed.progress(report(rank, step));
    expect(warnings()).toEqual([]); // two reports a rank are not yet a pattern
    for (const step of [30, 40, 50]) for (const rank of [0, 1]) feed.progress(report(rank, step));
    expect(warnings()).toHaveLength(1);
    const w = warnings()[0];
    expect(w.type === 'warning' && w.warning).toMatchObject({ code: 'WARN_NETWORK_BOUND', step: 30, message: 'the network bounds this run: the all-reduce takes 10.0 of each 11.3 ms step on every rank, over a ring that measured 30 MB/s (about 0.24 Gbit/s); try fp16' });
    feed.close();
  });
});
