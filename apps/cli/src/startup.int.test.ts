import { execFileSync } from 'node:child_process';
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
