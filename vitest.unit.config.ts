import { defineConfig } from 'vitest/config';
import { sharedConfig } from './vitest.shared.js';

/**
 * The fast tier (`npm run test:unit`): every project's unit tests, nothing that starts a cluster,
 * a container or a network namespace. Those live in `*.int.test.ts` and run with `npm test`.
 */
export default defineConfig({
  ...sharedConfig,
  test: {
    ...sharedConfig.test,
    include: ['{apps,libs,tools}/*/src/**/*.test.ts'],
    exclude: ['**/*.int.test.ts', '**/node_modules/**', '**/dist/**'],
  },
});
