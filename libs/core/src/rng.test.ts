import { describe, expect, it } from 'vitest';
import { initialize, initializerVariance, type Initializer } from './initializers.js';
import { Rng } from './rng.js';

describe('Rng', () => {
  it('repeats for a seed, differs across seeds, and resumes exactly from a saved state', () => {
    const a = new Rng(42);
    const b = new Rng(42);
    const seqA = Array.from({ length: 5 }, () => a.nextU32());
    expect(Array.from({ length: 5 }, () => b.nextU32())).toEqual(seqA);
    expect(new Rng(43).nextU32()).not.toBe(seqA[0]);
    const saved = JSON.parse(JSON.stringify(a.state()));
    const next = [a.uniform(), a.normal(), a.int(7)];
    const resumed = Rng.fromState(saved);
    expect([resumed.uniform(), resumed.normal(), resumed.int(7)]).toEqual(next);
  });

  it('draws uniform in [0,1) with the right moments, and unbiased integers', () => {
    const rng = new Rng(1);
    const n = 200_000;
    let sum = 0;
    let sq = 0;
    const counts = new Array(6).fill(0);
    for (let i = 0; i < n; i++) {
      const u = rng.uniform();
      expect(u >= 0 && u < 1).toBe(true);
      sum += u;
      sq += u * u;
      counts[rng.int(6)]++;
    }
    expect(sum / n).toBeCloseTo(0.5, 2);
    expect(sq / n - (sum / n) ** 2).toBeCloseTo(1 / 12, 2);
    for (const c of counts) expect(Math.abs(c / n - 1 / 6)).toBeLessThan(0.005);
  });

  it('rejects an invalid saved state', () => {
    expect(() => Rng.fromState([1, 2, 3] as never)).toThrow(/four uint32 words/);
    expect(() => Rng.fromState([0, 0, 0, 0])).toThrow(/all-zero/);
  });
});

describe('initializers', () => {
  const kinds: Initializer[] = ['xavier_uniform', 'xavier_normal', 'he_uniform', 'he_normal'];
  it.each(kinds)('%s: sample variance within 3%% of the formula, mean near 0', (kind) => {
    const fanIn = 300;
    const fanOut = 100;
    const w = new Float32Array(fanIn * fanOut);
    initialize(w, kind, fanIn, fanOut, new Rng(7));
    const mean = w.reduce((s, v) => s + v, 0) / w.length;
    const variance = w.reduce((s, v) => s + (v - mean) ** 2, 0) / w.length;
    const expected = initializerVariance(kind, fanIn, fanOut);
    expect(Math.abs(variance / expected - 1)).toBeLessThan(0.03);
    expect(Math.abs(mean)).toBeLessThan(0.01 * Math.sqrt(expected) * 10);
    if (kind.endsWith('uniform')) {
      const bound = Math.sqrt(3 * expected);
      expect(w.every((v) => Math.abs(v) <= bound)).toBe(true);
    }
  });

  it('zeros fills zeros; a bad fan is refused', () => {
    const w = Float32Array.from([1, 2]);
    initialize(w, 'zeros', 1, 1, new Rng(0));
    expect(Array.from(w)).toEqual([0, 0]);
    expect(() => initialize(w, 'he_normal', 0, 3, new Rng(0))).toThrow(/fanIn and fanOut must be positive, got 0 and 3/);
  });

  it('fillNormal gives the values and leaves the state that a loop over normal() does, bit for bit', () => {
    for (const [seed, n, std] of [[1, 1, 1], [42, 1000, 0.05], [2 ** 40 + 7, 100_352, 0.0505]] as const) {
      const [a, b] = [new Rng(seed), new Rng(seed)];
      const want = new Float32Array(n);
      for (let i = 0; i < n; i++) want[i] = a.normal() * std;
      const got = new Float32Array(n);
      b.fillNormal(got, std);
      expect(Buffer.from(got.buffer).equals(Buffer.from(want.buffer))).toBe(true);
      expect(b.state()).toEqual(a.state());
      expect(b.nextU32()).toBe(a.nextU32());
    }
  });
});
