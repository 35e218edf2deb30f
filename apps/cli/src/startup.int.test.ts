import { execFileSync } from 'node:child_process';
import { readFileSync, statSync, utimesSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const dist = (f: string): string => new URL(`../dist/${f}`, import.meta.url).href;

/** The CommonJS packages a fresh process holds after running `script` (ES modules import them through the CommonJS loader). */
function packagesLoaded(script: string): string[] {
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', `${script}\nconst { createRequire } = await import('node:module');\nprocess.stdout.write(JSON.stringify(Object.keys(createRequire(import.meta.url).cache)));`], {
    cwd: fileURLToPath(new URL('..', import.meta.url)),
    encoding: 'utf8',
  });
  return [...new Set((JSON.parse(out) as string[]).map((f) => /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(f)?.[1]).filter((p): p is string => !!p))];
}

// A worker process loads only what a worker runs: `launch --workers 4` starts four of them on
// however many cores there are, and each module it does not need costs every one of them.
describe('start-up: what a process loads', () => {
  it('the program and a worker’s engine load neither the coordinator side nor the image decoders nor terminal-only modules', () => {
    const loaded = packagesLoaded(`const { buildProgram } = await import('${dist('program.js')}'); buildProgram(); await import('@ringtrain/worker');`);
    expect(loaded).toContain('ws'); // the check sees what was loaded
    expect(loaded).toContain('commander');
    for (const heavy of ['prom-client', 'pngjs', 'jpeg-js', 'pino-pretty', 'cli-progress']) expect(loaded).not.toContain(heavy);
  });

  it('the coordinator side loads its own (so the check above can fail)', () => {
    const loaded = packagesLoaded(`await import('${dist('run-coordinator.js')}');`);
    expect(loaded).toContain('prom-client');
    expect(loaded).toContain('cli-progress');
  });
});

/**
 * The packages in the chunks that a chunk of dist/bundle loads with it (its static imports, and
 * theirs): rolldown.config.mjs gives each package the test looks for a chunk named after it.
 */
function bundledWith(chunk: string): string[] {
  const dir = new URL('../dist/bundle/', import.meta.url);
  const seen = new Set<string>();
  const visit = (file: string): void => {
    if (seen.has(file)) return;
    seen.add(file);
    for (const m of readFileSync(new URL(file, dir), 'utf8').matchAll(/^import\b[^;]*?["']\.\/([^"']+)["'];?$/gm)) visit(m[1]);
  };
  visit(chunk);
  return [...seen].map((f) => /^(.+)-[\w-]{8}\.js$/.exec(f)?.[1] ?? f);
}

describe('start-up: what the bundle loads', () => {
  it('the bundle of the program loads up front only what parses a command line: not the engine (ws, zod), not the coordinator side, not terminal-only modules', () => {
    const loaded = bundledWith('program.js');
    expect(loaded).toContain('commander'); // the check sees what is loaded
    for (const heavy of ['ws', 'zod', 'prom-client', 'cli-progress', 'log-update']) expect(loaded).not.toContain(heavy);
  });

  it('the chunk of the coordinator loads them (so the check above can fail), and main.js takes the bundle', () => {
    const program = readFileSync(new URL('../dist/bundle/program.js', import.meta.url), 'utf8');
    const coordinator = /import\("\.\/(run-coordinator-[\w-]{8}\.js)"\)/.exec(program)?.[1];
    expect(coordinator).toBeDefined();
    expect(bundledWith(coordinator!)).toEqual(expect.arrayContaining(['prom-client', 'cli-progress', 'ws', 'zod']));
    // main.js loads the bundle's program (fresh after a build), and the modules with RINGTRAIN_BUNDLE=0.
    // `data --help` prints and exits: the CommonJS cache is read as it exits.
    const script = `const { createRequire } = await import('node:module'); const exit = process.exit; const write = process.stdout.write.bind(process.stdout); process.stdout.write = () => true;
      process.exit = (code) => { write(JSON.stringify(Object.keys(createRequire(import.meta.url).cache).filter((f) => f.includes('commander')))); exit(code); };
      process.argv = [process.argv[0], 'ringtrain', 'data', '--help']; await import('${dist('main.js')}');`;
    const which = (env: NodeJS.ProcessEnv): string[] => JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', env: { ...process.env, ...env } }));
    expect(which({})).toEqual([]); // bundled: commander is inside a chunk, not in the CommonJS cache
    expect(which({ RINGTRAIN_BUNDLE: '0' }).length).toBeGreaterThan(0);
    // A package rebuilt after the bundle (as `tsc -b` alone does) makes it stale: main.js takes the modules.
    const record = new URL('../../../libs/core/dist/.tsbuildinfo', import.meta.url);
    const { atime, mtime } = statSync(record);
    utimesSync(record, atime, new Date(Date.now() + 60_000));
    try {
      expect(which({}).length).toBeGreaterThan(0);
    } finally {
      utimesSync(record, atime, mtime);
    }
    expect(which({})).toEqual([]);
  });
});

