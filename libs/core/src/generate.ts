import { CoreError } from './errors.js';
import type { Model } from './model.js';
import type { Rng } from './rng.js';

export interface GenerateOptions {
  /** Tokens to add after the prompt. */
  tokens: number;
  /** 0: the most likely token each time (greedy); else sample from softmax(logits / temperature). */
  temperature: number;
  /** Sample among the k most likely tokens only (default: all). */
  topK?: number;
  /** Draws the samples (a seeded stream: the same seed gives the same text). */
  rng: Rng;
  /** Each new token as it is chosen (to stream it). */
  onToken?: (token: number) => void;
}

/** The most a temperature may be: past it every token is as likely as any other. */
export const MAX_TEMPERATURE = 100;

/**
 * Continues `prompt` (token ids) with a language model, one position at a time through its
 * key/value cache (`Model.step`): each new token costs one position, not the whole context. The
 * model sees at most its context T of tokens, by position: a prompt longer than T is cropped to
 * its last T, and when the window is full it slides by half (the last T/2 tokens are stepped again
 * from position 0, then each token costs one position again).
 */
export function generateTokens(model: Model, prompt: readonly number[], options: GenerateOptions): number[] {
  const T = model.inputSize;
  const classes = model.outputSize / model.positions;
  if (model.positions !== T || model.positions < 2) throw new CoreError('ERR_SPEC', 'generate: the model is not a language model (its output is not one prediction per input token)');
  if (prompt.length === 0) throw new CoreError('ERR_SHAPE', 'generate: the prompt is empty');
  if (!(options.temperature >= 0 && options.temperature <= MAX_TEMPERATURE)) throw new CoreError('ERR_HYPERPARAM', `generate: temperature must be in 0..${MAX_TEMPERATURE}, got ${options.temperature}`);
  const topK = options.topK ?? classes;
  if (!(Number.isInteger(topK) && topK >= 1)) throw new CoreError('ERR_HYPERPARAM', `generate: top-k must be a positive integer, got ${topK}`);
  const out = [...prompt];
  let position = 0;
  let logits: Float32Array = new Float32Array(0);
  /** Steps `tokens` from position 0: the window starts again. */
  const refill = (tokens: readonly number[]): void => {
    position = 0;
    for (const t of tokens) logits = model.step(t, position++);
  };
  refill(out.slice(-T));
  const p = new Float64Array(classes);
  const order = Array.from({ length: classes }, (_, c) => c);
  for (let n = 0; n < options.tokens; n++) {
    const next = options.temperature <= 0 ? argmax(logits) : sample(logits, options.temperature, Math.min(topK, classes), options.rng, p, order);
    out.push(next);
    options.onToken?.(next);
    if (n + 1 === options.tokens) break;
    if (position === T) refill(out.slice(-Math.ceil(T / 2)));
    else logits = model.step(next, position++);
  }
  return out.slice(prompt.length);
}

function argmax(x: Float32Array): number {
  let best = 0;
  for (let c = 1; c < x.length; c++) if (x[c] > x[best]) best = c;
  return best;
}

/** A draw from softmax(logits / temperature) over the k most likely tokens (ties: the lower id first). */
function sample(logits: Float32Array, temperature: number, k: number, rng: Rng, p: Float64Array, order: number[]): number {
  const classes = logits.length;
  let allowed = order;
  if (k < classes) {
    allowed = [...order].sort((a, b) => logits[b] - logits[a] || a - b).slice(0, k);
    allowed.sort((a, b) => a - b);
  }
  let max = -Infinity;
  for (const c of allowed) max = Math.max(max, logits[c]);
  let sum = 0;
  for (const c of allowed) sum += p[c] = Math.exp((logits[c] - max) / temperature);
  let u = rng.uniform() * sum;
  for (const c of allowed) if ((u -= p[c]) < 0) return c;
  return allowed[allowed.length - 1];
}
