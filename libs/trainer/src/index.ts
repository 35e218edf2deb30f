export { configDifferences, DEFAULT_JOB, gradientCompressionOf, type JobConfig, jobConfigHash, jobConfigSchema, jobIdentityHash, mergeConfig, parseJobConfig, type SyncConfig } from './job-config.js';
export { bitsPerCharacter, charsPerTokenOf, describeLanguageModelLoss } from './figures.js';
export { type EpochReport, type StepReport, train, type TrainOptions, type TrainResult } from './train.js';
export { describeNonFinite, type EvalResult, evaluateRange, type NonFinite, type Reduce, type StepOptions, type StepOutcome, type StepResult, type TensorHealth, Trainer, type TrainerOptions, type TrainerState } from './trainer.js';
