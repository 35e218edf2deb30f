import type { EventEmitter } from 'node:events';
import type { Command } from 'commander';
import { SECRETS } from './secrets.js';

/** The environment variables that options read (filled by `envForEveryOption`): a child process is not given these. */
export const OPTION_ENV = new Set<string>();

/** Options that read their environment themselves (secrets: a token from the environment must not look like one from argv). */
const OWN_ENV = new Set(Object.values(SECRETS).flatMap((s) => [`--${s.flag}`, `--${s.flag}-file`]));

/**
 * Every option of every command can also come from the environment, the container way:
 * `--max-restarts 5` is `RINGTRAIN_MAX_RESTARTS=5`. A flag on the command line wins.
 * `status` and `control` keep their `--token` for the status and admin tokens.
 */
export function envForEveryOption(program: Command): void {
  for (const cmd of program.commands) {
    const ownTokens = cmd.name() === 'status' || cmd.name() === 'control';
    for (const option of cmd.options) {
      const long = option.long ?? '';
      if (!long || OWN_ENV.has(long) || (ownTokens && long.startsWith('--token'))) continue;
      if (!option.envVar) {
        option.envVar = `RINGTRAIN_${long.slice(2).replace(/-/g, '_').toUpperCase()}`;
        // Commander listens for an option's environment value only when the option is added with
        // one: relay it as if given on the command line (which is checked first, so a flag wins).
        cmd.on(`optionEnv:${option.name()}`, (value?: string) => (cmd as unknown as EventEmitter).emit(`option:${option.name()}`, value));
      }
      OPTION_ENV.add(option.envVar);
    }
  }
}

/** A positive number from the environment, or undefined. */
export function envNumber(name: string): number | undefined {
  const v = Number(process.env[name]);
  return Number.isFinite(v) && v > 0 ? v : undefined;
}
