// Writes one checkpoint and exits (the write-order test traces its system calls).
// Usage: save-once.js <dir> <sync|async>
import { saveCheckpoint } from '../checkpoint-store.js';
import { scriptMeta } from './script-meta.js';

const [dir, mode] = [process.argv[2], process.argv[3]];
await saveCheckpoint(dir, [{ name: 'w', shape: [1 << 20], data: new Float32Array(1 << 20).fill(7) }], scriptMeta(7), {}, mode === 'async');
