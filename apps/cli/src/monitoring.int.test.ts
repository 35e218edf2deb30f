import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseStatusEvent, type StatusEvent, type StatusEventOf } from '@ringtrain/protocol';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { StatusView } from './status-command.js';
import { killStarted, type Run, startRingtrain, until } from './testing/run-process.js';

afterEach(killStarted);

/** The coordinator's dashboard URL, from its log line. */
async function dashboardOf(run: Run): Promise<string> {
  await until(() => run.lines.some((l) => typeof l.dashboard === 'string'), 20_000, 'the dashboard address', run);
  return String(run.lines.find((l) => typeof l.dashboard === 'string')!.dashboard);
}

/** A status socket client that records every event (validated against the schema). */
class Watcher {
  readonly events: StatusEvent[] = [];
  readonly ws: WebSocket;
  readonly opened: Promise<void>;
  readonly closed: Promise<number>;

  constructor(base: string, token?: string) {
    this.ws = new WebSocket(`${base.replace('http', 'ws')}status`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
    this.ws.on('message', (d) => this.events.push(parseStatusEvent(String(d))));
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', () => resolve());
      this.ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
      this.ws.once('error', reject);
    });
    this.closed = new Promise((resolve) => this.ws.once('close', (code) => resolve(code)));
  }

  of<T extends StatusEvent['type']>(type: T): StatusEventOf<T>[] {
    return this.events.filter((e) => e.type === type) as StatusEventOf<T>[];
  }

  ended(): boolean {
    return this.events.some((e) => e.type === 'end');
  }

  command(id: number, action: 'stop' | 'checkpoint'): Promise<StatusEventOf<'commandResult'>> {
    this.ws.send(JSON.stringify({ type: 'command', id, action }));
    return until(() => this.of('commandResult').some((r) => r.id === id), 10_000, `the answer to command ${id}`).then(() => this.of('commandResult').find((r) => r.id === id)!);
  }
}

/** Watches a run from its coordinator's start to its `end` event. */
async function watchToEnd(run: Run, ms = 60_000): Promise<Watcher> {
  const w = new Watcher(await dashboardOf(run));
  await w.opened;
  await until(() => w.ended(), ms, 'the end of the run');
  return w;
}

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/**
 * GET /metrics, parsed by the official Prometheus client's parser (Debian's python3-prometheus-client):
 * a response that is not valid exposition text fails here.
 */
async function scrape(base: string, token?: string): Promise<{ status: number; samples: Sample[] }> {
  const res = await fetch(`${base}metrics`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  const text = await res.text();
  if (res.status !== 200) return { status: res.status, samples: [] };
  const parser = `
import json, sys
from prometheus_client.parser import text_string_to_metric_families
print(json.dumps([{"name": s.name, "labels": s.labels, "value": s.value} for f in text_string_to_metric_families(sys.stdin.read()) for s in f.samples]))`;
  const py = spawnSync('/usr/bin/python3', ['-c', parser], { input: text, encoding: 'utf8' });
  if (py.status !== 0) throw new Error(`/metrics is not valid Prometheus text: ${py.stderr}`);
  return { status: res.status, samples: JSON.parse(py.stdout) };
}

function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  const s = samples.find((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v));
  if (!s) throw new Error(`no sample ${name} ${JSON.stringify(labels)} in /metrics`);
  return s.value;
}

describe('watching a run (real coordinator, workers and sockets)', () => {
  it('status socket: a snapshot, then the events in order; tokens checked; /metrics matches the run; `ringtrain status --json` exits with the run', async () => {
    const run = startRingtrain(['launch', '--workers', '2', '--epochs', '3', '--status-token', 'reader', '--admin-token', 'boss', '--health-every', '20', '--linger', '60', '--json']);
    const base = await dashboardOf(run);
    await expect(new Watcher(base, 'wrong').opened).rejects.toThrow(/HTTP 401/);
    await expect(new Watcher(base).opened).rejects.toThrow(/HTTP 401/);
    const reader = new Watcher(base, 'reader');
    const admin = new Watcher(base, 'boss');
    await Promise.all([reader.opened, admin.opened]);
    const cli = startRingtrain(['status', base, '--json', '--token', 'reader']);
    await until(() => reader.of('metrics').length > 0, 30_000, 'the first metrics');
    // A reader may not control the run.
    expect(await reader.command(7, 'stop')).toMatchObject({ ok: false, code: 'ERR_FORBIDDEN' });
    await until(() => reader.ended() && admin.ended(), 60_000, 'the end of the run');

    const e = reader.events;
    expect(e[0]).toMatchObject({ type: 'snapshot', access: 'read', workers: 2, config: { model: 'MLP 784-128-10 (relu)', parameters: 101_770 } });
    expect(admin.events[0]).toMatchObject({ type: 'snapshot', access: 'admin' });
    expect(e.map((x) => x.seq)).toEqual(e.map((_, i) => i + 1)); // a reading client misses nothing
    expect(reader.of('state').map((s) => s.state).filter((s, i, a) => s !== a[i - 1])).toEqual(['forming', 'running', 'finished']);
    for (const r of [0, 1]) expect(reader.of('rank').filter((x) => x.rank.rank === r).map((x) => x.rank.state)).toEqual(['ready', 'training', 'done']);
    const steps = reader.of('metrics').map((m) => m.metrics.step);
    expect(steps).toEqual([...steps].sort((a, b) => a - b));
    const end = reader.of('end')[0];
    expect(end).toMatchObject({ state: 'finished', error: null, steps: 186 });
    expect(steps.at(-1)).toBe(186);
    expect(reader.of('metrics').reduce((s, m) => s + m.metrics.samples, 0)).toBe(186 * 2 * 64);
    const point = reader.of('metrics').at(-1)!.metrics;
    expect(point.allreduceBusbw).toBeGreaterThan(0);
    expect(point.phases.computeMs).toBeGreaterThan(0);
    expect(reader.of('evaluation').map((x) => x.evaluation.epoch)).toEqual([0, 1, 2]);
    expect(reader.of('health').length).toBeGreaterThanOrEqual(186 / 20 - 1);
    expect(reader.of('health')[0].health.tensors.map((t) => t.name)).toEqual(['layers.0.weight', 'layers.0.bias', 'layers.2.weight', 'layers.2.bias']);
    expect(reader.of('warning')).toEqual([]); // a healthy run raises none
    // The evaluation comes after the metrics point of its step.
    const firstEval = e.findIndex((x) => x.type === 'evaluation');
    expect(e.slice(0, firstEval).some((x) => x.type === 'metrics' && x.metrics.step === 62)).toBe(true);

    // The CLI watcher printed the same stream as JSON lines and ended with the run.
    expect(await cli.exited).toBe(0);
    const printed = cli.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(printed[0].type).toBe('snapshot');
    expect(printed.at(-1)).toMatchObject({ type: 'end', state: 'finished', steps: 186 });

    // /metrics: needs the token; its counters match the run.
    expect((await scrape(base)).status).toBe(401);
    const { status, samples } = await scrape(base, 'reader');
    expect(status).toBe(200);
    expect(value(samples, 'ringtrain_steps_total')).toBe(186);
    expect(value(samples, 'ringtrain_samples_total')).toBe(186 * 2 * 64);
    expect(value(samples, 'ringtrain_step_phase_seconds_count', { phase: 'allreduce' })).toBe(186);
    expect(value(samples, 'ringtrain_run_state', { state: 'finished' })).toBe(1);
    expect(value(samples, 'ringtrain_rank_state', { rank: '1', state: 'done' })).toBe(1);
    expect(value(samples, 'ringtrain_rank_step_phase_seconds', { rank: '1', phase: 'compute' })).toBeGreaterThan(0);
    expect(value(samples, 'ringtrain_test_accuracy')).toBeCloseTo(end.testAccuracy!, 6);
    expect(value(samples, 'ringtrain_status_clients')).toBe(2);
    // Membership: one generation of 2 from the start, no change after it.
    expect(value(samples, 'ringtrain_world_size')).toBe(2);
    expect(value(samples, 'ringtrain_membership_changes_total', { cause: 'fault' })).toBe(0);
    // The schema is served for clients in other languages; /api/status is a snapshot.
    const schema = await (await fetch(`${base}api/status-schema`)).json();
    expect(schema.anyOf.map((x: { properties: { type: { const: string } } }) => x.properties.type.const)).toEqual(['snapshot', 'state', 'rank', 'generation', 'metrics', 'evaluation', 'checkpoint', 'health', 'ring', 'warning', 'end', 'commandResult']);
    expect((await fetch(`${base}api/status`)).status).toBe(401);
    expect((await fetch(`${base}api/status`, { headers: { authorization: 'Bearer wrong' } })).status).toBe(401);
    expect((await fetch(`${base}api/status?token=wrong`)).status).toBe(401);
    const api = await fetch(`${base}api/status`, { headers: { authorization: 'Bearer reader' } });
    expect(parseStatusEvent(await api.text())).toMatchObject({ type: 'snapshot', state: 'finished', metrics: { step: 186 } });
    // Lingering: a client that connects now learns that the run is over.
    const late = new Watcher(base, 'reader');
    await until(() => late.events.length > 0, 5000, 'a late snapshot');
    expect(late.events[0]).toMatchObject({ type: 'snapshot', state: 'finished' });
    run.proc.kill('SIGINT');
    expect(await run.exited).toBe(0);
    expect(await reader.closed).toBe(1000);
  }, 120_000);

  it("a language model's run: evaluations every K steps with bits per character and perplexity, in the log, the snapshot, /metrics and `ringtrain status`", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ringtrain-lm-watch-'));
    const text = join(dir, 'text.txt');
    writeFileSync(text, 'the cat sat on the mat. '.repeat(400));
    const job = join(dir, 'job.json');
    writeFileSync(job, JSON.stringify({ model: { type: 'gpt', layers: 1, heads: 2, dim: 16, context: 8 }, dataset: { source: 'text', file: text }, optimizer: { type: 'adamw', lr: 0.003 }, batchSize: 4, epochs: 1, steps: 30, evalBatchSize: 64, seed: 1 }));
    const run = startRingtrain(['launch', '--workers', '2', '--config', job, '--eval-every', '10', '--linger', '60', '--json']);
    const w = await watchToEnd(run);
    const base = await dashboardOf(run);
    const snap = parseStatusEvent(await (await fetch(`${base}api/status`)).text()) as StatusEventOf<'snapshot'>;
    expect(snap.config.positions).toBe(8);
    // Steps 10 and 20 within the epoch, then the run's end at 30: each once.
    expect(snap.evaluations.map((e) => e.step)).toEqual([10, 20, 30]);
    for (const e of snap.evaluations) {
      expect(e.bitsPerChar).toBeCloseTo(e.testLoss / Math.LN2, 9);
      expect(e.perplexity).toBeCloseTo(Math.exp(e.testLoss), 6);
    }
    expect(w.of('evaluation').map((e) => e.evaluation.step)).toEqual([10, 20, 30]);
    const last = snap.evaluations.at(-1)!;
    const { samples } = await scrape(base);
    expect(value(samples, 'ringtrain_test_loss')).toBeCloseTo(last.testLoss, 6);
    expect(value(samples, 'ringtrain_test_bits_per_char')).toBeCloseTo(last.bitsPerChar!, 6);
    expect(value(samples, 'ringtrain_test_perplexity')).toBeCloseTo(last.perplexity!, 4);
    expect(run.stderr).toMatch(/step 10\/30: loss \d\.\d{4}, val loss \d\.\d{4} \(\d\.\d{3} bits\/char, perplexity \d+\.\d{2}\) on \d+ windows/);
    const view = new StatusView('none');
    for (const e of w.events) view.apply(e);
    expect(view.render()).toMatch(/val loss \d\.\d{4} \(\d\.\d{3} bits\/char, perplexity \d+\.\d{2}\) at step 30 · [\d,]+ tokens\/s/);
    expect(view.render()).not.toMatch(/test accuracy|test \d/);
    run.proc.kill('SIGINT');
  }, 90_000);

  it('a client that never reads does not slow training: it is dropped behind and the run keeps its pace', async () => {
    // Many events (a metrics point per ms; a health report of 42 tensors every step): more bytes
    // than the kernel's socket buffers hold (up to 4 MiB here), so the coordinator's side fills up.
    const args = ['launch', '--workers', '2', '--epochs', '20', '--hidden', Array(20).fill(32).join(','), '--lr', '0.01', '--status-interval', '1', '--health-every', '1', '--linger', '30', '--json'];
    const pace = async (stall: boolean): Promise<{ rate: number; run: Run; base: string }> => {
      const run = startRingtrain(args);
      const base = await dashboardOf(run);
      if (stall) {
        // A raw WebSocket handshake, then never a byte read: the coordinator's socket fills up.
        const { port } = new URL(base);
        const sock = connect(Number(port), '127.0.0.1');
        sock.write(`GET /status HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`);
        sock.pause();
        run.exited.then(() => sock.destroy());
      }
      await until(() => run.stdout.includes('\n'), 60_000, 'the run summary');
      return { rate: JSON.parse(run.stdout).samplesPerSecond, run, base };
    };
    // Both runs at once, so that they share this machine's drifting speed (two runs one after the
    // other on 2 cores differ by more than the effect under test).
    const [baseline, stalled] = await Promise.all([pace(false), pace(true)]);
    baseline.run.proc.kill('SIGINT');
    const { samples } = await scrape(stalled.base);
    stalled.run.proc.kill('SIGINT');
    expect(await stalled.run.exited).toBe(0);
    console.log(`samples/s with a stalled status client: ${Math.round(stalled.rate)}, without: ${Math.round(baseline.rate)} (${(stalled.rate / baseline.rate).toFixed(2)}×)`);
    // The stalled client was left behind rather than buffered for...
    expect(value(samples, 'ringtrain_status_dropped_events_total')).toBeGreaterThan(0);
    // ...and training went on at the pace of its twin.
    expect(stalled.rate).toBeGreaterThan(0.75 * baseline.rate);
  }, 120_000);

  it('a slowed worker is flagged slow, in the stream and in the terminal view', async () => {
    const run = startRingtrain(['launch', '--workers', '3', '--epochs', '5', '--linger', '30'], { RINGTRAIN_FAULT_DELAY_MS: '1:6' });
    const w = await watchToEnd(run, 90_000);
    run.proc.kill('SIGINT');
    const slow = w.of('rank').filter((r) => r.rank.state === 'slow');
    expect(slow.map((r) => r.rank.rank)).toEqual([1]);
    expect(slow[0].reason).toMatch(/compute \d+\.\d× the median rank's/);
    expect(w.of('warning').filter((x) => x.warning.code === 'WARN_RANK_SLOW').map((x) => x.warning.rank)).toEqual([1]);
    // The terminal view, as it stood when the rank was flagged.
    const view = new StatusView('none');
    for (const e of w.events.slice(0, w.events.indexOf(slow[0]) + 2)) view.apply(e);
    expect(view.render()).toMatch(/\| 1 +\| \S+ +\| SLOW/);
    expect(view.render()).toMatch(/WARN_RANK_SLOW: rank 1/);
  }, 120_000);

  it('too high a learning rate is flagged, naming the layers whose updates are too large', async () => {
    // Constructed, not found in a trajectory: every update of this run is ~1e-3 of its weights'
    // norm (the typical ratio), so a limit of 1e-6 is crossed at the first health report on any kernel.
    const run = startRingtrain(['launch', '--workers', '2', '--epochs', '2', '--lr', '1.5', '--health-every', '5', '--max-update-ratio', '1e-6', '--linger', '30']);
    const w = await watchToEnd(run, 60_000);
    run.proc.kill('SIGINT');
    const exploding = w.of('warning').filter((x) => x.warning.code === 'WARN_GRADIENT_EXPLODING');
    expect(exploding.length).toBeGreaterThan(0);
    expect(exploding[0].warning).toMatchObject({ tensor: expect.stringMatching(/^layers\.\d\.weight$/), message: expect.stringMatching(/learning rate is too high/) });
    // The thresholds are the user's: raised far enough, the same run warns no more.
    const lenient = startRingtrain(['launch', '--workers', '2', '--epochs', '2', '--lr', '1.5', '--health-every', '5', '--max-update-ratio', '100', '--max-grad-norm', '1e9', '--linger', '30']);
    const w2 = await watchToEnd(lenient, 60_000);
    lenient.proc.kill('SIGINT');
    expect(w2.of('health').length).toBeGreaterThan(0);
    expect(w2.of('warning').filter((x) => x.warning.code === 'WARN_GRADIENT_EXPLODING')).toEqual([]);
  }, 90_000);

  it('an injected NaN stops the run naming the rank and step (nonFinite "stop")', async () => {
    const run = startRingtrain(['launch', '--workers', '2', '--epochs', '3', '--linger', '30'], { RINGTRAIN_FAULT_NAN: '1@20' });
    const w = await watchToEnd(run, 60_000);
    run.proc.kill('SIGINT');
    expect(await run.exited).toBe(1);
    expect(run.stderr).toMatch(/ERR_NON_FINITE: rank 1 .*rank 1: gradient of layers\.0\.weight is NaN at step 20/);
    expect(w.of('warning').map((x) => x.warning)).toContainEqual(expect.objectContaining({ code: 'WARN_NON_FINITE', rank: 1, step: 20, tensor: 'layers.0.weight' }));
    expect(w.of('end')[0]).toMatchObject({ state: 'failed', error: { code: 'ERR_NON_FINITE', rank: 1 } });
  }, 90_000);

  it('an injected NaN skips that step on every rank and the run goes on (nonFinite "skip")', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ringtrain-nan-'));
    writeFileSync(join(dir, 'job.json'), JSON.stringify({ nonFinite: 'skip', epochs: 2 }));
    const run = startRingtrain(['launch', '--workers', '2', '--config', join(dir, 'job.json'), '--linger', '30', '--json', '--verify-every', '1'], { RINGTRAIN_FAULT_NAN: '0@30' });
    const w = await watchToEnd(run);
    const { samples } = await scrape(await dashboardOf(run));
    run.proc.kill('SIGINT');
    expect(await run.exited).toBe(0);
    expect(w.of('warning').map((x) => x.warning)).toContainEqual(expect.objectContaining({ code: 'WARN_NON_FINITE', rank: 0, step: 30, message: expect.stringMatching(/skipped on every rank/) }));
    expect(w.of('metrics').reduce((s, m) => s + m.metrics.skippedSteps, 0)).toBe(1);
    expect(value(samples, 'ringtrain_skipped_steps_total')).toBe(1);
    // Replicas compared at every step stayed identical, and the run still learned.
    const summary = JSON.parse(run.stdout);
    expect(summary.replicaChecks).toBeGreaterThanOrEqual(124);
    expect(summary.epochs.at(-1).testAccuracy).toBeGreaterThan(0.9);
  }, 90_000);

  it('a sum that overflows though every rank is finite is caught at its own step: skipped, or the run stops', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ringtrain-overflow-'));
    writeFileSync(join(dir, 'job.json'), JSON.stringify({ nonFinite: 'skip', epochs: 1 }));
    const skipping = startRingtrain(['launch', '--workers', '2', '--config', join(dir, 'job.json'), '--linger', '30', '--json', '--verify-every', '1'], { RINGTRAIN_FAULT_OVERFLOW: '25' });
    const w = await watchToEnd(skipping);
    skipping.proc.kill('SIGINT');
    expect(await skipping.exited).toBe(0);
    expect(w.of('warning').map((x) => x.warning)).toContainEqual(
      expect.objectContaining({ code: 'WARN_NON_FINITE', rank: 0, step: 25, message: expect.stringMatching(/all-reduced gradient \(a sum of finite gradients overflowed\) is Infinity at step 25; the step is skipped on every rank/) }),
    );
    expect(w.of('metrics').reduce((s, m) => s + m.metrics.skippedSteps, 0)).toBe(1);
    expect(JSON.parse(skipping.stdout).replicaChecks).toBeGreaterThanOrEqual(60);

    const stopping = startRingtrain(['launch', '--workers', '2', '--epochs', '1'], { RINGTRAIN_FAULT_OVERFLOW: '25' });
    expect(await stopping.exited).toBe(1);
    expect(stopping.stderr).toMatch(/ERR_NON_FINITE: .*the all-reduced gradient \(a sum of finite gradients overflowed\) is Infinity at step 25/);
  }, 90_000);

  it('divergence drill: one flipped bit on one rank stops the run at the next replica check, naming the rank and step', async () => {
    const run = startRingtrain(['launch', '--workers', '2', '--epochs', '2', '--verify-every', '10', '--linger', '30'], { RINGTRAIN_FAULT_DIVERGE: '1@19' });
    const status = startRingtrain(['status', await dashboardOf(run), '--json']);
    const w = await watchToEnd(run, 60_000);
    expect(await status.exited).toBe(1); // `ringtrain status` ends as the run did: failed
    expect(status.stdout.trim().split('\n').map((l) => JSON.parse(l)).at(-1)).toMatchObject({ state: 'failed' });
    run.proc.kill('SIGINT');
    expect(await run.exited).toBe(1);
    // The bit flips after step 19's update (global step 20), just before the check after step 20,
    // which sees it: later updates could round a lowest-bit difference away, and the replicas would
    // then truly agree again (that depends on the numbers, so the drill does not rely on it).
    expect(run.stderr).toMatch(/ERR_REPLICA_DIVERGED: .*replicas differ at step 20: rank 1 has [0-9a-f]{16}…; rank 0 [0-9a-f]{16}…/);
    expect(w.of('end')[0]).toMatchObject({ state: 'failed', error: { code: 'ERR_REPLICA_DIVERGED' } });
    // The checks before it passed: the run got to step 20, not further.
    expect(w.of('metrics').length).toBeGreaterThan(0);
    expect(Math.max(...w.of('metrics').map((m) => m.metrics.step))).toBeLessThanOrEqual(20);
  }, 90_000);

  it('control actions: checkpoint now and stop, with the admin token, from the socket and from `ringtrain control`', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ringtrain-ctl-'));
    const run = startRingtrain(['launch', '--workers', '2', '--epochs', '200', '--checkpoint-dir', dir, '--admin-token', 'boss']);
    const base = await dashboardOf(run);
    const admin = new Watcher(base, 'boss');
    await admin.opened;
    await until(() => admin.of('metrics').length > 0, 30_000, 'training');
    expect(await admin.command(1, 'checkpoint')).toMatchObject({ ok: true });
    await until(() => admin.of('checkpoint').length > 0, 30_000, 'the checkpoint');
    const saved = admin.of('checkpoint')[0];
    expect(saved).toMatchObject({ ok: true, checkpoint: { path: expect.stringContaining(dir) } });
    const watching = startRingtrain(['status', base, '--json', '--token', 'boss']);
    await until(() => watching.stdout.length > 0, 20_000, 'the status CLI attached');
    const refused = startRingtrain(['control', base, 'stop', '--token', 'not-it']);
    expect(await refused.exited).toBe(1);
    expect(refused.stderr).toMatch(/ERR_FORBIDDEN: stop needs the admin token/);
    const ctl = startRingtrain(['control', base, 'stop', '--token', 'boss']);
    expect(await ctl.exited).toBe(0);
    expect(ctl.stdout).toMatch(/stopping the run/);
    expect(await run.exited).toBe(130);
    expect(await watching.exited).toBe(130); // `ringtrain status` ends as the run did: stopped
    await until(() => admin.ended(), 10_000, 'the end event');
    expect(admin.of('end')[0]).toMatchObject({ state: 'stopped', error: { code: 'ERR_INTERRUPTED', message: expect.stringMatching(/admin/) } });
  }, 90_000);
});
