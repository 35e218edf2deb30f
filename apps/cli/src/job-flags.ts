import { readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { JobConfig } from '@ringtrain/trainer';
import { type Command, InvalidArgumentError, Option } from 'commander';

// The job flags' definitions and parsers: what every command's definition needs, so that the
// program can parse a command line without loading the engine (job-options.ts resolves a job).

/**
 * The built-in job's settings as the help shows them. Written here so that `--help` loads no engine;
 * a test holds them equal to the trainer's DEFAULT_JOB.
 */
export const BUILT_IN_JOB = { epochs: 15, batchSize: 64, lr: 0.1, seed: 1, hidden: '128' } as const;

/** The flags that shape a job; every command that starts training takes them. */
export function addJobOptions(cmd: Command): Command {
  return cmd
    .option('-c, --config <file>', 'job config JSON (model, dataset, optimizer, schedule, batchSize, epochs, seed)')
    .option('--model <name|file>', `a ready model and its training settings, under --config and the flags: ${namedModels().join(', ')} (models/<name>.json), or a job config file`)
    .option('--epochs <n>', `epochs to train (default: the job's; the built-in MLP job: ${BUILT_IN_JOB.epochs})`, positiveInt)
    .option('--batch-size <n>', `samples per step, per worker in a cluster (default: the job's; the built-in MLP job: ${BUILT_IN_JOB.batchSize})`, positiveInt)
    .option('--lr <rate>', `learning rate (default: the job's; the built-in MLP job: ${BUILT_IN_JOB.lr})`, positiveNumber)
    .option('--global-batch <n>', 'samples per step over all workers, split over however many there are (default: --batch-size × workers): the same job on any number of workers', positiveInt)
    .option('--deterministic', 'bit-identical weights whatever the number of workers, through faults and resizes (needs --global-batch; --batch-size is then the micro-batch)')
    .option('--seed <n>', `seed for weights, data order and dropout (default: the job's; the built-in MLP job: ${BUILT_IN_JOB.seed})`, nonNegativeInt)
    .addOption(new Option('--optimizer <type>', 'optimizer').choices(['sgd', 'adam', 'adamw']))
    .option('--hidden <sizes>', `hidden layer widths of an MLP, comma-separated, e.g. 256,128 (the built-in MLP job: ${BUILT_IN_JOB.hidden})`, sizeList)
    .option('--data <source>', 'mnist-small (the embedded 8,000 / 2,000 digits: the default), mnist (the official 60,000 / 10,000), idx:<folder>, csv:<file>, images:<folder> (one subfolder per class), packed:<folder> (ringtrain data pack), text (the embedded English corpus) or text:<file> (UTF-8, for --model gpt)')
    .option('--tokenizer <kind>', 'text: characters (the default: the text\'s own) or bpe:<vocabulary size> (byte-level BPE learned from the training split, e.g. bpe:1024)', textTokenizer)
    .option('--label <column>', 'csv: the label column: its name, its index (negative: from the end), or last (the default)', labelColumn)
    .option('--header', 'csv: the first line names the columns (default: detected)')
    .option('--no-header', 'csv: the first line is data')
    .option('--test-fraction <f>', 'csv without a test file: the share held out for testing (default 0.2)', fraction)
    .option('--eval-every <steps>', "evaluate on the test (validation) split every this many steps too, not only at each epoch's end (default: the job's; models/gpt.json: 250)", positiveInt)
    .addOption(new Option('--backend <name>', 'compute backend').choices(['auto', 'native', 'wasm', 'reference']))
    .addOption(new Option('--gradient-compression <type>', 'gradients on the wire: none (float32), fp16, bf16 or int8 (with error feedback)').choices(['none', 'fp16', 'bf16', 'int8']));
}

export interface JobFlags {
  config?: string;
  model?: string;
  epochs?: number;
  batchSize?: number;
  globalBatch?: number;
  deterministic?: boolean;
  lr?: number;
  seed?: number;
  optimizer?: 'sgd' | 'adam' | 'adamw';
  hidden?: number[];
  data?: string;
  tokenizer?: { type: 'characters' } | { type: 'bpe'; vocabSize: number };
  label?: string | number;
  header?: boolean;
  testFraction?: number;
  backend?: JobConfig['backend'];
  evalEvery?: number;
  gradientCompression?: 'none' | 'fp16' | 'bf16' | 'int8';
}

/** Where the named models live: models/ at the top of the installation. */
export const MODELS_DIR = fileURLToPath(new URL('../../../models/', import.meta.url));

/** The named models shipped in models/. */
export function namedModels(): string[] {
  try {
    return readdirSync(MODELS_DIR).filter((f) => f.endsWith('.json')).map((f) => f.slice(0, -5)).sort();
  } catch {
    return [];
  }
}

/** `mnist`, `idx:<folder>` or `csv:<file>` as a dataset config. */
export function parseDataFlag(spec: string): unknown {
  if (spec === 'mnist' || spec === 'mnist-small') return { source: spec };
  const [kind, ...rest] = spec.split(':');
  const path = rest.join(':');
  if (kind === 'idx' && path) return { source: 'idx', dir: path };
  if (kind === 'csv' && path) return { source: 'csv', train: path };
  if (kind === 'images' && path) return { source: 'images', dir: path };
  if (kind === 'packed' && path) return { source: 'packed', dir: path };
  if (spec === 'text') return { source: 'text' };
  if (kind === 'text' && path) return { source: 'text', file: path };
  throw new InvalidArgumentError(`--data must be mnist-small, mnist, idx:<folder>, csv:<file>, images:<folder>, packed:<folder>, text (the embedded English corpus) or text:<file>, got "${spec}"`);
}

export function positiveInt(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError(`expected a positive integer, got "${v}"`);
  return n;
}

export function nonNegativeInt(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError(`expected a non-negative integer, got "${v}"`);
  return n;
}

export function positiveNumber(v: string): number {
  const n = Number(v);
  if (!(n > 0) || !Number.isFinite(n)) throw new InvalidArgumentError(`expected a positive number, got "${v}"`);
  return n;
}

function sizeList(v: string): number[] {
  return v.split(',').map((s) => positiveInt(s.trim()));
}

/** `--tokenizer`: characters, or bpe:<vocabulary size> (bounded where the dataset is checked). */
export function textTokenizer(v: string): NonNullable<JobFlags['tokenizer']> {
  if (v === 'characters' || v === 'chars') return { type: 'characters' };
  const bpe = /^bpe:(\d+)$/.exec(v);
  if (bpe) return { type: 'bpe', vocabSize: Number(bpe[1]) };
  throw new InvalidArgumentError(`expected characters or bpe:<vocabulary size> (e.g. bpe:1024), got "${v}"`);
}

/** `--label`: last, an integer index (negative from the end), or a column name. */
function labelColumn(value: string): string | number {
  return /^-?\d+$/.test(value) ? Number(value) : value;
}

function fraction(value: string): number {
  const v = Number(value);
  if (!(v > 0 && v < 1)) throw new InvalidArgumentError(`expected a fraction between 0 and 1, got "${value}"`);
  return v;
}
