// Separate hosts, for real: three network namespaces on a bridge, made (and removed) by this test.
// It needs root and iproute2 (CI has both); elsewhere it is skipped and says why.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { virtualHosts } from '@ringtrain/netlab';
import { available } from './testing/expect-env.js';
import { MLP_LEARNED } from './testing/learned.js';

const main = fileURLToPath(new URL('../dist/main.js', import.meta.url));
const net = virtualHosts('rt', 3, 77);
const { hosts } = net;
const canMakeHosts = available('NETNS', net.available, 'network namespaces cannot be made here (needs root and iproute2)');

beforeAll(() => {
  if (canMakeHosts) net.setUp();
});
afterAll(() => {
  if (canMakeHosts) net.tearDown();
});

function onHost(ns: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn('ip', ['netns', 'exec', ns, process.execPath, main, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => p.kill('SIGKILL'), 90_000);
    p.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

describe('coordinator and workers on separate hosts (network namespaces)', () => {
  it.skipIf(!canMakeHosts)('a coordinator on one host and two workers on two others train until they have learned', async () => {
    const [c, w1, w2] = hosts;
    const coordinator = onHost(c.ns, ['coordinator', '--workers', '2', '--host', c.ip, '--port', '29500', '--token', 'multi', '--json']);
    const workers = [w1, w2].map((w) => onHost(w.ns, ['worker', '--coordinator', `ws://${c.ip}:29500`, '--token', 'multi', '--ring-host', w.ip, '--ring-port', '29600']));
    const [coord, ...ws] = await Promise.all([coordinator, ...workers]);
    expect(coord.code, coord.stderr).toBe(0);
    for (const w of ws) expect(w.code, w.stderr).toBe(0);
    const summary = JSON.parse(coord.stdout.trim());
    expect(summary.worldSize).toBe(2);
    expect(summary.epochs.at(-1).testAccuracy).toBeGreaterThanOrEqual(MLP_LEARNED);
    // The ring really crossed hosts: the coordinator logged each worker's ring address.
    expect(coord.stderr).toContain(`ws://${w1.ip}:29600`);
    expect(coord.stderr).toContain(`ws://${w2.ip}:29600`);
    // Hosts in their own network namespaces are separate hosts: no shared memory between them.
    expect(coord.stderr).toContain('not shared memory: the ranks are not all on one host');
    // Over TCP the ring tuned its segment size for this gradient (101,770 floats: chunks of 204 kB).
    expect(coord.stderr).toMatch(/over TCP, segments of (64|256) KiB chosen from 64 KiB [\d.]+ ms, 256 KiB [\d.]+ ms/);
    // The ring measured itself, fast: no warning that the network bounds the run.
    const busbw = Number(/ring of 2 over TCP.*?: all-reduce latency [\d.]+ ms, bus bandwidth (\d+) MB\/s/.exec(coord.stderr)?.[1]);
    expect(busbw).toBeGreaterThan(40);
    expect(coord.stderr).not.toContain('WARN_NETWORK_BOUND');
  }, 120_000);

  it.skipIf(!canMakeHosts)('over links shaped to 20 Mbit/s the ring measures itself slow, and the coordinator says the network bounds the run and what would help', async () => {
    expect(net.shape({ name: '20 Mbit/s', mbit: 20 })).toBeNull();
    try {
      const [c, w1, w2] = hosts;
      const coordinator = onHost(c.ns, ['coordinator', '--workers', '2', '--host', c.ip, '--port', '29501', '--token', 'multi', '--max-steps', '40', '--json']);
      const workers = [w1, w2].map((w) => onHost(w.ns, ['worker', '--coordinator', `ws://${c.ip}:29501`, '--token', 'multi', '--ring-host', w.ip, '--ring-port', '29601']));
      const [coord, ...ws] = await Promise.all([coordinator, ...workers]);
      expect(coord.code, coord.stderr).toBe(0);
      for (const w of ws) expect(w.code, w.stderr).toBe(0);
      const busbw = Number(/ring of 2 over TCP.*?: all-reduce latency [\d.]+ ms, bus bandwidth (\d+) MB\/s/.exec(coord.stderr)?.[1]);
      console.log(`20 Mbit/s: the ring measured ${busbw} MB/s`);
      expect(busbw).toBeGreaterThan(1); // 20 Mbit/s is 2.5 MB/s
      expect(busbw).toBeLessThan(4);
      const warning = coord.stderr.split('\n').find((l) => l.includes('WARN_NETWORK_BOUND'));
      expect(warning, coord.stderr.slice(-2000)).toBeDefined();
      expect(JSON.parse(warning!).msg).toMatch(/^the network bounds this run: the all-reduce takes [\d.]+ of each [\d.]+ ms step on every rank, over a ring that measured \d+ MB\/s .*--gradient-compression fp16 halves/);
    } finally {
      net.shape({ name: 'unshaped' });
    }
  }, 120_000);

  it.skipIf(!canMakeHosts)('two workers on each of two hosts sum in shared memory inside each host and over TCP between them (int8 there); a lost worker leaves a ring that still does, and the run ends having learned', async () => {
    const [c, a, b] = hosts;
    const on = (h: (typeof hosts)[number], port: number) => spawn('ip', ['netns', 'exec', h.ns, process.execPath, main, 'worker', '--coordinator', `ws://${c.ip}:29502`, '--token', 'multi', '--ring-host', h.ip, '--ring-port', String(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
    // Joined alternately, a, b, a, b: the coordinator places each host's workers together.
    const workers = [on(a, 29602), on(b, 29602), on(a, 29603), on(b, 29603)];
    const exits = workers.map((w) => new Promise<number | null>((resolve) => w.on('exit', (code) => resolve(code))));
    const logs = workers.map(() => '');
    workers.forEach((w, i) => w.stderr.on('data', (d) => (logs[i] += d)));
    // Once training is under way, the ring's last rank (on the second host) dies: the survivors
    // regroup as a, a, b. Worker ids are host:pid, of the process that trains (the command re-execs itself).
    let killed = false;
    let lastRankPid = 0;
    const stderr: string[] = [];
    const coord = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const p = spawn('ip', ['netns', 'exec', c.ns, process.execPath, main, 'coordinator', '--workers', '3:4', '--host', c.ip, '--port', '29502', '--token', 'multi', '--verify-every', '5', '--gradient-compression', 'int8', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      p.stdout.on('data', (d) => (stdout += d));
      p.stderr.on('data', (d) => {
        stderr.push(String(d));
        const formed = /"generation":1,"ring":\[[^\]]*"[^"]*:(\d+)"\]/.exec(String(d));
        if (formed) lastRankPid = Number(formed[1]);
        if (!killed && lastRankPid && /epoch 2\//.test(String(d))) {
          killed = true;
          process.kill(lastRankPid, 'SIGKILL');
        }
      });
      const timer = setTimeout(() => p.kill('SIGKILL'), 120_000);
      p.on('exit', (code) => {
        clearTimeout(timer);
        resolve({ code, stdout, stderr: stderr.join('') });
      });
    });
    expect(coord.code, coord.stderr.slice(-3000)).toBe(0);
    expect(killed).toBe(true);
    const codes = await Promise.all(exits);
    expect(codes.filter((code) => code === 0).length, logs.join('\n').slice(-3000)).toBe(3);
    const summary = JSON.parse(coord.stdout.trim().split('\n').at(-1)!);
    expect(summary.epochs.at(-1).testAccuracy).toBeGreaterThanOrEqual(MLP_LEARNED);
    const rings = coord.stderr.split('\n').filter((l) => l.includes('"msg":"ring of'));
    expect(rings[0]).toMatch(/ring of 4 across 2 hosts, through shared memory inside each and over TCP between them/);
    expect(rings[0]).toMatch(/segments of \d+ KiB chosen from /);
    // The regrouped ring takes the segment size the first one timed, instead of timing again.
    expect(rings.at(-1)).toMatch(/ring of 3 across 2 hosts, through shared memory inside each and over TCP between them, segments of \d+ KiB \(as an earlier ring of this run chose\)/);
  }, 150_000);
});
