import { describe, expect, it } from 'vitest';
import { ReferenceBackend } from './backends/reference-backend.js';
import { generateTokens } from './generate.js';
import { Model } from './model.js';
import { Rng } from './rng.js';

const model = new Model({ type: 'gpt', vocab: 7, context: 5, layers: 1, heads: 2, dim: 8 }, new ReferenceBackend(), { seed: 3 });

/** The most likely next token after `ids` (at most the context), computed here from one forward pass. */
function argmaxAfter(ids: number[]): number {
  const x = new Float32Array(5);
  ids.forEach((id, t) => (x[t] = id));
  const row = model.forward(x, 1, false).subarray((ids.length - 1) * 7, ids.length * 7);
  return row.indexOf(Math.max(...row));
}

describe('generateTokens', () => {
  it('greedy: each token is the arg-max at the last position of the window of the last T tokens', () => {
    const prompt = [1, 2];
    const out = generateTokens(model, prompt, { tokens: 6, temperature: 0, rng: new Rng(1) });
    expect(out).toHaveLength(6);
    const seq = [...prompt];
    for (const id of out) {
      expect(id).toBe(argmaxAfter(seq.slice(-5)));
      seq.push(id);
    }
  });

  it('sampling: the same seed gives the same tokens, another seed (almost surely) others, all in the vocabulary', () => {
    const run = (seed: number): number[] => generateTokens(model, [0], { tokens: 30, temperature: 1.5, rng: new Rng(seed) });
    expect(run(7)).toEqual(run(7));
    expect(run(7)).not.toEqual(run(8));
    for (const id of run(9)) expect(id >= 0 && id < 7).toBe(true);
  });

  it('refuses an empty prompt and a model that is not a language model', () => {
    expect(() => generateTokens(model, [], { tokens: 1, temperature: 0, rng: new Rng(1) })).toThrow(/prompt is empty/);
    const mlp = new Model({ inputSize: 4, layers: [{ type: 'dense', units: 3 }], loss: 'softmax_cross_entropy' }, new ReferenceBackend(), { seed: 1 });
    expect(() => generateTokens(mlp, [1], { tokens: 1, temperature: 0, rng: new Rng(1) })).toThrow(/not a language model/);
  });
});
