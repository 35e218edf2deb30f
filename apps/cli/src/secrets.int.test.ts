import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { killStarted, type Run, startRingtrain } from './testing/run-process.js';

afterEach(killStarted);

const childrenOf = (pid: number): number[] => {
  const file = `/proc/${pid}/task/${pid}/children`;
  return existsSync(file) ? readFileSync(file, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number) : [];
};
const cmdline = (pid: number): string => readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
const environ = (pid: number): string => readFileSync(`/proc/${pid}/environ`, 'utf8');

async function until<T>(what: string, probe: () => T | undefined | null | false, ms = 20_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = probe();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

const message = (run: Run, re: RegExp): string | undefined => run.lines.map((l) => String(l.msg)).find((m) => re.test(m));

describe('secrets (real processes)', () => {
  it('a coordinator beyond loopback without a token makes one: a worker without it is refused, one with it trains', async () => {
    const coord = startRingtrain(['coordinator', '--host', '0.0.0.0', '--port', '0', '--workers', '1', '--epochs', '1', '--max-steps', '20', '--json']);
    const made = await until('the generated token', () => message(coord, /no job token was given/));
    const token = /RINGTRAIN_TOKEN=(\S+)/.exec(made)![1];
    expect(token).toMatch(/^[\w-]{32}$/);
    const port = /:(\d+)$/.exec(String(coord.lines.find((l) => String(l.msg).startsWith('coordinator listening'))?.address))![1];
    const url = `ws://127.0.0.1:${port}`;
    const stranger = startRingtrain(['worker', '--coordinator', url, '--coordinator-timeout', '2']);
    expect(await stranger.exited).toBe(1);
    expect(stranger.stderr).toMatch(/ERR_AUTH.*401 wrong or missing job token/);
    // The token from a file, as a mounted Secret gives it (with its trailing newline).
    const file = join(mkdtempSync(join(tmpdir(), 'ringtrain-secret-')), 'token');
    writeFileSync(file, `${token}\n`, { mode: 0o600 });
    const worker = startRingtrain(['worker', '--coordinator', url, '--token-file', file]);
    expect(await worker.exited, worker.stderr).toBe(0);
    expect(await coord.exited, coord.stderr).toBe(0);
    expect(JSON.parse(coord.stdout).steps).toBe(20);
  }, 60_000);

  it('--insecure runs without a token, and says so', async () => {
    const coord = startRingtrain(['coordinator', '--host', '0.0.0.0', '--port', '0', '--workers', '1', '--epochs', '1', '--max-steps', '5', '--insecure']);
    await until('the warning', () => message(coord, /--insecure: anyone who can reach 0\.0\.0\.0:0 can join/));
    await until('the listener', () => message(coord, /waiting for 1 workers/));
    expect(message(coord, /no job token was given/)).toBeUndefined();
    coord.proc.kill('SIGINT');
    expect(await coord.exited).toBe(130);
  }, 30_000);

  it('workers get the job token in their environment only: no token on any command line, no status or admin token; no extra CA certificates to parse', async () => {
    const secrets = { RINGTRAIN_TOKEN: 'job-secret-1a2b3c', RINGTRAIN_STATUS_TOKEN: 'status-secret-4d5e', RINGTRAIN_ADMIN_TOKEN: 'admin-secret-6f7a' };
    const dir = mkdtempSync(join(tmpdir(), 'ringtrain-ca-'));
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', join(dir, 'ca.key'), '-out', join(dir, 'ca.pem'), '-days', '1', '-subj', '/CN=extra CA'], { stdio: 'pipe' });
    const launch = startRingtrain(['launch', '--workers', '2', '--epochs', '30'], { ...secrets, NODE_EXTRA_CA_CERTS: join(dir, 'ca.pem') });
    // Exec'd workers: a child read between its fork and its exec still shows the launch's own environment.
    const isWorker = (pid: number): boolean => / worker --coordinator /.test(cmdline(pid));
    const workers = await until('two worker processes', () => {
      const kids = childrenOf(launch.proc.pid!);
      return kids.length === 2 && kids.every(isWorker) ? kids : null;
    });
    expect(environ(launch.proc.pid!)).toContain('NODE_EXTRA_CA_CERTS='); // the check sees the variable
    for (const pid of workers) {
      const env = environ(pid);
      expect(env).toContain('RINGTRAIN_TOKEN=job-secret-1a2b3c');
      expect(env).not.toContain('status-secret-4d5e');
      expect(env).not.toContain('admin-secret-6f7a');
      expect(cmdline(pid)).not.toMatch(/secret/);
      // They talk only to this launch's coordinator and each other (with TLS, trusting exactly --tls-ca).
      expect(env).not.toContain('NODE_EXTRA_CA_CERTS=');
    }
    launch.proc.kill('SIGINT');
    await launch.exited;
  }, 60_000);

  it('a worker given --token on the command line warns, and its re-executed self gets the token by environment', async () => {
    const coord = startRingtrain(['coordinator', '--port', '0', '--workers', '2', '--epochs', '1'], { RINGTRAIN_TOKEN: 'argv-secret-99' });
    const address = await until('the address', () => coord.lines.find((l) => String(l.msg).startsWith('coordinator listening'))?.address as string);
    // A worker started without the ring's process settings runs itself again with them.
    const worker = startRingtrain(['worker', '--coordinator', address, '--token', 'argv-secret-99'], { GLIBC_TUNABLES: '', RINGTRAIN_NO_REEXEC: '' });
    const [child] = await until('the re-executed worker', () => (childrenOf(worker.proc.pid!).length ? childrenOf(worker.proc.pid!) : null));
    await until('the worker to join', () => message(coord, /joined \(1\/2\)/));
    expect(cmdline(child)).not.toContain('argv-secret-99');
    expect(environ(child)).toContain('RINGTRAIN_TOKEN=argv-secret-99');
    expect(worker.stderr).toMatch(/--token on the command line is visible to every user of this host/);
    coord.proc.kill('SIGINT');
    await coord.exited;
  }, 60_000);

  it('a token file that is missing, empty or not a token is a clear error', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ringtrain-secret-'));
    writeFileSync(join(dir, 'empty'), '\n');
    writeFileSync(join(dir, 'big'), 'x'.repeat(5000));
    for (const [file, why] of [
      [join(dir, 'missing'), /cannot read the token file .*missing: ENOENT/],
      [join(dir, 'empty'), /the token file .*empty is empty/],
      [join(dir, 'big'), /5000 bytes, more than the 4096 a token file may hold/],
    ] as const) {
      const w = startRingtrain(['worker', '--coordinator', 'ws://127.0.0.1:9', '--token-file', file]);
      expect(await w.exited).toBe(1);
      expect(w.stderr).toMatch(why);
    }
  }, 30_000);
});
