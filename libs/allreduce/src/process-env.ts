/**
 * The environment for a process that runs a ring endpoint. ws allocates a fresh buffer for every
 * message it receives; glibc serves allocations of 128 KiB and more with mmap and gives them back
 * at free, so every segment of every all-reduce page-faults fresh zeroed memory from the kernel.
 * Raising glibc's mmap and trim thresholds keeps those buffers in the heap for reuse: measured
 * 4 MiB all-reduces at N = 2 in 6.3 ms instead of 10.5 ms. Large payloads now arrive in pooled
 * read blocks (ReadArena), so little is left for this and for RING_NODE_FLAGS to do; together
 * they still measured 21–23 ms against 22.5–24 ms without (N = 4, 16 MiB), so they stay. Other C
 * libraries ignore the variable. GLIBC_TUNABLES is read at process start, so this is for the
 * processes one spawns.
 */
export function ringProcessEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const wanted = ['glibc.malloc.mmap_threshold=67108864', 'glibc.malloc.trim_threshold=134217728'];
  const current = (env.GLIBC_TUNABLES ?? '').split(':').filter(Boolean);
  const names = new Set(current.map((t) => t.split('=')[0]));
  const merged = [...current, ...wanted.filter((t) => !names.has(t.split('=')[0]))];
  return { ...env, GLIBC_TUNABLES: merged.join(':') };
}

/** True when this process was started with the ring tunables (or the user set their own). */
export function hasRingProcessEnv(env: NodeJS.ProcessEnv = process.env): boolean {
  return (env.GLIBC_TUNABLES ?? '').includes('glibc.malloc.mmap_threshold');
}

/**
 * Node flags for a process that runs a ring endpoint: every received message is a new buffer, and
 * V8's incremental marking, started by that external memory, costs more than the stop-the-world
 * collections it replaces (measured: 4 workers on 2 cores, 24–34k → 47–49k samples/s). Given at
 * process start: V8 flags changed at run time (v8.setFlagsFromString) crashed its concurrent marker.
 */
export const RING_NODE_FLAGS: readonly string[] = ['--no-incremental-marking'];

/** True when this process was started with RING_NODE_FLAGS. */
export function hasRingNodeFlags(execArgv: readonly string[] = process.execArgv): boolean {
  return RING_NODE_FLAGS.every((f) => execArgv.includes(f));
}
