import { spawn, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { storeDir, testMeta } from './testing/fixtures.js';
import { findLatestCheckpoint, listCheckpoints, loadCheckpoint, saveCheckpoint } from './checkpoint-store.js';

const [dir, meta] = [storeDir, testMeta];
describe('checkpoint store, in real processes (kills, strace)', () => {
  it('SIGKILL while a save is being written never leaves a torn file that passes for valid', async () => {
    const d = dir();
    const writer = fileURLToPath(new URL('../dist/testing/save-loop.js', import.meta.url));
    const big = (step: number) => [{ name: 'w', shape: [1 << 20], data: new Float32Array(1 << 20).fill(step) }];
    await saveCheckpoint(d, big(0), { ...meta(0), optimizer: { type: 'sgd', step: 0, slots: [] } });
    const temporary = (): string[] => readdirSync(d).filter((n) => n.endsWith('.tmp'));
    let landedMidWrite = 0;
    let advanced = 0;
    let latest = 0;
    const trials = 20;
    for (let trial = 1; trial <= trials; trial++) {
      const before = new Set(temporary());
      const child = spawn(process.execPath, [writer, d, String(trial * 1000)], { stdio: 'ignore' });
      // Kill after 0, 1 or 2 completed saves of this writer, once its next temporary file exists,
      // then 0–7 ms later: inside a write.
      const completedFirst = trial % 3;
      const deadline = Date.now() + 10_000;
      const newest = (): number => Math.max(...listCheckpoints(d).map((c) => c.step));
      while (!(newest() >= trial * 1000 + completedFirst - 1 && temporary().some((n) => !before.has(n)))) {
        if (child.exitCode !== null) throw new Error(`the writer exited (code ${child.exitCode}) before it was killed`);
        if (Date.now() > deadline) throw new Error(`the writer made no temporary file after ${completedFirst} saves within 10 s`);
        await new Promise((r) => setTimeout(r, 1));
      }
      await new Promise((r) => setTimeout(r, trial % 8));
      const midWrite = temporary().some((n) => !before.has(n));
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
      if (midWrite) landedMidWrite++;
      for (const { path } of listCheckpoints(d)) {
        // Every file under a checkpoint name is complete and verifies (the loop writes 4 MB tensors).
        const c = loadCheckpoint(path);
        expect(c.tensors[0].data.length).toBe(1 << 20);
        expect(c.tensors[0].data[12345]).toBe(c.meta.step);
      }
      const step = findLatestCheckpoint(d).checkpoint.meta.step;
      if (step > latest) advanced++;
      latest = Math.max(latest, step);
    }
    // The kills landed inside writes, and yet saves went on being completed between them.
    expect(landedMidWrite).toBeGreaterThanOrEqual(trials / 2);
    expect(advanced).toBeGreaterThanOrEqual(3);
    // Temporary files of killed writes remain; they never carry a checkpoint's name and are never read.
    const names = readdirSync(d);
    expect(names.filter((n) => n.endsWith('.tmp')).length).toBeGreaterThan(0);
    for (const name of names) expect(/^ckpt-step-\d{10}\.safetensors$/.test(name) || /^\..*\.tmp$/.test(name)).toBe(true);
  }, 120_000);

  it.each(['sync', 'async'])('the %s writer writes, fsyncs, renames and fsyncs the folder, in that order (strace)', (mode) => {
    const d = dir();
    const traces = join(dir(), 'trace');
    const once = fileURLToPath(new URL('../dist/testing/save-once.js', import.meta.url));
    const run = spawnSync('strace', ['-ff', '-ttt', '-y', '-o', traces, '-e', 'trace=openat,write,pwrite64,writev,pwritev,fsync,fdatasync,rename,renameat,renameat2', process.execPath, once, d, mode], { encoding: 'utf8' });
    if (run.error && process.env.CI) throw new Error(`strace is needed for this test: ${run.error.message}`);
    expect(run.status, run.stderr).toBe(0);
    const calls = readdirSync(dirname(traces))
      .flatMap((f) => readFileSync(join(dirname(traces), f), 'utf8').split('\n'))
      .map((line) => /^(\d+\.\d+) (\w+)\((.*)$/.exec(line))
      .filter((m) => m !== null)
      .map((m) => ({ t: Number(m[1]), call: m[2], args: m[3] }))
      .sort((a, b) => a.t - b.t);
    const final = join(d, 'ckpt-step-0000000007.safetensors');
    const renamed = calls.find((c) => c.call.startsWith('rename') && c.args.includes(`"${final}"`));
    expect(renamed, 'a rename onto the checkpoint').toBeDefined();
    const tmp = /"([^"]+\.tmp)"/.exec(renamed!.args)![1];
    expect(dirname(tmp)).toBe(d);
    const onTmp = (c: { args: string }) => c.args.includes(`<${tmp}>`);
    const writes = calls.filter((c) => /^p?writev?/.test(c.call) && onTmp(c));
    const synced = calls.filter((c) => /^f(data)?sync$/.test(c.call) && onTmp(c));
    const folderSynced = calls.filter((c) => c.call === 'fsync' && c.args.includes(`<${d}>`));
    expect(writes.length).toBeGreaterThan(0);
    expect(synced.length).toBe(1);
    expect(folderSynced.length).toBe(1);
    expect(writes.at(-1)!.t).toBeLessThan(synced[0].t);
    expect(synced[0].t).toBeLessThan(renamed!.t);
    expect(renamed!.t).toBeLessThan(folderSynced[0].t);
  });
});
