#!/usr/bin/env node
// `ringtrain --version` and `ringtrain --help` answer without loading the engine, whose modules
// take most of a second to import: the help text is written at build time from the full program
// (dist/help.txt, see write-help.ts). Everything else loads the full program.
import { readFileSync } from 'node:fs';
import { VERSION } from './version.js';

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
if (!answered) await (await import('./program.js')).runProgram(process.argv);
