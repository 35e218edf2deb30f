// Builds one of the project's optional N-API addons with node-gyp:
//   node scripts/build-addon.mjs <native dir> <what it is> <what runs without it> [apt packages]
// Never fails the install: without a compiler (or a library the addon links) the portable code
// runs instead, and this prints how to enable the native one. RINGTRAIN_SKIP_NATIVE=1 skips it.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { upToDate } from './up-to-date.mjs';

const [dir, what, fallback, packages = 'g++ make python3'] = process.argv.slice(2);
if (!dir || !what || !fallback) {
  console.error('usage: node scripts/build-addon.mjs <native dir> <what it is> <what runs without it> [apt packages]');
  process.exit(2);
}
const nativeDir = resolve(dir);
const hint = `ringtrain: ${what} not built; ${fallback} will be used. To enable it: apt-get install -y ${packages}, then npm run build:native.`;

if (process.env.RINGTRAIN_SKIP_NATIVE === '1') {
  rmSync(join(nativeDir, 'build'), { recursive: true, force: true });
  console.log(`ringtrain: RINGTRAIN_SKIP_NATIVE=1, ${what} skipped.`);
  process.exit(0);
}
// An addon newer than its sources (and the lockfile) is not built again: `npm test` builds first.
const release = join(nativeDir, 'build', 'Release');
const addons = existsSync(release) ? readdirSync(release).filter((f) => f.endsWith('.node')).map((f) => join(release, f)) : [];
const lockfile = fileURLToPath(new URL('../package-lock.json', import.meta.url));
if (addons.length && upToDate(addons, [nativeDir, lockfile])) process.exit(0);
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
  console.log(`ringtrain: ${what} built.`);
} else {
  rmSync(join(nativeDir, 'build'), { recursive: true, force: true });
  const why = (r.error?.message ?? r.stderr ?? '').split('\n').find((l) => /error/i.test(l)) ?? 'build failed';
  console.log(`${hint}\n  (${why.trim()})`);
}
