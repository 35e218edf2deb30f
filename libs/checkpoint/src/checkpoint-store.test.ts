import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { storeDir, testMeta } from './testing/fixtures.js';
import { CHECKSUM_KEY, HEADER_CHECKSUM_KEY } from './safetensors.js';
import { findLatestCheckpoint, listCheckpoints, loadCheckpoint, readCheckpointMeta, saveCheckpoint } from './checkpoint-store.js';

const [dir, meta] = [storeDir, testMeta];
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

  it('reads the metadata from the header alone, as the full load reads it; refuses what is not a checkpoint', async () => {
    const d = dir();
    const path = await saveCheckpoint(d, tensors(3), meta(42, 0.75));
    expect(readCheckpointMeta(path)).toEqual(loadCheckpoint(path).meta);
    const other = join(d, 'other.safetensors');
    writeFileSync(other, readFileSync(path).subarray(0, 8));
    expect(() => readCheckpointMeta(other)).toThrow(/ERR_CHECKPOINT|header/);
  });

  it('keeps the last K and the best M by the metric', async () => {
    const d = dir();
    const acc = [0.9, 0.5, 0.95, 0.6, 0.7, 0.65];
    for (let i = 0; i < acc.length; i++) await saveCheckpoint(d, tensors(i), meta((i + 1) * 10, acc[i]), { keepLast: 2, keepBest: 1 });
    expect(listCheckpoints(d).map((c) => c.step)).toEqual([60, 50, 30]);
  });

  it('keeps the best by test_loss (lowest) or by test_accuracy (highest), where the two disagree', async () => {
    // Constructed so that the lowest loss (step 20) and the highest accuracy (step 40) differ, and
    // neither is among the last kept: each metric must pick its own step.
    const epochs = [
      { test_loss: 0.9, test_accuracy: 0.8 },
      { test_loss: 0.2, test_accuracy: 0.85 },
      { test_loss: 0.5, test_accuracy: 0.7 },
      { test_loss: 0.4, test_accuracy: 0.95 },
      { test_loss: 0.6, test_accuracy: 0.6 },
    ];
    const kept: Record<string, number[]> = {};
    for (const metric of ['test_loss', 'test_accuracy'] as const) {
      const d = dir();
      for (let i = 0; i < epochs.length; i++) await saveCheckpoint(d, tensors(i), { ...meta((i + 1) * 10), metrics: epochs[i] }, { keepLast: 1, keepBest: 1, metric });
      kept[metric] = listCheckpoints(d).map((c) => c.step);
    }
    expect(kept).toEqual({ test_loss: [50, 20], test_accuracy: [50, 40] });
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

  it('a checkpoint without its checksums is refused, not read unverified', async () => {
    const d = dir();
    const path = await saveCheckpoint(d, tensors(1), meta(10));
    const original = readFileSync(path);
    // The same file with its header's metadata edited.
    const edit = (change: (m: Record<string, string>) => void): void => {
      const n = Number(original.readBigUInt64LE(0));
      const header = JSON.parse(original.subarray(8, 8 + n).toString());
      change(header.__metadata__);
      const json = Buffer.from(JSON.stringify(header));
      const len = Buffer.alloc(8);
      len.writeBigUInt64LE(BigInt(json.length));
      writeFileSync(path, Buffer.concat([len, json, original.subarray(8 + n)]));
    };
    edit((m) => delete m[CHECKSUM_KEY]);
    expect(() => loadCheckpoint(path)).toThrow(expect.objectContaining({ code: 'ERR_CHECKPOINT_CHECKSUM', message: expect.stringMatching(/header SHA-256 does not match/) }));
    edit((m) => {
      delete m[CHECKSUM_KEY];
      delete m[HEADER_CHECKSUM_KEY];
    });
    expect(() => loadCheckpoint(path)).toThrow(expect.objectContaining({ code: 'ERR_CHECKPOINT_FORMAT', message: expect.stringMatching(/no ringtrain.header_sha256 in its metadata/) }));
    // A version 1 file has no header checksum, and still needs its data checksum.
    edit((m) => {
      delete m[CHECKSUM_KEY];
      delete m[HEADER_CHECKSUM_KEY];
      m.format = 'ringtrain-checkpoint/1';
    });
    expect(() => loadCheckpoint(path)).toThrow(expect.objectContaining({ code: 'ERR_CHECKPOINT_FORMAT', message: expect.stringMatching(/no ringtrain.sha256 in its metadata/) }));
    edit((m) => {
      delete m[HEADER_CHECKSUM_KEY];
      m.format = 'ringtrain-checkpoint/1';
    });
    expect(loadCheckpoint(path).meta.step).toBe(10);
  });

  it('every single-bit flip anywhere in a checkpoint written by the background writer is refused', async () => {
    const d = dir();
    const path = await saveCheckpoint(d, tensors(1.5), meta(10), {}, true);
    const original = readFileSync(path);
    expect(loadCheckpoint(path).meta.step).toBe(10);
    const flipped = join(d, 'flipped.safetensors');
    const codes = new Map<string, number>();
    for (let bit = 0; bit < original.length * 8; bit++) {
      const bytes = Buffer.from(original);
      bytes[bit >> 3] ^= 1 << (bit & 7);
      writeFileSync(flipped, bytes);
      let code = 'accepted';
      try {
        loadCheckpoint(flipped);
      } catch (err) {
        code = (err as { code?: string }).code ?? 'no code';
      }
      if (code === 'accepted') expect.fail(`a flip of bit ${bit & 7} of byte ${bit >> 3} was accepted`);
      codes.set(code, (codes.get(code) ?? 0) + 1);
    }
    console.log(`${original.length * 8} flips refused: ${JSON.stringify(Object.fromEntries(codes))}`);
    expect([...codes.keys()].every((c) => c.startsWith('ERR_CHECKPOINT_'))).toBe(true);
  }, 60_000);

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
});
