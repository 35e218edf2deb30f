// Helpers of the gradient checks (tests only): float64 central differences and seeded inputs.
import type { Rng } from '../rng.js';

const H = 1e-6;

/** n values uniform in [−scale, scale). */
export function random(n: number, rng: Rng, scale = 1): Float32Array {
  return Float32Array.from({ length: n }, () => (rng.uniform() * 2 - 1) * scale);
}

/** d/dθ of f at θ by central differences, in float64. */
export function numericGrad(theta: Float64Array, f: (t: Float64Array) => number): Float64Array {
  const g = new Float64Array(theta.length);
  for (let i = 0; i < theta.length; i++) {
    const keep = theta[i];
    theta[i] = keep + H;
    const up = f(theta);
    theta[i] = keep - H;
    const down = f(theta);
    theta[i] = keep;
    g[i] = (up - down) / (2 * H);
  }
  return g;
}

/** L = Σ r_i·y_i for a fixed r, so that dL/dy = r: the loss of the layer checks. */
export function linearProbe(r: ArrayLike<number>): (y: ArrayLike<number>) => number {
  return (y) => {
    let s = 0;
    for (let i = 0; i < r.length; i++) s += r[i] * y[i];
    return s;
  };
}
