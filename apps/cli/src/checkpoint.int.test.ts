import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const main = fileURLToPath(new URL('../dist/main.js', import.meta.url));

function ringtrain(...args: string[]) {
  const r = spawnSync(process.execPath, [main, ...args], { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, summary: r.status === 0 && r.stdout.trim() ? JSON.parse(r.stdout.trim()) : null };
}

describe('checkpoints and resume (real processes)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ringtrain-resume-'));
  const ckpts = join(dir, 'ckpts');
  let full: { weightsHash: string; steps: number };

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

  it('resumes 2 → 4 workers from the same sample cursor with the optimizer state, and keeps learning', () => {
    const r = ringtrain('launch', '--workers', '4', '--resume', join(ckpts, 'ckpt-step-0000000040.safetensors'), '--json');
    expect(r.code, r.stderr).toBe(0);
    // step 40 of 62 in epoch 0 at 128 samples/step = sample 5120; 4 workers take 256 a step:
    // (8000 − 5120) / 256 = 11 steps finish epoch 0, then 2 epochs of 31.
    expect(r.summary.steps).toBe(40 + 11 + 62);
    expect(r.stderr).toMatch(/resuming from .*step 40, epoch 0, sample 5120, saved by 2 workers/);
    expect(r.summary.epochs.at(-1).testAccuracy).toBeGreaterThan(0.9);
  }, 60_000);

  it('--resume latest skips a corrupt newest checkpoint and says so', () => {
    writeFileSync(join(ckpts, 'ckpt-step-0000000999.safetensors'), 'garbage that is not a checkpoint');
    const r = ringtrain('launch', '--workers', '2', '--resume', 'latest', '--checkpoint-dir', ckpts, '--json');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/skipping .*ckpt-step-0000000999.safetensors/);
    expect(r.stderr).toMatch(/falling back to .*ckpt-step-0000000186.safetensors/);
    expect(r.summary.weightsHash).toBe(full.weightsHash);
  }, 60_000);

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
