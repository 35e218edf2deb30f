import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import type { Logger } from 'pino';
import { charsPerTokenOf, describeLanguageModelLoss } from './figures.js';
import { type JobConfig, parseJobConfig } from './job-config.js';
import { type EvalResult, Trainer } from './trainer.js';

export interface StepReport {
  epoch: number;
  /** Step within the epoch, 1-based. */
  step: number;
  stepsPerEpoch: number;
  loss: number;
  samplesPerSecond: number;
}

export interface EpochReport {
  epoch: number;
  trainLoss: number;
  trainAccuracy: number;
  test: EvalResult;
  seconds: number;
  samplesPerSecond: number;
}

export interface TrainOptions {
  logger?: Logger;
  onStep?: (report: StepReport) => void;
  onEpoch?: (report: EpochReport) => void;
  /** Stops after the current step when aborted (Ctrl-C). */
  signal?: AbortSignal;
}

export interface TrainResult {
  config: JobConfig;
  trainer: Trainer;
  epochs: EpochReport[];
  /** True when `signal` stopped the run early. */
  stopped: boolean;
}

const pct = (x: number): string => `${(100 * x).toFixed(2)}%`;

/** Trains in this process: the whole job config, epoch by epoch, with evaluation after each. */
export async function train(config: unknown, options: TrainOptions = {}): Promise<TrainResult> {
  const job = parseJobConfig(config);
  const trainer = new Trainer(job);
  const log = options.logger;
  if (trainer.backendHint) log?.warn(trainer.backendHint);
  const counts = trainer.model.params.counts();
  log?.info(
    { backend: trainer.backend.description, params: counts.total, weights: counts.weights, biases: counts.biases, train: trainer.data.train.size, test: trainer.data.test.size },
    `backend: ${trainer.backend.description}; ${counts.total} parameters (${counts.weights} weights, ${counts.biases} biases)`,
  );
  const epochs: EpochReport[] = [];
  const positions = trainer.model.positions;
  for (let epoch = 0; epoch < job.epochs && trainer.globalStep < trainer.runSteps; epoch++) {
    const t0 = performance.now();
    let lossSum = 0;
    let correct = 0;
    let samples = 0;
    // A run counted in steps (`steps`) ends within an epoch, and is evaluated there.
    const lastStep = Math.min(trainer.stepsPerEpoch, trainer.runSteps - trainer.globalStep);
    for (let step = 1; step <= lastStep; step++) {
      const r = trainer.trainStep();
      if (r.skipped) {
        log?.warn({ step: trainer.globalStep - 1, loss: r.loss }, `step ${trainer.globalStep - 1} skipped: a loss or gradient is not finite (nonFinite "skip")`);
      } else {
        lossSum += r.loss * job.batchSize;
        correct += r.correct;
        samples += job.batchSize;
      }
      if (job.evalEvery && trainer.globalStep % job.evalEvery === 0 && step < lastStep) {
        const test = trainer.evaluate('test');
        const loss = samples ? lossSum / samples : Number.NaN;
        log?.info(
          { epoch, step: trainer.globalStep, trainLoss: loss, testLoss: test.loss, testAccuracy: test.accuracy },
          `step ${trainer.globalStep}/${trainer.runSteps}: loss ${loss.toFixed(4)}, ${positions > 1 ? describeLanguageModelLoss(test.loss, charsPerTokenOf(job.dataset)) : `test ${pct(test.accuracy)}`}`,
        );
      }
      if (step % 25 === 0 || step === lastStep) {
        options.onStep?.({ epoch, step, stepsPerEpoch: trainer.stepsPerEpoch, loss: r.loss, samplesPerSecond: samples / ((performance.now() - t0) / 1000) });
        await yieldToEventLoop();
        if (options.signal?.aborted) return { config: job, trainer, epochs, stopped: true };
      }
    }
    const seconds = (performance.now() - t0) / 1000;
    const report: EpochReport = {
      epoch,
      trainLoss: lossSum / samples,
      trainAccuracy: correct / (samples * positions),
      test: trainer.evaluate('test'),
      seconds,
      samplesPerSecond: samples / seconds,
    };
    epochs.push(report);
    options.onEpoch?.(report);
    log?.info(
      { ...report, test: undefined, testLoss: report.test.loss, testAccuracy: report.test.accuracy },
      positions > 1
        ? `epoch ${epoch + 1}/${job.epochs}, step ${trainer.globalStep}: loss ${report.trainLoss.toFixed(4)}, ${describeLanguageModelLoss(report.test.loss, charsPerTokenOf(job.dataset))}, ${Math.round(report.samplesPerSecond * positions)} tokens/s`
        : `epoch ${epoch + 1}/${job.epochs}: loss ${report.trainLoss.toFixed(4)}, train ${pct(report.trainAccuracy)}, test ${pct(report.test.accuracy)}, ` +
            `${Math.round(report.samplesPerSecond)} samples/s`,
    );
  }
  return { config: job, trainer, epochs, stopped: false };
}
