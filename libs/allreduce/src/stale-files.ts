import { readdirSync, statSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';

/** A file of ours this old, whose process is gone, can no longer be in a group being formed (every wait there has a deadline). */
export const STALE_FILE_MS = 10 * 60_000;

/**
 * Removes the files that ranks killed while their group formed left in `dir` (a SIGKILL between
 * making the file and unlinking it once every rank has mapped it). The directory is a tmpfs, so
 * each one holds memory, as much as a gradient bucket: hundreds of MB for a large model. Only
 * ours (ringtrain-<pid>-<hex>, this user's), only older than STALE_FILE_MS, and only where no
 * process has that pid. Returns the paths removed.
 */
export function sweepStaleFiles(dir: string, now = Date.now()): string[] {
  const removed: string[] = [];
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return removed;
  }
  for (const name of names) {
    const pid = Number(/^ringtrain-(\d+)-[0-9a-f]{12}$/.exec(name)?.[1] ?? NaN);
    if (!(pid > 0) || processExists(pid)) continue;
    const path = join(dir, name);
    try {
      const st = statSync(path);
      if (!st.isFile() || st.uid !== process.getuid?.() || now - st.mtimeMs < STALE_FILE_MS) continue;
      unlinkSync(path);
      removed.push(path);
    } catch {
      // gone meanwhile, or not ours to remove
    }
  }
  return removed;
}

function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
