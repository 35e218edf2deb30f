// A newcomer's own CSV: the model fits the data, CSV flags, class names from string labels.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { available } from './testing/expect-env.js';

const main = fileURLToPath(new URL('../dist/main.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'ringtrain-own-data-'));
// scikit-learn's bundled tables (Debian's python3-sklearn); CI installs it.
const tables = '/usr/lib/python3/dist-packages/sklearn/datasets/data';

function ringtrain(...args: string[]) {
  const r = spawnSync(process.execPath, [main, ...args], { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, summary: r.status === 0 && r.stdout.trim().startsWith('{') ? JSON.parse(r.stdout.trim().split('\n').at(-1)!) : null };
}

/** A sklearn table as a newcomer has it: its first line (a count, not a header) dropped; string labels where asked. */
function table(name: string, names?: boolean): string {
  const text = readFileSync(join(tables, name), 'utf8').trim().split('\n');
  const [head, ...rows] = text;
  const classes = head.split(',').slice(2);
  const out = names ? rows.map((r) => r.replace(/,(\d+)$/, (_, k: string) => `,${classes[Number(k)]}`)) : rows;
  const path = join(dir, name);
  writeFileSync(path, `${out.join('\n')}\n`);
  return path;
}

describe.skipIf(!available('TABLES', existsSync(tables), `scikit-learn's tables are not at ${tables} (apt-get install python3-sklearn)`))('bring your own CSV (real processes)', () => {
  it('a CSV trains from flags alone: the model takes its input width and classes from the data', () => {
    const csv = table('breast_cancer.csv');
    // Exactly the newcomer's command: no config, no sizes; standardized features, the default job.
    const r = ringtrain('launch', '--workers', '2', '--data', `csv:${csv}`, '--label', 'last', '--json');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/job: MLP 30-128-2 \(relu\)/);
    expect(r.summary.epochs.at(-1).testAccuracy).toBeGreaterThanOrEqual(0.95);
    // iris from flags alone: its first row (string label) is data, not a header; all 150 rows are
    // read (120 train in steps of 2 × 4), and the small table's rate decays over the run.
    const iris = ringtrain('launch', '--workers', '2', '--data', `csv:${table('iris.csv', true)}`, '--label', 'last', '--json');
    expect(iris.code, iris.stderr).toBe(0);
    expect(iris.stderr).toMatch(/job: MLP 4-128-3 \(relu\), 15 epochs, batch 4 per worker, sgd lr 0.1 \(cosine\)/);
    expect(iris.summary.steps).toBe(15 * 15);
    expect(iris.summary.epochs.at(-1).testSamples).toBe(30);
    // 30 test rows: allow three misses (runs measure 0–1), so no kernel's rounding decides it.
    expect(iris.summary.epochs.at(-1).testAccuracy).toBeGreaterThanOrEqual(0.9);
  }, 120_000);

  it('string labels become classes; the checkpoint keeps their names and predict prints them', () => {
    const csv = table('iris.csv', true);
    const ckpts = join(dir, 'iris-ckpts');
    const r = ringtrain('launch', '--workers', '2', '--data', `csv:${csv}`, '--label', 'last', '--test-fraction', '0.2', '--batch-size', '8', '--epochs', '40', '--optimizer', 'adam', '--lr', '0.01', '--checkpoint-dir', ckpts, '--json');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/job: MLP 4-128-3 \(relu\)/);
    expect(r.summary.epochs.at(-1).testAccuracy).toBeGreaterThanOrEqual(0.9);
    const [last] = readdirSync(ckpts).filter((f) => f.endsWith('.safetensors')).sort().reverse();
    const rows = join(dir, 'iris-rows.csv');
    // Each row near its class's mean, far from the borders between classes.
    writeFileSync(rows, '5.0,3.4,1.5,0.2\n5.9,2.8,4.3,1.3\n6.6,3.0,5.6,2.1\n');
    const p = ringtrain('predict', join(ckpts, last), '--input', rows);
    expect(p.code, p.stderr).toBe(0);
    expect(p.stdout.trim().split('\n')).toEqual(['setosa', 'versicolor', 'virginica']);
  }, 120_000);

  it('train (one process) leaves its weights behind: a checkpoint that predict reads, and the final weights', () => {
    const csv = table('iris.csv', true);
    const [ckpts, final] = [join(dir, 'train-ckpts'), join(dir, 'train-final.safetensors')];
    const r = ringtrain('train', '--data', `csv:${csv}`, '--label', 'last', '--epochs', '20', '--checkpoint-dir', ckpts, '--save-final', final);
    expect(r.code, r.stderr).toBe(0);
    expect(existsSync(final)).toBe(true);
    const [ckpt] = readdirSync(ckpts).filter((f) => f.endsWith('.safetensors'));
    const rows = join(dir, 'train-rows.csv');
    writeFileSync(rows, '5.0,3.4,1.5,0.2\n7.9,3.8,6.4,2.0\n');
    const p = ringtrain('predict', join(ckpts, ckpt), '--input', rows);
    expect(p.code, p.stderr).toBe(0);
    expect(p.stdout.trim().split('\n')).toEqual(['setosa', 'virginica']);
    const e = ringtrain('evaluate', join(ckpts, ckpt));
    expect(e.code, e.stderr).toBe(0);
    expect(JSON.parse(e.stdout).accuracy).toBeGreaterThan(0.8);
    // A CSV named with --data is scored whole (all 150 rows, not a held-out fifth), with the model's scaling.
    const whole = ringtrain('evaluate', join(ckpts, ckpt), '--data', `csv:${csv}`);
    expect(whole.code, whole.stderr).toBe(0);
    expect(JSON.parse(whole.stdout)).toMatchObject({ samples: 150 });
    expect(JSON.parse(whole.stdout).accuracy).toBeGreaterThan(0.85);
    // Every file ringtrain writes reads back with no flag: the final weights, and exports at every
    // precision and in JSON carry the model, the class names and the features' scaling.
    const files = [final];
    for (const [q, name] of [['', 'f32.safetensors'], ['fp16', 'f16.safetensors'], ['int8', 'q8.safetensors'], ['int4', 'q4.safetensors'], ['', 'f32.json']]) {
      const out = join(dir, `export-${name}`);
      const x = ringtrain('export', join(ckpts, ckpt), '-o', out, ...(q ? ['--quantize', q] : []));
      expect(x.code, x.stderr).toBe(0);
      files.push(out);
    }
    const want = ringtrain('predict', join(ckpts, ckpt), '--input', rows).stdout;
    for (const f of files) {
      const inspected = ringtrain('inspect', f);
      expect(inspected.code, `${f}: ${inspected.stderr}`).toBe(0);
      expect(inspected.stdout).toMatch(/\| int8 +\| [\d.]+ kB +\| \d+\.\d\d% +\| \d\.\d{4} +\|/);
      const ev = ringtrain('evaluate', f);
      expect(ev.code, `${f}: ${ev.stderr}`).toBe(0);
      expect(JSON.parse(ev.stdout).accuracy, f).toBeGreaterThan(0.8);
      const pr = ringtrain('predict', f, '--input', rows);
      expect(pr.code, `${f}: ${pr.stderr}`).toBe(0);
      expect(pr.stdout, f).toBe(want);
    }
    // A file that is neither: refused, naming what it found.
    writeFileSync(join(dir, 'other.safetensors'), Buffer.concat([Buffer.from([2, 0, 0, 0, 0, 0, 0, 0]), Buffer.from('{}')]));
    const other = ringtrain('predict', join(dir, 'other.safetensors'), '--input', rows);
    expect(other.code).toBe(1);
    expect(other.stderr).toMatch(/ERR_CHECKPOINT_FORMAT: .*not a ringtrain checkpoint/);
  }, 90_000);

  it('a stated size that contradicts the data is an error naming both; CSV flags on other data are refused', () => {
    const csv = table('wine_data.csv');
    const config = join(dir, 'wrong.json');
    writeFileSync(config, JSON.stringify({ model: { inputSize: 10, layers: [{ type: 'dense', units: 16 }, { type: 'relu' }, { type: 'dense', units: 3 }], loss: 'softmax_cross_entropy' }, dataset: { source: 'csv', train: csv } }));
    const bad = ringtrain('launch', '--workers', '1', '--config', config, '--epochs', '1');
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/ERR_SHAPE: model inputSize 10 does not match dataset .*wine_data.csv.* with 13 features/);
    const notCsv = ringtrain('launch', '--workers', '1', '--label', 'last');
    expect(notCsv.code).toBe(1);
    expect(notCsv.stderr).toMatch(/the CSV options \(--label\) are for csv data, not mnist-small/);
  }, 60_000);
});
