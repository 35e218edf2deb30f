import type { CheckpointMeta } from '../checkpoint-store.js';

/** The metadata the test scripts' checkpoints carry: the lineage of the tests' own first save. */
export function scriptMeta(step: number): CheckpointMeta {
  return {
    step,
    epoch: 0,
    cursor: 0,
    worldSize: 1,
    runId: 'run-a',
    lineage: 'run-a',
    configHash: '0000000000000000',
    config: {},
    modelSpec: {},
    optimizer: { type: 'sgd', step, slots: [] },
    rng: { dropout: [1, 1, 1, 1] },
    metrics: {},
    savedAt: new Date().toISOString(),
  };
}
