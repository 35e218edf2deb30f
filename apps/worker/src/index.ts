export { ChannelError, ControlChannel } from './control-channel.js';
export { WorkerError } from './errors.js';
export { runWorker, type WorkerOptions, type WorkerPhase, type WorkerResult } from './worker.js';
export { CheckpointWriter, writeFinalWeights } from './checkpointing.js';
