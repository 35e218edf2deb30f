// ringtrain in real containers: the image, a cluster on an internal network, faults, and Compose.
// Needs a Docker daemon and the stand-in base image (scripts/container-setup.sh start); CI sets
// RINGTRAIN_EXPECT_CONTAINERS=1, so that a missing daemon fails instead of skipping.
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { available } from './testing/expect-env.js';
import { MLP_LEARNED } from './testing/learned.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
// Debian's client drives Debian's daemon (and builds with its built-in BuildKit).
const DOCKER = process.env.RINGTRAIN_DOCKER ?? (existsSync('/usr/bin/docker') ? '/usr/bin/docker' : 'docker');
const BASE = process.env.RINGTRAIN_CONTAINER_BASE ?? 'ringtrain-base:node20-bookworm-slim';
const IMAGE = 'ringtrain:ci';
const LABEL = `ringtrain-test=${process.pid}`;
const tag = (s: string): string => `rt${process.pid}-${s}`;

function docker(args: string[], options: { env?: NodeJS.ProcessEnv; timeout?: number } = {}): SpawnSyncReturns<string> {
  return spawnSync(DOCKER, args, { encoding: 'utf8', timeout: options.timeout ?? 120_000, env: { ...process.env, ...options.env } });
}
const out = (args: string[]): string => {
  const r = docker(args);
  if (r.status !== 0) throw new Error(`docker ${args.join(' ')}: ${r.stderr}`);
  return r.stdout.trim();
};
const daemon = docker(['info'], { timeout: 10_000 }).status === 0 && docker(['image', 'inspect', BASE], { timeout: 10_000 }).status === 0;
if (!daemon && process.env.RINGTRAIN_EXPECT_CONTAINERS === '1') throw new Error(`RINGTRAIN_EXPECT_CONTAINERS=1 but no Docker daemon with ${BASE} (run scripts/container-setup.sh start)`);

/** Waits for a line in a container's log (the first after its first `after` lines), and says where it is. */
async function logLine(container: string, re: RegExp, ms = 60_000, after = 0): Promise<{ line: string; index: number }> {
  const end = Date.now() + ms;
  for (;;) {
    const r = docker(['logs', container]);
    const lines = `${r.stdout}${r.stderr}`.split('\n');
    const index = lines.findIndex((l, i) => i >= after && re.test(l));
    if (index >= 0) return { line: lines[index], index };
    if (Date.now() > end) throw new Error(`no ${re} in the log of ${container}:\n${`${r.stdout}${r.stderr}`.slice(-3000)}`);
    await new Promise((r2) => setTimeout(r2, 200));
  }
}
const wait = (container: string): number => Number(out(['wait', container]));
const logs = (container: string): string => {
  const r = docker(['logs', container]);
  return `${r.stdout}${r.stderr}`;
};
const freePort = (): Promise<number> =>
  new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });

describe.skipIf(!daemon)('containers (Docker)', () => {
  beforeAll(() => {
    // Behind a TLS-intercepting proxy npm needs its CA: handed to the build as a secret, not kept.
    const ca = [process.env.NODE_EXTRA_CA_CERTS, spawnSync('npm', ['config', 'get', 'cafile'], { encoding: 'utf8' }).stdout.trim()].find((f) => f && f !== 'null' && existsSync(f));
    const r = docker(['build', '--network', 'host', '--build-arg', `BASE=${BASE}`, ...(ca ? ['--secret', `id=npm_ca,src=${ca}`] : []), '-t', IMAGE, root], { env: { DOCKER_BUILDKIT: '1' }, timeout: 900_000 });
    if (r.status !== 0) throw new Error(`docker build failed:\n${r.stderr.slice(-4000)}`);
  }, 900_000);

  afterAll(() => {
    // Nothing the tests started is left behind, running or not.
    const left = out(['ps', '-aq', '--filter', `label=${LABEL}`]).split('\n').filter(Boolean);
    if (left.length) docker(['rm', '-f', ...left]);
    for (const n of out(['network', 'ls', '-q', '--filter', `label=${LABEL}`]).split('\n').filter(Boolean)) docker(['network', 'rm', n]);
  });

  it('the image: ≤ 350 MB, runs as non-root, has no compiler and no dev dependencies, and its HEALTHCHECK passes', async () => {
    const bytes = Number(out(['image', 'inspect', IMAGE, '--format', '{{.Size}}']));
    const baseBytes = Number(out(['image', 'inspect', BASE, '--format', '{{.Size}}']));
    console.log(`image ${(bytes / 1e6).toFixed(0)} MB (base ${(baseBytes / 1e6).toFixed(0)} MB, ringtrain's layers ${((bytes - baseBytes) / 1e6).toFixed(0)} MB)`);
    expect(bytes / 1e6).toBeLessThanOrEqual(350);
    const run = (cmd: string): string => out(['run', '--rm', '--label', LABEL, '--entrypoint', 'sh', IMAGE, '-c', cmd]);
    expect(run('id -u')).not.toBe('0');
    expect(run('for c in gcc g++ cc c++ make python3; do command -v $c; done; true')).toBe('');
    const packages = run("dpkg-query -W -f '${Package} '");
    const modules = run('ls /app/node_modules /app/node_modules/@ringtrain | tr "\\n" " "');
    console.log(`packages: ${packages}\nnode_modules: ${modules}`);
    for (const dev of ['typescript', 'vitest', '@vitest', 'nx', '@nx', 'fast-check', 'playwright-core', 'vite', 'yaml', 'kubernetes-types']) expect(modules.split(/\s+/)).not.toContain(dev);
    expect(packages).toMatch(/\blibopenblas0/);
    expect(out(['run', '--rm', '--label', LABEL, IMAGE, '--version'])).toBe('0.1.0');
    // The HEALTHCHECK, run every second here: a coordinator waiting for workers is healthy.
    const c = tag('health');
    out(['run', '-d', '--name', c, '--label', LABEL, '--health-interval', '1s', '--health-start-period', '1s', '-e', 'RINGTRAIN_TOKEN=t', IMAGE, 'coordinator', '--workers', '2']);
    await expect.poll(() => out(['inspect', c, '--format', '{{.State.Health.Status}}']), { timeout: 30_000, interval: 500 }).toBe('healthy');
    docker(['rm', '-f', c]);
  }, 120_000);

  it('a cluster of read-only containers on an internal network, addressed by name: exit 0 and a model that has learned', async () => {
    const net = tag('net');
    out(['network', 'create', '--internal', '--label', LABEL, net]);
    const coord = tag('coordinator');
    // Read-only, as the Kubernetes manifests run them (readOnlyRootFilesystem).
    const common = ['--network', net, '--label', LABEL, '--read-only', '-e', 'RINGTRAIN_TOKEN=in-the-cluster'];
    out(['run', '-d', '--name', coord, ...common, IMAGE, 'coordinator', '--workers', '2', '--epochs', '10', '--json']);
    const workers = [tag('w1'), tag('w2')];
    for (const w of workers) out(['run', '-d', '--name', w, '--hostname', w, ...common, IMAGE, 'worker', '--coordinator', `ws://${coord}:29500`]);
    expect(wait(coord), logs(coord).slice(-3000)).toBe(0);
    for (const w of workers) expect(wait(w), logs(w).slice(-2000)).toBe(0);
    const summary = JSON.parse(out(['logs', coord]).split('\n').find((l) => l.startsWith('{"worldSize"'))!);
    console.log(`containers: ${summary.steps} steps, test accuracy ${(100 * summary.epochs.at(-1).testAccuracy).toFixed(2)}%, ${Math.round(summary.samplesPerSecond)} samples/s`);
    expect(summary.epochs.at(-1).testAccuracy).toBeGreaterThanOrEqual(MLP_LEARNED);
    // Each worker advertised its address on that network, which its neighbour reached.
    expect(logs(coord)).toMatch(/"ringAddress":"ws:\/\/\d+\.\d+\.\d+\.\d+:29600"/);
  }, 180_000);

  it('faults in containers: docker kill of a worker is survived, docker stop is a clean leave; the run finishes and nothing is left running', async () => {
    const net = tag('faultnet');
    out(['network', 'create', '--internal', '--label', LABEL, net]);
    const coord = tag('fcoord');
    const common = ['--network', net, '--label', LABEL, '-e', 'RINGTRAIN_TOKEN=faults'];
    out(['run', '-d', '--name', coord, ...common, IMAGE, 'coordinator', '--workers', '1:3', '--epochs', '60', '--max-steps', '1500', '--json']);
    const [killed, stopped, last] = [tag('f1'), tag('f2'), tag('f3')];
    for (const w of [killed, stopped, last]) out(['run', '-d', '--name', w, '--hostname', w, ...common, IMAGE, 'worker', '--coordinator', `ws://${coord}:29500`]);
    // The ring of three: the first generation, or a later one where a worker was prepared after
    // the first ring formed (the containers start one after another).
    const three = await logLine(coord, /all 3 ranks ready|generation \d+ trains from step \d+ with 3 workers/);
    await new Promise((r) => setTimeout(r, 500));
    out(['kill', killed]); // SIGKILL
    await logLine(coord, /generation \d+ trains from step \d+ with 2 workers/, 60_000, three.index + 1);
    out(['stop', '--time', '30', stopped]); // SIGTERM, through tini
    expect(wait(killed)).toBe(137);
    expect(wait(stopped), logs(stopped).slice(-2000)).toBe(0);
    expect(logs(stopped)).toMatch(/left the run after step \d+/);
    expect(wait(coord), logs(coord).slice(-3000)).toBe(0);
    expect(wait(last)).toBe(0);
    const log = logs(coord);
    expect(log).toMatch(/generation \d+ trains .* with 2 workers, .* after the (crash|fault|lost)/);
    expect(log).toMatch(/left cleanly/);
    expect(JSON.parse(log.split('\n').find((l) => l.startsWith('{"worldSize"'))!).steps).toBe(1500);
    expect(out(['ps', '-q', '--filter', `label=${LABEL}`])).toBe('');
  }, 180_000);

  it.skipIf(!available('CONTAINERS', spawnSync('sh', ['-c', 'command -v docker-compose']).status === 0, 'docker-compose is not installed'))('compose: up trains with checkpoints on a named volume and the dashboard published; up again resumes', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ringtrain-compose-'));
    const token = join(dir, 'token');
    writeFileSync(token, 'compose-token\n', { mode: 0o644 }); // bind-mounted: the container's user must read it
    const project = tag('compose');
    const port = await freePort();
    const env = { RINGTRAIN_IMAGE: IMAGE, RINGTRAIN_WORKERS: '2', RINGTRAIN_TOKEN_PATH: token, RINGTRAIN_DASHBOARD_PORT: String(port), DOCKER_HOST: process.env.DOCKER_HOST ?? 'unix:///var/run/docker.sock' };
    const compose = (args: string[], extra: NodeJS.ProcessEnv = {}) => spawnSync('docker-compose', ['-p', project, '-f', join(root, 'compose.yaml'), ...args], { encoding: 'utf8', timeout: 180_000, env: { ...process.env, ...env, ...extra } });
    try {
      let r = compose(['up', '-d', '--no-build', '--scale', 'worker=2'], { RINGTRAIN_MAX_STEPS: '40', RINGTRAIN_SAVE_EVERY: '20' });
      expect(r.status, r.stderr).toBe(0);
      const coordinator = `${project}_coordinator_1`;
      // The dashboard, published on the host.
      await expect.poll(async () => (await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => null))?.status, { timeout: 30_000 }).toBeDefined();
      expect(wait(coordinator), logs(coordinator).slice(-3000)).toBe(0);
      expect(logs(coordinator)).toMatch(/no checkpoint in \/data\/checkpoints yet, starting the job/);
      r = compose(['up', '-d', '--no-build', '--scale', 'worker=2'], { RINGTRAIN_MAX_STEPS: '0' });
      expect(r.status, r.stderr).toBe(0);
      expect(wait(coordinator), logs(coordinator).slice(-3000)).toBe(0);
      expect(logs(coordinator)).toMatch(/resuming from \/data\/checkpoints\/ckpt-step-0000000040\.safetensors: step 40/);
    } finally {
      compose(['down', '-v', '--remove-orphans']);
    }
  }, 300_000);
});
