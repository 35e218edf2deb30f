import { readFileSync } from 'node:fs';
import { type Backend, checkGemm } from '../backend.js';
import { CoreError } from '../errors.js';

const PAGE = 65536;
const ALIGN = 64;
/** Default size of the WASM arena. Only the pages that are touched take physical memory. */
export const DEFAULT_WASM_MEMORY_MB = 1024;

interface Kernels {
  gemm(ta: number, tb: number, m: number, n: number, k: number, a: number, b: number, c: number, acc: number, scratch: number): void;
  gemmScratchBytes(): number;
}

export interface WasmBackendOptions {
  /** Size of the fixed arena in MiB (default 1024, or RINGTRAIN_WASM_MEMORY_MB). */
  memoryMb?: number;
}

/**
 * AssemblyScript SIMD kernels (build/kernels.wasm) over one fixed-size WebAssembly memory.
 * The memory never grows: growing would detach every Float32Array handed out so far.
 * Buffers come from a bump allocator with per-size free lists (the trainer allocates a few
 * long-lived buffers, so this never fragments in practice).
 */
export class WasmBackend implements Backend {
  readonly name = 'wasm' as const;
  readonly description: string;
  private readonly memory: WebAssembly.Memory;
  private readonly kernels: Kernels;
  private readonly scratch: number;
  private top: number;
  private readonly freeLists = new Map<number, number[]>();

  constructor(options: WasmBackendOptions = {}) {
    const mb = options.memoryMb ?? Number(process.env.RINGTRAIN_WASM_MEMORY_MB ?? DEFAULT_WASM_MEMORY_MB);
    if (!Number.isInteger(mb) || mb < 1 || mb > 4095) {
      throw new CoreError('ERR_BACKEND', `wasm backend: memoryMb must be an integer in 1..4095, got ${mb}`);
    }
    const pages = (mb * 1024 * 1024) / PAGE;
    this.memory = new WebAssembly.Memory({ initial: pages, maximum: pages });
    const bytes = readFileSync(new URL('../../build/kernels.wasm', import.meta.url));
    const instance = new WebAssembly.Instance(new WebAssembly.Module(bytes), {
      env: {
        memory: this.memory,
        abort: () => {
          throw new CoreError('ERR_BACKEND', 'wasm kernel aborted');
        },
      },
    });
    this.kernels = instance.exports as unknown as Kernels;
    // The first page is left to the module's own static data.
    this.scratch = PAGE;
    this.top = align(PAGE + this.kernels.gemmScratchBytes());
    this.description = `wasm (AssemblyScript SIMD, ${mb} MiB arena)`;
  }

  alloc(length: number): Float32Array {
    if (!Number.isInteger(length) || length < 0) throw new CoreError('ERR_SHAPE', `alloc: length must be a non-negative integer, got ${length}`);
    const bytes = align(Math.max(length * 4, ALIGN));
    const reused = this.freeLists.get(bytes)?.pop();
    let offset: number;
    if (reused !== undefined) {
      offset = reused;
    } else {
      if (this.top + bytes > this.memory.buffer.byteLength) {
        throw new CoreError('ERR_ARENA_FULL',
          `wasm backend: arena of ${this.memory.buffer.byteLength / 2 ** 20} MiB is full (${((this.top) / 2 ** 20).toFixed(1)} MiB used, ` +
          `${length} floats requested); set RINGTRAIN_WASM_MEMORY_MB higher`);
      }
      offset = this.top;
      this.top += bytes;
    }
    const view = new Float32Array(this.memory.buffer, offset, length);
    view.fill(0);
    return view;
  }

  free(buffer: Float32Array): void {
    if (buffer.buffer !== this.memory.buffer) return;
    const bytes = align(Math.max(buffer.length * 4, ALIGN));
    let list = this.freeLists.get(bytes);
    if (!list) this.freeLists.set(bytes, (list = []));
    list.push(buffer.byteOffset);
  }

  /** Bytes handed out so far (high-water mark of the arena). */
  get usedBytes(): number {
    return this.top;
  }

  gemm(transA: boolean, transB: boolean, m: number, n: number, k: number, a: Float32Array, b: Float32Array, c: Float32Array, accumulate = false): void {
    checkGemm(m, n, k, a, b, c);
    if (m === 0 || n === 0) return;
    this.kernels.gemm(transA ? 1 : 0, transB ? 1 : 0, m, n, k, this.offset(a, 'A'), this.offset(b, 'B'), this.offset(c, 'C'), accumulate ? 1 : 0, this.scratch);
  }

  private offset(x: Float32Array, name: string): number {
    if (x.buffer !== this.memory.buffer) {
      throw new CoreError('ERR_BACKEND', `wasm backend: ${name} was not allocated by this backend (use backend.alloc), so the kernel cannot see it`);
    }
    return x.byteOffset;
  }
}

function align(n: number): number {
  return Math.ceil(n / ALIGN) * ALIGN;
}
