import { createServer, type Server } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { killStarted, type Run, startRingtrain } from './testing/run-process.js';

afterEach(killStarted);

const probesPort = (run: Run): number | undefined => (run.lines.find((l) => l.msg === 'health probes: /healthz, /readyz')?.probes as { port: number } | undefined)?.port;
async function probe(port: number, path: '/healthz' | '/readyz'): Promise<{ status: number; state: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: res.status, state: ((await res.json()) as { state: string }).state };
}

describe('health probes (real processes)', () => {
  it('/healthz and /readyz through a run: before the workers join, while training, and after the end', async () => {
    const env = { RINGTRAIN_TOKEN: 't' };
    const coord = startRingtrain(['coordinator', '--host', '127.0.0.1', '--port', '0', '--workers', '2', '--epochs', '4', '--health-port', '0', '--linger', '30'], env);
    await expect.poll(() => probesPort(coord), { timeout: 20_000 }).toBeTruthy();
    const address = String(coord.lines.find((l) => String(l.msg).startsWith('coordinator listening'))!.address);
    const main = Number(new URL(address).port);
    // Before any worker: alive, and ready (it takes workers); on its own port too.
    expect(await probe(probesPort(coord)!, '/healthz')).toEqual({ status: 200, state: 'gathering' });
    expect(await probe(probesPort(coord)!, '/readyz')).toEqual({ status: 200, state: 'gathering' });
    expect(await probe(main, '/readyz')).toEqual({ status: 200, state: 'gathering' });
    // One worker: alive, not ready (no ring yet).
    const w1 = startRingtrain(['worker', '--coordinator', address, '--health-port', '0'], env);
    await expect.poll(() => probesPort(w1), { timeout: 20_000 }).toBeTruthy();
    expect(await probe(probesPort(w1)!, '/healthz')).toMatchObject({ status: 200 });
    expect(await probe(probesPort(w1)!, '/readyz')).toEqual({ status: 503, state: 'joining' });
    // The second: both train, and say so.
    const w2 = startRingtrain(['worker', '--coordinator', address, '--health-port', '0'], env);
    await expect.poll(async () => (await probe(probesPort(w1)!, '/readyz')).status, { timeout: 20_000, interval: 20 }).toBe(200);
    expect(await probe(probesPort(w1)!, '/readyz')).toEqual({ status: 200, state: 'training' });
    await expect.poll(async () => (await probe(main, '/readyz')).state, { timeout: 20_000, interval: 20 }).toBe('running');
    expect(await probe(main, '/readyz')).toEqual({ status: 200, state: 'running' });
    // The end: the workers exit; the coordinator lingers, alive and no longer ready.
    expect(await w1.exited).toBe(0);
    expect(await w2.exited).toBe(0);
    await expect.poll(async () => (await probe(main, '/readyz')).status, { timeout: 20_000 }).toBe(503);
    expect(await probe(main, '/readyz')).toEqual({ status: 503, state: 'finished' });
    expect(await probe(probesPort(coord)!, '/healthz')).toEqual({ status: 200, state: 'finished' });
    coord.proc.kill('SIGINT');
    expect(await coord.exited).toBe(0);
  }, 60_000);

  it('a probe port in use is a clear error, and the launch or coordinator ends with it (it used to stay up, deaf to signals)', async () => {
    const taken: Server = await new Promise((resolve) => {
      const s = createServer().listen(0, '127.0.0.1', () => resolve(s));
    });
    try {
      const port = String((taken.address() as { port: number }).port);
      for (const args of [['launch', '--workers', '2'], ['coordinator', '--host', '127.0.0.1', '--port', '0', '--workers', '1']]) {
        const run = startRingtrain([...args, '--epochs', '1', '--health-port', port], { RINGTRAIN_TOKEN: 't' });
        const code = await Promise.race([run.exited, new Promise((resolve) => setTimeout(() => resolve('still running after 15 s'), 15_000))]);
        expect(code, args[0]).toBe(1);
        expect(run.stderr).toMatch(new RegExp(`ERR_PORT_IN_USE: port ${port} on 127\\.0\\.0\\.1 is in use .*: give another --health-port, or leave it out`));
      }
    } finally {
      taken.close();
    }
  }, 40_000);

  it('every option also comes from the environment (RINGTRAIN_<FLAG>), and a flag wins', async () => {
    const run = startRingtrain(['launch', '--epochs', '1', '--json'], { RINGTRAIN_WORKERS: '2', RINGTRAIN_EPOCHS: '3', RINGTRAIN_BATCH_SIZE: '32' });
    expect(await run.exited, run.stderr).toBe(0);
    const summary = JSON.parse(run.stdout);
    // 2 workers × 32 (RINGTRAIN_BATCH_SIZE) = 64 a step: 125 steps for the 8,000 samples of one epoch (--epochs 1 beat RINGTRAIN_EPOCHS=3).
    expect(summary.steps).toBe(125);
    expect(summary.epochs).toHaveLength(1);
  }, 60_000);
});
