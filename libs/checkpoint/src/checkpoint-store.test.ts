import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { CHECKSUM_KEY } from './safetensors.js';
import { type CheckpointMeta, findLatestCheckpoint, listCheckpoints, loadCheckpoint, saveCheckpoint } from './checkpoint-store.js';

const dir = (): string => mkdtempSync(join(tmpdir(), 'ringtrain-store-'));
const meta = (step: number, accuracy = 0.5): CheckpointMeta => ({
  step,
  epoch: 1,
  cursor: 128,
  worldSize: 2,
  runId: 'run-a',
  lineage: 'run-a',
  configHash: 'abcdef0123456789',
  config: { seed: 1 },
  modelSpec: { inputSize: 2 },
  optimizer: { type: 'sgd', step, slots: ['momentum'] },
  rng: { dropout: [1, 2, 3, 4] },
  metrics: { test_accuracy: accuracy },
  savedAt: '2026-11-28T00:00:00Z',
});
const tensors = (v: number) => [
  { name: 'layers.0.weight', shape: [2, 2], data: Float32Array.of(v, v, v, v) },
  { name: 'optimizer.momentum.layers.0.weight', shape: [2, 2], data: Float32Array.of(-v, 0, 0, v) },
];

describe('checkpoint store', () => {
  it('saves with metadata and loads it back', async () => {
    const d = dir();
    const path = await saveCheckpoint(d, tensors(3), meta(42));
    expect(path).toBe(join(d, 'ckpt-step-0000000042.safetensors'));
    const c = loadCheckpoint(path);
    expect(c.meta).toEqual(meta(42));
    expect(Array.from(c.tensors[1].data)).toEqual([-3, 0, 0, 3]);
  });

  it('keeps the last K and the best M by the metric', async () => {
    const d = dir();
    const acc = [0.9, 0.5, 0.95, 0.6, 0.7, 0.65];
    for (let i = 0; i < acc.length; i++) await saveCheckpoint(d, tensors(i), meta((i + 1) * 10, acc[i]), { keepLast: 2, keepBest: 1 });
    expect(listCheckpoints(d).map((c) => c.step)).toEqual([60, 50, 30]);
  });

  it('retention deletes only its own lineage, never the file it just wrote', async () => {
    const d = dir();
    for (const step of [500, 600, 700]) await saveCheckpoint(d, tensors(1), { ...meta(step), runId: 'run-old', lineage: 'run-old' }, { keepLast: 5 });
    const written: string[] = [];
    for (const step of [410, 420, 430]) written.push(await saveCheckpoint(d, tensors(2), meta(step), { keepLast: 2, keepBest: 0 }));
    expect(listCheckpoints(d).map((c) => c.step)).toEqual([700, 600, 500, 430, 420]);
    // A resumed run (another run id, the same lineage) prunes the files of the run it came from.
    await saveCheckpoint(d, tensors(3), { ...meta(440), runId: 'run-b' }, { keepLast: 1, keepBest: 0 });
    expect(listCheckpoints(d).map((c) => c.step)).toEqual([700, 600, 500, 440]);
    // A lineage whose newer-numbered files exist (an abandoned branch) still keeps what it just wrote.
    const p = await saveCheckpoint(d, tensors(4), { ...meta(450), runId: 'run-old', lineage: 'run-old' }, { keepLast: 1, keepBest: 0 });
    expect(listCheckpoints(d).map((c) => c.path)).toContain(p);
    expect(written).toHaveLength(3);
  });

  it('a checkpoint without its checksum is refused, not read unverified', async () => {
    const d = dir();
    const path = await saveCheckpoint(d, tensors(1), meta(10));
    // The same file, less the checksum key in its header.
    const bytes = readFileSync(path);
    const n = Number(bytes.readBigUInt64LE(0));
    const header = JSON.parse(bytes.subarray(8, 8 + n).toString());
    delete header.__metadata__[CHECKSUM_KEY];
    const json = Buffer.from(JSON.stringify(header));
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    writeFileSync(path, Buffer.concat([len, json, bytes.subarray(8 + n)]));
    expect(() => loadCheckpoint(path)).toThrow(expect.objectContaining({ code: 'ERR_CHECKPOINT_FORMAT', message: expect.stringMatching(/no ringtrain.sha256 in its metadata/) }));
  });

  it('latest falls back past a corrupt or truncated newest checkpoint and says why', async () => {
    const d = dir();
    await saveCheckpoint(d, tensors(1), meta(10), { keepLast: 5 });
    await saveCheckpoint(d, tensors(2), meta(20), { keepLast: 5 });
    writeFileSync(join(d, 'ckpt-step-0000000030.safetensors'), Buffer.from([1, 2, 3]));
    const { checkpoint, skipped } = findLatestCheckpoint(d);
    expect(checkpoint.meta.step).toBe(20);
    expect(skipped).toHaveLength(1);
    expect(skipped[0].reason).toMatch(/ckpt-step-0000000030.safetensors: .*shorter than the 8-byte header length/);
    expect(() => loadCheckpoint(join(d, 'ckpt-step-0000000030.safetensors'))).toThrow(expect.objectContaining({ code: 'ERR_CHECKPOINT_TRUNCATED' }));
  });

  it('refuses a safetensors file that is not a ringtrain checkpoint', async () => {
    const d = dir();
    const { writeSafetensors } = await import('./safetensors.js');
    writeSafetensors(join(d, 'foreign.safetensors'), tensors(1), { format: 'pt' });
    expect(() => loadCheckpoint(join(d, 'foreign.safetensors'))).toThrow(/not a ringtrain checkpoint \(format "pt"/);
  });

  it('an unwritable folder gives ERR_CHECKPOINT_IO and leaves the previous checkpoint intact', async () => {
    const d = dir();
    await saveCheckpoint(d, tensors(1), meta(10));
    writeFileSync(join(d, 'a-file'), 'x');
    await expect(saveCheckpoint(join(d, 'a-file', 'deeper'), tensors(2), meta(20))).rejects.toMatchObject({ code: 'ERR_CHECKPOINT_IO', message: expect.stringMatching(/cannot create the folder .*a-file\/deeper \(ENOTDIR\)/) });
    const created = join(d, 'new', 'folder');
    await saveCheckpoint(created, tensors(2), meta(20));
    expect(listCheckpoints(created)).toHaveLength(1);
    expect(loadCheckpoint(join(d, 'ckpt-step-0000000010.safetensors')).meta.step).toBe(10);
  });

  it('SIGKILL at random moments during saves never leaves a torn file that passes for valid', async () => {
    const d = dir();
    const writer = fileURLToPath(new URL('../dist/testing/save-loop.js', import.meta.url));
    const big = (step: number) => [{ name: 'w', shape: [1 << 20], data: new Float32Array(1 << 20).fill(step) }];
    await saveCheckpoint(d, big(0), { ...meta(0), optimizer: { type: 'sgd', step: 0, slots: [] } });
    for (let trial = 1; trial <= 25; trial++) {
      const child = spawn(process.execPath, [writer, d, String(trial * 1000)], { stdio: 'ignore' });
      await new Promise((r) => setTimeout(r, 60 + ((trial * 37) % 90)));
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
      for (const { path } of listCheckpoints(d)) {
        // Every file under a checkpoint name is complete and verifies (the loop writes 4 MB tensors).
        const c = loadCheckpoint(path);
        expect(c.tensors[0].data.length).toBe(1 << 20);
        expect(c.tensors[0].data[12345]).toBe(c.meta.step);
      }
      expect(findLatestCheckpoint(d).checkpoint.meta.step).toBeGreaterThanOrEqual(0);
    }
    // Temporary files of killed writes may remain; they never carry a checkpoint's name.
    for (const name of readdirSync(d)) expect(/^ckpt-step-\d{10}\.safetensors$/.test(name) || /^\..*\.tmp$/.test(name)).toBe(true);
  }, 60_000);
});
