import { CoreError } from './errors.js';
import type { Model } from './model.js';
import type { Rng } from './rng.js';

export interface GenerateOptions {
  /** Tokens to add after the prompt. */
  tokens: number;
  /** 0: the most likely token each time (greedy); else sample from softmax(logits / temperature). */
  temperature: number;
  /** Draws the samples (a seeded stream: the same seed gives the same text). */
  rng: Rng;
}

/**
 * Continues `prompt` (token ids) with a sequence model: each new token is predicted at the last
 * position of a window of the model's context, holding the prompt's and the generated tokens'
 * last T (a window not yet full is padded after its end, which a causal model never reads).
 */
export function generateTokens(model: Model, prompt: readonly number[], options: GenerateOptions): number[] {
  const T = model.inputSize;
  const classes = model.outputSize / model.positions;
  if (model.positions !== T || model.positions < 2) throw new CoreError('ERR_SPEC', 'generate: the model is not a language model (its output is not one prediction per input token)');
  if (prompt.length === 0) throw new CoreError('ERR_SHAPE', 'generate: the prompt is empty');
  const out = [...prompt];
  const window = model.backend.alloc(T);
  const p = new Float64Array(classes);
  for (let n = 0; n < options.tokens; n++) {
    const start = Math.max(0, out.length - T);
    const len = out.length - start;
    window.fill(0);
    for (let t = 0; t < len; t++) window[t] = out[start + t];
    const logits = model.forward(window, 1, false).subarray((len - 1) * classes, len * classes);
    let next = 0;
    if (options.temperature <= 0) {
      for (let c = 1; c < classes; c++) if (logits[c] > logits[next]) next = c;
    } else {
      let max = -Infinity;
      for (let c = 0; c < classes; c++) max = Math.max(max, logits[c]);
      let sum = 0;
      for (let c = 0; c < classes; c++) sum += p[c] = Math.exp((logits[c] - max) / options.temperature);
      let u = options.rng.uniform() * sum;
      next = classes - 1;
      for (let c = 0; c < classes; c++) if ((u -= p[c]) < 0) {
        next = c;
        break;
      }
    }
    out.push(next);
  }
  model.backend.free(window);
  return out.slice(prompt.length);
}
