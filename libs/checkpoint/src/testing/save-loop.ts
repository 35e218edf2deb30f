// Saves checkpoints in a loop until killed (the crash-during-save test). Usage: save-loop.js <dir> <first step>
import { saveCheckpoint } from '../checkpoint-store.js';

const [dir, first] = [process.argv[2], Number(process.argv[3])];
for (let step = first; ; step++) {
  const data = new Float32Array(1 << 20).fill(step);
  await saveCheckpoint(dir, [{ name: 'w', shape: [1 << 20], data }], {
    step,
    epoch: 0,
    cursor: 0,
    worldSize: 1,
    // The lineage of the test's first save, so retention prunes as it would in one run.
    runId: 'run-a',
    lineage: 'run-a',
    configHash: '0000000000000000',
    config: {},
    modelSpec: {},
    optimizer: { type: 'sgd', step, slots: [] },
    rng: { dropout: [1, 1, 1, 1] },
    metrics: {},
    savedAt: new Date().toISOString(),
  }, { keepLast: 2 });
}
