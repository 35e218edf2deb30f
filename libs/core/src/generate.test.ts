import { describe, expect, it } from 'vitest';
import type { Backend } from './backend.js';
import { loadNativeAddon, NativeBackend } from './backends/native-backend.js';
import { ReferenceBackend } from './backends/reference-backend.js';
import { WasmBackend } from './backends/wasm-backend.js';
import { generateTokens } from './generate.js';
import { Model } from './model.js';
import { Rng } from './rng.js';

const model = new Model({ type: 'gpt', vocab: 7, context: 5, layers: 1, heads: 2, dim: 8 }, new ReferenceBackend(), { seed: 3 });

/** The logits after `ids` (at most the context), computed here from one whole forward pass. */
function logitsAfter(m: Model, ids: number[]): Float32Array {
  const T = m.inputSize;
  const classes = m.outputSize / T;
  const x = m.backend.alloc(T);
  ids.forEach((id, t) => (x[t] = id));
  return Float32Array.from(m.forward(x, 1, false).subarray((ids.length - 1) * classes, ids.length * classes));
}

const argmax = (row: Float32Array): number => row.indexOf(Math.max(...row));

const backends: Backend[] = [new ReferenceBackend(), new WasmBackend({ memoryMb: 16 })];
if ('addon' in loadNativeAddon()) backends.push(new NativeBackend({ memoryMb: 16 }));

describe('generateTokens', () => {
  it.each(backends.map((b) => [b.name, b] as const))('%s: stepping one position at a time (the key/value cache) gives the logits of the whole forward pass at every position', (_name, backend) => {
    const gpt = new Model({ type: 'gpt', vocab: 11, context: 9, layers: 2, heads: 2, dim: 8, dropout: 0.1 }, backend, { seed: 5 });
    const ids = [3, 1, 4, 1, 5, 9, 2, 6, 5];
    for (const run of [0, 1]) {
      // A second run from position 0 overwrites the cache: nothing of the first leaks into it.
      const seq = run ? [...ids].reverse() : ids;
      seq.forEach((id, t) => {
        // A copy: the row is the model's, valid until its next call (the whole pass below).
        const stepped = Float32Array.from(gpt.step(id, t));
        const whole = logitsAfter(gpt, seq.slice(0, t + 1));
        for (let c = 0; c < whole.length; c++) expect(Math.abs(stepped[c] - whole[c]), `position ${t}, logit ${c}`).toBeLessThan(1e-5);
      });
    }
    expect(() => gpt.step(1, 9)).toThrow(/position 9 is outside the context 0\.\.8/);
  });

  it('greedy: each token is the arg-max after its window: the last T of the prompt, then sliding by half when full', () => {
    const T = 5;
    const prompt = [1, 2, 3, 4, 5, 6, 0];
    const out = generateTokens(model, prompt, { tokens: 12, temperature: 0, rng: new Rng(1) });
    expect(out).toHaveLength(12);
    const seq = [...prompt];
    let window = prompt.slice(-T);
    for (const id of out) {
      expect(id).toBe(argmax(logitsAfter(model, window)));
      seq.push(id);
      window = window.length === T ? seq.slice(-Math.ceil(T / 2)) : [...window, id];
    }
  });

  it('sampling: the same seed gives the same tokens, another seed (almost surely) others, all in the vocabulary; each is streamed as chosen', () => {
    const run = (seed: number, streamed?: number[]): number[] => generateTokens(model, [0], { tokens: 30, temperature: 1.5, rng: new Rng(seed), onToken: (t) => streamed?.push(t) });
    const streamed: number[] = [];
    expect(run(7, streamed)).toEqual(run(7));
    expect(streamed).toEqual(run(7));
    expect(run(7)).not.toEqual(run(8));
    for (const id of run(9)) expect(id >= 0 && id < 7).toBe(true);
  });

  it('top-k: only the k most likely tokens are drawn; k = 1 is greedy', () => {
    const greedy = generateTokens(model, [2], { tokens: 20, temperature: 0, rng: new Rng(1) });
    expect(generateTokens(model, [2], { tokens: 20, temperature: 5, topK: 1, rng: new Rng(4) })).toEqual(greedy);
    const seq = [2];
    const out = generateTokens(model, [2], { tokens: 4, temperature: 50, topK: 2, rng: new Rng(6) });
    for (const id of out) {
      const row = logitsAfter(model, seq.slice(-5));
      const top2 = [...row.keys()].sort((a, b) => row[b] - row[a]).slice(0, 2);
      expect(top2).toContain(id);
      seq.push(id);
    }
  });

  it('refuses an empty prompt, a model that is not a language model, and temperatures or top-k that mean nothing', () => {
    expect(() => generateTokens(model, [], { tokens: 1, temperature: 0, rng: new Rng(1) })).toThrow(/prompt is empty/);
    const mlp = new Model({ inputSize: 4, layers: [{ type: 'dense', units: 3 }], loss: 'softmax_cross_entropy' }, new ReferenceBackend(), { seed: 1 });
    expect(() => generateTokens(mlp, [1], { tokens: 1, temperature: 0, rng: new Rng(1) })).toThrow(/not a language model/);
    for (const temperature of [-1, Number.NaN, 101]) expect(() => generateTokens(model, [1], { tokens: 1, temperature, rng: new Rng(1) })).toThrow(/temperature must be in 0\.\.100/);
    expect(() => generateTokens(model, [1], { tokens: 1, temperature: 1, topK: 0, rng: new Rng(1) })).toThrow(/top-k must be a positive integer/);
  });
});
