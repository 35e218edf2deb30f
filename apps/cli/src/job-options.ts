import { readFileSync } from 'node:fs';
import { mlpSpec, outputSize, parseModelSpec } from '@ringtrain/core';
import { type JobConfig, DEFAULT_JOB, mergeConfig, parseJobConfig } from '@ringtrain/trainer';
import { type Command, InvalidArgumentError, Option } from 'commander';

/** The flags that shape a job; every command that starts training takes them. */
export function addJobOptions(cmd: Command): Command {
  return cmd
    .option('-c, --config <file>', 'job config JSON (model, dataset, optimizer, schedule, batchSize, epochs, seed)')
    .option('--epochs <n>', 'epochs to train', positiveInt)
    .option('--batch-size <n>', 'samples per step (per worker in a cluster)', positiveInt)
    .option('--lr <rate>', 'learning rate', positiveNumber)
    .option('--seed <n>', 'seed for weights, data order and dropout', nonNegativeInt)
    .addOption(new Option('--optimizer <type>', 'optimizer').choices(['sgd', 'adam', 'adamw']))
    .option('--hidden <sizes>', 'hidden layer widths of an MLP, comma-separated (e.g. 256,128)', sizeList)
    .option('--data <source>', 'mnist (embedded), idx:<folder>, csv:<file>')
    .addOption(new Option('--backend <name>', 'compute backend').choices(['auto', 'native', 'wasm', 'reference']));
}

export interface JobFlags {
  config?: string;
  epochs?: number;
  batchSize?: number;
  lr?: number;
  seed?: number;
  optimizer?: 'sgd' | 'adam' | 'adamw';
  hidden?: number[];
  data?: string;
  backend?: JobConfig['backend'];
}

/** Default job ← config file ← flags, validated as a whole. */
export function resolveJob(flags: JobFlags): JobConfig {
  let job: unknown = DEFAULT_JOB;
  if (flags.config) job = mergeConfig(job, readJson(flags.config));
  const over: Record<string, unknown> = {};
  if (flags.epochs !== undefined) over.epochs = flags.epochs;
  if (flags.batchSize !== undefined) over.batchSize = flags.batchSize;
  if (flags.seed !== undefined) over.seed = flags.seed;
  if (flags.backend) over.backend = flags.backend;
  if (flags.optimizer || flags.lr !== undefined) {
    const current = (job as { optimizer: { type: string; lr: number } }).optimizer;
    over.optimizer =
      flags.optimizer && flags.optimizer !== current.type
        ? { type: flags.optimizer, lr: flags.lr ?? (flags.optimizer === 'sgd' ? 0.1 : 0.001) }
        : { ...current, lr: flags.lr ?? current.lr };
  }
  if (flags.data) over.dataset = parseDataFlag(flags.data);
  job = mergeConfig(job, over);
  if (flags.hidden) {
    // A ReLU MLP with these hidden widths, keeping the config's input size, output width and loss.
    const model = parseModelSpec((job as { model: unknown }).model);
    job = { ...(job as object), model: mlpSpec([model.inputSize, ...flags.hidden, outputSize(model)], { loss: model.loss }) };
  }
  return parseJobConfig(job);
}

/** `mnist`, `idx:<folder>` or `csv:<file>` as a dataset config. */
export function parseDataFlag(spec: string): unknown {
  if (spec === 'mnist') return { source: 'mnist' };
  const [kind, ...rest] = spec.split(':');
  const path = rest.join(':');
  if (kind === 'idx' && path) return { source: 'idx', dir: path };
  if (kind === 'csv' && path) return { source: 'csv', train: path };
  throw new InvalidArgumentError(`--data must be mnist, idx:<folder> or csv:<file>, got "${spec}"`);
}

function readJson(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`cannot read config ${file}: ${(err as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Error(`config ${file} is not valid JSON: ${(err as Error).message}`);
  }
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

/** The job config a checkpoint recorded (with `over` on top), or an error that names the file. */
export function checkpointJob(path: string, config: unknown, over: Record<string, unknown> = {}): JobConfig {
  try {
    return parseJobConfig({ ...(typeof config === 'object' && config !== null ? config : {}), ...over });
  } catch (err) {
    throw Object.assign(new Error(`${path}: ${(err as Error).message}`), { code: (err as { code?: string }).code ?? 'ERR_SPEC', cause: err });
  }
}
