// Writes one checkpoint and exits (the write-order test traces its system calls).
// Usage: save-once.js <dir> <sync|async>
import { saveCheckpoint } from '../checkpoint-store.js';

const [dir, mode] = [process.argv[2], process.argv[3]];
const data = new Float32Array(1 << 20).fill(7);
await saveCheckpoint(dir, [{ name: 'w', shape: [1 << 20], data }], {
  step: 7,
  epoch: 0,
  cursor: 0,
  worldSize: 1,
  runId: 'run-a',
  lineage: 'run-a',
  configHash: '0000000000000000',
  config: {},
  modelSpec: {},
  optimizer: { type: 'sgd', step: 7, slots: [] },
  rng: { dropout: [1, 1, 1, 1] },
  metrics: {},
  savedAt: new Date().toISOString(),
}, {}, mode === 'async');
