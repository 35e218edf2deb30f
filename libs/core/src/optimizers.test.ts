import { describe, expect, it } from 'vitest';
import { ReferenceBackend } from './backends/reference-backend.js';
import { clipGradNorm, createOptimizer } from './optimizers.js';
import { ParameterStore } from './parameter-store.js';

/** A store with one weight [2] = (1, -2) and gradient (0.5, 0.25). */
function store(): ParameterStore {
  const s = new ParameterStore(new ReferenceBackend(), [{ name: 'w', shape: [2], role: 'weight' }]);
  s.values.set([1, -2]);
  s.grads.set([0.5, 0.25]);
  return s;
}

const f32 = Math.fround;

describe('optimizers against hand-computed steps', () => {
  it('plain SGD with L2 decay: p -= lr·(g + wd·p)', () => {
    const s = store();
    createOptimizer({ type: 'sgd', lr: 0.1, weightDecay: 0.01 }, s).step(0.1);
    expect(s.values[0]).toBe(f32(1 - 0.1 * (0.5 + 0.01 * 1)));
    expect(s.values[1]).toBe(f32(-2 - 0.1 * (0.25 + 0.01 * -2)));
  });

  it('momentum: v = μv + g; p -= lr·v, over two steps', () => {
    const s = store();
    const opt = createOptimizer({ type: 'sgd', lr: 0.1, momentum: 0.9 }, s);
    opt.step(0.1); // v = g = 0.5 → p = 0.95
    opt.step(0.1); // v = 0.9·0.5 + 0.5 = 0.95 → p = 0.95 − 0.095 = 0.855
    expect(s.values[0]).toBeCloseTo(0.855, 6);
    expect(opt.state.slots.momentum[0]).toBeCloseTo(0.95, 6);
    expect(opt.state.step).toBe(2);
  });

  it('Nesterov: p -= lr·(g + μ·v) with v = μv + g', () => {
    const s = store();
    const opt = createOptimizer({ type: 'sgd', lr: 0.1, momentum: 0.9, nesterov: true }, s);
    opt.step(0.1); // v = 0.5, update = 0.5 + 0.45 = 0.95 → p = 0.905
    expect(s.values[0]).toBeCloseTo(0.905, 6);
    opt.step(0.1); // v = 0.95, update = 0.5 + 0.855 = 1.355 → p = 0.7695
    expect(s.values[0]).toBeCloseTo(0.7695, 6);
  });

  it('Adam: the first step moves each weight by lr·sign(g) (bias correction), the second as computed by hand', () => {
    const s = store();
    const opt = createOptimizer({ type: 'adam', lr: 0.01 }, s);
    opt.step(0.01);
    expect(s.values[0]).toBeCloseTo(1 - 0.01, 6);
    expect(s.values[1]).toBeCloseTo(-2 - 0.01, 6);
    s.grads.set([0.1, 0.25]);
    opt.step(0.01);
    // m = 0.9·0.05 + 0.1·0.1 = 0.055; v = 0.999·0.00025 + 0.001·0.01 = 0.00025975
    // m̂ = 0.055/0.19; v̂ = 0.00025975/0.001999
    const mhat = 0.055 / (1 - 0.81);
    const vhat = 0.00025975 / (1 - 0.999 ** 2);
    expect(s.values[0]).toBeCloseTo(0.99 - (0.01 * mhat) / (Math.sqrt(vhat) + 1e-8), 6);
  });

  it('AdamW decays the weight apart from the gradient; Adam adds L2 to the gradient', () => {
    const a = store();
    createOptimizer({ type: 'adamw', lr: 0.1, weightDecay: 0.5 }, a).step(0.1);
    expect(a.values[0]).toBeCloseTo(1 * (1 - 0.1 * 0.5) - 0.1, 6);
    const b = store();
    createOptimizer({ type: 'adam', lr: 0.1, weightDecay: 0.5 }, b).step(0.1);
    // g' = 0.5 + 0.5·1 = 1 > 0: the first Adam step is still lr·sign(g').
    expect(b.values[0]).toBeCloseTo(0.9, 6);
  });

  it.each([
    ['adam', 0.5],
    ['adamw', 0.5],
    ['adam', 0],
    ['sgd', 0.5],
  ] as const)('%s (weight decay %s) over three steps equals a float64 transcription of torch.optim', (type, wd) => {
    const s = new ParameterStore(new ReferenceBackend(), [{ name: 'w', shape: [4], role: 'weight' }]);
    const w0 = [1, -2, 0.3, -0.05];
    // Gradients chosen so that L2 decay flips the sign of some (w = -2, g = 0.25: g + 0.5·w < 0).
    const grads = [[0.5, 0.25, -0.1, 0.02], [0.1, 0.25, 0.3, -0.2], [-0.4, 0.05, 0.01, 0.5]];
    s.values.set(w0);
    const config = type === 'sgd' ? { type, lr: 0.1, momentum: 0.9, weightDecay: wd } : { type, lr: 0.1, weightDecay: wd };
    const opt = createOptimizer(config, s);
    const w = [...w0];
    const m = [0, 0, 0, 0];
    const v = [0, 0, 0, 0];
    grads.forEach((g, step) => {
      s.grads.set(g);
      opt.step(0.1);
      const t = step + 1;
      for (let i = 0; i < 4; i++) {
        if (type === 'sgd') {
          const gi = g[i] + wd * w[i];
          m[i] = t === 1 ? gi : 0.9 * m[i] + gi;
          w[i] -= 0.1 * m[i];
          continue;
        }
        if (type === 'adamw') w[i] *= 1 - 0.1 * wd;
        const gi = type === 'adam' ? g[i] + wd * w[i] : g[i];
        m[i] = 0.9 * m[i] + 0.1 * gi;
        v[i] = 0.999 * v[i] + 0.001 * gi * gi;
        w[i] -= (0.1 * (m[i] / (1 - 0.9 ** t))) / (Math.sqrt(v[i] / (1 - 0.999 ** t)) + 1e-8);
      }
      for (let i = 0; i < 4; i++) expect(Math.abs(s.values[i] - w[i]), `element ${i} after step ${t}`).toBeLessThan(2e-6 * Math.max(1, Math.abs(w[i])));
    });
    if (type === 'adam' && wd > 0) expect(s.values[1]).toBeGreaterThan(-2); // decay turned the first step around
    expect(opt.state.step).toBe(3);
  });

  it('AdamW with decayOn "matrices" decays the 2-D tensors only, not norms or biases (nanoGPT\'s rule)', () => {
    const decls = [
      { name: 'w', shape: [1, 2], role: 'weight' as const },
      { name: 'gain', shape: [2], role: 'weight' as const },
      { name: 'b', shape: [2], role: 'bias' as const },
    ];
    const run = (decayOn: 'all' | 'matrices'): Float32Array => {
      const s = new ParameterStore(new ReferenceBackend(), decls);
      s.values.set([1, -2, 1, -2, 1, -2]);
      s.grads.set([0.5, 0.25, 0.5, 0.25, 0.5, 0.25]);
      createOptimizer({ type: 'adamw', lr: 0.1, weightDecay: 0.5, decayOn }, s).step(0.1);
      return s.values;
    };
    const [all, matrices] = [run('all'), run('matrices')];
    // The first step moves each weight by lr·sign(g); decay shrinks what it applies to by 1 − lr·wd.
    const decayed = [f32(f32(1 * 0.95) - 0.1), f32(f32(-2 * 0.95) - 0.1)];
    const plain = [f32(1 - 0.1), f32(-2 - 0.1)];
    const rounded = (v: ArrayLike<number>): number[] => Array.from(v, (x) => Number(x.toFixed(5)));
    expect(rounded(all)).toEqual(rounded([...decayed, ...decayed, ...decayed]));
    expect(Array.from(matrices.subarray(0, 2)).map((v) => Number(v.toFixed(5)))).toEqual(decayed.map((v) => Number(v.toFixed(5))));
    expect(Array.from(matrices.subarray(2)).map((v) => Number(v.toFixed(5)))).toEqual([...plain, ...plain].map((v) => Number(v.toFixed(5))));
    expect(Array.from(all.subarray(2, 4)).map((v) => Number(v.toFixed(5)))).toEqual(decayed.map((v) => Number(v.toFixed(5))));
  });

  it('AdamW decays by 0.01 unless told otherwise; Adam does not decay unless told', () => {
    const a = store();
    createOptimizer({ type: 'adamw', lr: 0.1 }, a).step(0.1);
    expect(a.values[0]).toBeCloseTo(1 * (1 - 0.1 * 0.01) - 0.1, 6);
    const b = store();
    createOptimizer({ type: 'adam', lr: 0.1 }, b).step(0.1);
    expect(b.values[0]).toBeCloseTo(0.9, 6);
  });

  it('validates hyperparameters with errors that name the value', () => {
    const s = store();
    expect(() => createOptimizer({ type: 'sgd', lr: -1 }, s)).toThrow(expect.objectContaining({ code: 'ERR_HYPERPARAM', message: expect.stringMatching(/^invalid optimizer: /) }));
    expect(() => createOptimizer({ type: 'sgd', lr: 0.1, nesterov: true }, s)).toThrow(expect.objectContaining({ code: 'ERR_HYPERPARAM', message: 'invalid optimizer: nesterov = true needs momentum > 0' }));
    expect(() => createOptimizer({ type: 'adam', lr: 0.1, beta1: 0.5, beta2: 0.5 }, s)).not.toThrow();
    expect(() => createOptimizer({ type: 'sgd', lr: -1 }, s)).toThrow(/lr = -1/);
    expect(() => createOptimizer({ type: 'sgd', lr: 0.1, momentum: 1.5 }, s)).toThrow(/momentum = 1.5/);
    expect(() => createOptimizer({ type: 'adam', lr: 0.1, beta2: 1 }, s)).toThrow(/beta2 = 1/);
    expect(() => createOptimizer({ type: 'rmsprop', lr: 0.1 }, s)).toThrow(/invalid optimizer/);
    expect(() => createOptimizer({ type: 'sgd', lr: 0.1, nesterov: true }, s)).toThrow(/nesterov = true needs momentum/);
    expect(() => createOptimizer({ type: 'sgd', lr: 0.1, mommentum: 0.9 }, s)).toThrow(/mommentum/);
  });
});

describe('clipGradNorm', () => {
  it('scales the gradients to the max norm and returns the norm before', () => {
    const g = Float32Array.from([3, 4]);
    expect(clipGradNorm(g, 1)).toBeCloseTo(5, 6);
    expect(g[0]).toBeCloseTo(0.6, 5);
    expect(g[1]).toBeCloseTo(0.8, 5);
    const small = Float32Array.from([0.3, 0.4]);
    clipGradNorm(small, 1);
    expect(Array.from(small)).toEqual([f32(0.3), f32(0.4)]);
  });

  it('scales by maxNorm / (norm + 1e-6) exactly, leaves a norm at the limit alone, and refuses a limit that is not positive', () => {
    const g = Float32Array.from([3, 4]);
    clipGradNorm(g, 1);
    // 1e-6 in the divisor moves the result by 2e-7: within float32 of 3/(5+1e-6), not of 3/5 exactly.
    expect(Math.abs(g[0] - 3 / (5 + 1e-6))).toBeLessThan(3e-8);
    expect(Math.abs(g[1] - 4 / (5 + 1e-6))).toBeLessThan(3e-8);
    const atLimit = Float32Array.from([0.6, 0.8]);
    const norm = Math.sqrt(Math.fround(0.6) ** 2 + Math.fround(0.8) ** 2);
    clipGradNorm(atLimit, norm);
    expect(Array.from(atLimit)).toEqual([Math.fround(0.6), Math.fround(0.8)]);
    for (const bad of [0, -1, Number.NaN]) expect(() => clipGradNorm(Float32Array.of(1), bad)).toThrow(expect.objectContaining({ code: 'ERR_HYPERPARAM', message: `clipGradNorm: maxNorm must be positive, got ${bad}` }));
  });

  it('throws ERR_NON_FINITE on NaN gradients instead of clipping them into the weights', () => {
    expect(() => clipGradNorm(Float32Array.from([1, NaN]), 1)).toThrow(expect.objectContaining({ code: 'ERR_NON_FINITE' }));
  });
});
