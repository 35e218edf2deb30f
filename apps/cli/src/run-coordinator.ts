import { hostname } from 'node:os';
import { resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Checkpoint, findLatestCheckpoint, listCheckpoints, loadCheckpoint } from '@ringtrain/checkpoint';
import { Coordinator, CoordinatorError, type RunStats } from '@ringtrain/coordinator';
import { describeModel, positionsOf } from '@ringtrain/core';
import { type MessageOf, RUN_ID_PATTERN } from '@ringtrain/protocol';
import type { TextTokenizer } from '@ringtrain/data';
import { charsPerTokenOf, describeLanguageModelLoss, gradientCompressionOf, type JobConfig, jobIdentityHash } from '@ringtrain/trainer';
import type { Logger } from 'pino';
import { startHealthServer } from './health-server.js';
import type { JobFlags } from './job-flags.js';
import { checkpointJob, type InitModel, resolveJob, testSetOf } from './job-options.js';
import { readModelFileMeta } from './model-file.js';
import { errorWithCode, portError } from './cli-error.js';
import type { EarlyListener } from './early-listener.js';
import type { LocalWorkers } from './local-workers.js';
import { envNumber } from './option-env.js';
import { Progress } from './progress.js';
import { isLoopback, type Secrets } from './secrets.js';
import { readTls, type TlsFlags } from './tls-options.js';
import { outputPath } from './output-path.js';

// The coordinator's side of `launch` and `coordinator`, loaded only by those commands.

export interface RunFlags extends JobFlags, TlsFlags {
  checkpointDir?: string;
  saveEvery?: number;
  keepLast: number;
  keepBest: number;
  bestMetric: 'test_accuracy' | 'test_loss';
  onSaveError: 'stop' | 'warn';
  resume?: string;
  resumeAny?: boolean;
  initFrom?: string;
  extendVocabulary?: boolean;
  workers: { min: number; max: number };
  maxRestarts: number;
  rejoinTimeout: number;
  host?: string;
  port: number;
  maxSteps?: number;
  verifyEvery?: number;
  saveFinal?: string;
  json?: boolean;
  healthEvery: number;
  statusInterval: number;
  linger: number;
  maxGradNorm: number;
  maxUpdateRatio: number;
  minGradNorm: number;
  slowRatio: number;
  healthPort?: number;
}

/** ", gradients as int8 with error feedback", the DiLoCo settings, or nothing for plain float32 all-reduces. */
function describeCompression(job: JobConfig): string {
  const { wire, errorFeedback } = gradientCompressionOf(job);
  const sync = job.sync?.type === 'diloco' ? `, DiLoCo: ${job.sync.innerSteps} local steps a round, outer Nesterov lr ${job.sync.outerOptimizer.lr} momentum ${job.sync.outerOptimizer.momentum}` : '';
  return `${sync}${wire === 'float32' ? '' : `, ${sync ? 'pseudo-gradients' : 'gradients'} as ${wire}${errorFeedback ? ' with error feedback' : ''}`}`;
}

/** `launch`'s own port and workers, started before this module loaded. */
export interface LocalRun {
  listener: EarlyListener;
  workers: LocalWorkers;
}

/** Runs the job to its end. Throws only before the run starts (a bad config, an unreadable checkpoint, a port in use); the run's own failure sets the exit code. */
export async function coordinate(flags: RunFlags, secrets: Secrets, log: Logger, local?: LocalRun, tokenGenerated = false): Promise<void> {
  const { job, resume, lineage } = resolveRun(flags, log);
  log.info({ model: describeModel(job.model), dataset: job.dataset }, `job: ${describeModel(job.model)}, ${job.epochs} epochs, ${describeBatch(job)}, ${job.optimizer.type} lr ${job.optimizer.lr}${job.schedule.type === 'constant' ? '' : ` (${job.schedule.type})`}${describeCompression(job)}`);
  const tls = readTls(flags);
  const children = local?.workers ?? null;
  const coordinator = new Coordinator({
    config: job,
    workers: flags.workers.max,
    minWorkers: flags.workers.min,
    maxRestarts: flags.maxRestarts,
    rejoinTimeoutMs: flags.rejoinTimeout * 1000,
    describeExit: (pid) => children?.describeExit(pid),
    onDropped: (pid, host) => {
      if (host === hostname()) children?.end(pid);
    },
    host: flags.host,
    port: flags.port,
    listener: local?.listener,
    token: secrets.token,
    tls: tls.cert && tls.key ? { cert: tls.cert, key: tls.key } : undefined,
    logger: log,
    maxSteps: flags.maxSteps ?? job.steps,
    verifyEvery: flags.verifyEvery,
    saveFinal: flags.saveFinal && outputPath('--save-final', flags.saveFinal),
    resume,
    initFrom: flags.initFrom && resolve(flags.initFrom),
    checkpoint: flags.checkpointDir
      ? { dir: resolve(flags.checkpointDir), everySteps: flags.saveEvery ?? 0, atEpochEnd: true, keepLast: flags.keepLast, keepBest: flags.keepBest, metric: flags.bestMetric, onError: flags.onSaveError, ...(lineage ? { lineage } : {}) }
      : undefined,
    joinTimeoutMs: envNumber('RINGTRAIN_JOIN_TIMEOUT_MS'),
    handshakeTimeoutMs: envNumber('RINGTRAIN_HANDSHAKE_TIMEOUT_MS'),
    statusToken: secrets.statusToken,
    adminToken: secrets.adminToken,
    healthEvery: flags.healthEvery,
    statusIntervalMs: flags.statusInterval,
    health: { maxGradNorm: flags.maxGradNorm, maxUpdateRatio: flags.maxUpdateRatio, minGradNorm: flags.minGradNorm },
    stragglers: { ratio: flags.slowRatio },
  });
  // Installed before listening: a Ctrl-C once workers can join never kills the process unhandled.
  // Ctrl-C stops the run; after the run, it ends the linger. Handled until the very end, so that
  // a signal between the two never kills the process with the workers still being reaped.
  const interrupted = new AbortController();
  const onSignal = (signal: NodeJS.Signals): void => {
    if (interrupted.signal.aborted) return coordinator.stop(`interrupted again (${signal})`);
    interrupted.abort();
    // With checkpoints, a stop saves first (rank 0, after its current step; at most 30 s).
    void coordinator.checkpointThenStop(`interrupted (${signal})`, 30_000);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  let address: string;
  try {
    address = await coordinator.listen().catch((err: unknown) => {
      throw portError(err, flags.host ?? '127.0.0.1', flags.port ?? 0, '--port');
    });
    if (flags.healthPort !== undefined) {
      const healthPort = flags.healthPort;
      const probes = await startHealthServer(flags.host ?? '127.0.0.1', healthPort, () => coordinator.health()).catch((err: unknown) => {
        throw portError(err, flags.host ?? '127.0.0.1', healthPort, '--health-port');
      });
      log.info({ probes: probes.address() }, 'health probes: /healthz, /readyz');
    }
  } catch (err) {
    // Nothing ran yet (a port in use): close what is open, so that the process ends with the error.
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await coordinator.close();
    throw err;
  }
  log.info({ dashboard: coordinator.dashboardUrl }, `dashboard: ${coordinator.dashboardUrl} · watch: ringtrain status ${address}`);
  if (tokenGenerated) {
    log.warn(`no job token was given, so this one was made: workers join with  RINGTRAIN_TOKEN=${secrets.token} ringtrain worker --coordinator ${address.replace(/\/\/(0\.0\.0\.0|\[::\])/, '//<this host>')}  (set RINGTRAIN_TOKEN or --token-file to choose it, or --insecure to need none)`);
  }
  if (!isLoopback(flags.host ?? '127.0.0.1') && !secrets.statusToken) {
    log.warn(`the status socket, dashboard data and /metrics on ${flags.host} are readable by anyone who can reach it; set RINGTRAIN_STATUS_TOKEN or --status-token-file to require a token`);
  }
  // launch's own workers all gone, none to be started (the restart budget spent): nothing can join.
  void children?.whenIdle().then(() => coordinator.workersGone(children.lastFailure()));
  const progress = new Progress('train');
  coordinator.onProgress = (s) => progress.update(s.step, s.totalSteps, { epoch: `${s.epoch + 1}/${job.epochs}`, loss: s.loss, rate: s.samplesPerSecond });
  coordinator.onEpoch = () => progress.stop();
  let grace = 5000;
  try {
    const stats = await coordinator.run();
    progress.stop();
    report(stats, job.epochs, positionsOf(job.model), charsPerTokenOf(job.dataset), log, testSetOf(job.dataset));
    if (flags.json) process.stdout.write(`${JSON.stringify(stats)}\n`);
  } catch (err) {
    progress.stop();
    const e = err as CoordinatorError;
    if (flags.json) process.stdout.write(`${JSON.stringify({ error: { code: e.code, message: e.message, rank: e.rank }, ...coordinator.stats.toJSON() })}\n`);
    process.stderr.write(`ringtrain: ${e.code}: ${e.message}\n`);
    process.exitCode = e instanceof CoordinatorError && e.code === 'ERR_INTERRUPTED' ? 130 : 1;
    // After a failure the healthy workers stop within milliseconds; one that hangs gets killed soon.
    if (process.exitCode === 1) grace = 500;
  } finally {
    await children?.stop(grace);
    if (flags.linger > 0 && !interrupted.signal.aborted) await linger(flags.linger, coordinator.dashboardUrl, interrupted.signal, log);
    await coordinator.close();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

/** The job flags a resumed run cannot honour (--epochs and --backend it can). */
const RESUME_FIXED: [keyof RunFlags, string][] = [
  ['config', '--config'],
  ['model', '--model'],
  ['data', '--data'],
  ['tokenizer', '--tokenizer'],
  ['lr', '--lr'],
  ['batchSize', '--batch-size'],
  ['globalBatch', '--global-batch'],
  ['deterministic', '--deterministic'],
  ['optimizer', '--optimizer'],
  ['hidden', '--hidden'],
  ['seed', '--seed'],
  ['gradientCompression', '--gradient-compression'],
  ['evalEvery', '--eval-every'],
  ['label', '--label'],
  ['header', '--header'],
  ['testFraction', '--test-fraction'],
];

/** What --init-from's file says of its model (its header alone); a quantized file cannot start training. */
function initModel(path: string): InitModel {
  const meta = readModelFileMeta(path);
  if (meta.precision !== 'fp32') throw errorWithCode('ERR_ARGUMENT', `--init-from ${path}: its weights are ${meta.precision}, quantized for use; start training from a checkpoint or an fp32 weights file (--save-final, or export without --quantize)`);
  const tokenizer = (meta.config as { dataset?: { tokenizer?: TextTokenizer } } | undefined)?.dataset?.tokenizer;
  if (tokenizer?.type === 'bpe') return { path, config: meta.config, tokenizer };
  return { path, config: meta.config, ...(meta.classNames ? { vocabulary: meta.classNames } : {}) };
}

/**
 * The job and, with --resume, where to continue: the checkpoint's own job config (so the data order,
 * model and optimizer are the same), with --epochs free to extend the run.
 */
function resolveRun(flags: RunFlags, log: Logger): { job: JobConfig; resume?: MessageOf<'assign'>['resume']; lineage?: string } {
  if (flags.initFrom && flags.resume) throw errorWithCode('ERR_ARGUMENT', '--init-from and --resume both say where to start: --resume continues a run (its optimizer, step and data position), --init-from starts a new one from trained weights');
  if (flags.extendVocabulary && !flags.initFrom) throw errorWithCode('ERR_ARGUMENT', '--extend-vocabulary grows the vocabulary of a trained model: it needs --init-from');
  if (!flags.resume) return { job: resolveJob(flags, flags.initFrom ? { ...initModel(flags.initFrom), extendVocabulary: flags.extendVocabulary } : undefined) };
  let ckpt: Checkpoint;
  if (flags.resume === 'latest' || flags.resume === 'auto') {
    if (!flags.checkpointDir) throw errorWithCode('ERR_ARGUMENT', `--resume ${flags.resume} looks for the newest checkpoint in --checkpoint-dir: give it, or --resume FILE`);
    // auto: a container that starts again continues its job; the first start has nothing to continue.
    if (flags.resume === 'auto' && !listCheckpoints(flags.checkpointDir, true).length) {
      log.info(`--resume auto: no checkpoint in ${flags.checkpointDir} yet, starting the job`);
      return { job: resolveJob(flags) };
    }
    // Only this job's checkpoints (the same config, but for epochs and backend), unless --resume-any.
    const identity = jobIdentityHash(resolveJob(flags));
    const found = findLatestCheckpoint(flags.checkpointDir, (meta) => {
      if (flags.resumeAny) return null;
      const theirs = jobIdentityHash(meta.config);
      return theirs === identity ? null : `another job's (config ${theirs}; this job's is ${identity}; --resume-any takes it anyway)`;
    });
    for (const s of found.skipped) log.warn(`passed over ${s.reason}`);
    if (found.skipped.length) log.warn(`taking ${found.checkpoint.path}, the newest valid checkpoint of this job`);
    ckpt = found.checkpoint;
  } else {
    ckpt = loadCheckpoint(flags.resume);
    // A checkpoint named by path is continued as it is: job flags that describe another job are
    // refused, not ignored (ones that describe its own, as a --config of the same job, are fine).
    const given = RESUME_FIXED.filter(([key]) => flags[key] !== undefined).map(([, flag]) => flag);
    if (given.length && jobIdentityHash(resolveJob(flags)) !== jobIdentityHash(ckpt.meta.config)) {
      throw errorWithCode('ERR_ARGUMENT', `--resume ${flags.resume} continues that run's own job, which ${given.join(', ')} would change; leave ${given.length > 1 ? 'them' : 'it'} out (--epochs may extend it), or start a new run from its weights with --init-from`);
    }
  }
  const job = checkpointJob(ckpt.path, ckpt.meta.config, { ...(flags.epochs ? { epochs: flags.epochs } : {}), ...(flags.backend ? { backend: flags.backend } : {}) });
  const m = ckpt.meta;
  if (job.deterministic && !flags.deterministic) log.info(`${ckpt.path} is of a deterministic run: it goes on bit for bit as it would have, on any number of workers`);
  // A finished run has nothing to resume: it ends at once, with its summary, saying so and how to go further.
  const stepsDone = job.steps !== undefined && m.step >= job.steps;
  if (stepsDone || m.epoch >= job.epochs) {
    log.warn(`the run in ${ckpt.path} has finished (${stepsDone ? `step ${m.step} of its ${job.steps}` : `epoch ${m.epoch} of ${job.epochs}`}): nothing is left to train; ${stepsDone ? 'start a new run from its weights with --init-from' : `give --epochs ${m.epoch + 1} or more to train it further, or start a new run from its weights with --init-from`}`);
  }
  log.info({ path: ckpt.path, step: m.step, epoch: m.epoch, cursor: m.cursor, worldSize: m.worldSize }, `resuming from ${ckpt.path}: step ${m.step}, epoch ${m.epoch}, sample ${m.cursor}, saved by ${m.worldSize} workers`);
  // Retention deletes only the files of this lineage; one that is not a run id (a file made
  // elsewhere) is not adopted: the resumed run then keeps its own lineage and deletes none of it.
  const lineage = [m.lineage, m.runId].find((id) => id && RUN_ID_PATTERN.test(id));
  if (!lineage) log.warn(`${ckpt.path} names no run (lineage ${JSON.stringify(m.lineage.slice(0, 80))}): retention will delete none of its files`);
  return {
    job,
    lineage,
    resume: { path: resolve(ckpt.path), state: { globalStep: m.step, epoch: m.epoch, cursor: m.cursor, optimizerStep: m.optimizer.step, dropoutRng: m.rng.dropout } },
  };
}

function report(stats: RunStats, epochs: number, positions: number, charsPerToken: number, log: Logger, testSet: string): void {
  const last = stats.epochs.at(-1);
  const t = stats.timing.map((r) => `rank ${r.rank}: data ${(r.dataMs / 1000).toFixed(2)} s, compute ${(r.computeMs / 1000).toFixed(2)} s, all-reduce ${(r.allreduceMs / 1000).toFixed(2)} s, optimizer ${(r.optimizerMs / 1000).toFixed(2)} s`);
  const figure = !last ? '' : positions > 1 ? `, ${describeLanguageModelLoss(last.testLoss, charsPerToken)}` : `, test accuracy ${(100 * last.testAccuracy).toFixed(2)}% on ${testSet} after ${stats.epochs.length}/${epochs} epochs`;
  log.info({ ...stats.toJSON() }, `done: ${stats.step} steps in ${stats.seconds.toFixed(1)} s (${Math.round(stats.samplesPerSecond * positions)} ${positions > 1 ? 'tokens' : 'samples'}/s)${figure}`);
  for (const line of t) log.info(line);
}

/** Keeps the status side up after the run for `seconds`, or until interrupted (SIGINT/SIGTERM). */
async function linger(seconds: number, dashboard: string, interrupted: AbortSignal, log: Logger): Promise<void> {
  log.info(`the run is over; the dashboard (${dashboard}), status socket and /metrics stay up for ${seconds} s (Ctrl-C to end now)`);
  await sleep(seconds * 1000, undefined, { signal: interrupted }).catch(() => {});
}

/** How a step's samples are split: per worker, or a global batch (in micro-batches, deterministic). */
function describeBatch(job: JobConfig): string {
  if (job.deterministic) return `deterministic: global batch ${job.globalBatchSize} in ${job.globalBatchSize! / job.batchSize} micro-batches of ${job.batchSize} (bit-identical on any number of workers)`;
  return job.globalBatchSize ? `global batch ${job.globalBatchSize}` : `batch ${job.batchSize} per worker`;
}

