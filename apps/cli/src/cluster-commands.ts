import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import { hostname } from 'node:os';
import { resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Coordinator, CoordinatorError, type RunStats } from '@ringtrain/coordinator';
import { describeModel } from '@ringtrain/core';
import { type Checkpoint, findLatestCheckpoint, listCheckpoints, loadCheckpoint } from '@ringtrain/checkpoint';
import type { MessageOf } from '@ringtrain/protocol';
import { gradientCompressionOf, type JobConfig, jobIdentityHash } from '@ringtrain/trainer';
import { runWorker, type WorkerPhase } from '@ringtrain/worker';
import { hasRingNodeFlags, hasRingProcessEnv, RING_NODE_FLAGS, ringProcessEnv } from '@ringtrain/allreduce';
import { Command, InvalidArgumentError, Option } from 'commander';
import type { Logger } from 'pino';
import { addJobOptions, checkpointJob, type JobFlags, nonNegativeInt, positiveInt, positiveNumber, resolveJob } from './job-options.js';
import { createLogger } from './logger.js';
import { addTlsOptions, readTls, type TlsFlags, tlsArgsForWorkers } from './tls-options.js';
import { addSecretOptions, childEnv, isLoopback, readSecrets, type Secrets, withoutSecretArgs } from './secrets.js';
import { startHealthServer } from './health-server.js';
import { LocalWorkers } from './local-workers.js';
import { Progress } from './progress.js';

interface RunFlags extends JobFlags, TlsFlags {
  checkpointDir?: string;
  saveEvery?: number;
  keepLast: number;
  keepBest: number;
  bestMetric: 'test_accuracy' | 'test_loss';
  onSaveError: 'stop' | 'warn';
  resume?: string;
  resumeAny?: boolean;
  initFrom?: string;
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

function addRunOptions(cmd: Command): Command {
  return addTlsOptions(addSecretOptions(addJobOptions(cmd), 'statusToken', 'adminToken'), 'both')
    .requiredOption('-n, --workers <n|min:max>', 'workers in the ring: N, or MIN:MAX for an elastic run (below MIN it pauses, up to MAX join live)', workerRange)
    .option('--max-restarts <k>', 'membership changes caused by faults that the run survives (joins and clean leaves are free)', nonNegativeInt, 3)
    .option('--rejoin-timeout <s>', 'below MIN workers, how long the run waits for workers to join before it fails', positiveInt, 300)
    .option('--max-steps <n>', 'stop after this many steps (0: run every epoch)', nonNegativeInt)
    .option('--verify-every <n>', 'compare replica weight hashes every N steps (default: each epoch end)', positiveInt)
    .option('--save-final <file>', 'write the final weights to this safetensors file')
    .option('--json', 'print the run summary as one JSON line on stdout')
    .option('--checkpoint-dir <dir>', 'write checkpoints here (each epoch end, and every --save-every steps)')
    .option('--save-every <n>', 'also checkpoint every n steps', positiveInt)
    .option('--keep-last <k>', 'checkpoints to keep, newest first', positiveInt, 3)
    .option('--keep-best <m>', 'also keep the best m by --best-metric', nonNegativeInt, 1)
    .addOption(new Option('--best-metric <name>', 'metric for --keep-best').choices(['test_accuracy', 'test_loss']).default('test_accuracy'))
    .addOption(new Option('--on-save-error <policy>', 'when a checkpoint cannot be written').choices(['stop', 'warn']).default('stop'))
    .option('--resume <file|latest|auto>', 'continue exactly from a checkpoint (latest: the newest valid one of this job in --checkpoint-dir; auto: that, or a fresh start when there is none)')
    .option('--resume-any', 'with --resume latest: take the newest valid checkpoint even if another job wrote it')
    .option('--init-from <file>', 'start from the weights of a checkpoint (new optimizer, schedule and data position)')
    .option('--health-every <n>', 'measure per-layer weight and gradient norms every n steps (0: never; each costs about 4 passes over the weights)', nonNegativeInt, 100)
    .option('--status-interval <ms>', 'at most one metrics event per this many ms on the status socket', positiveInt, 250)
    .option('--max-grad-norm <x>', 'warn when a tensor\'s gradient norm exceeds this (exploding)', positiveNumber, 1e3)
    .option('--max-update-ratio <x>', 'warn when a step moves a weight tensor by more than this fraction of its norm', positiveNumber, 0.1)
    .option('--min-grad-norm <x>', 'warn when a weight tensor\'s gradient norm falls below this (vanishing)', positiveNumber, 1e-7)
    .option('--slow-ratio <x>', 'flag a rank whose compute per step stays above this multiple of the median rank\'s', positiveNumber, 1.5)
    .option('--linger <s>', 'after the run, keep serving the dashboard, status and /metrics this many seconds (Ctrl-C ends it)', nonNegativeInt, 0)
    .option('--health-port <n>', 'also serve /healthz and /readyz on this plain-HTTP port (they are on the coordinator\'s port too)', nonNegativeInt);
}

/** ", gradients as int8 with error feedback", the DiLoCo settings, or nothing for plain float32 all-reduces. */
function describeCompression(job: JobConfig): string {
  const { wire, errorFeedback } = gradientCompressionOf(job);
  const sync = job.sync?.type === 'diloco' ? `, DiLoCo: ${job.sync.innerSteps} local steps a round, outer Nesterov lr ${job.sync.outerOptimizer.lr} momentum ${job.sync.outerOptimizer.momentum}` : '';
  return `${sync}${wire === 'float32' ? '' : `, ${sync ? 'pseudo-gradients' : 'gradients'} as ${wire}${errorFeedback ? ' with error feedback' : ''}`}`;
}

/** `ringtrain launch`: a coordinator in this process and N worker processes on this machine. */
export function launchCommand(): Command {
  return addSecretOptions(addRunOptions(new Command('launch').description('train on N local worker processes (coordinator included), like torchrun --standalone')), 'token')
    .option('--port <n>', 'coordinator port (default: any free port)', nonNegativeInt, 0)
    .option('--coordinator <url>', 'start no coordinator: supervise MAX local workers for this one (as torchrun does on each node)')
    .action(async (flags: RunFlags & { coordinator?: string }) => {
      const log = createLogger();
      const secrets = readSecrets(flags as unknown as Record<string, unknown>, ['token', 'statusToken', 'adminToken'], (m) => log.warn(m));
      if (flags.coordinator) return superviseWorkers(flags.coordinator, secrets.token, flags.workers.max, flags.maxRestarts, log, tlsArgsForWorkers(flags));
      // Local children get a fresh random token, so nothing else on the machine can join the job.
      const token = secrets.token ?? randomBytes(16).toString('hex');
      // The coordinator lives in this process: if it dies, so did the launch, and the children stop soon.
      await coordinate({ ...flags, host: '127.0.0.1' }, { ...secrets, token }, log, (address) => new LocalWorkers(flags.workers.max, address, token, flags.maxRestarts, log, ['--coordinator-timeout', '10', ...tlsArgsForWorkers(flags)]));
    });
}

/** `ringtrain coordinator`: the coordinator alone, for workers on other hosts or containers. */
export function coordinatorCommand(): Command {
  return addSecretOptions(addRunOptions(new Command('coordinator').description('run the coordinator; workers join with `ringtrain worker --coordinator ws://HOST:PORT`')), 'token')
    .option('--host <address>', 'interface to listen on', '0.0.0.0')
    .option('--port <n>', 'port to listen on', nonNegativeInt, 29500)
    .option('--insecure', 'listen beyond loopback without a job token (otherwise one is generated and printed)')
    .action(async (flags: RunFlags & { insecure?: boolean }) => {
      const log = createLogger();
      const secrets = readSecrets(flags as unknown as Record<string, unknown>, ['token', 'statusToken', 'adminToken'], (m) => log.warn(m));
      let generated = false;
      if (secrets.token === undefined && !isLoopback(flags.host ?? '127.0.0.1')) {
        if (flags.insecure) log.warn(`--insecure: anyone who can reach ${flags.host}:${flags.port} can join this job as a worker`);
        // Secure by default, as Jupyter is: a listener beyond loopback gets a token nobody can guess.
        else [secrets.token, generated] = [randomBytes(24).toString('base64url'), true];
      }
      await coordinate(flags, secrets, log, undefined, generated);
    });
}

/** `ringtrain worker`: one worker; it takes its rank, ring and job from the coordinator. */
export function workerCommand(): Command {
  return addTlsOptions(addSecretOptions(addJobOptions(new Command('worker').description('join a coordinator as one worker of the ring')), 'token'), 'both')
    .requiredOption('--coordinator <url>', 'coordinator address, e.g. ws://10.0.0.5:29500')
    .option('--ring-host <address>', 'interface the ring endpoint listens on', '127.0.0.1')
    .option('--ring-port <n>', 'ring endpoint port (default: any free port)', nonNegativeInt, 0)
    .option('--advertise <url>', 'ring address that peers dial, if not ws://ring-host:ring-port (NAT, containers)')
    .option('--coordinator-timeout <s>', 'when the coordinator is lost, dial it again this long (a restarted one re-adopts the run) before giving up', nonNegativeInt, 120)
    .option('--health-port <n>', 'serve /healthz and /readyz (joined and training in the current generation) on this port of --ring-host', nonNegativeInt)
    .action(async (flags: JobFlags & TlsFlags & { coordinator: string; ringHost: string; ringPort: number; advertise?: string; coordinatorTimeout: number; healthPort?: number }) => {
      const log = createLogger();
      const { token } = readSecrets(flags as unknown as Record<string, unknown>, ['token'], (m) => log.warn(m));
      if (!(hasRingProcessEnv() && hasRingNodeFlags()) && process.env.RINGTRAIN_NO_REEXEC !== '1') return reexecTuned({ token });
      // SIGTERM (a preemption, Kubernetes ending a pod) means: leave at the next step boundary.
      const leave = new AbortController();
      const onTerm = (): void => {
        log.warn('SIGTERM: leaving the run at the next step boundary');
        leave.abort();
      };
      process.on('SIGTERM', onTerm);
      let phase: WorkerPhase = 'joining';
      if (flags.healthPort !== undefined) {
        const probes = await startHealthServer(flags.ringHost, flags.healthPort, () => ({ ready: phase === 'training', state: phase }));
        log.info({ probes: probes.address() }, 'health probes: /healthz, /readyz');
      }
      // A config given here is only checked against the coordinator's (the coordinator's is used).
      const ownConfig = flags.config || flags.model || flags.epochs || flags.batchSize || flags.lr || flags.seed !== undefined || flags.optimizer || flags.hidden || flags.data || flags.backend || flags.label !== undefined || flags.header !== undefined || flags.testFraction;
      try {
        const result = await runWorker({
          coordinator: flags.coordinator,
          token,
          config: ownConfig ? resolveJob(flags) : undefined,
          ringHost: flags.ringHost,
          ringPort: flags.ringPort,
          advertise: flags.advertise,
          advertiseHost: flags.advertise ? undefined : await reachableHost(flags.ringHost),
          tls: readTls(flags),
          logger: log,
          peerTimeoutMs: envNumber('RINGTRAIN_PEER_TIMEOUT_MS'),
          segmentBytes: envNumber('RINGTRAIN_SEGMENT_BYTES'),
          leave: leave.signal,
          coordinatorTimeoutMs: flags.coordinatorTimeout * 1000,
          onPhase: (p) => (phase = p),
        });
        if (result.left) log.warn({ rank: result.rank }, `left the run after ${result.steps} steps`);
        else log.info({ rank: result.rank }, `rank ${result.rank}: done after ${result.steps} steps`);
      } catch (err) {
        const e = err as Error & { code?: string };
        if (e.code === 'ERR_LEFT' || e.code === 'ERR_FINISHED') {
          // Asked to leave while the coordinator was away, or came after the end: nothing failed.
          log.warn(e.message);
        } else if (e.code === 'ERR_INTERRUPTED') {
          log.warn(`stopped: ${e.message}`);
          process.exitCode = 130;
        } else {
          log.error({ code: e.code }, e.message);
          process.exitCode = 1;
        }
      } finally {
        process.off('SIGTERM', onTerm);
      }
    });
}

/**
 * Listening on all interfaces, the address ring neighbours dial: this host's name as it resolves
 * here. A container's or a pod's hosts file maps its hostname to the address its peers reach (the
 * pod IP), while its bare name often does not resolve elsewhere; a host whose name maps to
 * loopback (Debian's 127.0.1.1) advertises its name.
 */
async function reachableHost(ringHost: string): Promise<string | undefined> {
  if (ringHost !== '0.0.0.0' && ringHost !== '::') return undefined;
  try {
    const { address } = await lookup(hostname());
    return address.startsWith('127.') || address === '::1' ? undefined : address;
  } catch {
    return undefined;
  }
}

/** A positive number from the environment, or undefined. */
function envNumber(name: string): number | undefined {
  const v = Number(process.env[name]);
  return Number.isFinite(v) && v > 0 ? v : undefined;
}

/** `--workers 4` (4:4) or `--workers 2:4`. */
function workerRange(value: string): { min: number; max: number } {
  const m = /^(\d+)(?::(\d+))?$/.exec(value.trim());
  const min = m ? Number(m[1]) : Number.NaN;
  const max = m?.[2] !== undefined ? Number(m[2]) : min;
  if (!m || min < 1 || max < min || max > 1024) throw new InvalidArgumentError(`expected N or MIN:MAX with 1 ≤ MIN ≤ MAX ≤ 1024, got "${value}"`);
  return { min, max };
}

async function coordinate(flags: RunFlags, secrets: Secrets, log: Logger, startWorkers?: (address: string) => LocalWorkers, tokenGenerated = false): Promise<void> {
  const { job, resume, lineage } = resolveRun(flags, log);
  log.info({ model: describeModel(job.model), dataset: job.dataset }, `job: ${describeModel(job.model)}, ${job.epochs} epochs, batch ${job.batchSize} per worker, ${job.optimizer.type} lr ${job.optimizer.lr}${job.schedule.type === 'constant' ? '' : ` (${job.schedule.type})`}${describeCompression(job)}`);
  const tls = readTls(flags);
  let children: LocalWorkers | null = null;
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
    token: secrets.token,
    tls: tls.cert && tls.key ? { cert: tls.cert, key: tls.key } : undefined,
    logger: log,
    maxSteps: flags.maxSteps,
    verifyEvery: flags.verifyEvery,
    saveFinal: flags.saveFinal && resolve(flags.saveFinal),
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
  const address = await coordinator.listen();
  if (flags.healthPort !== undefined) {
    const probes = await startHealthServer(flags.host ?? '127.0.0.1', flags.healthPort, () => coordinator.health());
    log.info({ probes: probes.address() }, 'health probes: /healthz, /readyz');
  }
  log.info({ dashboard: coordinator.dashboardUrl }, `dashboard: ${coordinator.dashboardUrl} · watch: ringtrain status ${address}`);
  if (tokenGenerated) {
    log.warn(`no job token was given, so this one was made: workers join with  RINGTRAIN_TOKEN=${secrets.token} ringtrain worker --coordinator ${address.replace(/\/\/(0\.0\.0\.0|\[::\])/, '//<this host>')}  (set RINGTRAIN_TOKEN or --token-file to choose it, or --insecure to need none)`);
  }
  if (!isLoopback(flags.host ?? '127.0.0.1') && !secrets.statusToken) {
    log.warn(`the status socket, dashboard data and /metrics on ${flags.host} are readable by anyone who can reach it; set RINGTRAIN_STATUS_TOKEN or --status-token-file to require a token`);
  }
  children = startWorkers?.(address) ?? null;
  const progress = new Progress('train');
  coordinator.onProgress = (s) => progress.update(s.step, s.totalSteps, { epoch: `${s.epoch + 1}/${job.epochs}`, loss: s.loss, rate: s.samplesPerSecond });
  coordinator.onEpoch = () => progress.stop();
  let grace = 5000;
  try {
    const stats = await coordinator.run();
    progress.stop();
    report(stats, job.epochs, log);
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

/**
 * The job and, with --resume, where to continue: the checkpoint's own job config (so the data order,
 * model and optimizer are the same), with --epochs free to extend the run.
 */
function resolveRun(flags: RunFlags, log: Logger): { job: JobConfig; resume?: MessageOf<'assign'>['resume']; lineage?: string } {
  if (!flags.resume) return { job: resolveJob(flags) };
  let ckpt: Checkpoint;
  if (flags.resume === 'latest' || flags.resume === 'auto') {
    if (!flags.checkpointDir) throw new Error(`--resume ${flags.resume} needs --checkpoint-dir`);
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
  }
  const job = checkpointJob(ckpt.path, ckpt.meta.config, { ...(flags.epochs ? { epochs: flags.epochs } : {}), ...(flags.backend ? { backend: flags.backend } : {}) });
  const m = ckpt.meta;
  log.info({ path: ckpt.path, step: m.step, epoch: m.epoch, cursor: m.cursor, worldSize: m.worldSize }, `resuming from ${ckpt.path}: step ${m.step}, epoch ${m.epoch}, sample ${m.cursor}, saved by ${m.worldSize} workers`);
  return {
    job,
    lineage: m.lineage || m.runId || undefined,
    resume: { path: resolve(ckpt.path), state: { globalStep: m.step, epoch: m.epoch, cursor: m.cursor, optimizerStep: m.optimizer.step, dropoutRng: m.rng.dropout } },
  };
}

function report(stats: RunStats, epochs: number, log: Logger): void {
  const last = stats.epochs.at(-1);
  const t = stats.timing.map((r) => `rank ${r.rank}: data ${(r.dataMs / 1000).toFixed(2)} s, compute ${(r.computeMs / 1000).toFixed(2)} s, all-reduce ${(r.allreduceMs / 1000).toFixed(2)} s, optimizer ${(r.optimizerMs / 1000).toFixed(2)} s`);
  log.info({ ...stats.toJSON() }, `done: ${stats.step} steps in ${stats.seconds.toFixed(1)} s (${Math.round(stats.samplesPerSecond)} samples/s)` + (last ? `, test accuracy ${(100 * last.testAccuracy).toFixed(2)}% after ${stats.epochs.length}/${epochs} epochs` : ''));
  for (const line of t) log.info(line);
}

/** `launch --coordinator URL`: N local workers for a coordinator elsewhere, replaced when they die; exits when none is left. */
async function superviseWorkers(url: string, token: string | undefined, n: number, maxRestarts: number, log: Logger, workerArgs: string[]): Promise<void> {
  const workers = new LocalWorkers(n, url, token, maxRestarts, log, workerArgs);
  log.info(`supervising ${n} workers for the coordinator at ${url} (up to ${maxRestarts} replacements)`);
  // Passed on: each worker leaves at its next step boundary; what is left after 5 s is killed.
  const stop = (signal: NodeJS.Signals): void => {
    workers.signal(signal);
    void workers.stop(5000);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  process.exitCode = await workers.whenIdle();
  process.off('SIGINT', stop);
  process.off('SIGTERM', stop);
}

/**
 * Runs this same command again with the ring's allocator settings and V8 flags (both read only at process start),
 * passing signals through and exiting with its code.
 */
async function reexecTuned(secrets: Secrets): Promise<void> {
  const flags = RING_NODE_FLAGS.filter((f) => !process.execArgv.includes(f));
  // The secrets travel in the environment, never on the child's command line.
  const child = spawn(process.execPath, [...flags, ...process.execArgv, ...withoutSecretArgs(process.argv.slice(1))], { stdio: 'inherit', env: childEnv(ringProcessEnv(), secrets) });
  const forward = (signal: NodeJS.Signals): void => void child.kill(signal);
  process.on('SIGINT', forward);
  process.on('SIGTERM', forward);
  const code = await new Promise<number>((resolve) => child.once('exit', (c, sig) => resolve(c ?? (sig === 'SIGINT' ? 130 : 1))));
  process.off('SIGINT', forward);
  process.off('SIGTERM', forward);
  process.exitCode = code;
}

/** Keeps the status side up after the run for `seconds`, or until interrupted (SIGINT/SIGTERM). */
async function linger(seconds: number, dashboard: string, interrupted: AbortSignal, log: Logger): Promise<void> {
  log.info(`the run is over; the dashboard (${dashboard}), status socket and /metrics stay up for ${seconds} s (Ctrl-C to end now)`);
  await sleep(seconds * 1000, undefined, { signal: interrupted }).catch(() => {});
}
