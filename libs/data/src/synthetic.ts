import type { Dataset } from './dataset.js';
import { DataError } from './errors.js';

/** A small seeded generator for test data (mulberry32: one word of state is enough here). */
function generator(seed: number): { uniform: () => number; normal: () => number } {
  let a = seed >>> 0;
  const uniform = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const normal = (): number => Math.sqrt(-2 * Math.log(1 - uniform())) * Math.cos(2 * Math.PI * uniform());
  return { uniform, normal };
}

function check(samples: number, what: string): void {
  if (!Number.isInteger(samples) || samples < 1) throw new DataError('ERR_DATA_CONFIG', `${what}: samples must be a positive integer, got ${samples}`);
}

/** Gaussian blobs: `classes` random centres in `features` dimensions, noise `spread`. */
export function gaussianBlobs(opts: { samples: number; features: number; classes: number; spread?: number; seed?: number }): Dataset {
  check(opts.samples, 'gaussianBlobs');
  const g = generator(opts.seed ?? 0);
  const centres = Array.from({ length: opts.classes * opts.features }, () => g.normal() * 3);
  const x = new Float32Array(opts.samples * opts.features);
  const labels = new Int32Array(opts.samples);
  for (let i = 0; i < opts.samples; i++) {
    const c = (labels[i] = Math.floor(g.uniform() * opts.classes));
    for (let f = 0; f < opts.features; f++) x[i * opts.features + f] = centres[c * opts.features + f] + g.normal() * (opts.spread ?? 1);
  }
  return { name: 'synthetic:blobs', size: opts.samples, features: opts.features, x, labels, classes: opts.classes, targetSize: 0 };
}

/** Interleaved 2-D spirals, one arm per class: not linearly separable, a test that hidden layers learn. */
export function spirals(opts: { samples: number; classes?: number; noise?: number; seed?: number }): Dataset {
  check(opts.samples, 'spirals');
  const classes = opts.classes ?? 3;
  const g = generator(opts.seed ?? 0);
  const x = new Float32Array(opts.samples * 2);
  const labels = new Int32Array(opts.samples);
  for (let i = 0; i < opts.samples; i++) {
    const c = (labels[i] = i % classes);
    const r = g.uniform();
    const theta = (c * 2 * Math.PI) / classes + r * 4 + g.normal() * (opts.noise ?? 0.1);
    x[2 * i] = r * Math.cos(theta);
    x[2 * i + 1] = r * Math.sin(theta);
  }
  return { name: 'synthetic:spirals', size: opts.samples, features: 2, x, labels, classes, targetSize: 0 };
}

/** y = w·x + b + noise with a fixed random w: a regression set with a known answer. */
export function linearRegression(opts: { samples: number; features: number; noise?: number; seed?: number }): Dataset & { weights: Float32Array; bias: number } {
  check(opts.samples, 'linearRegression');
  const g = generator(opts.seed ?? 0);
  const weights = Float32Array.from({ length: opts.features }, () => g.normal());
  const bias = g.normal();
  const x = new Float32Array(opts.samples * opts.features);
  const targets = new Float32Array(opts.samples);
  for (let i = 0; i < opts.samples; i++) {
    let y = bias;
    for (let f = 0; f < opts.features; f++) {
      const v = (x[i * opts.features + f] = g.normal());
      y += weights[f] * v;
    }
    targets[i] = y + g.normal() * (opts.noise ?? 0.01);
  }
  return { name: 'synthetic:linear', size: opts.samples, features: opts.features, x, classes: 0, targets, targetSize: 1, weights, bias };
}
