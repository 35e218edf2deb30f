import { defineConfig } from 'vitest/config';
import { sharedConfig } from './vitest.shared.js';

/** The unit tests, run from the repository root for StrykerJS (npm run test:mutation). */
export default defineConfig({
  ...sharedConfig,
  test: {
    ...sharedConfig.test,
    // Every library's unit tests; the *.int tests start processes from dist/, which a mutant in
    // src/ never reaches, and are named so that this needs no list.
    include: ['libs/*/src/**/*.test.ts'],
    exclude: ['**/*.int.test.ts', '**/node_modules/**', '**/dist/**'],
  },
});
