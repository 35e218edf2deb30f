// Whether build outputs are newer than every input, so that a build of an unchanged tree is a
// no-op (`npm test` builds first; rebuilding the WASM kernels and the addons cost ~10 s each time).
//   node scripts/up-to-date.mjs <outputs, comma-separated> <inputs, comma-separated>
// exits 0 when every output exists and is newer than every input file (folders are walked), else 1.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

/** The newest modification time among `paths` (files, or folders walked, skipping `build`). */
function newest(paths) {
  let t = 0;
  for (const p of paths) {
    const s = statSync(p);
    if (!s.isDirectory()) t = Math.max(t, s.mtimeMs);
    else for (const e of readdirSync(p)) if (e !== 'build' && e !== 'node_modules') t = Math.max(t, newest([join(p, e)]));
  }
  return t;
}

/** True when every output exists and is newer than every input. */
export function upToDate(outputs, inputs) {
  try {
    const oldestOutput = Math.min(...outputs.map((o) => statSync(o).mtimeMs));
    return oldestOutput > newest(inputs);
  } catch {
    return false;
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [outputs, inputs] = process.argv.slice(2).map((a) => (a ?? '').split(',').filter(Boolean));
  process.exit(outputs?.length && inputs?.length && upToDate(outputs, inputs) ? 0 : 1);
}
