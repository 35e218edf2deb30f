import { existsSync, readFileSync } from 'node:fs';
import { countClasses, type Dataset } from './dataset.js';
import { DataError } from './errors.js';

export interface CsvOptions {
  /** The label column: its header name, its 0-based index (negative: from the end, -1 is the last), or "last". Default: the last column. */
  label?: string | number;
  /** Whether the first line names the columns. Default: detected (a word where the next row has a number). */
  header?: boolean;
  /** 'classification' (integer labels) or 'regression' (the label column is a float target). */
  task?: 'classification' | 'regression';
}

/** The longest CSV line read: 1 Mi characters (some 100,000 features). */
export const MAX_CSV_LINE_CHARS = 1 << 20;

/** Numeric CSV: one sample per line, comma-separated; errors name the file, line and column. */
export function loadCsv(file: string, options: CsvOptions = {}): Dataset {
  if (!existsSync(file)) throw new DataError('ERR_DATA_NOT_FOUND', `${file}: no such file`);
  const lines = readFileSync(file, 'utf8').split(/\r?\n/);
  // A line this long is not a row of features anyone trains on (and would ask for a model as wide).
  const long = lines.findIndex((l) => l.length > MAX_CSV_LINE_CHARS);
  if (long >= 0) throw new DataError('ERR_DATA_TOO_LARGE', `${file}:${long + 1}: ${lines[long].length} characters, over the ${MAX_CSV_LINE_CHARS} a CSV line may hold`);
  while (lines.length && lines[lines.length - 1].trim() === '') lines.pop();
  if (!lines.length) throw new DataError('ERR_DATA_FORMAT', `${file}: empty file`);
  const first = lines[0].split(',').map((c) => c.trim());
  const hasHeader = options.header ?? looksLikeHeader(first, lines[1]);
  const columns = first.length;
  let labelCol: number;
  if (options.label === undefined || options.label === 'last') labelCol = columns - 1;
  else if (typeof options.label === 'number') labelCol = options.label < 0 ? columns + options.label : options.label;
  else {
    if (!hasHeader) throw new DataError('ERR_DATA_CONFIG', `${file}: label column "${options.label}" given by name, but the file has no header`);
    labelCol = first.indexOf(options.label);
    if (labelCol < 0) throw new DataError('ERR_DATA_CONFIG', `${file}: no column named "${options.label}"; columns are ${first.join(', ')}`);
  }
  if (!Number.isInteger(labelCol) || labelCol < 0 || labelCol >= columns) {
    throw new DataError('ERR_DATA_CONFIG', `${file}: label column ${labelCol} outside 0..${columns - 1}`);
  }
  if (columns < 2) throw new DataError('ERR_DATA_FORMAT', `${file}: needs at least one feature column and a label column`);
  const body = hasHeader ? lines.slice(1) : lines;
  const features = columns - 1;
  const x = new Float32Array(body.length * features);
  const y = new Float64Array(body.length);
  // Labels that are not all numbers are class names (iris's "setosa"): classes in sorted order.
  const names = options.task === 'regression' ? [] : classNamesOf(body, labelCol);
  const classOf = new Map(names.map((n, i) => [n, i]));
  body.forEach((line, r) => {
    const lineNo = r + (hasHeader ? 2 : 1);
    const cells = line.split(',');
    if (cells.length !== columns) throw new DataError('ERR_DATA_FORMAT', `${file}:${lineNo}: ${cells.length} columns, expected ${columns}`);
    let f = 0;
    cells.forEach((cell, c) => {
      if (c === labelCol && names.length) return void (y[r] = classOf.get(cell.trim())!);
      const v = Number(cell.trim());
      if (cell.trim() === '' || !Number.isFinite(v)) throw new DataError('ERR_DATA_FORMAT', `${file}:${lineNo}: column ${c + 1} is "${cell.trim()}", not a finite number`);
      if (c === labelCol) y[r] = v;
      else x[r * features + f++] = v;
    });
  });
  const name = `csv:${file}`;
  if (options.task === 'regression') {
    return { name, size: body.length, features, x, classes: 0, targets: Float32Array.from(y), targetSize: 1 };
  }
  const labels = new Int32Array(body.length);
  y.forEach((v, r) => {
    if (!Number.isInteger(v)) throw new DataError('ERR_DATA_FORMAT', `${file}:${r + (hasHeader ? 2 : 1)}: label ${v} is not an integer class (use task "regression" for real targets)`);
    labels[r] = v;
  });
  return { name, size: body.length, features, x, labels, classes: names.length || countClasses(labels, file), targetSize: 0, ...(names.length ? { classNames: names } : {}) };
}

const isNumber = (cell: string): boolean => cell !== '' && !Number.isNaN(Number(cell));

/**
 * A first line names the columns when one of its cells is not a number where the next row's is: a
 * column of words (iris's species) is data in both, so it says nothing. A file of one line is
 * data only when it is all numbers.
 */
function looksLikeHeader(first: string[], next: string | undefined): boolean {
  if (next === undefined) return !first.every(isNumber);
  const below = next.split(',').map((c) => c.trim());
  return first.some((cell, c) => !isNumber(cell) && below[c] !== undefined && isNumber(below[c]));
}

/**
 * The label column's distinct values, sorted, when none of them is a number (class names); else
 * none, and the labels are read as numbers (so a stray word among numbers is an error naming its cell).
 */
function classNamesOf(rows: string[], labelCol: number): string[] {
  const values = new Set<string>();
  for (const line of rows) {
    const cell = line.split(',')[labelCol]?.trim();
    if (cell !== undefined) values.add(cell);
  }
  const names = [...values];
  if (!names.length || names.some((v) => v === '' || Number.isFinite(Number(v)))) return [];
  return names.sort();
}
