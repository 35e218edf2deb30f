import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { get } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { killStarted, startRingtrain } from './testing/run-process.js';

afterEach(killStarted);

const dir = mkdtempSync(join(tmpdir(), 'ringtrain-tls-'));
const f = (name: string): string => join(dir, name);

/** A CA, and a certificate it signed for 127.0.0.1 and localhost, made with Debian's openssl. */
beforeAll(() => {
  const openssl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl('req', '-x509', ...ec, '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', '1', '-subj', '/CN=ringtrain test CA');
  openssl('req', ...ec, '-keyout', f('key.pem'), '-out', f('server.csr'), '-subj', '/CN=localhost');
  writeFileSync(f('san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  openssl('x509', '-req', '-in', f('server.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-out', f('cert.pem'), '-days', '1', '-extfile', f('san.ext'));
  // Another CA, which signed nothing here.
  openssl('req', '-x509', ...ec, '-keyout', f('other.key'), '-out', f('other.pem'), '-days', '1', '-subj', '/CN=someone else');
});

const tlsFlags = () => ['--tls-cert', f('cert.pem'), '--tls-key', f('key.pem'), '--tls-ca', f('ca.pem')];
const listening = (lines: Record<string, unknown>[]) => lines.find((l) => String(l.msg).startsWith('coordinator listening'))?.address as string | undefined;

describe('TLS (real processes, a certificate made in the test)', () => {
  it('launch with a certificate: the workers\' port, the ring links, the status socket and the dashboard all speak TLS', async () => {
    const run = startRingtrain(['launch', '--workers', '2', '--epochs', '1', '--linger', '30', '--json', ...tlsFlags()]);
    await expect.poll(() => listening(run.lines), { timeout: 20_000 }).toMatch(/^wss:\/\/127\.0\.0\.1:\d+$/);
    const address = listening(run.lines)!;
    await expect.poll(() => run.stdout, { timeout: 60_000 }).toMatch(/"weightsHash"/);
    const summary = JSON.parse(run.stdout);
    expect(summary.epochs[0].testAccuracy).toBeGreaterThan(0.8);
    // Every worker advertised a wss:// ring endpoint, which its neighbour dialled with the CA.
    const joined = run.lines.filter((l) => /joined/.test(String(l.msg))).map((l) => String(l.ringAddress));
    expect(joined).toHaveLength(2);
    for (const a of joined) expect(a).toMatch(/^wss:\/\/127\.0\.0\.1:\d+$/);
    // The status socket over wss://, checked against the CA.
    const status = startRingtrain(['status', address, '--json', '--tls-ca', f('ca.pem')]);
    expect(await status.exited, status.stderr).toBe(0);
    expect(status.stdout).toMatch(/"type":"snapshot".*"state":"finished"/);
    // The dashboard over https://.
    const page = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      get(`${address.replace('wss:', 'https:')}/`, { ca: readFileSync(f('ca.pem')) }, (res) => {
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      }).on('error', reject);
    });
    expect(page.status).toBe(200);
    expect(page.body).toMatch(/<title>/);
    run.proc.kill('SIGINT');
    expect(await run.exited).toBe(0);
  }, 90_000);

  it('a client that does not trust the certificate, or does not speak TLS, is told so at once instead of retrying', async () => {
    const coord = startRingtrain(['coordinator', '--host', '127.0.0.1', '--port', '0', '--workers', '1', '--epochs', '1', ...tlsFlags()], { RINGTRAIN_TOKEN: 't' });
    await expect.poll(() => listening(coord.lines), { timeout: 20_000 }).toBeTruthy();
    const address = listening(coord.lines)!;
    const t0 = Date.now();
    const untrusting = startRingtrain(['worker', '--coordinator', address, '--tls-ca', f('other.pem')], { RINGTRAIN_TOKEN: 't' });
    expect(await untrusting.exited).toBe(1);
    expect(untrusting.stderr).toMatch(/ERR_TLS.*TLS with the coordinator at wss:\/\/127\.0\.0\.1:\d+ failed: .*(certificate|CERT)/i);
    // A plain client gets hung up on; it says what that likely means when its deadline passes.
    const plain = startRingtrain(['status', address.replace('wss:', 'ws:'), '--timeout', '2']);
    expect(await plain.exited).toBe(1);
    expect(plain.stderr).toMatch(/ERR_UNREACHABLE: .*socket hang up \(ECONNRESET\); if the server speaks TLS, dial wss:\/\//);
    const status = startRingtrain(['status', address, '--timeout', '20', '--tls-ca', f('other.pem')]);
    expect(await status.exited).toBe(1);
    expect(status.stderr).toMatch(/ERR_TLS/);
    expect(Date.now() - t0).toBeLessThan(15_000);
  }, 60_000);

  it('--tls-cert without --tls-key is a clear error', async () => {
    const r = startRingtrain(['coordinator', '--port', '0', '--workers', '1', '--tls-cert', f('cert.pem')], { RINGTRAIN_TOKEN: 't' });
    expect(await r.exited).toBe(1);
    expect(r.stderr).toMatch(/--tls-cert and --tls-key go together/);
  });
});
