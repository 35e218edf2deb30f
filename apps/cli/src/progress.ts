import cliProgress from 'cli-progress';
import { setTerminalWriter } from './logger.js';

/**
 * A progress bar on a terminal; nothing when output is piped (the logs carry the figures there).
 * While it is shown, log lines are written above it and stay; the bar is drawn again below them.
 */
export class Progress {
  private readonly bar: cliProgress.SingleBar | null;

  constructor(label: string) {
    this.bar = process.stderr.isTTY
      ? new cliProgress.SingleBar(
          { format: `${label} {bar} {percentage}% | epoch {epoch} | loss {loss} | {rate} samples/s`, stream: process.stderr, hideCursor: true, clearOnComplete: true, forceRedraw: true },
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
      setTerminalWriter((line) => this.above(line));
    } else {
      this.bar.update(value, payload);
    }
  }

  /** Clears the bar (at an epoch's end, or at the end). */
  stop(): void {
    if (this.active) {
      this.bar?.stop();
      setTerminalWriter(null);
    }
    this.active = false;
  }

  /** A log line over the bar's line (cleared first), then the bar again below it. */
  private above(line: string): void {
    process.stderr.write(`\r\x1b[2K${line}`);
    this.bar?.render();
  }
}
