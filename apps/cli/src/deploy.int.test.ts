// The deployment files (deploy/k8s, compose.yaml, Dockerfile) checked against Kubernetes' own types
// and against what the CLI really accepts and serves.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { parseAllDocuments } from 'yaml';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const main = join(root, 'apps/cli/dist/main.js');
const has = (cmd: string): boolean => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
const expectTools = process.env.RINGTRAIN_EXPECT_CONTAINERS === '1';

// biome-ignore lint: manifests are untyped JSON here
type K8sObject = { apiVersion: string; kind: string; metadata: { name: string; annotations?: Record<string, string> }; [k: string]: any };

/** The kustomize base, rendered as `kubectl apply -k` would. */
function render(): K8sObject[] {
  const r = spawnSync('kubectl', ['kustomize', join(root, 'deploy/k8s')], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`kubectl kustomize failed: ${r.stderr}`);
  return parseAllDocuments(r.stdout).map((d) => d.toJSON() as K8sObject);
}

/** kind → its type in kubernetes-types (generated from Kubernetes' OpenAPI schemas). */
const TYPES: Record<string, [string, string]> = {
  'v1/Secret': ['kubernetes-types/core/v1', 'Secret'],
  'v1/Service': ['kubernetes-types/core/v1', 'Service'],
  'v1/PersistentVolumeClaim': ['kubernetes-types/core/v1', 'PersistentVolumeClaim'],
  'batch/v1/Job': ['kubernetes-types/batch/v1', 'Job'],
};

/** Type-checks each object as an object literal of its Kubernetes type: a misspelt or misplaced field, or a wrong type, is an error. */
function typeErrors(objects: K8sObject[]): string[] {
  const dir = mkdtempSync(join(tmpdir(), 'ringtrain-k8s-'));
  const file = join(dir, 'manifests.ts');
  const lines = objects.map((o, i) => {
    const t = TYPES[`${o.apiVersion}/${o.kind}`];
    if (!t) return `const unknown${i}: never = ${JSON.stringify(o.kind)}; // no type for ${o.apiVersion} ${o.kind}`;
    return `import type { ${t[1]} as T${i} } from '${t[0]}';\nexport const o${i}: T${i} = ${JSON.stringify(o, null, 1)};`;
  });
  writeFileSync(file, lines.join('\n'));
  const options: ts.CompilerOptions = { strict: true, noEmit: true, types: [], baseUrl: root, paths: { 'kubernetes-types/*': [join(root, 'node_modules/kubernetes-types/*')] }, module: ts.ModuleKind.ESNext, moduleResolution: ts.ModuleResolutionKind.Bundler };
  const program = ts.createProgram([file], options);
  return ts.getPreEmitDiagnostics(program).map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'));
}

/** The CLI's help for a command: its flags and the environment variables they read. */
function help(command: string): string {
  return spawnSync(process.execPath, [main, command, '--help'], { encoding: 'utf8' }).stdout;
}

function checkCommandLine(args: string[], env: Record<string, string>, where: string): void {
  const text = help(args[0]);
  for (const a of args.slice(1).filter((x) => x.startsWith('--'))) expect(text, `${where}: ${args[0]} has no ${a}`).toContain(`${a} `);
  for (const name of Object.keys(env).filter((n) => n.startsWith('RINGTRAIN_'))) expect(text, `${where}: ${args[0]} reads no ${name}`).toMatch(new RegExp(`\\b${name}\\b`));
}

describe.skipIf(!has('kubectl') && !expectTools)('Kubernetes manifests (deploy/k8s)', () => {
  const objects = render();
  const byKind = (kind: string, name: string): K8sObject => {
    const o = objects.find((x) => x.kind === kind && x.metadata.name === name);
    expect(o, `${kind} ${name}`).toBeTruthy();
    return o!;
  };
  const jobs = objects.filter((o) => o.kind === 'Job');

  it('render, and every object type-checks against the Kubernetes API types; a wrong field fails', () => {
    expect(objects.map((o) => `${o.kind}/${o.metadata.name}`).sort()).toEqual([
      'Job/ringtrain-coordinator',
      'Job/ringtrain-worker',
      'PersistentVolumeClaim/ringtrain-checkpoints',
      'Secret/ringtrain-token',
      'Service/ringtrain-coordinator',
      'Service/ringtrain-workers',
    ]);
    expect(typeErrors(objects)).toEqual([]);
    // The check itself: a misspelt field and a wrong type are both caught.
    const broken = structuredClone(objects);
    const worker = broken.find((o) => o.metadata.name === 'ringtrain-worker')!;
    worker.spec.template.spec.containers[0].portz = [];
    worker.spec.parallelism = 'four';
    const errors = typeErrors(broken);
    expect(errors.join('\n')).toMatch(/portz/);
    expect(errors.join('\n')).toMatch(/'string' is not assignable to type 'number'/);
  });

  it('agree with the CLI: commands, flags and variables exist; probes reach /healthz and /readyz on the health port; secrets, services and DNS names line up', () => {
    const secret = byKind('Secret', 'ringtrain-token');
    const dockerfile = readFileSync(join(root, 'Dockerfile'), 'utf8');
    const imageRingPort = /RINGTRAIN_RING_PORT=(\d+)/.exec(dockerfile)![1];
    for (const job of jobs) {
      const pod = job.spec.template.spec;
      expect(pod.securityContext.runAsNonRoot, job.metadata.name).toBe(true);
      expect(pod.terminationGracePeriodSeconds, job.metadata.name).toBeGreaterThanOrEqual(30);
      for (const c of pod.containers) {
        const env = Object.fromEntries((c.env ?? []).map((e: { name: string; value?: string }) => [e.name, e.value ?? '']));
        checkCommandLine(c.args, env, job.metadata.name);
        // Probes: the health port is where the CLI serves them.
        const ports = Object.fromEntries(c.ports.map((p: { name: string; containerPort: number }) => [p.name, p.containerPort]));
        for (const probe of [c.livenessProbe, c.readinessProbe]) {
          expect(ports[probe.httpGet.port]).toBe(Number(env.RINGTRAIN_HEALTH_PORT));
          expect(['/healthz', '/readyz']).toContain(probe.httpGet.path);
        }
        expect(c.livenessProbe.httpGet.path).toBe('/healthz');
        expect(c.readinessProbe.httpGet.path).toBe('/readyz');
        // The token file is a key of the Secret, where its volume is mounted.
        const tokenFile = env.RINGTRAIN_TOKEN_FILE;
        const mount = c.volumeMounts.find((m: { mountPath: string }) => tokenFile.startsWith(`${m.mountPath}/`));
        const volume = pod.volumes.find((v: { name: string }) => v.name === mount.name);
        expect(volume.secret.secretName).toBe(secret.metadata.name);
        expect(Object.keys(secret.stringData ?? secret.data)).toContain(tokenFile.slice(mount.mountPath.length + 1));
        expect(c.volumeMounts.map((m: { mountPath: string }) => m.mountPath)).toContain('/data');
      }
    }
    // Workers dial the coordinator's Service by name, at a port that reaches the coordinator's container.
    const coordinatorPod = byKind('Job', 'ringtrain-coordinator').spec.template;
    const coordinatorService = byKind('Service', 'ringtrain-coordinator');
    const workerJob = byKind('Job', 'ringtrain-worker');
    const worker = workerJob.spec.template.spec.containers[0];
    const dial = new URL(worker.args[worker.args.indexOf('--coordinator') + 1]);
    expect(dial.hostname).toBe(coordinatorService.metadata.name);
    const port = coordinatorService.spec.ports.find((p: { port: number }) => p.port === Number(dial.port));
    expect(Object.entries(coordinatorService.spec.selector).every(([k, v]) => coordinatorPod.metadata.labels[k] === v)).toBe(true);
    expect(coordinatorPod.spec.containers[0].ports.find((p: { name: string }) => p.name === port.targetPort).containerPort).toBe(Number(dial.port));
    expect(coordinatorPod.metadata.annotations['prometheus.io/port']).toBe(dial.port);
    // Each worker advertises <job>-<index>.<headless service>, the DNS name its pod gets, at the ring port.
    const headless = byKind('Service', 'ringtrain-workers');
    expect(headless.spec.clusterIP).toBe('None');
    expect(workerJob.spec.completionMode).toBe('Indexed');
    expect(workerJob.spec.template.spec.subdomain).toBe(headless.metadata.name);
    const advertise = worker.env.find((e: { name: string }) => e.name === 'RINGTRAIN_ADVERTISE').value as string;
    expect(advertise).toBe(`ws://${workerJob.metadata.name}-$(JOB_INDEX).${headless.metadata.name}:${imageRingPort}`);
    expect(headless.spec.ports[0].port).toBe(Number(imageRingPort));
    expect(worker.ports.find((p: { name: string }) => p.name === 'ring').containerPort).toBe(Number(imageRingPort));
  });
});

describe.skipIf(!has('docker-compose') && !expectTools)('compose.yaml', () => {
  it('validates (docker-compose config), and its commands, flags and variables exist', () => {
    const r = spawnSync('docker-compose', ['-f', join(root, 'compose.yaml'), 'config'], { encoding: 'utf8', env: { ...process.env, RINGTRAIN_TOKEN_PATH: '/dev/null' } });
    expect(r.status, r.stderr).toBe(0);
    const config = parseAllDocuments(r.stdout)[0].toJSON() as { services: Record<string, { command: string[]; environment: Record<string, string>; volumes: string[] }> };
    expect(Object.keys(config.services).sort()).toEqual(['coordinator', 'worker']);
    for (const [name, s] of Object.entries(config.services)) {
      checkCommandLine(s.command, s.environment, `compose ${name}`);
      expect(s.environment.RINGTRAIN_TOKEN_FILE).toBe('/run/secrets/ringtrain_token');
    }
    expect(config.services.worker.command).toEqual(['worker', '--coordinator', 'ws://coordinator:29500']);
  });
});
