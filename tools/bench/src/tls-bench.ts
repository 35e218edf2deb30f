import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ProcessRing } from '@ringtrain/allreduce/testing';
import { table } from '@ringtrain/cli';
import { fmt } from './measure.js';

const cli = fileURLToPath(new URL('../../../apps/cli/dist/main.js', import.meta.url));

/** A throwaway CA and a certificate for 127.0.0.1 (openssl), as a user would make for a private cluster. */
function certificates(): { cert: string; key: string; ca: string } {
  const dir = mkdtempSync(join(tmpdir(), 'ringtrain-tls-bench-'));
  const f = (n: string): string => join(dir, n);
  const openssl = (...args: string[]): void => {
    const r = spawnSync('openssl', args, { stdio: 'pipe' });
    if (r.status !== 0) throw new Error(`openssl ${args[0]} failed: ${r.stderr}`);
  };
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl('req', '-x509', ...ec, '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', '1', '-subj', '/CN=bench CA');
  openssl('req', ...ec, '-keyout', f('key.pem'), '-out', f('csr'), '-subj', '/CN=localhost');
  writeFileSync(f('san'), 'subjectAltName=IP:127.0.0.1\n');
  openssl('x509', '-req', '-in', f('csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-out', f('cert.pem'), '-days', '1', '-extfile', f('san'));
  return { cert: f('cert.pem'), key: f('key.pem'), ca: f('ca.pem') };
}

const SIZES = [1 << 20, 16 << 20];

/** Median all-reduce ms per size, over a ring of real processes, plain or TLS. */
async function ring(world: number, tls?: { cert: string; key: string; ca: string }): Promise<number[]> {
  const r = await ProcessRing.start(world, { peerTimeoutMs: 30_000, timeoutMs: 120_000, ...(tls ? { tls } : {}) });
  try {
    r.broadcast({ run: { sizes: SIZES.map((b) => b / 4), timed: true, iterations: 20, warmup: 3 } });
    const done = await r.waitAll('done', 600_000);
    return (done.find((d) => d.rank === 0)!.results as { ms: number }[]).map((x) => x.ms);
  } finally {
    await r.stop();
  }
}

/**
 * Training samples/s of `launch --workers 2` on the embedded data, plain or TLS, the ring over
 * loopback TCP (on one host it would otherwise share memory, and no gradient would cross TLS).
 */
async function train(tlsArgs: string[], epochs: number): Promise<number> {
  const child = spawn(process.execPath, [cli, 'launch', '--workers', '2', '--epochs', String(epochs), '--json', ...tlsArgs], { stdio: ['ignore', 'pipe', 'ignore'], env: { ...process.env, RINGTRAIN_SHARED_MEMORY: '0' } });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d));
  const code = await new Promise<number | null>((r) => child.once('exit', r));
  if (code !== 0) throw new Error(`launch exited ${code}`);
  return JSON.parse(out).samplesPerSecond as number;
}

const span = (xs: number[], d: number): string => (fmt(Math.min(...xs), d) === fmt(Math.max(...xs), d) ? fmt(xs[0], d) : `${fmt(Math.min(...xs), d)}–${fmt(Math.max(...xs), d)}`);

/** What TLS costs the ring (1 MiB and 16 MiB all-reduces) and training, plain and TLS alternating `runs` times. */
export async function tlsBench(runs: number, epochs: number): Promise<string> {
  const tls = certificates();
  const rows: string[][] = [];
  for (const world of [2, 4]) {
    const plain: number[][] = [];
    const secure: number[][] = [];
    for (let i = 0; i < runs; i++) {
      plain.push(await ring(world));
      secure.push(await ring(world, tls));
    }
    SIZES.forEach((bytes, k) => {
      const p = plain.map((x) => x[k]);
      const s = secure.map((x) => x[k]);
      rows.push([`all-reduce ${bytes >> 20} MiB, N=${world}`, `${span(p, 2)} ms`, `${span(s, 2)} ms`, `${span(s.map((v, i) => v / p[i]), 2)}×`]);
    });
  }
  const tlsArgs = ['--tls-cert', tls.cert, '--tls-key', tls.key, '--tls-ca', tls.ca];
  const plain: number[] = [];
  const secure: number[] = [];
  for (let i = 0; i < runs; i++) {
    plain.push(await train([], epochs));
    secure.push(await train(tlsArgs, epochs));
  }
  rows.push([`training, launch --workers 2, ${epochs} epochs`, `${span(plain, 0)} samples/s`, `${span(secure, 0)} samples/s`, `${span(secure.map((v, i) => v / plain[i]), 2)}× pace`]);
  return `TLS cost (plain and TLS alternating, ${runs} runs, ranges; ratio = TLS / plain)\n${table(['what', 'plain', 'TLS', 'ratio'], rows)}`;
}
