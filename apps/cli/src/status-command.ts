import type { RankInfo, StatusEvent, StatusEventOf } from '@ringtrain/protocol';
import { describeLanguageModelLoss } from '@ringtrain/trainer/figures';
import { Argument, Command } from 'commander';
import type logUpdateFn from 'log-update';
import type WebSocket from 'ws';
import { positiveInt } from './job-flags.js';
import { printable } from './logger.js';
import { readSecret } from './secrets.js';
import { addTlsOptions, readTls, type TlsFlags } from './tls-options.js';
import { table } from './table.js';

/** ws://host:port/status from what a person types: ws://host:port, http://host:port/, host:port. */
export function statusUrl(given: string): string {
  const url = new URL(/^[a-z]+:\/\//i.test(given) ? given : `ws://${given}`);
  if (url.protocol === 'http:') url.protocol = 'ws:';
  if (url.protocol === 'https:') url.protocol = 'wss:';
  url.pathname = '/status';
  url.search = '';
  return url.toString();
}

interface StatusFlags extends TlsFlags {
  token?: string;
  tokenFile?: string;
  json?: boolean;
  timeout: number;
}

/** Opens the status socket (retrying until the deadline: the coordinator may not be up yet). */
async function openStatus(given: string, token: string | undefined, tls: TlsFlags, timeoutS: number, onEvent: (e: StatusEvent, ws: WebSocket) => void): Promise<WebSocket> {
  const [{ dialUntil }, { parseStatusEvent, STATUS_VERSION }] = await Promise.all([import('@ringtrain/allreduce'), import('@ringtrain/protocol')]);
  const url = statusUrl(given);
  const headers = token ? { authorization: `Bearer ${token}` } : undefined;
  const { ca } = readTls(tls);
  const result = await dialUntil(url, { headers, ...(ca ? { ca } : {}) }, Date.now() + timeoutS * 1000, (ws) => {
    ws.on('message', (data) => {
      let event: StatusEvent;
      try {
        event = parseStatusEvent(String(data));
      } catch (err) {
        // Another schema version, or not a coordinator: say so instead of guessing.
        process.stderr.write(`ringtrain: ERR_STATUS_SCHEMA: the coordinator sent an event this client cannot read (schema v${STATUS_VERSION}): ${(err as Error).message.slice(0, 500)}\n`);
        process.exitCode = 1;
        ws.close(1002, 'unreadable event');
        return;
      }
      onEvent(event, ws);
    });
  });
  if ('tls' in result) throw Object.assign(new Error(`TLS with ${url} failed: ${result.tls}`), { code: 'ERR_TLS' });
  if ('status' in result) throw Object.assign(new Error(`the coordinator refused the status connection: ${result.status} ${result.body}`), { code: result.status === 401 ? 'ERR_AUTH' : 'ERR_REJECTED' });
  if (!('ws' in result)) throw Object.assign(new Error(`no coordinator answered at ${url} within ${timeoutS} s${'last' in result && result.last ? ` (${result.last})` : ''}`), { code: 'ERR_UNREACHABLE' });
  return result.ws;
}

const EXIT_CODES = { finished: 0, failed: 1, stopped: 130 } as const;
const TERMINAL = new Set(['finished', 'failed', 'stopped']);

/** What an `end` event would have said, from the snapshot of a run that is over. */
function endOf(s: StatusEventOf<'snapshot'>): StatusEventOf<'end'> {
  const last = s.evaluations.at(-1);
  return { type: 'end', v: s.v, seq: s.seq, time: s.time, state: s.state, error: s.error, steps: s.metrics?.step ?? 0, seconds: s.startedAt ? (s.time - s.startedAt) / 1000 : 0, samplesPerSecond: s.metrics?.samplesPerSecond ?? 0, testAccuracy: last ? last.testAccuracy : null };
}

/** `ringtrain status <url>`: the run, live, redrawn in place; or the events as JSON lines. */
export function statusCommand(): Command {
  return addTlsOptions(new Command('status'), 'client')
    .description('watch a run live: state, progress, loss, throughput, per-rank step times, warnings')
    .argument('<url>', 'the coordinator, e.g. ws://127.0.0.1:29500 (as printed by launch/coordinator)')
    .option('--token <secret>', 'status (or admin) token (or RINGTRAIN_STATUS_TOKEN)')
    .option('--token-file <file>', 'read the token from this file (or RINGTRAIN_STATUS_TOKEN_FILE)')
    .option('--json', 'print every event as one JSON line (for scripts)')
    .option('--timeout <s>', 'give up if no coordinator answers within this many seconds', positiveInt, 30)
    .action(async (url: string, flags: StatusFlags) => {
      const output = flags.json ? 'none' : process.stdout.isTTY ? 'live' : 'final';
      // log-update (and its text-width tables) only for a terminal that redraws.
      const view = new StatusView(output, output === 'live' ? (await import('log-update')).default : undefined);
      let ended: StatusEventOf<'end'> | null = null;
      const ws = await openStatus(url, readSecret(flags.token, flags.tokenFile, 'RINGTRAIN_STATUS_TOKEN'), flags, flags.timeout, (e, socket) => {
        if (flags.json) process.stdout.write(`${JSON.stringify(e)}\n`);
        else view.apply(e);
        // The end of the run, or a run already over (a coordinator that lingers): the watch is over.
        const over = e.type === 'end' ? e : e.type === 'snapshot' && TERMINAL.has(e.state) ? endOf(e) : null;
        if (over) {
          if (!flags.json && over !== e) view.apply(over);
          ended = over;
          socket.close(1000, 'run ended');
        }
      });
      const onSignal = (): void => ws.close(1000, 'watcher left');
      process.once('SIGINT', onSignal);
      const code = await new Promise<number>((resolve) => ws.once('close', (c) => resolve(c)));
      process.off('SIGINT', onSignal);
      view.done();
      const end = ended as StatusEventOf<'end'> | null;
      if (end) process.exitCode = EXIT_CODES[end.state as keyof typeof EXIT_CODES] ?? 0;
      else if (code !== 1000 && !process.exitCode) {
        process.stderr.write(`ringtrain: the status connection closed (code ${code}) before the run ended\n`);
        process.exitCode = 1;
      }
    });
}

/** `ringtrain control <url> stop|checkpoint`: a control action, with the admin token. */
export function controlCommand(): Command {
  return addTlsOptions(new Command('control'), 'client')
    .description('ask a running job to stop, or to write a checkpoint now (needs the admin token)')
    .argument('<url>', 'the coordinator, e.g. ws://127.0.0.1:29500')
    .addArgument(new Argument('<action>', 'stop: end the run on every worker; checkpoint: rank 0 saves after its current step').choices(['stop', 'checkpoint']))
    .option('--token <secret>', 'admin token (or RINGTRAIN_ADMIN_TOKEN)')
    .option('--token-file <file>', 'read the admin token from this file (or RINGTRAIN_ADMIN_TOKEN_FILE)')
    .option('--timeout <s>', 'deadline for the answer, seconds', positiveInt, 10)
    .action(async (url: string, action: 'stop' | 'checkpoint', flags: TlsFlags & { token?: string; tokenFile?: string; timeout: number }) => {
      let resolveReply: (e: StatusEventOf<'commandResult'>) => void = () => {};
      const reply = new Promise<StatusEventOf<'commandResult'>>((resolve) => (resolveReply = resolve));
      const ws = await openStatus(url, readSecret(flags.token, flags.tokenFile, 'RINGTRAIN_ADMIN_TOKEN'), flags, flags.timeout, (e) => {
        if (e.type === 'commandResult') resolveReply(e);
      });
      ws.send(JSON.stringify({ type: 'command', id: 1, action }));
      const timer = setTimeout(() => resolveReply({ type: 'commandResult', v: 1, seq: 1, time: Date.now(), id: 1, ok: false, code: 'ERR_TIMEOUT', message: `no answer within ${flags.timeout} s` }), flags.timeout * 1000);
      const r = await reply;
      clearTimeout(timer);
      ws.close(1000, 'done');
      if (r.ok) process.stdout.write(`${r.message}\n`);
      else {
        process.stderr.write(`ringtrain: ${r.code}: ${r.message}\n`);
        process.exitCode = 1;
      }
    });
}

/**
 * The terminal view: what the last snapshot said, updated by each event, drawn as text. `live`
 * redraws it in place (a terminal), `final` prints it once at the end (a pipe), `none` never.
 */
export class StatusView {
  private snap: StatusEventOf<'snapshot'> | null = null;
  private end: StatusEventOf<'end'> | null = null;
  private lastDraw = 0;
  private spread: StatusEventOf<'metrics'>['computeSpread'] = null;

  constructor(
    private readonly output: 'live' | 'final' | 'none',
    /** Redraws the terminal's last lines; needed for 'live'. */
    private readonly logUpdate?: typeof logUpdateFn,
  ) {}

  apply(e: StatusEvent): void {
    if (e.type === 'snapshot') this.snap = e;
    const s = this.snap;
    if (!s) return;
    switch (e.type) {
      case 'state':
        s.state = e.state;
        s.error = e.error;
        break;
      case 'rank': {
        const i = s.ranks.findIndex((r) => r.workerId === e.rank.workerId);
        if (i >= 0) s.ranks[i] = e.rank;
        else s.ranks.push(e.rank);
        s.ranks.sort((a, b) => a.rank - b.rank);
        break;
      }
      case 'metrics':
        s.metrics = e.metrics;
        s.ranks = e.ranks;
        this.spread = e.computeSpread;
        break;
      case 'evaluation':
        s.evaluations.push(e.evaluation);
        break;
      case 'checkpoint':
        if (e.checkpoint) s.checkpoints.push(e.checkpoint);
        break;
      case 'warning':
        s.warnings.push(e.warning);
        break;
      case 'end':
        this.end = e;
        break;
      default:
    }
    // At most 10 redraws a second.
    const now = Date.now();
    if (this.output === 'live' && (now - this.lastDraw > 100 || e.type === 'end')) {
      this.lastDraw = now;
      this.logUpdate!(this.render());
    }
  }

  done(): void {
    if (this.output === 'none' || !this.snap) return;
    if (this.output === 'live') {
      this.logUpdate!(this.render());
      this.logUpdate!.done();
    } else process.stdout.write(`${this.render()}\n`);
  }

  render(): string {
    const s = this.snap!;
    const m = s.metrics;
    const c = s.config;
    const lines = [
      `ringtrain · run ${s.runId.slice(0, 8)} · ${s.state}${s.generation ? ` (generation ${s.generation})` : ''} · ${s.ranks.length}/${s.workers} workers`,
      `${c.model}, ${c.parameters.toLocaleString('en')} parameters · ${c.dataset} · ${c.optimizer}, lr ${m?.lr ?? c.lr} · ${c.globalBatch ? `global batch ${c.globalBatch}` : `batch ${c.batchSize}/rank`}${c.deterministic ? ' · deterministic (the same bits on any number of workers)' : ''}`,
    ];
    if (m) {
      const frac = m.totalSteps ? m.step / m.totalSteps : 0;
      const eta = m.etaSeconds === null ? '–' : formatSeconds(m.etaSeconds);
      lines.push(`${bar(frac, 30)} ${(100 * frac).toFixed(1).padStart(5)}%  step ${m.step}/${m.totalSteps}  epoch ${m.epoch + 1}/${c.epochs}  ETA ${eta}`);
      const ev = s.evaluations.at(-1);
      // A language model is read by its validation loss per token, and its speed in tokens.
      const lm = c.positions > 1;
      lines.push(
        `loss ${m.loss === null ? 'NaN' : m.loss.toFixed(4)}` +
          (ev ? ` · ${lm ? `${describeLanguageModelLoss(ev.testLoss, charsPerTokenFrom(ev))} at step ${ev.step}` : `test ${(100 * ev.testAccuracy).toFixed(2)}%`}` : '') +
          ` · ${Math.round(m.samplesPerSecond * c.positions).toLocaleString('en')} ${lm ? 'tokens' : 'samples'}/s · all-reduce ${(m.allreduceBusbw / 1e6).toFixed(0)} MB/s busbw`,
      );
    }
    lines.push('', rankTable(s.ranks));
    const sp = this.spread;
    if (sp) lines.push(`compute per step over the ranks: min ${sp.min.toFixed(2)} ms, median ${sp.median.toFixed(2)} ms, max ${sp.max.toFixed(2)} ms`);
    const warnings = s.warnings.slice(-5);
    // Worker ids, warnings and errors may carry a peer's words: none of its control characters reach the terminal.
    if (warnings.length) lines.push('', `warnings (${s.warnings.length}):`, ...warnings.map((w) => printable(`  ${w.code}: ${w.message}`)));
    const ck = s.checkpoints.at(-1);
    if (ck) lines.push('', `last checkpoint: step ${ck.step} ${ck.path} (training paused ${ck.stallMs.toFixed(1)} ms)`);
    const end = this.end;
    if (end) {
      const ev = s.evaluations.at(-1);
      const figure = c.positions > 1 ? (ev ? `, ${describeLanguageModelLoss(ev.testLoss, charsPerTokenFrom(ev))}` : '') : end.testAccuracy !== null ? `, test accuracy ${(100 * end.testAccuracy).toFixed(2)}%` : '';
      lines.push('', end.error ? printable(`run ${end.state}: ${end.error.code}: ${end.error.message}`) : `run ${end.state}: ${end.steps} steps in ${end.seconds.toFixed(1)} s, ${Math.round(end.samplesPerSecond).toLocaleString('en')} samples/s${figure}`);
    }
    return lines.join('\n');
  }
}

function rankTable(ranks: RankInfo[]): string {
  const ms = (x: number | undefined): string => (x === undefined ? '–' : `${x.toFixed(2)} ms`);
  return table(
    ['rank', 'worker', 'state', 'step', 'data', 'compute', 'all-reduce', 'optimizer'],
    ranks.map((r) => [r.rank < 0 ? '–' : r.rank, printable(r.workerId), r.state === 'slow' ? 'SLOW' : r.state, r.step, ms(r.phases?.dataMs), ms(r.phases?.computeMs), ms(r.phases?.allreduceMs), ms(r.phases?.optimizerMs)]),
  );
}

function bar(frac: number, width: number): string {
  const full = Math.round(Math.max(0, Math.min(1, frac)) * width);
  return `[${'█'.repeat(full)}${'░'.repeat(width - full)}]`;
}

function formatSeconds(s: number): string {
  if (s >= 3600) return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
  if (s >= 60) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.round(s)} s`;
}

/** Characters per token as the run's evaluation gave them (its bits per character are per character). */
function charsPerTokenFrom(ev: { testLoss: number; bitsPerChar?: number }): number {
  return ev.bitsPerChar && ev.testLoss > 0 ? ev.testLoss / Math.LN2 / ev.bitsPerChar : 1;
}
