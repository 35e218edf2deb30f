import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { table } from '@ringtrain/cli';
import { createBackend, generateTokens, gptSpec, Model, Rng } from '@ringtrain/core';
import { embeddedCorpusPath } from '@ringtrain/data';
import { childrenPeakRss, fmt, runPeer } from './measure.js';

const cli = fileURLToPath(new URL('../../../apps/cli/dist/main.js', import.meta.url));
const peer = fileURLToPath(new URL('../peers/torch_gpt.py', import.meta.url));
const generationPeer = fileURLToPath(new URL('../peers/torch_generate.py', import.meta.url));

interface Run {
  tokensPerSecond: number;
  valLoss: number;
  /** Training seconds per step (rank 0's; start-up and evaluations excluded, as the peer counts). */
  secondsPerStep: number;
  /** [step, val loss] every `evalEvery` steps, and at the end. */
  evals: [number, number][];
  /** Largest peak resident memory of a training process, MB. */
  peakRssMb: number;
}

/** models/gpt.json for `steps` steps on `workers` workers, evaluated every `evalEvery`. */
async function ours(workers: number, steps: number, text: string, evalEvery: number): Promise<Run | undefined> {
  const args = ['launch', '--workers', String(workers), '--model', 'gpt', '--data', `text:${text}`, '--max-steps', String(steps), '--eval-every', String(evalEvery), '--json'];
  const launch = spawn(process.execPath, [cli, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RINGTRAIN_LOG_LEVEL: 'info' } });
  let [out, err] = ['', ''];
  launch.stdout.on('data', (d: Buffer) => (out += d));
  launch.stderr.on('data', (d: Buffer) => (err += d));
  const exited = new Promise<number | null>((r) => launch.once('exit', r));
  const peaks = await childrenPeakRss(launch.pid!, exited);
  if ((await exited) !== 0) {
    process.stderr.write(`ringtrain ${args.join(' ')} failed: ${err.slice(-500)}\n`);
    return undefined;
  }
  const s = JSON.parse(out.trim().split('\n').at(-1)!);
  const t = s.timing[0];
  const stepSeconds = (t.dataMs + t.computeMs + t.allreduceMs + t.optimizerMs) / 1000;
  // The coordinator's evaluation lines (JSON logs): the step and its val loss.
  const evals = err
    .split('\n')
    .filter((l) => l.startsWith('{') && l.includes('"testLoss"'))
    .map((l) => JSON.parse(l) as { step: number; testLoss: number })
    .map((e): [number, number] => [e.step, e.testLoss]);
  return { tokensPerSecond: (s.steps * 12 * workers * 64) / stepSeconds, valLoss: s.epochs.at(-1).testLoss, secondsPerStep: stepSeconds / s.steps, evals, peakRssMb: Math.max(...peaks.values()) };
}

function theirs(workers: number, steps: number, text: string, evalEvery: number): Run | undefined {
  const out = runPeer(peer, ['--text', text, '--workers', String(workers), '--steps', String(steps), '--eval-every', String(evalEvery)], 3_600_000)?.[0];
  if (!out) return undefined;
  const evals = (out.evals as [number, number, number][]).map(([step, loss]): [number, number] => [step, loss]);
  return { tokensPerSecond: out.tokens_per_s as number, valLoss: out.val_loss as number, secondsPerStep: (out.trained_seconds as number) / (out.steps as number), evals, peakRssMb: out.peak_rss_mb as number };
}

/** The first evaluated step whose val loss is at most `target`, or undefined. */
const firstStepAt = (evals: [number, number][], target: number): number | undefined => evals.find(([, loss]) => loss <= target)?.[0];

/**
 * nanoGPT's character-level CPU recipe (models/gpt.json: 4 layers, 4 heads, 128 dims, context 64,
 * batch 12 per rank, AdamW with warm-up and cosine decay, clipping) on the same text, beside a
 * PyTorch transcription of it (peers/torch_gpt.py), one thread a process: tokens/s, the validation
 * loss after `steps` steps of the global batch, peak memory, and the training time 2 workers take
 * to reach PyTorch's final val loss on one process (steps to reach it × seconds per step, on both
 * sides: evaluations and start-up excluded).
 */
export async function gptBench(steps: number, text = embeddedCorpusPath()): Promise<string> {
  const evalEvery = Math.max(1, Math.round(steps / 40));
  const rows: string[][] = [];
  const runs = new Map<string, Run | undefined>();
  for (const n of [1, 2]) {
    const a = await ours(n, steps, text, evalEvery);
    const b = theirs(n, steps, text, evalEvery);
    runs.set(`ours${n}`, a);
    runs.set(`theirs${n}`, b);
    rows.push([
      String(n),
      fmt(a?.tokensPerSecond, 0),
      fmt(b?.tokensPerSecond, 0),
      a && b ? fmt(a.tokensPerSecond / b.tokensPerSecond, 2) : 'n/a',
      fmt(a?.valLoss, 3),
      fmt(b?.valLoss, 3),
      a && b ? fmt(a.valLoss - b.valLoss, 3) : 'n/a',
      fmt(a?.peakRssMb, 0),
      fmt(b?.peakRssMb, 0),
    ]);
  }
  const head = `GPT (models/gpt.json), ${steps} steps of the global batch on ${text}, one thread per process, evaluated every ${evalEvery} steps\n`;
  const main = table(['workers', 'ringtrain tokens/s', 'PyTorch tokens/s', 'ratio', 'ringtrain val loss', 'PyTorch val loss', 'difference', 'ringtrain peak RSS MB (a worker)', 'PyTorch peak RSS MB (a rank)'], rows);
  const [ours2, torch1, torch2] = [runs.get('ours2'), runs.get('theirs1'), runs.get('theirs2')];
  if (!ours2 || !torch1) return head + main;
  const target = torch1.valLoss;
  const torchSeconds = steps * torch1.secondsPerStep;
  const reach = (r: Run | undefined): string[] => {
    const at = r ? firstStepAt(r.evals, target) : undefined;
    if (!r || at === undefined) return ['not reached', 'n/a', 'n/a'];
    const seconds = at * r.secondsPerStep;
    return [String(at), fmt(seconds, 1), fmt(seconds / torchSeconds, 2)];
  };
  const timeTable = table(
    ['who', 'steps to reach it', 'training seconds', 'vs PyTorch 1 process'],
    [['PyTorch, 1 process', String(steps), fmt(torchSeconds, 1), '1.00'], ['ringtrain, 2 workers', ...reach(ours2)], ['PyTorch DDP, 2 ranks', ...reach(torch2)]],
  );
  return `${head}${main}\n\nTime to PyTorch's final val loss on one process (${fmt(target, 3)}):\n${timeTable}`;
}

/**
 * Generation with a key/value cache, the GPT of models/gpt.json (vocabulary 85, random weights:
 * speed does not depend on them), 500 tokens sampled at temperature 0.8, beside
 * peers/torch_generate.py, one thread; three runs each, alternated. Then `ringtrain generate` from
 * the command line to its first token (start-up, reading the file, the prompt and one token).
 */
export function generationBench(): string {
  const tokens = 500;
  const model = new Model(gptSpec({ type: 'gpt', layers: 4, heads: 4, dim: 128, context: 64, vocab: 85 }), createBackend('auto').backend, { seed: 1 });
  const [ours, theirs]: number[][] = [[], []];
  for (let run = 0; run < 3; run++) {
    const t0 = performance.now();
    generateTokens(model, [1, 2, 3, 4], { tokens, temperature: 0.8, rng: new Rng(run) });
    ours.push(tokens / ((performance.now() - t0) / 1000));
    const peerRun = runPeer(generationPeer, ['--tokens', String(tokens)])?.[0];
    if (peerRun) theirs.push(peerRun.tokens_per_s as number);
  }
  const range = (xs: number[]): string => (xs.length ? `${fmt(Math.min(...xs), 0)}–${fmt(Math.max(...xs), 0)}` : 'n/a');
  const ratio = theirs.length ? `${fmt(Math.min(...ours) / Math.max(...theirs), 2)}–${fmt(Math.max(...ours) / Math.min(...theirs), 2)}` : 'n/a';
  const dir = mkdtempSync(join(tmpdir(), 'ringtrain-generate-bench-'));
  const weights = join(dir, 'gpt.safetensors');
  let firstToken = 'n/a';
  const trained = spawnSync(process.execPath, [cli, 'train', '--model', 'gpt', '--max-steps', '1', '--save-final', weights], { encoding: 'utf8', env: { ...process.env, RINGTRAIN_LOG_LEVEL: 'warn' } });
  if (trained.status === 0) {
    const times: number[] = [];
    for (let run = 0; run < 5; run++) {
      const t0 = performance.now();
      const r = spawnSync(process.execPath, [cli, 'generate', weights, '--tokens', '1'], { encoding: 'utf8' });
      if (r.status === 0) times.push((performance.now() - t0) / 1000);
    }
    firstToken = `${range(times.map((t) => t * 1000))} ms`;
  } else process.stderr.write(`ringtrain train --model gpt failed: ${trained.stderr.slice(-300)}\n`);
  rmSync(dir, { recursive: true, force: true });
  return `Generation with a key/value cache (models/gpt.json's GPT, ${tokens} tokens at temperature 0.8, one thread, 3 runs each)\n${table(
    ['what', 'ringtrain', 'PyTorch', 'ratio'],
    [
      ['tokens/s', range(ours), range(theirs), ratio],
      ['`ringtrain generate --tokens 1`, process start to exit (5 runs)', firstToken, '', ''],
    ],
  )}`;
}
