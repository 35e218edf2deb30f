// Saves checkpoints in a loop until killed (the crash-during-save test). Usage: save-loop.js <dir> <first step>
import { saveCheckpoint } from '../checkpoint-store.js';
import { scriptMeta } from './script-meta.js';

const [dir, first] = [process.argv[2], Number(process.argv[3])];
for (let step = first; ; step++) {
  const data = new Float32Array(1 << 20).fill(step);
  // Retention in the lineage of the test's first save, so it prunes as it would in one run.
  await saveCheckpoint(dir, [{ name: 'w', shape: [1 << 20], data }], scriptMeta(step), { keepLast: 2 });
}
