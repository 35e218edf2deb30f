export { ChannelError, ControlChannel } from './control-channel.js';
export { runWorker, WorkerError, type WorkerOptions, type WorkerResult } from './worker.js';
