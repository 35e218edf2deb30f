// Fuzzing the files ringtrain reads: mutated checkpoints, IDX and CSV files, through the loaders
// (many, in this process) and through the real commands (some, as processes). Each either works or
// fails with a coded error that names the file, in bounded time and memory; never a stack trace.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { loadCheckpoint } from '@ringtrain/checkpoint';
import { loadCsv, readIdx } from '@ringtrain/data';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';

const main = fileURLToPath(new URL('../dist/main.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'ringtrain-fuzz-files-'));
let genuine: Buffer;

/** A file's safetensors header as JSON, and its data. */
function split(file: Buffer): { header: Record<string, unknown>; data: Buffer } {
  const n = Number(file.readBigUInt64LE(0));
  return { header: JSON.parse(file.subarray(8, 8 + n).toString()), data: file.subarray(8 + n) };
}
function join8(header: unknown, data: Buffer): Buffer {
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([len, json, data]);
}

/** Mutations of a genuine checkpoint: bytes flipped, cut short, or a header field (tensor entry or metadata) replaced. */
const mutation = fc.oneof(
  fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 8 }).map((flips) => (b: Buffer) => {
    const out = Buffer.from(b);
    for (const [at, x] of flips) out[at % out.length] ^= x;
    return out;
  }),
  fc.nat().map((cut) => (b: Buffer) => b.subarray(0, cut % b.length)),
  fc.tuple(fc.nat(), fc.anything({ maxDepth: 2 })).map(([k, value]) => (b: Buffer) => {
    const { header, data } = split(b);
    const keys = Object.keys(header).filter((x) => x !== '__metadata__');
    const entry = header[keys[k % keys.length]] as Record<string, unknown>;
    const field = ['dtype', 'shape', 'data_offsets'][k % 3];
    entry[field] = value;
    return join8(header, data);
  }),
  fc.tuple(fc.nat(), fc.oneof(fc.string(), fc.json(), fc.constantFrom('{"inputSize":784,"layers":[{"type":"dense","units":65536}],"loss":"mse"}', '[]', '-1', '1e309'))).map(([k, value]) => (b: Buffer) => {
    const { header, data } = split(b);
    const meta = header.__metadata__ as Record<string, string>;
    const keys = Object.keys(meta).filter((x) => x !== 'ringtrain.sha256');
    meta[keys[k % keys.length]] = value;
    return join8(header, data);
  }),
);

/** Runs the CLI; resolves with its exit code, stderr, wall time and peak resident memory (polled). */
function ringtrain(args: string[]): Promise<{ code: number | null; stderr: string; ms: number; peakMb: number }> {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const child = spawn(process.execPath, [main, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    let peakMb = 0;
    child.stderr!.on('data', (d: Buffer) => (stderr += d));
    const poll = setInterval(() => {
      try {
        peakMb = Math.max(peakMb, Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))![1]) / 1024);
      } catch {}
    }, 10);
    const kill = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.once('exit', (code) => {
      clearInterval(poll);
      clearTimeout(kill);
      resolve({ code, stderr, ms: Date.now() - t0, peakMb });
    });
  });
}

beforeAll(async () => {
  const r = await ringtrain(['launch', '--workers', '1', '--epochs', '1', '--max-steps', '10', '--checkpoint-dir', join(dir, 'genuine'), '--save-every', '10']);
  expect(r.code, r.stderr).toBe(0);
  const [name] = readdirSync(join(dir, 'genuine')).filter((f) => f.endsWith('.safetensors'));
  genuine = readFileSync(join(dir, 'genuine', name));
}, 60_000);

describe('file fuzz', () => {
  it('1,000 mutated checkpoints: each loads, or is refused with a coded error naming the file', () => {
    const seen = new Map<string, number>();
    fc.assert(
      fc.property(mutation, fc.nat(), (mutate, i) => {
        const path = join(dir, `m-${i}.safetensors`);
        writeFileSync(path, mutate(genuine));
        try {
          loadCheckpoint(path);
          seen.set('loaded', (seen.get('loaded') ?? 0) + 1);
        } catch (err) {
          const e = err as Error & { code?: string };
          expect(e.code, e.message).toMatch(/^ERR_CHECKPOINT_/);
          expect(e.message).toContain(path);
          seen.set(e.code!, (seen.get(e.code!) ?? 0) + 1);
        }
      }),
      { numRuns: 1000, seed: 1 },
    );
    expect([...seen.keys()]).toEqual(expect.arrayContaining(['ERR_CHECKPOINT_FORMAT', 'ERR_CHECKPOINT_CHECKSUM', 'ERR_CHECKPOINT_TRUNCATED']));
  });

  it('1,000 mutated IDX files and 1,000 mutated CSV files: each loads, or is refused with a coded error naming the file', () => {
    const idx = Buffer.concat([Buffer.from([0, 0, 8, 3, 0, 0, 0, 4, 0, 0, 0, 2, 0, 0, 0, 2]), Buffer.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16])]);
    const check = (load: (path: string) => unknown, path: string): void => {
      try {
        load(path);
      } catch (err) {
        const e = err as Error & { code?: string };
        expect(e.code, e.message).toMatch(/^ERR_DATA_/);
        expect(e.message).toContain(path);
      }
    };
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(), fc.nat({ max: 255 })), { maxLength: 6 }), fc.nat({ max: 40 }), fc.boolean(), (flips, cut, gz) => {
        const b = Buffer.from(idx.subarray(0, Math.max(0, idx.length - (cut % 8 === 0 ? cut : 0))));
        for (const [at, x] of flips) if (b.length) b[at % b.length] = x;
        const path = join(dir, `m.idx${gz ? '.gz' : ''}`);
        writeFileSync(path, gz ? gzipSync(b) : b);
        check((p) => readIdx(p), path);
      }),
      { numRuns: 1000, seed: 2 },
    );
    const csvCell = fc.oneof(fc.double({ noNaN: false }).map(String), fc.constantFrom('', ' ', 'NaN', 'Infinity', '1e999', '"1"', 'x', '0x10'), fc.string({ maxLength: 8 }));
    fc.assert(
      fc.property(fc.array(fc.array(csvCell, { minLength: 0, maxLength: 5 }), { maxLength: 12 }), fc.constantFrom('\n', '\r\n', '\r'), (rows, eol) => {
        const path = join(dir, 'm.csv');
        writeFileSync(path, rows.map((r) => r.join(',')).join(eol));
        check((p) => loadCsv(p), path);
      }),
      { numRuns: 1000, seed: 3 },
    );
  });

  it('mutated checkpoints through inspect, evaluate, predict and --resume: exit 0, or 1 with one line that names the file; bounded time and memory', async () => {
    const input = join(dir, 'row.csv');
    writeFileSync(input, `${Array.from({ length: 784 }, () => '0.5').join(',')}\n`);
    const files = fc.sample(mutation, { numRuns: 6, seed: 9 }).map((mutate, i) => {
      const path = join(dir, `cli-${i}.safetensors`);
      writeFileSync(path, mutate(genuine));
      return path;
    });
    // Two with valid checksums whose metadata lies about the model and the job.
    const { header, data } = split(genuine);
    const meta = header.__metadata__ as Record<string, string>;
    const lies = [
      { ...meta, model_spec: JSON.stringify({ inputSize: 784, layers: [{ type: 'dense', units: 4096 }, { type: 'dense', units: 10 }], loss: 'softmax_cross_entropy' }) },
      { ...meta, config: '{"model":7}' },
    ];
    lies.forEach((m, i) => {
      const path = join(dir, `cli-lie-${i}.safetensors`);
      writeFileSync(path, join8({ ...header, __metadata__: m }, data));
      files.push(path);
    });
    let failures = 0;
    for (const path of files) {
      for (const args of [['inspect', path], ['evaluate', path], ['predict', path, '--input', input], ['launch', '--workers', '1', '--resume', path, '--max-steps', '12']]) {
        const r = await ringtrain(args);
        const what = `${args[0]} ${path}: ${r.stderr.slice(0, 300)}`;
        expect([0, 1], what).toContain(r.code);
        expect(r.ms, what).toBeLessThan(20_000);
        expect(r.peakMb, what).toBeLessThan(400);
        expect(r.stderr, what).not.toMatch(/\n\s+at |Unhandled|TypeError|RangeError/);
        if (r.code === 1) {
          failures++;
          expect(r.stderr, what).toMatch(/ringtrain: ERR_[A-Z_]+: /);
          expect(r.stderr, what).toContain(path);
        }
      }
    }
    expect(failures).toBeGreaterThan(10);
  }, 240_000);
});
