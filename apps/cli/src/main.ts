#!/usr/bin/env node
// `ringtrain --version` and `ringtrain --help` answer without loading the engine, whose modules
// take most of a second to import: the help text is written at build time from the full program
// (dist/help.txt, see write-help.ts). Everything else loads the full program, from its bundle
// (dist/bundle, see rolldown.config.mjs) when that is newer than every package build in it.
import { readFileSync, statSync } from 'node:fs';
import { VERSION } from './version.js';

const bundle = new URL('./bundle/program.js', import.meta.url);

/**
 * The bundle, unless RINGTRAIN_BUNDLE=0, or a package was rebuilt after it (`tsc -b` alone), or it
 * is missing. A package build record that is gone (the container image deletes them) cannot be newer.
 */
function bundleIsFresh(): boolean {
  if (process.env.RINGTRAIN_BUNDLE === '0') return false;
  try {
    const built = statSync(bundle).mtimeMs;
    const inputs = JSON.parse(readFileSync(new URL('./inputs.json', bundle), 'utf8')) as string[];
    return inputs.every((f) => (statSync(new URL(f, bundle), { throwIfNoEntry: false })?.mtimeMs ?? 0) <= built);
  } catch {
    return false;
  }
}

const args = process.argv.slice(2);
let answered = false;
if (args.length === 1 && (args[0] === '--version' || args[0] === '-V')) {
  process.stdout.write(`${VERSION}\n`);
  answered = true;
} else if (args.length === 1 && (args[0] === '--help' || args[0] === '-h')) {
  try {
    process.stdout.write(readFileSync(new URL('./help.txt', import.meta.url), 'utf8'));
    answered = true;
  } catch {
    // not built yet: the full program prints it
  }
}
if (!answered) {
  const program: typeof import('./program.js') = await import(bundleIsFresh() ? bundle.href : './program.js');
  await program.runProgram(process.argv);
}
