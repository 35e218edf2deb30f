// Builds the optional OpenBLAS addon. Never fails the install: without a compiler or OpenBLAS
// the WASM backend runs instead, and this prints how to enable the native one.
import { spawnSync } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const nativeDir = join(dirname(fileURLToPath(import.meta.url)), '..', 'native');
const hint = 'ringtrain: native OpenBLAS backend not built; WASM SIMD will be used. ' +
  'To enable it: apt-get install -y libopenblas-dev g++ make python3, then npm run build:native.';

if (process.env.RINGTRAIN_SKIP_NATIVE === '1') {
  rmSync(join(nativeDir, 'build'), { recursive: true, force: true });
  console.log('ringtrain: RINGTRAIN_SKIP_NATIVE=1, native backend skipped.');
  process.exit(0);
}
const args = ['rebuild'];
// node-gyp downloads Node's headers unless told where they are; Debian's nodejs ships them.
if (!process.env.npm_config_nodedir && existsSync('/usr/include/node/node_api.h')) args.push('--nodedir=/usr');
// node-gyp ships inside npm; find it beside the npm that runs us, or beside node.
const gypCandidates = [
  process.env.npm_execpath && join(dirname(process.env.npm_execpath), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
  join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
].filter((p) => p && existsSync(p));
const cmd = gypCandidates.length ? [process.execPath, gypCandidates[0], ...args] : ['node-gyp', ...args];
const r = spawnSync(cmd[0], cmd.slice(1), { cwd: nativeDir, encoding: 'utf8' });
if (r.status === 0) {
  console.log('ringtrain: native OpenBLAS backend built.');
} else {
  rmSync(join(nativeDir, 'build'), { recursive: true, force: true });
  const why = (r.error?.message ?? r.stderr ?? '').split('\n').find((l) => /error/i.test(l)) ?? 'build failed';
  console.log(`${hint}\n  (${why.trim()})`);
}
