import { defaultServerConditions } from 'vite';
import type { ViteUserConfig } from 'vitest/config';

/** Test settings every project shares: read sibling projects from source, not dist. */
export const sharedConfig: ViteUserConfig = {
  ssr: { resolve: { conditions: ['@ringtrain/source', ...defaultServerConditions] } },
  resolve: { conditions: ['@ringtrain/source'] },
  test: {
    include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
  },
};
