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

  start(total: number): void {
    this.bar?.start(total, 0, { epoch: '-', loss: '-', rate: '-' });
  }

  update(value: number, fields: { epoch: string; loss: number; rate: number }): void {
    this.bar?.update(value, { epoch: fields.epoch, loss: fields.loss.toFixed(4), rate: Math.round(fields.rate) });
  }

  stop(): void {
    this.bar?.stop();
  }
}
