import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import { hostname } from 'node:os';
import type { WorkerPhase } from '@ringtrain/worker';
// The process settings alone, not the all-reduce library: the program parses its command line without the engine.
import { hasRingNodeFlags, hasRingProcessEnv, RING_NODE_FLAGS, ringProcessEnv } from '@ringtrain/allreduce/process-env';
import { Command, InvalidArgumentError, Option } from 'commander';
import type { Logger } from 'pino';
import { portError } from './cli-error.js';
import { addJobOptions, type JobFlags, nonNegativeInt, positiveInt, positiveNumber } from './job-flags.js';
import { createLogger } from './logger.js';
import { envNumber } from './option-env.js';
import { addTlsOptions, readTls, type TlsFlags, tlsArgsForWorkers } from './tls-options.js';
import { addSecretOptions, childEnv, isLoopback, readSecrets, type Secrets, withoutSecretArgs } from './secrets.js';
import { EarlyListener } from './early-listener.js';
import { LocalWorkers } from './local-workers.js';
import type { RunFlags } from './run-coordinator.js';

// The coordinator's side (its server, status feed, dashboard, Prometheus) and the worker's engine
// are imported when a command runs, not when the program is built: a worker process never loads
// the coordinator's modules, and `ringtrain status` neither.

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
    .option('--init-from <file>', "start from trained weights: a checkpoint or an fp32 weights file (new optimizer, schedule and data position); its job and, for text, its characters, unless --model/--config say otherwise")
    .option('--extend-vocabulary', "with --init-from on text: characters the model was not trained on become new tokens (new rows of its embedding and head), instead of an error")
    .option('--health-every <n>', 'measure per-layer weight and gradient norms every n steps (0: never; each costs about 4 passes over the weights)', nonNegativeInt, 100)
    .option('--status-interval <ms>', 'at most one metrics event per this many ms on the status socket', positiveInt, 250)
    .option('--max-grad-norm <x>', 'warn when a tensor\'s gradient norm exceeds this (exploding)', positiveNumber, 1e3)
    .option('--max-update-ratio <x>', 'warn when a step moves a weight tensor by more than this fraction of its norm', positiveNumber, 0.1)
    .option('--min-grad-norm <x>', 'warn when a weight tensor\'s gradient norm falls below this (vanishing)', positiveNumber, 1e-7)
    .option('--slow-ratio <x>', 'flag a rank whose compute per step stays above this multiple of the median rank\'s', positiveNumber, 1.5)
    .option('--linger <s>', 'after the run, keep serving the dashboard, status and /metrics this many seconds (Ctrl-C ends it)', nonNegativeInt, 0)
    .option('--health-port <n>', 'also serve /healthz and /readyz on this plain-HTTP port (they are on the coordinator\'s port too)', nonNegativeInt);
}

/** `ringtrain launch`: a coordinator in this process and N worker processes on this machine. */
export function launchCommand(): Command {
  return addSecretOptions(addRunOptions(new Command('launch').description('train on N local worker processes (coordinator included), like torchrun --standalone')), 'token')
    .addOption(new Option('--port <n>', 'coordinator port').default(0, 'any free port').argParser(nonNegativeInt))
    .option('--coordinator <url>', 'start no coordinator: supervise MAX local workers for this one (as torchrun does on each node)')
    .action(async (flags: RunFlags & { coordinator?: string }) => {
      const log = createLogger();
      const secrets = readSecrets(flags as unknown as Record<string, unknown>, ['token', 'statusToken', 'adminToken'], (m) => log.warn(m));
      if (flags.coordinator) return superviseWorkers(flags.coordinator, secrets.token, flags.workers.max, flags.maxRestarts, log, tlsArgsForWorkers(flags));
      // Local children get a fresh random token, so nothing else on the machine can join the job.
      const token = secrets.token ?? randomBytes(16).toString('hex');
      // The port is bound and the workers started before the coordinator's modules load: they boot
      // while it does (it takes a worker a quarter second or more to dial; early dials wait, paused).
      const listener = await EarlyListener.bind('127.0.0.1', flags.port).catch((err: unknown) => {
        throw portError(err, '127.0.0.1', flags.port, '--port');
      });
      const address = `${flags.tlsCert ? 'wss' : 'ws'}://127.0.0.1:${listener.port}`;
      // They talk only to this coordinator and to each other, trusting exactly --tls-ca when there is
      // TLS (which replaces every other CA), so extra CA certificates are of no use to them; Node
      // parses that file as it starts, before any code runs (the system bundle: 45 ms of CPU each).
      const workers = new LocalWorkers(flags.workers.max, address, token, flags.maxRestarts, log, ['--coordinator-timeout', '10', ...tlsArgsForWorkers(flags)], ['NODE_EXTRA_CA_CERTS']);
      // A signal while the coordinator loads ends the workers with the launch (the coordinator handles them after).
      let signalled: NodeJS.Signals | null = null;
      const onSignal = (signal: NodeJS.Signals): void => void (signalled = signal);
      process.once('SIGINT', onSignal).once('SIGTERM', onSignal);
      const { coordinate } = await import('./run-coordinator.js');
      process.off('SIGINT', onSignal).off('SIGTERM', onSignal);
      const abandon = async (): Promise<void> => {
        listener.close();
        await workers.stop(0);
      };
      if (signalled) {
        await abandon();
        process.stderr.write(`ringtrain: ERR_INTERRUPTED: interrupted (${signalled})\n`);
        process.exitCode = 130;
        return;
      }
      // The coordinator lives in this process: if it dies, so did the launch, and the children stop soon.
      // It throws only before its run (a bad config, a checkpoint that cannot be read): the workers go at once.
      await coordinate({ ...flags, host: '127.0.0.1' }, { ...secrets, token }, log, { listener, workers }).catch(async (err: unknown) => {
        await abandon();
        throw err;
      });
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
      const { coordinate } = await import('./run-coordinator.js');
      await coordinate(flags, secrets, log, undefined, generated);
    });
}

/** `ringtrain worker`: one worker; it takes its rank, ring and job from the coordinator. */
export function workerCommand(): Command {
  return addTlsOptions(addSecretOptions(addJobOptions(new Command('worker').description('join a coordinator as one worker of the ring')), 'token'), 'both')
    .requiredOption('--coordinator <url>', 'coordinator address, e.g. ws://10.0.0.5:29500', coordinatorUrl)
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
        const { startHealthServer } = await import('./health-server.js');
        const healthPort = flags.healthPort;
        const probes = await startHealthServer(flags.ringHost, healthPort, () => ({ ready: phase === 'training', state: phase })).catch((err: unknown) => {
          throw portError(err, flags.ringHost, healthPort, '--health-port');
        });
        log.info({ probes: probes.address() }, 'health probes: /healthz, /readyz');
      }
      // A config given here is only checked against the coordinator's (the coordinator's is used).
      const ownConfig = flags.config || flags.model || flags.epochs || flags.batchSize || flags.lr || flags.seed !== undefined || flags.optimizer || flags.hidden || flags.data || flags.backend || flags.label !== undefined || flags.header !== undefined || flags.testFraction;
      try {
        const { runWorker } = await import('@ringtrain/worker');
        const result = await runWorker({
          coordinator: flags.coordinator,
          token,
          config: ownConfig ? (await import('./job-options.js')).resolveJob(flags) : undefined,
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

/** A coordinator's address as ws://HOST:PORT or wss://HOST:PORT (a bare HOST:PORT is the common slip). */
function coordinatorUrl(value: string): string {
  let url: URL | null = null;
  try {
    url = new URL(value);
  } catch {
    // reported below
  }
  if (!url || (url.protocol !== 'ws:' && url.protocol !== 'wss:') || !url.hostname) {
    throw new InvalidArgumentError(`expected ws://HOST:PORT or wss://HOST:PORT, got "${value}"${/^[\w.-]+:\d+$/.test(value) ? ` (try ws://${value})` : ''}`);
  }
  return value;
}

/** `--workers 4` (4:4) or `--workers 2:4`. */
function workerRange(value: string): { min: number; max: number } {
  const m = /^(\d+)(?::(\d+))?$/.exec(value.trim());
  const min = m ? Number(m[1]) : Number.NaN;
  const max = m?.[2] !== undefined ? Number(m[2]) : min;
  if (!m || min < 1 || max < min || max > 1024) throw new InvalidArgumentError(`expected N or MIN:MAX with 1 ≤ MIN ≤ MAX ≤ 1024, got "${value}"`);
  return { min, max };
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
  // In a process group of its own, so that a terminal's Ctrl-C reaches it once, forwarded from here,
  // and not twice (a second SIGINT means "stop now, no checkpoint").
  const child = spawn(process.execPath, [...flags, ...process.execArgv, ...withoutSecretArgs(process.argv.slice(1))], { stdio: 'inherit', env: childEnv(ringProcessEnv(), secrets), detached: true });
  const forward = (signal: NodeJS.Signals): void => void child.kill(signal);
  process.on('SIGINT', forward);
  process.on('SIGTERM', forward);
  process.on('SIGHUP', forward);
  const code = await new Promise<number>((resolve) => child.once('exit', (c, sig) => resolve(c ?? (sig === 'SIGINT' ? 130 : 1))));
  process.off('SIGINT', forward);
  process.off('SIGTERM', forward);
  process.off('SIGHUP', forward);
  process.exitCode = code;
}

