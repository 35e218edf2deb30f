export { addJobOptions, type JobFlags } from './job-flags.js';
export { resolveJob } from './job-options.js';
export { createLogger, type LoggerOptions } from './logger.js';
export { table } from './table.js';
