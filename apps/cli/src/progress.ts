import cliProgress from 'cli-progress';

/** A progress bar on a terminal; nothing when output is piped (the logs carry the figures there). */
export class Progress {
  private readonly bar: cliProgress.SingleBar | null;

  constructor(label: string) {
    this.bar = process.stderr.isTTY
      ? new cliProgress.SingleBar(
          { format: `${label} {bar} {percentage}% | epoch {epoch} | loss {loss} | {rate} samples/s`, stream: process.stderr, hideCursor: true, clearOnComplete: true },
          cliProgress.Presets.shades_classic,
        )
      : null;
  }

  private active = false;

  /** Shows `value` of `total`; the first update after `stop` starts a new bar. */
  update(value: number, total: number, fields: { epoch: string; loss: number; rate: number }): void {
    if (!this.bar) return;
    const payload = { epoch: fields.epoch, loss: fields.loss.toFixed(4), rate: Math.round(fields.rate) };
    if (!this.active) {
      this.bar.start(total, value, payload);
      this.active = true;
    } else {
      this.bar.update(value, payload);
    }
  }

  /** Clears the bar (before a log line, or at the end). */
  stop(): void {
    if (this.active) this.bar?.stop();
    this.active = false;
  }
}
