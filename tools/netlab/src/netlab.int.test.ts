// The harness itself, on real namespaces: a shaped link runs at its rate, and a run killed before
// it cleaned up leaves nothing that the next one does not remove.
import { spawnSync } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { canMakeHosts, removeStale, sh, virtualHosts } from './index.js';

const net = virtualHosts('nl', 2, 79);
const expectNetns = process.env.RINGTRAIN_EXPECT_NETNS === '1';
if (!net.available && expectNetns) throw new Error('RINGTRAIN_EXPECT_NETNS=1 but network namespaces cannot be made here (needs root and iproute2)');

afterAll(() => {
  if (net.available) net.tearDown();
});

/** Seconds to send `bytes` from host b to host a over TCP (node on both ends). */
async function transfer(bytes: number): Promise<number> {
  const [a, b] = net.hosts;
  const server = `require('net').createServer(s => s.on('data', () => {}).on('end', () => process.exit(0))).listen(7000, '${a.ip}', () => process.stdout.write('ready'))`;
  const client = `const t = Date.now(); const s = require('net').connect(7000, '${a.ip}', () => s.end(Buffer.alloc(${bytes}))); s.on('close', () => process.stdout.write(String((Date.now() - t) / 1000)))`;
  const srv = net.run(a, process.execPath, ['-e', server]);
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the server did not listen within 10 s')), 10_000);
      srv.stdout?.on('data', (d: Buffer) => {
        if (d.toString().includes('ready')) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    const r = spawnSync('ip', ['netns', 'exec', b.ns, process.execPath, '-e', client], { encoding: 'utf8', timeout: 30_000 });
    const seconds = Number(r.stdout.trim());
    if (!(seconds >= 0)) throw new Error(`the client said "${r.stdout.trim()}": ${r.stderr}`);
    return seconds;
  } finally {
    srv.kill();
  }
}

describe.skipIf(!net.available)('netlab (network namespaces)', () => {
  it('a link shaped to 20 Mbit/s carries 2.5 MB in about a second; unshaped, far faster', async () => {
    net.setUp();
    expect(net.shape({ name: '20 Mbit/s', mbit: 20 })).toBeNull();
    const shaped = await transfer(2_500_000);
    expect(net.shape({ name: 'unshaped' })).toBeNull();
    const open = await transfer(2_500_000);
    console.log(`2.5 MB: ${shaped} s at 20 Mbit/s, ${open} s unshaped`);
    expect(shaped).toBeGreaterThan(0.8); // 2.5 MB is 1.0 s of 20 Mbit/s (less the first bucket)
    expect(shaped).toBeLessThan(3);
    expect(open).toBeLessThan(shaped / 5);
    // A delay needs netem; without it the profile says so instead of pretending.
    const said = net.shape({ name: 'WAN', mbit: 50, delayMs: 10 });
    if (said !== null) expect(said).toMatch(/no netem/);
  }, 60_000);

  it("a killed run's namespaces and bridge are removed by the next run; a live run's are kept", () => {
    // A child makes a namespace and a bridge under its own pid, then dies without cleaning up.
    const child = spawnSync('sh', ['-c', 'ip netns add nl$$h1 && ip link add nl$$br type bridge && echo $$'], { encoding: 'utf8' });
    const pid = child.stdout.trim();
    expect(sh(`ip netns list | grep -q nl${pid}h1`)).toBe(true);
    removeStale('nl');
    expect(sh(`ip netns list | grep -q nl${pid}h1`)).toBe(false);
    expect(sh(`ip link show nl${pid}br`)).toBe(false);
    expect(sh(`ip netns list | grep -q ${net.hosts[0].ns}`)).toBe(true); // this live run's host stays
    expect(canMakeHosts()).toBe(true);
  });
});
