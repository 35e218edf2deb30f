import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { table } from '@ringtrain/cli';
import { epochPermutation } from '@ringtrain/data';
import { fmt, runPeer } from './measure.js';

const cli = fileURLToPath(new URL('../../../apps/cli/dist/main.js', import.meta.url));
const peer = fileURLToPath(new URL('../peers/sklearn_mlp.py', import.meta.url));
const TABLES = '/usr/lib/python3/dist-packages/sklearn/datasets/data';

/** A bundled table as a newcomer has it: the count line dropped; iris with its class names. */
function prepare(name: string, dir: string): string {
  const raw = name.endsWith('.gz') ? spawnSync('zcat', [join(TABLES, name)], { encoding: 'utf8', maxBuffer: 1 << 26 }).stdout : readFileSync(join(TABLES, name), 'utf8');
  const lines = raw.trim().split('\n');
  // digits has no count line; the others start with "rows,features,class names…".
  const counted = Number(lines[0].split(',')[0]) === lines.length - 1;
  const names = counted ? lines[0].split(',').slice(2) : [];
  const rows = (counted ? lines.slice(1) : lines).map((l) => (name === 'iris.csv' ? l.replace(/,(\d+)$/, (_, k: string) => `,${names[Number(k)]}`) : l));
  const path = join(dir, name.replace(/\.gz$/, ''));
  writeFileSync(path, `${rows.join('\n')}\n`);
  return path;
}

/**
 * scikit-learn's bundled tables from flags alone (`launch --workers 2 --data csv:FILE --label last`)
 * beside scikit-learn's MLPClassifier((64,)) on the same split (ringtrain's seeded 20% hold-out,
 * recomputed here) with the same standardization.
 */
export function tablesBench(seeds: number): string {
  if (!existsSync(TABLES)) return `tables: skipped, no scikit-learn tables at ${TABLES} (apt-get install python3-sklearn)`;
  const dir = mkdtempSync(join(tmpdir(), 'ringtrain-tables-'));
  const rows: string[][] = [];
  for (const name of ['iris.csv', 'wine_data.csv', 'breast_cancer.csv', 'digits.csv.gz']) {
    const csv = prepare(name, dir);
    // ringtrain over as many seeds (weights, data order) as the peer, on its one seeded split.
    const ours = Array.from({ length: seeds }, (_, s) => {
      const r = spawnSync(process.execPath, [cli, 'launch', '--workers', '2', '--data', `csv:${csv}`, '--label', 'last', '--seed', String(s + 1), '--json'], { encoding: 'utf8', timeout: 600_000 });
      if (r.status !== 0) throw new Error(`ringtrain on ${name} exited ${r.status}: ${r.stderr.slice(-500)}`);
      return JSON.parse(r.stdout.trim().split('\n').at(-1)!).epochs.at(-1).testAccuracy as number;
    });
    // ringtrain's split: the first round(0.2 n) of the seed-0 permutation are the test rows.
    const n = readFileSync(csv, 'utf8').trim().split('\n').length;
    const order = epochPermutation(n, 0, 0xffffffff);
    const test = Array.from(order.subarray(0, Math.max(1, Math.round(n * 0.2))));
    const testFile = join(dir, `${name}.test.json`);
    writeFileSync(testFile, JSON.stringify(test));
    const theirs = (runPeer(peer, [csv, testFile, String(seeds)]) ?? []).map((x) => x.accuracy as number);
    const range = (xs: number[]): string => (xs.length ? `${fmt(100 * Math.min(...xs), 1)}–${fmt(100 * Math.max(...xs), 1)}%` : 'n/a');
    const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
    rows.push([name.replace(/(_data)?\.csv(\.gz)?$/, ''), String(n), String(test.length), range(ours), range(theirs), theirs.length ? fmt(100 * (mean(ours) - mean(theirs)), 1) : 'n/a']);
  }
  return `Your own CSV: ringtrain launch --workers 2 --data csv:FILE --label last (nothing else) vs scikit-learn MLPClassifier((64,)), ${seeds} seeds each, same split and standardization\n${table(['table', 'rows', 'test rows', 'ringtrain', 'scikit-learn', 'points, mean vs mean'], rows)}`;
}
