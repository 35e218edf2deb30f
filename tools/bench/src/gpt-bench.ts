import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { table } from '@ringtrain/cli';
import { embeddedCorpusPath } from '@ringtrain/data';
import { fmt, runPeer } from './measure.js';

const cli = fileURLToPath(new URL('../../../apps/cli/dist/main.js', import.meta.url));
const peer = fileURLToPath(new URL('../peers/torch_gpt.py', import.meta.url));

interface Run {
  tokensPerSecond: number;
  valLoss: number;
  seconds: number;
}

/** models/gpt.json for `steps` steps on `workers` workers: tokens/s over rank 0's steps (evaluation and start-up excluded, as the peer counts). */
function ours(workers: number, steps: number, text: string): Run | undefined {
  const args = ['launch', '--workers', String(workers), '--model', 'gpt', '--data', `text:${text}`, '--max-steps', String(steps), '--json'];
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 3_600_000, env: { ...process.env, RINGTRAIN_LOG_LEVEL: 'warn' } });
  if (r.status !== 0) {
    process.stderr.write(`ringtrain ${args.join(' ')} failed: ${r.stderr.slice(-500)}\n`);
    return undefined;
  }
  const s = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
  const t = s.timing[0];
  const stepSeconds = (t.dataMs + t.computeMs + t.allreduceMs + t.optimizerMs) / 1000;
  return { tokensPerSecond: (s.steps * 12 * workers * 64) / stepSeconds, valLoss: s.epochs.at(-1).testLoss, seconds: s.seconds };
}

function theirs(workers: number, steps: number, text: string): Run | undefined {
  const out = runPeer(peer, ['--text', text, '--workers', String(workers), '--steps', String(steps)], 3_600_000)?.[0];
  return out ? { tokensPerSecond: out.tokens_per_s as number, valLoss: out.val_loss as number, seconds: out.seconds as number } : undefined;
}

/**
 * nanoGPT's character-level CPU recipe (models/gpt.json: 4 layers, 4 heads, 128 dims, context 64,
 * batch 12 per rank, AdamW with warm-up and cosine decay, clipping) on the same text, beside a
 * PyTorch transcription of it (peers/torch_gpt.py), one thread a process: tokens/s and the
 * validation loss after `steps` steps of the global batch.
 */
export function gptBench(steps: number, text = embeddedCorpusPath()): string {
  const rows: string[][] = [];
  for (const n of [1, 2]) {
    const a = ours(n, steps, text);
    const b = theirs(n, steps, text);
    rows.push([
      String(n),
      fmt(a?.tokensPerSecond, 0),
      fmt(b?.tokensPerSecond, 0),
      a && b ? fmt(a.tokensPerSecond / b.tokensPerSecond, 2) : 'n/a',
      fmt(a?.valLoss, 3),
      fmt(b?.valLoss, 3),
      a && b ? fmt(a.valLoss - b.valLoss, 3) : 'n/a',
      fmt(a?.seconds, 0),
      fmt(b?.seconds, 0),
    ]);
  }
  return `GPT (models/gpt.json), ${steps} steps of the global batch on ${text}, one thread per process\n${table(['workers', 'ringtrain tokens/s', 'PyTorch tokens/s', 'ratio', 'ringtrain val loss', 'PyTorch val loss', 'difference', 'ringtrain s', 'PyTorch s'], rows)}`;
}
