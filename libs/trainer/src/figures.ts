// How a run's figures read to people. No imports: the command line's status view loads this
// without the engine (`@ringtrain/trainer/figures`).

/** A language model's validation loss as people read it: nats per token, bits per character, perplexity. */
export function describeLanguageModelLoss(loss: number): string {
  return `val loss ${loss.toFixed(4)} (${(loss / Math.LN2).toFixed(3)} bits/char, perplexity ${Math.exp(loss).toFixed(2)})`;
}
