import { defineConfig } from 'vitest/config';
import { sharedConfig } from './vitest.shared.js';

/**
 * The unit tests that cover the kernels of correctness, run from the repository root for
 * StrykerJS (npm run test:mutation). Integration tests start built processes from dist/, which a
 * mutant in src/ never reaches, so they are left out.
 */
export default defineConfig({
  ...sharedConfig,
  test: {
    ...sharedConfig.test,
    include: [
      'libs/allreduce/src/**/*.test.ts',
      'libs/protocol/src/**/*.test.ts',
      // safetensors' own tests; the store's crash and bit-flip tests spawn processes and read
      // thousands of files per mutant, which would make a run take hours on 2 cores.
      'libs/checkpoint/src/safetensors.test.ts',
      'libs/core/src/optimizers.test.ts',
      'libs/core/src/model.test.ts',
      'libs/core/src/parameter-store.test.ts',
      'libs/data/src/**/*.test.ts',
    ],
    exclude: ['**/*.int.test.ts', '**/node_modules/**', '**/dist/**'],
  },
});
