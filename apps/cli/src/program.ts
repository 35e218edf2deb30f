import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { VERSION } from './version.js';
import { coordinatorCommand, launchCommand, workerCommand } from './cluster-commands.js';
import { envForEveryOption } from './option-env.js';
import { dataCommand } from './data-command.js';
import { controlCommand, statusCommand } from './status-command.js';
import { trainCommand } from './train-command.js';
import { evaluateCommand, exportCommand, generateCommand, inspectCommand, predictCommand } from './weights-commands.js';

// A reader that went away (`ringtrain status --json | head -1`) ends the output, not the process with a stack trace.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code !== 'EPIPE') throw err;
  process.exit(process.exitCode ?? 0);
});

/** Every command, with options from the environment too. */
export function buildProgram(): Command {
  const program = new Command('ringtrain')
    .description('data-parallel neural network training over a ring of workers')
    .version(VERSION)
    .showHelpAfterError()
    .exitOverride()
    .addCommand(launchCommand())
    .addCommand(coordinatorCommand())
    .addCommand(workerCommand())
    .addCommand(statusCommand())
    .addCommand(controlCommand())
    .addCommand(trainCommand())
    .addCommand(inspectCommand())
    .addCommand(exportCommand())
    .addCommand(evaluateCommand())
    .addCommand(predictCommand())
    .addCommand(generateCommand())
    .addCommand(dataCommand());
  envForEveryOption(program);
  return program;
}

/** Runs the command line: exit code 0, 1 with one line naming the error, or commander's own. */
export async function runProgram(argv: string[]): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError && !(err instanceof InvalidArgumentError)) {
      // Commander has printed its own message (an unknown option, a bad option value).
      process.exitCode = err.exitCode;
    } else if (err instanceof InvalidArgumentError) {
      // The same check, made by an action on a value it resolved (--data in a job): not printed yet.
      process.stderr.write(`ringtrain: ERR_ARGUMENT: ${err.message}\n`);
      process.exitCode = 1;
    } else {
      const e = err as Error & { code?: string };
      process.stderr.write(`ringtrain: ${e.code ? `${e.code}: ` : ''}${e.message}\n`);
      process.exitCode = 1;
    }
  }
}
