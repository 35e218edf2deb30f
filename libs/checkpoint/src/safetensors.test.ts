import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readSafetensors, writeSafetensors } from './safetensors.js';

const dir = (): string => mkdtempSync(join(tmpdir(), 'ringtrain-ckpt-'));
const tensors = [
  { name: 'layers.0.weight', shape: [2, 3], data: Float32Array.of(1, 2, 3, 4, 5, 6) },
  { name: 'layers.0.bias', shape: [2], data: Float32Array.of(-1, 0.5) },
];
const codeOf = (fn: () => unknown): string | undefined => {
  try {
    fn();
  } catch (e) {
    return (e as { code?: string }).code;
  }
  return undefined;
};

/** An independent reader of the layout, written from the format's description. */
function parseByHand(buf: Buffer): Record<string, number[]> {
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString());
  const out: Record<string, number[]> = {};
  for (const [name, info] of Object.entries(header) as [string, { data_offsets: [number, number] }][]) {
    if (name === '__metadata__') continue;
    const [a, b] = info.data_offsets;
    const values: number[] = [];
    for (let o = a; o < b; o += 4) values.push(buf.readFloatLE(8 + n + o));
    out[name] = values;
  }
  return out;
}

describe('safetensors', () => {
  it('round-trips tensors and metadata, and an independent reader of the layout agrees', () => {
    const path = join(dir(), 'w.safetensors');
    writeSafetensors(path, tensors, { step: '12' });
    const back = readSafetensors(path);
    expect(back.tensors.map((t) => [t.name, t.shape, Array.from(t.data)])).toEqual(tensors.map((t) => [t.name, t.shape, Array.from(t.data)]));
    expect(back.metadata.step).toBe('12');
    const raw = readFileSync(path);
    expect(Number(raw.readBigUInt64LE(0)) % 8).toBe(0);
    expect(parseByHand(raw)).toEqual({ 'layers.0.weight': [1, 2, 3, 4, 5, 6], 'layers.0.bias': [-1, 0.5] });
  });

  it('leaves no temporary file behind and replaces the previous file whole', () => {
    const d = dir();
    const path = join(d, 'w.safetensors');
    writeSafetensors(path, tensors);
    writeSafetensors(path, [{ name: 'x', shape: [1], data: Float32Array.of(7) }]);
    expect(readdirSync(d)).toEqual(['w.safetensors']);
    expect(readSafetensors(path).tensors.map((t) => t.name)).toEqual(['x']);
  });

  it('rejects truncated, corrupted and hostile files with their codes, naming the file', () => {
    const d = dir();
    const path = join(d, 'w.safetensors');
    writeSafetensors(path, tensors);
    const good = readFileSync(path);
    const bad = join(d, 'bad.safetensors');
    writeFileSync(bad, good.subarray(0, good.length - 4));
    expect(codeOf(() => readSafetensors(bad))).toBe('ERR_CHECKPOINT_TRUNCATED');
    const flipped = Buffer.from(good);
    flipped[flipped.length - 1] ^= 0xff;
    writeFileSync(bad, flipped);
    expect(() => readSafetensors(bad)).toThrow(expect.objectContaining({ code: 'ERR_CHECKPOINT_CHECKSUM', message: expect.stringContaining(bad) }));
    const huge = Buffer.from(good);
    huge.writeBigUInt64LE(2n ** 62n, 0);
    writeFileSync(bad, huge);
    expect(() => readSafetensors(bad)).toThrow(/over the 104857600-byte limit/);
    writeFileSync(bad, Buffer.concat([Buffer.from([4, 0, 0, 0, 0, 0, 0, 0]), Buffer.from('{{{{')]));
    expect(codeOf(() => readSafetensors(bad))).toBe('ERR_CHECKPOINT_FORMAT');
    writeFileSync(bad, Buffer.from('PK'));
    expect(codeOf(() => readSafetensors(bad))).toBe('ERR_CHECKPOINT_TRUNCATED');
    expect(codeOf(() => readSafetensors(join(d, 'missing')))).toBe('ERR_CHECKPOINT_IO');
  });
});

// Python's numpy, where the machine has it (CI installs python3-numpy), reads the file by the
// published layout alone: 8-byte length, JSON header, raw little-endian data.
const python = process.env.RINGTRAIN_PYTHON ?? '/usr/bin/python3';
const hasNumpy = spawnSync(python, ['-c', 'import numpy'], { encoding: 'utf8' }).status === 0;
// CI installs it and says so: there, a missing numpy fails instead of skipping.
if (!hasNumpy && process.env.RINGTRAIN_EXPECT_NUMPY === '1') throw new Error(`RINGTRAIN_EXPECT_NUMPY=1 but ${python} has no numpy (apt-get install python3-numpy)`);

describe('interoperability', () => {
  it.skipIf(!hasNumpy)('numpy parses a ringtrain file by the safetensors layout and gets the same tensors', () => {
    const path = join(dir(), 'w.safetensors');
    writeSafetensors(path, tensors, { step: '3' });
    const script = [
      'import json, struct, sys, numpy as np',
      'b = open(sys.argv[1], "rb").read()',
      '(n,) = struct.unpack("<Q", b[:8])',
      'h = json.loads(b[8:8 + n])',
      'out = {k: np.frombuffer(b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]], dtype="<f4").reshape(v["shape"]).tolist() for k, v in h.items() if k != "__metadata__"}',
      'print(json.dumps({"tensors": out, "step": h["__metadata__"]["step"]}))',
    ].join('\n');
    const r = spawnSync(python, ['-c', script, path], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ tensors: { 'layers.0.weight': [[1, 2, 3], [4, 5, 6]], 'layers.0.bias': [-1, 0.5] }, step: '3' });
  });
});
