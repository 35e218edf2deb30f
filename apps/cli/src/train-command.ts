import { randomUUID } from 'node:crypto';
import { resolve } from 'node:path';
import { Command } from 'commander';
import { errorWithCode } from './cli-error.js';
import { addJobOptions, type JobFlags, positiveInt } from './job-flags.js';
import { createLogger } from './logger.js';
import { outputPath } from './output-path.js';

/** `ringtrain train`: the whole job in this one process (no cluster). */
export function trainCommand(): Command {
  return addJobOptions(new Command('train').description('train in this process on the embedded MNIST (or --data), no cluster'))
    .option('--json', 'print the per-epoch results as one JSON line on stdout')
    .option('--checkpoint-dir <dir>', 'write a checkpoint of the final state here (resumable with launch --resume)')
    .option('--save-final <file>', 'write the final weights to this safetensors file')
    .option('--max-steps <n>', 'stop after this many steps, if that comes before the last epoch ends', positiveInt)
    .action(async (flags: JobFlags & { json?: boolean; checkpointDir?: string; saveFinal?: string; maxSteps?: number }) => {
      const [{ resolveJob, testSetOf }, { train, charsPerTokenOf, describeLanguageModelLoss }, { CheckpointWriter, writeFinalWeights }] = await Promise.all([import('./job-options.js'), import('@ringtrain/trainer'), import('@ringtrain/worker')]);
      // One process has no all-reduce: a wire format for gradients would be silently ignored.
      if (flags.gradientCompression) throw errorWithCode('ERR_ARGUMENT', '--gradient-compression sets how gradients travel between workers, and train is one process: use it with launch or worker');
      const resolved = resolveJob(flags);
      const job = flags.maxSteps ? { ...resolved, steps: Math.min(flags.maxSteps, resolved.steps ?? flags.maxSteps) } : resolved;
      const saveFinal = flags.saveFinal && outputPath('--save-final', flags.saveFinal);
      const log = createLogger();
      const { Progress } = await import('./progress.js');
      const progress = new Progress('train');
      const abort = new AbortController();
      const onSigint = (): void => abort.abort();
      process.once('SIGINT', onSigint);
      const result = await train(job, {
        logger: log,
        signal: abort.signal,
        onStep: (s) => progress.update(s.step, s.stepsPerEpoch, { epoch: `${s.epoch + 1}/${job.epochs}`, loss: s.loss, rate: s.samplesPerSecond }),
        onEpoch: () => progress.stop(),
      }).finally(() => {
        progress.stop();
        process.off('SIGINT', onSigint);
      });
      const last = result.epochs.at(-1);
      // A one-process run leaves its weights behind too, as a launch does (also after Ctrl-C).
      if (flags.checkpointDir) {
        const writer = new CheckpointWriter(result.trainer, { dir: resolve(flags.checkpointDir), everySteps: 0, atEpochEnd: true, keepLast: 3, keepBest: 0, metric: 'test_accuracy', onError: 'stop' }, randomUUID());
        const { path } = await (await writer.save(last ? { test_accuracy: last.test.accuracy, test_loss: last.test.loss } : {})).written;
        log.info({ path }, `checkpoint written: ${path}`);
      }
      if (saveFinal) {
        writeFinalWeights(result.trainer, saveFinal);
        log.info(`final weights written to ${saveFinal}`);
      }
      if (flags.json) process.stdout.write(`${JSON.stringify({ epochs: result.epochs, stopped: result.stopped })}\n`);
      if (result.stopped) {
        log.warn(`stopped after ${result.trainer.globalStep} steps`);
        process.exitCode = 130;
      } else if (last) {
        const lm = result.trainer.model.positions > 1;
        log.info(`done: ${lm ? describeLanguageModelLoss(last.test.loss, charsPerTokenOf(job.dataset)) : `test accuracy ${(100 * last.test.accuracy).toFixed(2)}% on ${testSetOf(job.dataset)}`} after ${result.trainer.globalStep} steps`);
      }
    });
}
