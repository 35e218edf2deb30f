// A ring member as a real process, for multi-process tests and benchmarks.
// Usage: node dist/testing/ring-process.js <rank> <world> [json options]
// Prints JSON lines on stdout: {"event":"listening","address"} then, after reading {"prev": url}
// on stdin, {"event":"connected"}; then for each {"run": {...}} line it runs all-reduces and prints
// {"event":"done",...} or {"event":"error",...}. Data are small integers, so every rank can check
// the exact sum by itself.
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { Communicator } from '../communicator.js';
import type { CollectiveError } from '../errors.js';
import { WebSocketTransport } from '../websocket-transport.js';
import type { WireFormat } from '../wire-codec.js';

interface RunRequest {
  /** Element counts to cycle through. */
  sizes: number[];
  iterations?: number;
  /** Timed mode: iterations per size after warm-up, reporting the median time (benchmarks). */
  timed?: boolean;
  warmup?: number;
  /** Check the exact sum of every result (default true). */
  verify?: boolean;
  /** Timed mode: the wire format (a compressed one averages, so that the ones stay ones). */
  wire?: WireFormat;
  /**
   * Checked mode: fractional values, each result checked bit for bit against the sum in the
   * ring's order (chunk c from rank c round to rank c−1), computed here from every rank's values.
   */
  floats?: boolean;
  /** Checked mode: an event for every completed all-reduce. */
  trace?: boolean;
  /** Checked mode: ms each rank (by index) blocks its event loop before each all-reduce, as a long compute step does. */
  busyMs?: number[];
}

const [rank, world] = [Number(process.argv[2]), Number(process.argv[3])];
const opts = JSON.parse(process.argv[4] ?? '{}') as { sharedMemory?: number; hosts?: string[]; token?: string; peerTimeoutMs?: number; segmentBytes?: number; sendWindow?: number; timeoutMs?: number; tls?: { cert: string; key: string; ca: string } };
const say = (o: object): boolean => process.stdout.write(`${JSON.stringify({ rank, t: Date.now(), ...o })}\n`);

// TLS: the files' paths in, their contents to the transport.
const tls = opts.tls && { cert: readFileSync(opts.tls.cert), key: readFileSync(opts.tls.key), ca: readFileSync(opts.tls.ca) };
const transport = await WebSocketTransport.listen({ token: opts.token, peerTimeoutMs: opts.peerTimeoutMs ?? 1000, heartbeatMs: 200, tls });
let comm!: Communicator;
say({ event: 'listening', address: transport.address });

const value = (r: number, iter: number, i: number): number => ((r + 1) * ((i + iter) % 61)) % 17;
const fraction = (r: number, iter: number, i: number): number => Math.fround(Math.sin(r * 7919 + iter * 104_729 + i) * 1000);

/** Element i's sum as the ring makes it: in float32, from the chunk's first rank round the ring. */
function ringOrderSum(n: number, iter: number, i: number): number {
  let c = 0;
  while (Math.floor(((c + 1) * n) / world) <= i) c++;
  let sum = fraction(c, iter, i);
  for (let k = 1; k < world; k++) sum = Math.fround(sum + fraction((c + k) % world, iter, i));
  return sum;
}

async function run(req: RunRequest): Promise<void> {
  const buffers = new Map(req.sizes.map((n) => [n, new Float32Array(n)]));
  if (req.timed) {
    const results = [];
    for (const n of req.sizes) {
      const buf = buffers.get(n)!;
      const times: number[] = [];
      // As the Gloo peer does: the same buffer summed again each time (ones, then N, N², ...),
      // not refilled each time, which on a small machine would take CPU from ranks still being
      // timed; only before float32 would overflow.
      let expected = 1;
      for (let k = 0; k < (req.warmup ?? 3) + (req.iterations ?? 20); k++) {
        if (k === 0 || expected * world > 2 ** 100) {
          buf.fill(1);
          expected = 1;
        }
        await comm.barrier();
        const t0 = performance.now();
        await comm.allreduce(buf, req.wire ? { wire: req.wire } : { average: false });
        if (k >= (req.warmup ?? 3)) times.push(performance.now() - t0);
        if (!req.wire) expected *= world;
        if (Math.abs(buf[0] - expected) > 1e-6 * expected || Math.abs(buf[n - 1] - expected) > 1e-6 * expected) throw new Error(`wrong sum ${buf[0]} at size ${n}, expected ${expected}`);
      }
      times.sort((a, b) => a - b);
      results.push({ elements: n, ms: times[Math.floor(times.length / 2)] });
    }
    say({ event: 'done', results });
    return;
  }
  const iterations = req.iterations ?? 100;
  for (let iter = 0; iter < iterations; iter++) {
    const n = req.sizes[iter % req.sizes.length];
    const buf = buffers.get(n)!;
    for (let i = 0; i < n; i++) buf[i] = req.floats ? fraction(rank, iter, i) : value(rank, iter, i);
    const busyUntil = Date.now() + (req.busyMs?.[rank] ?? 0);
    while (Date.now() < busyUntil); // blocks, as a synchronous step does
    await comm.allreduce(buf, { average: false, step: iter });
    if (req.floats && req.verify !== false) {
      for (let i = 0; i < n; i++) {
        const expected = ringOrderSum(n, iter, i);
        if (!Object.is(buf[i], expected)) throw new Error(`iteration ${iter}, element ${i} of ${n}: got ${buf[i]}, the ring's order gives ${expected}`);
      }
    } else if (req.verify !== false) {
      for (let i = 0; i < n; i++) {
        let expected = 0;
        for (let r = 0; r < world; r++) expected += value(r, iter, i);
        if (buf[i] !== expected) throw new Error(`iteration ${iter}, element ${i} of ${n}: got ${buf[i]}, expected ${expected}`);
      }
    }
    if (iter % 100 === 0) say({ event: 'progress', iteration: iter });
    if (req.trace) say({ event: 'iteration', iteration: iter });
  }
  say({ event: 'done', iterations });
}

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  const msg = JSON.parse(line) as { prev?: string; run?: RunRequest; exit?: boolean };
  try {
    if (msg.prev) {
      await transport.join({ rank, worldSize: world, prevAddress: msg.prev });
      comm = new Communicator(transport, { segmentBytes: opts.segmentBytes, sendWindow: opts.sendWindow, timeoutMs: opts.timeoutMs ?? 30_000 });
      // sharedMemory: its capacity in elements, where the test wants same-host ranks to use it;
      // hosts: which host each rank says it is on (one machine cut into several).
      const why = opts.sharedMemory ? await comm.shareMemory({ capacity: opts.sharedMemory, hostKey: opts.hosts?.[rank] }) : 'not asked for';
      say({ event: 'connected', sharedMemory: comm.sharedMemory, hosts: comm.hostBlocks?.hosts ?? null, why });
    } else if (msg.run) {
      await run(msg.run);
    } else if (msg.exit) {
      break;
    }
  } catch (err) {
    const e = err as CollectiveError;
    say({ event: 'error', code: e.code, message: e.message, peer: e.peer });
    await comm?.close();
    process.exit(1);
  }
}
await comm?.close();
await transport.close();
process.exit(0);
