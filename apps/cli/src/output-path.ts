import { accessSync, constants, mkdirSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { errorWithCode } from './cli-error.js';

/**
 * The absolute path of a file the run will write at its end (`--save-final`, `export -o`), checked
 * before any work: its folder is created, as `--checkpoint-dir` is, and must be writable, so that a
 * run never trains to its end and then loses its result to a missing or read-only folder.
 */
export function outputPath(flag: string, path: string): string {
  const file = resolve(path);
  const folder = dirname(file);
  try {
    mkdirSync(folder, { recursive: true });
    accessSync(folder, constants.W_OK);
  } catch (err) {
    const why = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    throw errorWithCode('ERR_OUTPUT', `${flag} ${path}: its folder ${folder} cannot be created or written (${why}); give a path in a writable folder`);
  }
  if (statSync(file, { throwIfNoEntry: false })?.isDirectory()) throw errorWithCode('ERR_OUTPUT', `${flag} ${path} is a folder; give a file name, e.g. ${path.replace(/\/$/, '')}/final.safetensors`);
  return file;
}
