// How a run's figures read to people. No imports: the command line's status view loads this
// without the engine (`@ringtrain/trainer/figures`).

/**
 * Bits per character from a loss in nats per token. A character model's token is a character; a
 * BPE token stands for `charsPerToken` characters on average (measured on the validation text),
 * so that the figure compares across tokenizers.
 */
export function bitsPerCharacter(loss: number, charsPerToken = 1): number {
  return loss / Math.LN2 / charsPerToken;
}

/** A language model's validation loss as people read it: nats per token, bits per character, perplexity (per token). */
export function describeLanguageModelLoss(loss: number, charsPerToken = 1): string {
  return `val loss ${loss.toFixed(4)} (${bitsPerCharacter(loss, charsPerToken).toFixed(3)} bits/char, perplexity ${Math.exp(loss).toFixed(2)})`;
}

/** Characters per token of a job's text: a BPE's as measured when the job was fitted, else 1. */
export function charsPerTokenOf(dataset: unknown): number {
  const tokenizer = (dataset as { tokenizer?: { type?: string; charsPerToken?: number } } | undefined)?.tokenizer;
  return tokenizer?.type === 'bpe' && typeof tokenizer.charsPerToken === 'number' && tokenizer.charsPerToken > 0 ? tokenizer.charsPerToken : 1;
}
