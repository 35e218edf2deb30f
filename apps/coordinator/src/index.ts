export { Coordinator, CoordinatorError, type CoordinatorOptions, type CoordinatorState } from './coordinator.js';
export { type EpochStats, type RankTiming, RunStats } from './run-stats.js';
export { answerProbe, type Health } from './status-server.js';
