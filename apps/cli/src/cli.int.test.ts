import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEFAULT_JOB } from '@ringtrain/trainer';
import { describe, expect, it } from 'vitest';

const main = fileURLToPath(new URL('../dist/main.js', import.meta.url));

function ringtrain(...args: string[]) {
  const r = spawnSync(process.execPath, [main, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('ringtrain train (real process)', () => {
  it('trains on the embedded MNIST and reports per-epoch results as JSON', () => {
    const r = ringtrain('train', '--epochs', '2', '--json', '--backend', 'wasm');
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout.trim());
    expect(out.epochs).toHaveLength(2);
    expect(out.epochs[1].test.accuracy).toBeGreaterThan(0.9);
    expect(out.epochs[1].test.samples).toBe(2000);
    // Logs go to stderr as JSON lines when piped, and name the backend.
    const lines = r.stderr.trim().split('\n').map((l) => JSON.parse(l));
    expect(lines[0].msg).toMatch(/^backend: wasm/);
  });

  it('merges a config file with flags (flags win)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ringtrain-cli-'));
    const config = join(dir, 'job.json');
    writeFileSync(config, JSON.stringify({ dataset: { source: 'synthetic', kind: 'blobs', samples: 600, features: 784, classes: 10 }, epochs: 5, batchSize: 32 }));
    const r = ringtrain('train', '--config', config, '--epochs', '1', '--hidden', '32', '--json');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).epochs).toHaveLength(1);
  });

  it('refuses unknown and invalid options and bad configs with a clear message and a non-zero exit', () => {
    expect(ringtrain('train', '--epochs', '0').stderr).toMatch(/--epochs <n>' argument '0' is invalid/);
    expect(ringtrain('train', '--batchsize', '4')).toMatchObject({ code: 1, stderr: expect.stringMatching(/unknown option '--batchsize'/) });
    expect(ringtrain('train', '--backend', 'gpu').stderr).toMatch(/Allowed choices are auto, native, wasm, reference/);
    expect(ringtrain('train', '--data', 'idx:/nonexistent')).toMatchObject({ code: 1, stderr: expect.stringMatching(/\/nonexistent: no such folder/) });
    const dir = mkdtempSync(join(tmpdir(), 'ringtrain-cli-'));
    writeFileSync(join(dir, 'bad.json'), '{"epochs": 3,');
    expect(ringtrain('train', '--config', join(dir, 'bad.json')).stderr).toMatch(/bad\.json is not valid JSON/);
    writeFileSync(join(dir, 'bad2.json'), '{"optimizer": {"type": "sgd", "lr": -1}}');
    expect(ringtrain('train', '--config', join(dir, 'bad2.json')).stderr).toMatch(/ERR_SPEC: invalid job config: optimizer\.lr = -1/);
  });

  it("the README's job config example is a valid job that trains", () => {
    const readme = readFileSync(fileURLToPath(new URL('../../../README.md', import.meta.url)), 'utf8');
    const example = /### Job config\n\n```json\n([\s\S]*?)```/.exec(readme)![1];
    const dir = mkdtempSync(join(tmpdir(), 'ringtrain-cli-'));
    writeFileSync(join(dir, 'job.json'), example);
    const r = ringtrain('train', '--config', join(dir, 'job.json'), '--epochs', '1', '--json');
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).epochs[0].test.accuracy).toBeGreaterThan(0.85);
  });

  it('prints help for every command', () => {
    const top = ringtrain('--help').stdout;
    const commands = ['launch', 'coordinator', 'worker', 'train', 'inspect', 'export', 'evaluate', 'predict', 'generate'];
    for (const c of commands) {
      expect(top).toMatch(new RegExp(`\\n +${c}\\b`));
      const help = ringtrain(c, '--help');
      expect(help.code).toBe(0);
      expect(help.stdout).toMatch(new RegExp(`^Usage: ringtrain ${c}`));
    }
    expect(ringtrain('train', '--help').stdout).toMatch(/--batch-size <n>/);
    // The help's defaults are the built-in job's (the help loads no engine, so it states them itself).
    const trainHelp = ringtrain('train', '--help').stdout.replace(/\s+/g, ' ');
    const layers = DEFAULT_JOB.model.layers.filter((l) => l.type === 'dense').map((l) => (l as { units: number }).units);
    for (const [flag, value] of [['--epochs', DEFAULT_JOB.epochs], ['--batch-size', DEFAULT_JOB.batchSize], ['--lr', DEFAULT_JOB.optimizer.lr], ['--seed', DEFAULT_JOB.seed], ['--hidden', layers.slice(0, -1).join(',')]] as const) {
      expect(trainHelp, flag).toMatch(new RegExp(`${flag} <[a-z]+> .*?the built-in MLP job: ${value}\\b`));
    }
    expect(ringtrain('launch', '--help').stdout).not.toMatch(/\(default: any free port\) \(default/);
    expect(ringtrain('launch', '--help').stdout).toMatch(/--resume <file\|latest\|auto>/);
  });

  it('--help and --version, answered without loading the engine, say what the full program says', async () => {
    const { buildProgram } = await import('./program.js');
    const full = buildProgram();
    const help = ringtrain('--help');
    expect(help.code).toBe(0);
    expect(help.stdout).toBe(full.helpInformation());
    expect(help.stdout).toMatch(/\n +data\b/);
    const version = ringtrain('--version');
    expect(version.code).toBe(0);
    expect(version.stdout).toBe(`${full.version()}\n`);
    expect(ringtrain('-V').stdout).toBe(version.stdout);
  });
});
