import { defineConfig, mergeConfig } from 'vitest/config';
import { sharedConfig } from '../../vitest.shared.js';

// One test file at a time: each starts a coordinator and several workers (and one a browser), and
// on a 2-core machine two files at once starve workers past their heartbeat deadlines.
export default mergeConfig(defineConfig(sharedConfig), defineConfig({ test: { fileParallelism: false } }));
