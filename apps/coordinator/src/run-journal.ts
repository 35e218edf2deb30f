import { readFileSync } from 'node:fs';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { RUN_ID_PATTERN, type RunJournalFile, statusSchemas } from '@ringtrain/protocol';
import type { Logger } from 'pino';
import type { RunStats } from './run-stats.js';
import type { StatusFeed } from './status-feed.js';

export type Journal = RunJournalFile;

/** At most one write per this many ms, besides the ones asked for at once (evaluations, generations, the end). */
const THROTTLE_MS = 5000;

/**
 * Keeps a run's status history beside its checkpoints (`status-<run id>.json`, replaced
 * atomically), so that a coordinator restarted on the same job and checkpoint folder re-adopts the
 * run with its past: the charts, the evaluations, the membership changes and the epochs of the
 * final summary. Writing never blocks or fails the run: an error is logged once.
 */
export class RunJournal {
  private timer: NodeJS.Timeout | null = null;
  private writing: Promise<void> | null = null;
  private again = false;
  private failed = false;

  constructor(
    private readonly dir: string,
    private readonly take: () => Journal,
    private readonly log: Logger,
    /** Where a re-adopted run's past goes (see attach). */
    private readonly run: { feed: StatusFeed; stats: RunStats } | null = null,
  ) {}

  /**
   * The journal of a run whose status lives in `feed` and `stats`: written at each event that a
   * restarted coordinator could not rebuild (all but the frequent metrics, rank and health ones:
   * those are throttled).
   */
  static attach(dir: string, feed: StatusFeed, stats: RunStats, log: Logger): RunJournal {
    const orNull = (x: number): number | null => (Number.isFinite(x) ? x : null);
    const journal = new RunJournal(
      dir,
      () => ({
        format: 'ringtrain-run-journal-1',
        ...feed.past(),
        epochs: Array.from(stats.epochs, (e) => (e ? { trainLoss: orNull(e.trainLoss), testLoss: orNull(e.testLoss), testAccuracy: orNull(e.testAccuracy), testSamples: e.testSamples } : null)),
      }),
      log,
      { feed, stats },
    );
    feed.subscribe((event) => journal.save(event.type !== 'metrics' && event.type !== 'rank' && event.type !== 'health'));
    return journal;
  }

  /** A restarted coordinator re-adopts `runId`: the feed takes its id, and the run its past where this folder has it. */
  adopt(runId: string): void {
    if (!this.run) return;
    const past = RunJournal.load(this.dir, runId, this.log);
    this.run.feed.adoptRun(runId, past);
    if (!past) return;
    this.run.stats.restoreEpochs(past.epochs);
    this.log.info(`run ${runId}: its status history restored from ${RunJournal.pathOf(this.dir, runId)} (${past.history.length} points, ${past.evaluations.length} evaluations, ${past.generations.length} membership changes)`);
  }

  /** The journal's file; a run id that is not one (a UUID) never becomes part of a path. */
  static pathOf(dir: string, runId: string): string {
    if (!RUN_ID_PATTERN.test(runId)) throw new Error(`not a run id: ${JSON.stringify(runId.slice(0, 80))}`);
    return join(dir, `status-${runId}.json`);
  }

  /**
   * The journal of `runId` in `dir`, or null where there is none; a file that does not parse or
   * validate is reported (as a warning) and ignored, never fatal.
   */
  static load(dir: string, runId: string, log: Logger): Journal | null {
    const path = RunJournal.pathOf(dir, runId);
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') log.warn(`run journal ${path} not read: ${(err as Error).message}; the status history starts afresh`);
      return null;
    }
    try {
      const journal = statusSchemas().runJournalSchema.parse(JSON.parse(text));
      if (journal.runId !== runId) throw new Error(`it is run ${journal.runId}'s`);
      return journal;
    } catch (err) {
      log.warn(`run journal ${path} is not usable (${(err as Error).message.split('\n')[0].slice(0, 200)}); the status history starts afresh`);
      return null;
    }
  }

  /** Writes soon (throttled), or now. */
  save(now = false): void {
    if (now) {
      if (this.timer) clearTimeout(this.timer);
      this.timer = null;
      void this.write();
      return;
    }
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.write();
    }, THROTTLE_MS);
    this.timer.unref();
  }

  /** Waits for the writes in progress, after one last write (at the end of the run). */
  async flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.write();
  }

  private async write(): Promise<void> {
    if (this.writing) {
      // One write at a time; one more after it, with whatever is newest then.
      this.again = true;
      return this.writing;
    }
    const journal = this.take();
    const path = RunJournal.pathOf(this.dir, journal.runId);
    const tmp = `${path}.${process.pid}.tmp`;
    this.writing = mkdir(this.dir, { recursive: true })
      .then(() => writeFile(tmp, JSON.stringify(journal)))
      .then(() => rename(tmp, path))
      .catch((err: Error) => {
        if (!this.failed) this.log.warn(`run journal ${path} not written: ${err.message} (the run goes on; a restarted coordinator would start its status history afresh)`);
        this.failed = true;
      })
      .finally(() => {
        this.writing = null;
      });
    await this.writing;
    if (this.again) {
      this.again = false;
      await this.write();
    }
  }
}
