import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { killStarted, startRingtrain } from './testing/run-process.js';

afterEach(killStarted);

async function ringtrain(...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string; ms: number }> {
  const t0 = Date.now();
  const r = startRingtrain(args);
  const code = await r.exited;
  return { code, stdout: r.stdout, stderr: r.stderr, ms: Date.now() - t0 };
}

/** The one line a failure prints: `ringtrain: CODE: what was wrong; what to do`. */
const failureLine = (stderr: string): string => stderr.split('\n').filter((l) => l.startsWith('ringtrain: ')).join('\n');

describe('first contact: the mistakes a newcomer makes get one clear line, and nothing asked for is lost (real processes)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ringtrain-first-contact-'));

  it('an unknown --data source fails with a code and the sources there are, not silently', async () => {
    for (const args of [['train', '--data', 'foo:bar'], ['launch', '--workers', '1', '--data', 'mnist2'], ['train', '--data', 'csv:']]) {
      const r = await ringtrain(...args);
      expect(r.code, args.join(' ')).toBe(1);
      expect(failureLine(r.stderr), args.join(' ')).toMatch(/^ringtrain: ERR_ARGUMENT: --data must be mnist-small, mnist, idx:<folder>, csv:<file>, images:<folder>, packed:<folder>, text \(the embedded English corpus\) or text:<file>, got "[^"]*"$/);
    }
  }, 60_000);

  it('a dataset smaller than one global batch fails at once with the cause and the fix, not a rendezvous timeout', async () => {
    // 60 rows, 48 of them to train: less than 2 workers × 64.
    const csv = join(dir, 'small.csv');
    writeFileSync(csv, `${Array.from({ length: 60 }, (_, i) => `${i % 7},${(i * 3) % 5},${i % 2},${i % 3}`).join('\n')}\n`);
    const pack = join(dir, 'small-pack');
    const packed = await ringtrain('data', 'pack', `csv:${csv}`, pack);
    expect(packed.code, packed.stderr).toBe(0);
    const r = await ringtrain('launch', '--workers', '2', '--data', `packed:${pack}`);
    expect(r.code).toBe(1);
    expect(failureLine(r.stderr)).toMatch(/^ringtrain: ERR_SHAPE: .* could not prepare the job: dataset .* has 48 samples, fewer than one global batch of 128 \(2 workers × batch 64\); give --batch-size 24 or less$/);
    expect(r.stderr).not.toMatch(/ERR_RENDEZVOUS|message refused/);
    expect(r.ms).toBeLessThan(20_000); // the rendezvous deadline is 60 s
    const fixed = await ringtrain('launch', '--workers', '2', '--data', `packed:${pack}`, '--batch-size', '24', '--epochs', '1');
    expect(fixed.code, fixed.stderr).toBe(0);
  }, 90_000);

  it('--save-final is checked before training: a missing folder is created, an impossible one refused at once', async () => {
    const made = join(dir, 'new', 'folder', 'final.safetensors');
    const ok = await ringtrain('launch', '--workers', '2', '--max-steps', '3', '--save-final', made);
    expect(ok.code, ok.stderr).toBe(0);
    expect(existsSync(made)).toBe(true);
    const file = join(dir, 'a-file');
    writeFileSync(file, 'x');
    for (const command of ['launch', 'train']) {
      const bad = await ringtrain(command, ...(command === 'launch' ? ['--workers', '2'] : []), '--save-final', join(file, 'final.safetensors'));
      expect(bad.code, command).toBe(1);
      expect(failureLine(bad.stderr), command).toMatch(/^ringtrain: ERR_OUTPUT: --save-final .*a-file\/final\.safetensors: its folder .*a-file cannot be created or written \(\w+\); give a path in a writable folder$/);
      expect(bad.stderr, command).not.toMatch(/epoch 1\//);
    }
  }, 90_000);

  it('errors that leaked internals now say what was wrong and what to do', async () => {
    const folder = join(dir, 'a-folder');
    mkdirSync(folder, { recursive: true });
    const csv = join(dir, 'table.csv');
    writeFileSync(csv, `${'sepal_length,sepal_width,petal_length,petal_width,species\n'}${'5.1,3.5,1.4,0.2,setosa\n'.repeat(20)}`);
    const cases: [string[], RegExp][] = [
      [['inspect', folder], /^ringtrain: ERR_CHECKPOINT_IO: .*a-folder is a folder; give a \.safetensors file in it/],
      [['inspect', csv], /^ringtrain: ERR_CHECKPOINT_FORMAT: .*table\.csv: header claims \d+ bytes, over the \d+-byte limit: not a safetensors file$/],
      [['train', '--config', join(dir, 'no-such.json')], /^ringtrain: ERR_CONFIG: cannot read config .*no-such\.json: no such file; give a job config \(JSON\) file, or a named --model \(gpt, lenet, lenet-mnist\)$/],
    ];
    for (const [args, pattern] of cases) {
      const r = await ringtrain(...args);
      expect(r.code, args.join(' ')).toBe(1);
      expect(failureLine(r.stderr), args.join(' ')).toMatch(pattern);
    }
    const worker = await ringtrain('worker', '--coordinator', '127.0.0.1:29931');
    expect(worker.code).toBe(1);
    expect(worker.stderr).toMatch(/expected ws:\/\/HOST:PORT or wss:\/\/HOST:PORT, got "127\.0\.0\.1:29931" \(try ws:\/\/127\.0\.0\.1:29931\)/);
  }, 60_000);

  it('a port in use, flags a resume would ignore, a label column given to predict and another set\'s data are each refused naming the cause and the fix', async () => {
    const busy = createServer().listen(0, '127.0.0.1');
    await new Promise((r) => busy.once('listening', r));
    const port = String((busy.address() as { port: number }).port);
    try {
      for (const command of [['launch', '--workers', '1'], ['coordinator', '--workers', '1', '--insecure']]) {
        const r = await ringtrain(...command, '--port', port, '--max-steps', '1');
        expect(r.code, command[0]).toBe(1);
        // launch listens on 127.0.0.1, a coordinator on every address by default.
        expect(failureLine(r.stderr), command[0]).toBe(`ringtrain: ERR_PORT_IN_USE: port ${port} on ${command[0] === 'launch' ? '127.0.0.1' : '0.0.0.0'} is in use (another run, or another program, listens there): give another --port, or leave it out to take a free port`);
      }
    } finally {
      busy.close();
    }
    const ckpts = join(dir, 'resume-ckpts');
    const run = await ringtrain('launch', '--workers', '1', '--max-steps', '2', '--save-every', '2', '--checkpoint-dir', ckpts);
    expect(run.code, run.stderr).toBe(0);
    const ckpt = join(ckpts, readdirSync(ckpts).find((f) => f.endsWith('.safetensors'))!);
    const resumed = await ringtrain('launch', '--workers', '1', '--resume', ckpt, '--lr', '0.5', '--batch-size', '16', '--hidden', '32');
    expect(resumed.code).toBe(1);
    expect(failureLine(resumed.stderr)).toMatch(/^ringtrain: ERR_ARGUMENT: --resume .* continues that run's own job, which --lr, --batch-size, --hidden would change; leave them out \(--epochs may extend it\), or start a new run from its weights with --init-from$/);
    const oneProcess = await ringtrain('train', '--gradient-compression', 'int8', '--max-steps', '1');
    expect(failureLine(oneProcess.stderr)).toBe('ringtrain: ERR_ARGUMENT: --gradient-compression sets how gradients travel between workers, and train is one process: use it with launch or worker');
    const latest = await ringtrain('launch', '--workers', '1', '--resume', 'latest');
    expect(failureLine(latest.stderr)).toMatch(/^ringtrain: ERR_ARGUMENT: --resume latest looks for the newest checkpoint in --checkpoint-dir/);
    // predict on rows that still hold their label; evaluate on data of another width.
    const rows = join(dir, 'with-label.csv');
    writeFileSync(rows, `${Array.from({ length: 784 }, () => '0').join(',')},7\n`);
    const predicted = await ringtrain('predict', ckpt, '--input', rows);
    expect(failureLine(predicted.stderr)).toMatch(/^ringtrain: ERR_SHAPE: .*with-label\.csv:1: 785 columns, and the model takes 784 features: drop the label column/);
    const iris = join(dir, 'iris-like.csv');
    writeFileSync(iris, Array.from({ length: 30 }, (_, i) => `${i % 7},${i % 5},${i % 3},${i % 2},${['a', 'b', 'c'][i % 3]}`).join('\n'));
    const evaluated = await ringtrain('evaluate', ckpt, '--data', `csv:${iris}`);
    expect(failureLine(evaluated.stderr)).toMatch(/^ringtrain: ERR_SHAPE: .* has 4 values per sample, and the model MLP 784-128-10 \(relu\) takes 784: give the data it was trained on$/);
  }, 90_000);

  it('resuming a finished run ends at once saying so and how to go further; --epochs extends it', async () => {
    const job = join(dir, 'finished.json');
    writeFileSync(job, JSON.stringify({ dataset: { source: 'synthetic', kind: 'blobs', samples: 200, features: 4, classes: 3 }, epochs: 2, batchSize: 16 }));
    const ckpts = join(dir, 'finished-ckpts');
    const first = await ringtrain('launch', '--workers', '2', '--config', job, '--checkpoint-dir', ckpts);
    expect(first.code, first.stderr).toBe(0);
    for (const how of ['latest', 'auto']) {
      const again = await ringtrain('launch', '--workers', '2', '--config', job, '--checkpoint-dir', ckpts, '--resume', how);
      expect(again.code, again.stderr).toBe(0);
      expect(again.stderr).toMatch(/the run in .*ckpt-step-0000000010\.safetensors has finished \(epoch 2 of 2\): nothing is left to train; give --epochs 3 or more to train it further/);
    }
    const more = await ringtrain('launch', '--workers', '2', '--config', job, '--checkpoint-dir', ckpts, '--resume', 'latest', '--epochs', '3', '--json');
    expect(more.code, more.stderr).toBe(0);
    expect(JSON.parse(more.stdout.trim().split('\n').at(-1)!).steps).toBe(15);
  }, 60_000);

  it('export writes the format its file name says, and refuses a --format the name contradicts', async () => {
    const ckpts = join(dir, 'ckpts');
    const run = await ringtrain('launch', '--workers', '1', '--max-steps', '2', '--save-every', '2', '--checkpoint-dir', ckpts);
    expect(run.code, run.stderr).toBe(0);
    const ckpt = join(ckpts, readdirSync(ckpts).find((f) => f.endsWith('.safetensors'))!);
    const json = join(dir, 'out.json');
    const r = await ringtrain('export', ckpt, '-o', json);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(readFileSync(json, 'utf8')).tensors).toBeDefined();
    const contradiction = await ringtrain('export', ckpt, '-o', json, '--format', 'safetensors');
    expect(contradiction.code).toBe(1);
    expect(failureLine(contradiction.stderr)).toBe(`ringtrain: ERR_ARGUMENT: -o ${json} names a .json file, but --format is safetensors; name the file .safetensors, or leave --format out`);
  }, 60_000);
});
