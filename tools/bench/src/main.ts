#!/usr/bin/env node
// ringtrain benchmarks, each beside its peer measured in the same run. `npm run bench -- --help`.
import { spawnSync } from 'node:child_process';
import { PROFILES } from '@ringtrain/netlab';
import { Command, InvalidArgumentError, Option } from 'commander';
import { allreduceBench } from './allreduce-bench.js';
import { checkpointBench } from './checkpoint-bench.js';
import { clusterBench } from './cluster-bench.js';
import { convBench, fullMnistBench } from './conv-bench.js';
import { dataBench } from './data-bench.js';
import { elasticBench } from './elastic-bench.js';
import { gemmBench } from './gemm-bench.js';
import { generationBench, gptBench } from './gpt-bench.js';
import { networkBench } from './network-bench.js';
import { startupBench } from './startup-bench.js';
import { tablesBench } from './tables-bench.js';
import { tlsBench } from './tls-bench.js';
import { trainBench } from './train-bench.js';
import { deterministicBench } from './deterministic-bench.js';

const positive = (v: string): number => {
  const n = Number(v);
  if (!(n > 0)) throw new InvalidArgumentError(`expected a positive number, got "${v}"`);
  return n;
};

const program = new Command('bench')
  .description('ringtrain benchmarks beside numpy / PyTorch measured in the same run')
  .addOption(new Option('--only <which>', 'run one benchmark').choices(['gemm', 'train', 'conv', 'data', 'allreduce', 'cluster', 'checkpoint', 'elastic', 'tls', 'tables', 'network', 'startup', 'gpt', 'generate', 'deterministic', 'mnist']))
  .option('--backend <name>', 'cluster benchmark backend', 'auto')
  .option('--samples <n>', 'cluster benchmark training samples', positive, 60000)
  .option('--segment-bytes <n>', 'all-reduce segment size', positive, 1024 * 1024)
  .option('--runs <n>', 'all-reduce: repeat ours, Gloo and iperf3 n times and show the ranges', positive, 1)
  .option('--seconds <s>', 'time budget per GEMM measurement', positive, 0.3)
  .option('--epochs <n>', 'training epochs (the first is warm-up)', positive, 4)
  .option('--baseline <main.js>', 'elastic, startup: also time this other build of the CLI (apps/cli/dist/main.js of another checkout), alternating')
  .option('--profiles <names>', `network: link profiles, comma-separated (${PROFILES.map((p) => p.name).join(', ')})`, 'unshaped,10 Gbit/s,1 Gbit/s,100 Mbit/s,WAN 50 Mbit/s')
  .option('--workers <list>', 'network: worker counts, comma-separated', '2,4')
  .option('--steps <n>', 'network: steps per run (0: one epoch)', (v) => Math.max(0, Math.round(Number(v)) || 0), 0)
  .option('--per-host <k>', 'network: workers per host (N/k hosts; ringtrain then sums in shared memory inside each host, unless the variant is `flat`)', (v) => Math.max(1, Math.round(Number(v)) || 1), 1)
  .option('--model <job.json>', 'network: train this job config\'s model (e.g. models/lenet.json) instead of the MLP; ratios are then against ringtrain float32')
  .option('--compression <list>', 'network: ringtrain variants beside float32, comma-separated: fp16, bf16, int8, diloco (H = 8), diloco:16, diloco:8+fp16, overlap:<KiB> (gradient ranges of that size all-reduced during the backward pass; overlap:0 for none), overlap:64+fp16, flat (no shared memory: the ring over TCP between every rank, with --per-host), flat+fp16', 'fp16,int8,diloco')
  .option('--gpt-steps <n>', 'gpt: steps of the global batch (nanoGPT\'s recipe: 2000)', positive, 2000)
  .option('--text <file>', 'gpt: the text to train on (default: the embedded corpus)')
  .option('--keep-openblas-env', 'keep OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (they pin an older, slower kernel)')
  .action(async (opts: { only?: string; gptSteps: number; text?: string; seconds: number; epochs: number; segmentBytes: number; runs: number; backend: string; samples: number; keepOpenblasEnv?: boolean; baseline?: string; profiles: string; workers: string; steps: number; compression: string; model?: string; perHost: number }) => {
    // OpenBLAS reads these when it loads, so clear them by re-running this process without them;
    // the peers then inherit the same environment, so both sides run the kernel OpenBLAS picks.
    if (!opts.keepOpenblasEnv && (process.env.OPENBLAS_CORETYPE || process.env.OPENBLAS_L2_SIZE)) {
      const env = { ...process.env };
      delete env.OPENBLAS_CORETYPE;
      delete env.OPENBLAS_L2_SIZE;
      const r = spawnSync(process.execPath, process.argv.slice(1), { stdio: 'inherit', env });
      process.exit(r.status ?? 1);
    }
    console.log(`ringtrain bench, ${new Date().toISOString().slice(0, 10)}, node ${process.version}\n`);
    if (!opts.only || opts.only === 'gemm') console.log(`${gemmBench(opts.seconds)}\n`);
    if (!opts.only || opts.only === 'train') console.log(`${trainBench(Math.max(2, Math.round(opts.epochs)))}\n`);
    if (!opts.only || opts.only === 'conv') console.log(`${convBench(Math.max(1, Math.round(opts.epochs)), Math.max(1, Math.round(opts.runs)))}\n`);
    if (!opts.only || opts.only === 'data') console.log(`${await dataBench(2)}\n`);
    if (!opts.only || opts.only === 'allreduce') console.log(`${await allreduceBench(opts.segmentBytes, Math.round(opts.runs))}\n`);
    if (!opts.only || opts.only === 'cluster') console.log(`${clusterBench(opts.backend, opts.samples)}\n`);
    if (!opts.only || opts.only === 'checkpoint') console.log(`${await checkpointBench()}\n`);
    if (!opts.only || opts.only === 'elastic') console.log(`${await elasticBench(Math.max(1, Math.round(opts.runs)), opts.baseline)}\n`);
    if (!opts.only || opts.only === 'tables') console.log(`${tablesBench(Math.max(3, Math.round(opts.runs)))}\n`);
    if (!opts.only || opts.only === 'gpt') console.log(`${await gptBench(opts.gptSteps, opts.text)}\n`);
    if (!opts.only || opts.only === 'gpt' || opts.only === 'generate') console.log(`${generationBench()}\n`);
    if (!opts.only || opts.only === 'deterministic') console.log(`${deterministicBench()}\n`);
    if (!opts.only || opts.only === 'mnist') console.log(`${fullMnistBench(Math.max(1, Math.round(opts.runs)))}\n`);
    if (opts.only === 'network') {
      const list = (v: string): string[] => v.split(',').map((x) => x.trim()).filter(Boolean);
      const unknown = list(opts.profiles).filter((p) => !PROFILES.some((q) => q.name === p));
      if (unknown.length) throw new InvalidArgumentError(`unknown profile ${unknown.join(', ')}`);
      console.log(`${await networkBench({ profiles: list(opts.profiles), workers: list(opts.workers).map(Number), runs: Math.max(1, Math.round(opts.runs)), steps: Math.round(opts.steps), compression: list(opts.compression), model: opts.model, perHost: opts.perHost })}\n`);
    }
    if (!opts.only || opts.only === 'tls') console.log(`${await tlsBench(Math.max(1, Math.round(opts.runs)), 2)}\n`);
    if (!opts.only || opts.only === 'startup') console.log(`${await startupBench(Math.max(3, Math.round(opts.runs)), opts.baseline)}\n`);
  });

await program.parseAsync();
