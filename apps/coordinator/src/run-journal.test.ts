import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { type Journal, RunJournal } from './run-journal.js';

const [RUN_A, RUN_B] = ['aaaaaaaa-0000-4000-8000-000000000001', 'bbbbbbbb-0000-4000-8000-000000000002'];

const journal = (runId: string): Journal => ({
  format: 'ringtrain-run-journal-1',
  runId,
  startedAt: 1_700_000_000_000,
  history: [],
  evaluations: [{ epoch: 0, step: 62, trainLoss: null, testLoss: 0.3, testAccuracy: 0.9, samples: 2000 }],
  checkpoints: [{ step: 62, path: '/x/ckpt-62', stallMs: 1, writeMs: 2 }],
  warnings: [],
  generations: [],
  epochs: [{ trainLoss: null, testLoss: 0.3, testAccuracy: 0.9, testSamples: 2000 }, null],
});

/** A logger whose warnings the test reads. */
function capture(): { log: pino.Logger; warnings: string[] } {
  const warnings: string[] = [];
  const log = pino({ level: 'warn' }, { write: (line: string) => warnings.push(JSON.parse(line).msg) });
  return { log, warnings };
}

describe('run journal', () => {
  it('writes the history beside the checkpoints and reads it back for the same run only', async () => {
    const dir = join(mkdtempSync(join(tmpdir(), 'ringtrain-journal-')), 'made-on-first-write');
    const { log, warnings } = capture();
    const j = new RunJournal(dir, () => journal(RUN_A), log);
    j.save();
    j.save(true);
    await j.flush();
    expect(RunJournal.load(dir, RUN_A, log)).toEqual(journal(RUN_A));
    expect(RunJournal.load(dir, RUN_B, log)).toBeNull(); // none for another run
    expect(warnings).toEqual([]);
  });

  it('a corrupt, foreign or truncated journal is reported and ignored, never fatal', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ringtrain-journal-'));
    const { log, warnings } = capture();
    const path = RunJournal.pathOf(dir, RUN_A);
    writeFileSync(path, '{"format":"ringtrain-run-journal-1","runId":');
    expect(RunJournal.load(dir, RUN_A, log)).toBeNull();
    writeFileSync(path, JSON.stringify({ ...journal(RUN_A), history: 'lots' }));
    expect(RunJournal.load(dir, RUN_A, log)).toBeNull();
    writeFileSync(path, JSON.stringify(journal(RUN_B)));
    expect(RunJournal.load(dir, RUN_A, log)).toBeNull();
    expect(warnings).toHaveLength(3);
    for (const w of warnings) expect(w).toMatch(/status-aaaaaaaa-0000-4000-8000-000000000001\.json is not usable .*; the status history starts afresh/);
    expect(warnings[2]).toMatch(/it is run bbbbbbbb-0000-4000-8000-000000000002's/);
  });

  it('never makes a path of what is not a run id', () => {
    for (const bad of ['/../../outside/evil', '../status', 'run-a', '']) expect(() => RunJournal.pathOf('/tmp/ckpts', bad), bad).toThrow(/not a run id/);
    expect(RunJournal.pathOf('/tmp/ckpts', RUN_A)).toBe(`/tmp/ckpts/status-${RUN_A}.json`);
  });

  it('a folder it cannot write to is logged once; the run goes on', async () => {
    const { log, warnings } = capture();
    const j = new RunJournal('/proc/version/nope', () => journal(RUN_A), log);
    j.save(true);
    j.save(true);
    await j.flush();
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/run journal \/proc\/version\/nope\/status-aaaaaaaa-0000-4000-8000-000000000001\.json not written: .* \(the run goes on/);
    expect(() => readFileSync('/proc/version/nope/status-run-a.json')).toThrow();
  });
});
