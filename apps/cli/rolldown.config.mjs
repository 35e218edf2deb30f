// Bundles the program (dist/program.js and what it imports, our packages and their dependencies)
// into dist/bundle/: a process then loads a few files instead of ~200 modules, which on a small
// machine is most of a worker's start-up (`launch --workers 4` on 2 cores: BENCHMARKS.md).
// dist/main.js takes the bundle when it is newer than every package build it holds.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const outDir = join(here, 'dist', 'bundle');
const posix = (p) => p.split(sep).join('/');

/** Each bundled module keeps its own import.meta.url: its files (WASM kernels, addons, the MNIST cache) are found from there. */
const keepModuleUrls = {
  name: 'keep-module-urls',
  transform(code, id) {
    if (!code.includes('import.meta.url')) return null;
    return { code: code.replaceAll('import.meta.url', `new URL(${JSON.stringify(posix(relative(outDir, id)))}, import.meta.url).href`), map: null };
  },
};

/**
 * Every module's top-level code runs, as it does unbundled: a package marked free of side effects
 * may still have some that matter (zod installs its English error messages at import; without
 * them every refusal read "Invalid input").
 */
const keepSideEffects = {
  name: 'keep-side-effects',
  load(id) {
    if (!/\.[cm]?js$/.test(id) || !existsSync(id)) return null;
    return { code: readFileSync(id, 'utf8'), moduleSideEffects: true };
  },
};

/** dist/bundle/inputs.json: the .tsbuildinfo of every workspace package in the bundle, for main.js's freshness check. */
const recordInputs = {
  name: 'record-inputs',
  writeBundle(_options, bundle) {
    const packages = new Set();
    for (const chunk of Object.values(bundle)) {
      for (const id of chunk.moduleIds ?? Object.keys(chunk.modules ?? {})) {
        const m = /^(.*[\\/](?:apps|libs)[\\/][^\\/]+)[\\/]dist[\\/]/.exec(id);
        if (m && !id.includes('node_modules')) packages.add(posix(relative(outDir, join(m[1], 'dist', '.tsbuildinfo'))));
      }
    }
    mkdirSync(outDir, { recursive: true });
    writeFileSync(join(outDir, 'inputs.json'), `${JSON.stringify([...packages].sort(), null, 1)}\n`);
  },
};

/** Packages bundled into chunks of their own: what a worker must load (ws, zod, commander), what the program alone must not (ws, zod), and what a worker must not (the rest). */
export const PACKAGE_CHUNKS = ['ws', 'zod', 'commander', 'prom-client', 'cli-progress', 'log-update'];

export default {
  input: join(here, 'dist', 'program.js'),
  platform: 'node',
  // msgpackr finds its optional native decoder beside itself; pino-pretty is required by path for a terminal.
  external: [/^msgpackr/, /^pino-pretty/],
  plugins: [keepSideEffects, keepModuleUrls, recordInputs],
  logLevel: 'warn',
  onLog(level, log, handler) {
    // train-command imports the worker statically, so cluster-commands' dynamic import of it cannot split it off.
    if (log.code === 'INEFFECTIVE_DYNAMIC_IMPORT') return;
    handler(level, log);
  },
  output: {
    dir: outDir,
    format: 'esm',
    entryFileNames: 'program.js',
    chunkFileNames: '[name]-[hash].js',
    cleanDir: true,
    // A chunk of its own, named after it, for each package start-up.int.test.ts looks for.
    codeSplitting: { groups: PACKAGE_CHUNKS.map((name) => ({ name, test: new RegExp(`node_modules[\\\\/]${name}[\\\\/]`) })) },
  },
};
