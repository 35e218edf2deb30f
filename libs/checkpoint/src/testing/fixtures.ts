import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CheckpointMeta } from '../checkpoint-store.js';

/** A fresh folder for one test's checkpoints. */
export const storeDir = (): string => mkdtempSync(join(tmpdir(), 'ringtrain-store-'));

/** The metadata of the store tests' checkpoints, with a test accuracy to rank them by. */
export const testMeta = (step: number, accuracy = 0.5): CheckpointMeta => ({
  step,
  epoch: 1,
  cursor: 128,
  worldSize: 2,
  runId: 'run-a',
  lineage: 'run-a',
  configHash: 'abcdef0123456789',
  config: { seed: 1 },
  modelSpec: { inputSize: 2 },
  optimizer: { type: 'sgd', step, slots: ['momentum'] },
  rng: { dropout: [1, 2, 3, 4] },
  metrics: { test_accuracy: accuracy },
  savedAt: '2026-11-28T00:00:00Z',
});
