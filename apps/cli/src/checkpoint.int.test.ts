import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadCheckpoint, readSafetensors, readSafetensorsHeader } from '@ringtrain/checkpoint';
import { type JobConfig, parseJobConfig, Trainer, type TrainerState } from '@ringtrain/trainer';
import { describe, expect, it } from 'vitest';

const main = fileURLToPath(new URL('../dist/main.js', import.meta.url));

function ringtrain(...args: string[]) {
  const r = spawnSync(process.execPath, [main, ...args], { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, summary: r.status === 0 && r.stdout.trim() ? JSON.parse(r.stdout.trim()) : null };
}

/** A single process restores the checkpoint itself (not through the worker's code) and takes `steps` steps at the global batch of `workers`. */
function resumeInOneProcess(path: string, workers: number, steps = 1): Trainer {
  const { meta, tensors } = loadCheckpoint(path);
  const config = meta.config as JobConfig;
  const t = new Trainer(parseJobConfig({ ...config, batchSize: workers * config.batchSize }));
  for (const { name, data } of tensors) {
    const [head, slot, ...rest] = name.split('.');
    if (head === 'optimizer') t.model.params.viewOf(t.optimizer.state.slots[slot], rest.join('.')).set(data);
    else t.model.params.value(name).set(data);
  }
  t.restore({ globalStep: meta.step, epoch: meta.epoch, cursor: meta.cursor, optimizerStep: meta.optimizer.step, dropoutRng: meta.rng.dropout as TrainerState['dropoutRng'] });
  for (let s = 0; s < steps; s++) t.trainStep();
  return t;
}

const maxRel = (x: Float32Array, y: Float32Array): number => {
  let m = 0;
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i] - y[i]) / Math.max(1e-3, Math.abs(y[i])));
  return m;
};

describe('checkpoints and resume (real processes)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ringtrain-resume-'));
  const ckpts = join(dir, 'ckpts');
  let full: { weightsHash: string; steps: number; epochs: { testAccuracy: number }[] };

  it('an uninterrupted run writes checkpoints every S steps and at epoch ends', () => {
    const r = ringtrain('launch', '--workers', '2', '--epochs', '3', '--checkpoint-dir', ckpts, '--save-every', '40', '--keep-last', '20', '--json');
    expect(r.code, r.stderr).toBe(0);
    full = r.summary;
    expect(r.summary.checkpoints.map((c: { step: number }) => c.step)).toEqual([40, 62, 80, 120, 124, 160, 186]);
    expect(readdirSync(ckpts).filter((f) => f.endsWith('.safetensors'))).toHaveLength(7);
  }, 60_000);

  it('stop at step k, resume, run to the end: bit-identical weights at the same world size', () => {
    for (const k of ['0000000040', '0000000062', '0000000160']) {
      const r = ringtrain('launch', '--workers', '2', '--resume', join(ckpts, `ckpt-step-${k}.safetensors`), '--json');
      expect(r.code, r.stderr).toBe(0);
      expect(r.summary.steps).toBe(full.steps);
      expect(r.summary.weightsHash).toBe(full.weightsHash);
    }
  }, 90_000);

  it('resumes 2 → 4 → 2 workers from the same sample cursor with the optimizer state: each first step equals one process restoring the checkpoint by itself', () => {
    // 2 → 4, to the end: step 40 of 62 in epoch 0 at 128 samples/step = sample 5120; 4 workers take
    // 256 a step: (8000 − 5120) / 256 = 11 steps finish epoch 0, then 2 epochs of 31.
    const four = join(dir, 'ckpts-4');
    const r = ringtrain('launch', '--workers', '4', '--resume', join(ckpts, 'ckpt-step-0000000040.safetensors'), '--checkpoint-dir', four, '--save-every', '20', '--keep-last', '10', '--json');
    expect(r.code, r.stderr).toBe(0);
    expect(r.summary.steps).toBe(40 + 11 + 62);
    expect(r.summary.epochs.at(-1).testAccuracy).toBeGreaterThanOrEqual(full.epochs.at(-1).testAccuracy - 0.01);
    // One step after each resume, against the reference: wrong cursor, lost momentum or a skipped
    // optimizer step would each be far outside 1e-5.
    for (const [from, workers] of [[join(ckpts, 'ckpt-step-0000000040.safetensors'), 4], [join(four, 'ckpt-step-0000000060.safetensors'), 2]] as const) {
      const saved = loadCheckpoint(from).meta;
      const out = join(dir, `resumed-${workers}.safetensors`);
      const one = ringtrain('launch', '--workers', String(workers), '--resume', from, '--max-steps', String(saved.step + 1), '--save-final', out, '--json');
      expect(one.code, one.stderr).toBe(0);
      const reference = resumeInOneProcess(from, workers);
      const got = new Float32Array(reference.model.params.length);
      for (const t of readSafetensors(out).tensors) got.set(t.data, reference.model.params.info(t.name).offset);
      const rel = maxRel(got, reference.model.params.values);
      console.log(`resume from ${saved.worldSize} to ${workers} workers at step ${saved.step}: max relative difference ${rel.toExponential(2)}`);
      expect(rel).toBeLessThanOrEqual(1e-5);
    }
  }, 120_000);

  it('--epochs extends a finished run: the same weights as a run that had the longer schedule from the start', () => {
    const extended = ringtrain('launch', '--workers', '2', '--resume', join(ckpts, 'ckpt-step-0000000186.safetensors'), '--epochs', '4', '--json');
    expect(extended.code, extended.stderr).toBe(0);
    expect(extended.summary.steps).toBe(186 + 62);
    const longer = ringtrain('launch', '--workers', '2', '--epochs', '4', '--json');
    expect(longer.code, longer.stderr).toBe(0);
    expect(extended.summary.weightsHash).toBe(longer.summary.weightsHash);
  }, 90_000);

  it('--keep-best by test_loss keeps the epoch of the lowest test loss; by test_accuracy that of the highest', () => {
    // The rule is checked on each run's own recorded metrics, whatever trajectory this machine's
    // kernels give; the case where the two metrics disagree is constructed in checkpoint-store.test.ts.
    const stepOf = (epoch: number): number => 62 * (epoch + 1);
    for (const metric of ['test_loss', 'test_accuracy'] as const) {
      const d = join(dir, `best-${metric}`);
      const r = ringtrain('launch', '--workers', '2', '--epochs', '5', '--lr', '0.8', '--seed', '4', '--checkpoint-dir', d, '--keep-last', '1', '--keep-best', '1', '--best-metric', metric, '--json');
      expect(r.code, r.stderr).toBe(0);
      const epochs: { testLoss: number; testAccuracy: number }[] = r.summary.epochs;
      const score = (e: { testLoss: number; testAccuracy: number }): number => (metric === 'test_loss' ? -e.testLoss : e.testAccuracy);
      const best = Math.max(...epochs.map(score));
      // Ties keep the newest of the best, as the store sorts newest first.
      const bestEpoch = epochs.map(score).lastIndexOf(best);
      const kept = readdirSync(d).filter((f) => f.endsWith('.safetensors')).map((f) => Number(/ckpt-step-(\d+)/.exec(f)![1])).sort((a, b) => a - b);
      expect(kept, `${metric} by epoch: ${epochs.map(score).join(', ')}`).toEqual([...new Set([stepOf(bestEpoch), 310])].sort((a, b) => a - b));
      // The kept best file records the metric it was chosen by.
      const recorded = JSON.parse(String(readSafetensorsHeader(join(d, `ckpt-step-${String(stepOf(bestEpoch)).padStart(10, '0')}.safetensors`)).__metadata__!.metrics));
      expect(metric === 'test_loss' ? -recorded.test_loss : recorded.test_accuracy).toBeCloseTo(best, 6);
    }
  }, 60_000);

  it('--resume latest skips a corrupt newest checkpoint and says so', () => {
    writeFileSync(join(ckpts, 'ckpt-step-0000000999.safetensors'), 'garbage that is not a checkpoint');
    const r = ringtrain('launch', '--workers', '2', '--resume', 'latest', '--checkpoint-dir', ckpts, '--json');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/passed over .*ckpt-step-0000000999.safetensors/);
    expect(r.stderr).toMatch(/taking .*ckpt-step-0000000186.safetensors, the newest valid checkpoint of this job/);
    expect(r.summary.weightsHash).toBe(full.weightsHash);
    // One flipped bit in the weights of the real run's newest file, and one in its header's step.
    const newest = join(ckpts, 'ckpt-step-0000000186.safetensors');
    const kept = readFileSync(newest);
    const headerEnd = 8 + Number(kept.readBigUInt64LE(0));
    for (const at of [kept.length - 1000, kept.indexOf('"step":"186"') + 9]) {
      const bytes = Buffer.from(kept);
      bytes[at] ^= 0x01;
      writeFileSync(newest, bytes);
      const again = ringtrain('launch', '--workers', '2', '--resume', 'latest', '--checkpoint-dir', ckpts, '--json');
      writeFileSync(newest, kept);
      expect(again.code, again.stderr).toBe(0);
      expect(again.stderr).toMatch(new RegExp(`passed over .*ckpt-step-0000000186.safetensors: .*${at < headerEnd ? 'header' : 'data'} SHA-256`));
      expect(again.stderr).toMatch(/taking .*ckpt-step-0000000160.safetensors, the newest valid checkpoint of this job/);
      expect(again.summary.weightsHash).toBe(full.weightsHash);
    }
  }, 90_000);

  it('checkpoints belong to their run: another job in the same folder loses nothing, and --resume latest takes only this job\'s', () => {
    const shared = join(dir, 'shared');
    // An older job (another model) leaves steps 100–120 behind; a new job writes steps 10–60 beside them.
    const older = ringtrain('launch', '--workers', '2', '--epochs', '2', '--hidden', '32', '--max-steps', '120', '--checkpoint-dir', shared, '--save-every', '10', '--keep-last', '3', '--keep-best', '0', '--json');
    expect(older.code, older.stderr).toBe(0);
    const olderFiles = readdirSync(shared).filter((f) => f.endsWith('.safetensors')).sort();
    expect(olderFiles).toEqual(['ckpt-step-0000000100.safetensors', 'ckpt-step-0000000110.safetensors', 'ckpt-step-0000000120.safetensors']);
    const newer = ringtrain('launch', '--workers', '2', '--epochs', '1', '--max-steps', '60', '--checkpoint-dir', shared, '--save-every', '10', '--keep-last', '2', '--keep-best', '0', '--json');
    expect(newer.code, newer.stderr).toBe(0);
    // Each of its saves was kept until its own newer ones displaced it; the older job's files are untouched.
    expect(newer.summary.checkpoints.map((c: { step: number }) => c.step)).toEqual([10, 20, 30, 40, 50, 60]);
    expect(readdirSync(shared).filter((f) => f.endsWith('.safetensors')).sort()).toEqual(['ckpt-step-0000000050.safetensors', 'ckpt-step-0000000060.safetensors', ...olderFiles]);
    // --resume latest passes over the older job's newer-numbered files, and says why.
    const mine = ringtrain('launch', '--workers', '2', '--epochs', '1', '--max-steps', '62', '--resume', 'latest', '--checkpoint-dir', shared, '--json');
    expect(mine.code, mine.stderr).toBe(0);
    expect(mine.stderr).toMatch(/passed over .*ckpt-step-0000000120.safetensors: another job's \(config [0-9a-f]{16}; this job's is [0-9a-f]{16}/);
    expect(mine.stderr).toMatch(/resuming from .*ckpt-step-0000000060.safetensors: step 60/);
    // --resume-any takes the newest regardless (and its job config: the 32-unit model).
    const any = ringtrain('launch', '--workers', '2', '--epochs', '2', '--max-steps', '124', '--resume', 'latest', '--resume-any', '--checkpoint-dir', shared, '--json');
    expect(any.code, any.stderr).toBe(0);
    expect(any.stderr).toMatch(/resuming from .*ckpt-step-0000000120.safetensors: step 120/);
    // A job with no checkpoint of its own in the folder is told why none was taken.
    const none = ringtrain('launch', '--workers', '2', '--epochs', '1', '--hidden', '48', '--resume', 'latest', '--checkpoint-dir', shared);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/ERR_CHECKPOINT_NOT_FOUND: no usable checkpoint in .*shared \(\d+ passed over: .*another job's/);
  }, 120_000);

  it('--init-from takes weights only, and refuses a checkpoint of another model', () => {
    const ok = ringtrain('launch', '--workers', '2', '--epochs', '1', '--init-from', join(ckpts, 'ckpt-step-0000000186.safetensors'), '--json');
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.summary.epochs[0].testAccuracy).toBeGreaterThan(0.93); // starts from trained weights
    const bad = ringtrain('launch', '--workers', '2', '--epochs', '1', '--hidden', '64', '--init-from', join(ckpts, 'ckpt-step-0000000186.safetensors'));
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/ERR_MODEL_MISMATCH: .*holds a different model/);
  }, 60_000);

  it('an unwritable checkpoint folder stops the run with a clear error, or only warns with --on-save-error warn', () => {
    // A path under a regular file can be neither created nor written, whoever runs the test.
    writeFileSync(join(dir, 'a-file'), 'x');
    const target = join(dir, 'a-file', 'ckpts');
    const stop = ringtrain('launch', '--workers', '2', '--epochs', '1', '--checkpoint-dir', target);
    expect(stop.code).toBe(1);
    expect(stop.stderr).toMatch(/ERR_CHECKPOINT_IO: .*cannot write .*ckpt-step-0000000062.safetensors: cannot create the folder/);
    const warn = ringtrain('launch', '--workers', '2', '--epochs', '1', '--checkpoint-dir', target, '--on-save-error', 'warn', '--json');
    expect(warn.code).toBe(0);
    expect(warn.stderr).toMatch(/checkpoint at step 62 not saved, training goes on/);
  }, 60_000);
});
