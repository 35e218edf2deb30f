export { addJobOptions, type JobFlags, resolveJob } from './job-options.js';
export { createLogger, type LoggerOptions } from './logger.js';
export { table } from './table.js';
