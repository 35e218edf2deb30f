// A network partition, for real: four network namespaces on a bridge (a coordinator host and three
// worker hosts), one of which loses its link mid-run and gets it back. Needs root and iproute2
// (CI has both); elsewhere it is skipped and says why.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import type { Run } from './testing/run-process.js';
import { until } from './testing/run-process.js';
import { sh, virtualHosts } from '@ringtrain/netlab';
import { available } from './testing/expect-env.js';
import { MLP_LEARNED } from './testing/learned.js';

const main = fileURLToPath(new URL('../dist/main.js', import.meta.url));
const net = virtualHosts('rp', 4, 78);
const { hosts } = net;
const canMakeHosts = available('NETNS', net.available, 'network namespaces cannot be made here (needs root and iproute2)');
const started: Run[] = [];

afterAll(() => {
  for (const r of started) if (r.proc.exitCode === null) r.proc.kill('SIGKILL');
  if (canMakeHosts) net.tearDown();
});

/** `ringtrain ...args` inside a host's namespace, its JSON log lines collected as they come. */
function onHost(ns: string, args: string[], env: NodeJS.ProcessEnv = {}): Run {
  const proc = spawn('ip', ['netns', 'exec', ns, process.execPath, main, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  const run: Run = { proc, lines: [], stdout: '', stderr: '', exited: new Promise((r) => proc.once('exit', (code) => r(code))) };
  proc.stdout!.on('data', (d: Buffer) => (run.stdout += d));
  let partial = '';
  proc.stderr!.on('data', (d: Buffer) => {
    run.stderr += d;
    const parts = (partial + d.toString()).split('\n');
    partial = parts.pop() ?? '';
    for (const l of parts) if (l.startsWith('{')) run.lines.push(JSON.parse(l));
  });
  started.push(run);
  return run;
}

const changes = (run: Run) => run.lines.filter((l) => typeof l.cause === 'string' && typeof l.recoveryMs === 'number');

describe('a network partition (network namespaces)', () => {
  it.skipIf(!canMakeHosts)('a worker host that loses its link is dropped within seconds, the others go on; with the link back it rejoins', async () => {
    net.setUp();
    const [c, ...ws] = hosts;
    const coordinator = onHost(c.ns, ['coordinator', '--workers', '2:3', '--host', c.ip, '--port', '29500', '--token', 'part', '--json']);
    // Rank 0 sleeps 20 ms a step: the run lasts long enough to lose a host and get it back.
    const workers = ws.map((w) =>
      onHost(w.ns, ['worker', '--coordinator', `ws://${c.ip}:29500`, '--token', 'part', '--ring-host', w.ip, '--ring-port', '29600'], { RINGTRAIN_LOG_LEVEL: 'info', RINGTRAIN_FAULT_DELAY_MS: '0:20' }),
    );
    await until(() => coordinator.lines.some((l) => String(l.msg).startsWith('epoch 1/')), 60_000, 'the first epoch', coordinator);
    const cut = hosts[3];
    const cutAt = Date.now();
    expect(sh(`ip link set ${cut.veth} down`)).toBe(true);
    await until(() => changes(coordinator).some((x) => x.cause === 'fault'), 20_000, 'the survivors to go on', coordinator);
    const survived = Date.now() - cutAt;
    const fault = changes(coordinator).find((x) => x.cause === 'fault')!;
    expect(fault).toMatchObject({ worldSize: 2, fault: expect.objectContaining({ host: expect.any(String) }) });
    console.log(`link down: the 2 others train again ${survived} ms later (recovery ${fault.recoveryMs} ms after the fault was seen)`);
    expect(survived).toBeLessThan(6000);
    await new Promise((r) => setTimeout(r, 1500));
    expect(sh(`ip link set ${cut.veth} up`)).toBe(true);
    await until(() => changes(coordinator).some((x) => x.cause === 'join' && x.worldSize === 3), 40_000, 'the cut host to rejoin', coordinator);
    expect(await coordinator.exited, coordinator.stderr.slice(-3000)).toBe(0);
    for (const w of workers) expect(await w.exited, w.stderr.slice(-2000)).toBe(0);
    const summary = JSON.parse(coordinator.stdout.trim());
    expect(summary.epochs.at(-1).testAccuracy).toBeGreaterThanOrEqual(MLP_LEARNED);
    expect(workers[2].stderr).toMatch(/back with the coordinator/);
  }, 150_000);
});
