import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { table } from '@ringtrain/cli';
import { loadEmbeddedMnist, subset, writeIdxFolder } from '@ringtrain/data';
import { type LinkProfile, PROFILES, type VirtualHosts, virtualHosts } from '@ringtrain/netlab';
import { peersDir } from './allreduce-bench.js';
import { fmt, PYTHON } from './measure.js';

const cli = fileURLToPath(new URL('../../../apps/cli/dist/main.js', import.meta.url));

/** One run's figures: samples/s, test accuracy at its end, and where rank 0's time went (ms per step). */
interface Measured {
  samplesPerSecond: number;
  seconds: number;
  accuracy: number;
  split?: Record<string, number>;
}

export interface NetworkBenchOptions {
  profiles: string[];
  workers: number[];
  runs: number;
  /** Steps per run; 0: one whole epoch (60,000 samples). */
  steps: number;
  /**
   * ringtrain's variants to run beside float32: a wire format (fp16, bf16, int8), or DiLoCo as
   * `diloco` (H = 8), `diloco:16` (H = 16), `diloco:8+fp16` (its pseudo-gradients as fp16),
   * `overlap:<KiB>` (gradient ranges of that size all-reduced during the backward pass; 0: none),
   * `flat` (no shared memory between a host's workers: the ring over TCP between every rank;
   * `flat+fp16` with a wire format).
   */
  compression: string[];
  /** Workers per host (default 1): N workers on N/perHost hosts, and as many DDP ranks on each. */
  perHost?: number;
  /**
   * A job config whose model ringtrain trains instead of the MLP; the DDP peer trains only the MLP,
   * so then the ratios are against ringtrain's float32 run.
   */
  model?: string;
}

/** The job config with DiLoCo rounds of `h` steps, beside it. */
function dilocoConfig(config: string, h: number): string {
  return variantConfig(config, `diloco-${h}`, { sync: { type: 'diloco', innerSteps: h } });
}

/** The job config with `fields` set, beside it. */
function variantConfig(config: string, name: string, fields: object): string {
  const path = config.replace(/\.json$/, `-${name}.json`);
  writeFileSync(path, JSON.stringify({ ...JSON.parse(readFileSync(config, 'utf8')), ...fields }));
  return path;
}

/** A finished process's output, or a failure naming it. */
function finished(p: ChildProcess, what: string, timeoutMs: number): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    let stdout = '';
    let stderr = '';
    p.stdout?.on('data', (d) => (stdout += d));
    p.stderr?.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('exit', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve({ stdout, stderr });
      else reject(new Error(`${what} exited ${code ?? signal}: ${stderr.slice(-600)}`));
    });
  });
}

/** ringtrain: the coordinator on the first host, worker r on host ⌊r / perHost⌋ + 2. */
async function ringtrain(net: VirtualHosts, n: number, perHost: number, config: string, steps: number, variant: string): Promise<Measured> {
  const [c, ...rest] = net.hosts;
  const address = `ws://${c.ip}:29500`;
  const [sync, wire = 'none'] = variant.split('+');
  const env = { RINGTRAIN_LOG_LEVEL: 'warn', ...(sync === 'flat' ? { RINGTRAIN_SHARED_MEMORY: '0' } : {}) };
  const h = /^diloco(?::(\d+))?$/.exec(sync);
  const overlap = /^overlap:(\d+)$/.exec(sync);
  const how = h
    ? ['--config', dilocoConfig(config, Number(h[1] ?? 8)), '--gradient-compression', wire]
    : overlap
      ? ['--config', variantConfig(config, `bucket-${overlap[1]}`, { bucketBytes: Number(overlap[1]) * 1024 }), '--gradient-compression', wire]
      : ['--config', config, '--gradient-compression', sync === 'flat' ? wire : variant === 'float32' ? 'none' : variant];
  const cap = steps > 0 ? ['--max-steps', String(steps)] : [];
  const coordinator = net.run(c, process.execPath, [cli, 'coordinator', '--workers', String(n), '--host', c.ip, '--port', '29500', '--token', 'bench', ...how, ...cap, '--json'], env);
  const workers = Array.from({ length: n }, (_, r) => {
    const h = rest[Math.floor(r / perHost)];
    return net.run(h, process.execPath, [cli, 'worker', '--coordinator', address, '--token', 'bench', '--ring-host', h.ip, '--ring-port', String(29600 + (r % perHost))], env);
  });
  const [coord] = await Promise.all([finished(coordinator, 'ringtrain coordinator', 600_000), ...workers.map((w, i) => finished(w, `ringtrain worker ${i}`, 600_000))]);
  const summary = JSON.parse(coord.stdout.trim().split('\n').at(-1)!) as { samplesPerSecond: number; seconds: number; steps: number; epochs: { testAccuracy: number }[]; timing: { rank: number; dataMs: number; computeMs: number; allreduceMs: number; optimizerMs: number }[] };
  const t = summary.timing.find((x) => x.rank === 0)!;
  const per = (ms: number): number => ms / summary.steps;
  return { samplesPerSecond: summary.samplesPerSecond, seconds: summary.seconds, accuracy: summary.epochs.at(-1)!.testAccuracy, split: { data: per(t.dataMs), compute: per(t.computeMs), allreduce: per(t.allreduceMs), optimizer: per(t.optimizerMs) } };
}

/** PyTorch DDP (Gloo): `perHost` ranks per host, on the same hosts as ringtrain's workers. */
async function ddp(net: VirtualHosts, n: number, perHost: number, data: string, steps: number): Promise<Measured> {
  const hosts = Array.from({ length: n }, (_, r) => net.hosts[1 + Math.floor(r / perHost)]);
  const script = `${peersDir()}pytorch_ddp_multihost.py`;
  const env = { GLOO_SOCKET_IFNAME: 'eth0', OMP_NUM_THREADS: '1', OPENBLAS_NUM_THREADS: '1' };
  const ranks = hosts.map((h, r) =>
    net.run(h, PYTHON, [script, '--rank', String(r), '--world', String(n), '--master-addr', hosts[0].ip, '--master-port', '29517', '--data', data, '--hidden', '256,128', '--lr', '0.05', '--batch', '64', ...(steps > 0 ? ['--max-steps', String(steps)] : [])], env),
  );
  const [rank0] = await Promise.all(ranks.map((p, r) => finished(p, `DDP rank ${r}`, 600_000)));
  const line = JSON.parse(rank0.stdout.trim().split('\n').at(-1)!) as { samples_per_s: number; seconds: number; test_acc: number; steps: number; rank0_split_s: Record<string, number> };
  const per = (s: number): number => (1000 * s) / line.steps;
  return { samplesPerSecond: line.samples_per_s, seconds: line.seconds, accuracy: line.test_acc, split: { data: per(line.rank0_split_s.data), 'forward+backward+all-reduce': per(line.rank0_split_s.fwd_bwd_allreduce), optimizer: per(line.rank0_split_s.optimizer) } };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];
/** Thousands of samples/s: the median, and the range over runs. */
const range = (xs: number[]): string => (xs.length ? `${fmt(median(xs) / 1000, 1)}k (${fmt(Math.min(...xs) / 1000, 1)}–${fmt(Math.max(...xs) / 1000, 1)})` : 'n/a');

/**
 * ringtrain against PyTorch DDP across simulated hosts: network namespaces on a bridge, each link
 * shaped with tbf (netem's delay where the kernel has it). MLP 784-256-128-10, batch 64 per
 * worker, SGD; 60,000 training images (the embedded MNIST tiled, as IDX, read by both). Each
 * profile and N alternates the systems, `runs` times; figures are medians with their ranges.
 */
export async function networkBench(o: NetworkBenchOptions): Promise<string> {
  const perHost = o.perHost ?? 1;
  const net = virtualHosts('rb', 1 + Math.ceil(Math.max(...o.workers) / perHost), 81);
  if (!net.available) return 'network: skipped, network namespaces cannot be made here (needs root and iproute2)';
  const dir = mkdtempSync(join(tmpdir(), 'ringtrain-network-bench-'));
  const { train, test } = loadEmbeddedMnist();
  const data = join(dir, 'idx');
  writeIdxFolder(data, { train: subset(train, Int32Array.from({ length: 60_000 }, (_, i) => i % train.size)), test });
  const config = join(dir, 'job.json');
  writeFileSync(
    config,
    JSON.stringify({
      model: o.model ? (JSON.parse(readFileSync(o.model, 'utf8')) as { model: unknown }).model : { inputSize: 784, layers: [{ type: 'dense', units: 256 }, { type: 'relu' }, { type: 'dense', units: 128 }, { type: 'relu' }, { type: 'dense', units: 10 }], loss: 'softmax_cross_entropy' },
      dataset: { source: 'idx', dir: data },
      optimizer: { type: 'sgd', lr: 0.05, momentum: 0.9 },
      batchSize: 64,
      epochs: 1,
      seed: 1,
    }),
  );
  const peer = o.model ? 'float32' : 'DDP';
  const systems = [...new Set([peer, 'float32', ...o.compression])];
  const label = (s: string): string => (s === 'DDP' ? 'DDP' : `ringtrain ${s}`);
  const rows: string[][] = [];
  const splits: string[][] = [];
  const ends: string[][] = [];
  const notes: string[] = [];
  net.setUp();
  try {
    for (const name of o.profiles) {
      const profile = PROFILES.find((p) => p.name === name) as LinkProfile;
      const said = net.shape(profile);
      if (said) notes.push(said);
      for (const n of o.workers) {
        const got = new Map<string, Measured[]>(systems.map((s) => [s, []]));
        for (let rep = 0; rep < o.runs; rep++) {
          // Alternate: each repetition starts with a different system.
          const order = systems.map((_, i) => systems[(i + rep) % systems.length]);
          for (const s of order) {
            try {
              got.get(s)!.push(s === 'DDP' ? await ddp(net, n, perHost, data, o.steps) : await ringtrain(net, n, perHost, config, o.steps, s === 'float32' ? 'none' : s));
            } catch (err) {
              process.stderr.write(`${name}, N = ${n}, ${s}: ${(err as Error).message}\n`);
            }
          }
        }
        const rate = (s: string): number[] => got.get(s)!.map((m) => m.samplesPerSecond);
        const theirs = median(rate(peer));
        rows.push([name, String(n), range(rate(peer)), ...systems.slice(1).flatMap((s) => [range(rate(s)), fmt(median(rate(s)) / theirs, 2)])]);
        const acc = (s: string): string => {
          const runs = got.get(s)!;
          return runs.length ? `${fmt(median(runs.map((m) => m.seconds)), 1)} s, ${fmt(100 * median(runs.map((m) => m.accuracy)), 1)}%` : 'n/a';
        };
        ends.push([name, String(n), ...systems.map(acc)]);
        for (const s of systems) {
          const last = got.get(s)!.at(-1)?.split;
          if (last) splits.push([name, String(n), label(s), Object.entries(last).map(([k, v]) => `${k} ${fmt(v, 2)}`).join(', ')]);
        }
      }
    }
  } finally {
    net.tearDown();
  }
  const head = ['link', 'N', `${label(peer)} samples/s`, ...systems.slice(1).flatMap((s) => [label(s), 'ratio'])];
  const length = o.steps > 0 ? `${o.steps} steps` : 'one epoch of 60,000 samples';
  const model = o.model ? `${o.model} (ratios against ringtrain float32: the DDP peer trains only the MLP)` : 'MLP 784-256-128-10';
  return (
    `Across simulated hosts (network namespaces, tbf), ${perHost > 1 ? `${perHost} workers (and DDP ranks) per host, ` : ''}${model}, batch 64 per worker, ${length}, median (range) of ${o.runs} alternating runs\n` +
    `${table(head, rows)}\n\nThe run's seconds (training, median) and its test accuracy at the end\n${table(['link', 'N', ...systems.map(label)], ends)}\n\n` +
    `Where rank 0's step went (ms per step, last run; DiLoCo's all-reduce is once a round)\n${table(['link', 'N', 'system', 'split'], splits)}` +
    (notes.length ? `\n\n${[...new Set(notes)].join('\n')}` : '')
  );
}
