import { readFileSync } from 'node:fs';
import v8 from 'node:v8';
import { type AdamHyper, type AttentionShape, type Backend, checkGemm, checkLengths, checkPool, checkPoolBackward, checkSameLength, checkUnfold, type SgdHyper } from '../backend.js';
import type { Window } from '../layers/conv-geometry.js';
import { CoreError } from '../errors.js';
import { TransformerKernels } from '../transformer-ops.js';

const PAGE = 65536;
const ALIGN = 64;
/** Default size of the WASM arena. Only the pages that are touched take physical memory. */
export const DEFAULT_WASM_MEMORY_MB = 1024;

interface Kernels {
  gemm(ta: number, tb: number, m: number, n: number, k: number, a: number, b: number, c: number, acc: number, scratch: number): void;
  gemmScratchBytes(): number;
  addBiasRows(y: number, b: number, rows: number, cols: number): void;
  sumRows(x: number, rows: number, cols: number, out: number): void;
  leakyRelu(x: number, y: number, n: number, alpha: number): void;
  gelu(x: number, y: number, t: number, n: number): void;
  maxPool(x: number, planes: number, h: number, w: number, kh: number, kw: number, stride: number, outH: number, outW: number, y: number, argmax: number): void;
  maxPoolBackward(dy: number, argmax: number, n: number, dx: number, inputs: number): void;
  im2col(x: number, batch: number, c: number, h: number, w: number, kh: number, kw: number, stride: number, padTop: number, padLeft: number, outH: number, outW: number, col: number): void;
  col2im(col: number, batch: number, c: number, h: number, w: number, kh: number, kw: number, stride: number, padTop: number, padLeft: number, outH: number, outW: number, dx: number): void;
  leakyReluBackward(x: number, dy: number, dx: number, n: number, alpha: number): void;
  sgdUpdate(p: number, g: number, v: number, n: number, lr: number, mu: number, wd: number, nesterov: number): void;
  adamUpdate(p: number, g: number, m: number, v: number, n: number, stepSize: number, b1: number, b2: number, eps: number, rc: number, l2: number, shrink: number): void;
}

export interface WasmBackendOptions {
  /** Size of the fixed arena in MiB (default 1024, or RINGTRAIN_WASM_MEMORY_MB). */
  memoryMb?: number;
  /** Use the relaxed-SIMD FMA kernels when the engine takes them (default true, or RINGTRAIN_WASM_FMA=0). */
  fma?: boolean;
}

/**
 * AssemblyScript SIMD kernels (build/kernels.wasm) over one fixed-size WebAssembly memory.
 * The memory never grows: growing would detach every Float32Array handed out so far.
 * Buffers come from a bump allocator with per-size free lists (the trainer allocates a few
 * long-lived buffers, so this never fragments in practice).
 */
export class WasmBackend extends TransformerKernels implements Backend {
  readonly name: Backend['name'] = 'wasm';
  readonly description: string;
  private readonly memory: WebAssembly.Memory;
  private readonly kernels: Kernels;
  private readonly scratch: number;
  private top: number;
  private readonly freeLists = new Map<number, number[]>();

  constructor(options: WasmBackendOptions = {}) {
    super();
    const mb = options.memoryMb ?? Number(process.env.RINGTRAIN_WASM_MEMORY_MB ?? DEFAULT_WASM_MEMORY_MB);
    if (!Number.isInteger(mb) || mb < 1 || mb > 4095) {
      throw new CoreError('ERR_BACKEND', `wasm backend: memoryMb must be an integer in 1..4095, got ${mb}`);
    }
    const pages = (mb * 1024 * 1024) / PAGE;
    this.memory = new WebAssembly.Memory({ initial: pages, maximum: pages });
    const { bytes, fma } = loadKernelBytes(options.fma ?? process.env.RINGTRAIN_WASM_FMA !== '0');
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
    this.description = `wasm (AssemblyScript SIMD${fma ? ' + relaxed-SIMD FMA' : ''}, ${mb} MiB arena)`;
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
    // Memory past the old top was never written (the arena starts zeroed and never shrinks).
    if (reused !== undefined) view.fill(0);
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

  addBiasRows(y: Float32Array, bias: Float32Array, rows: number, cols: number): void {
    checkRows('addBiasRows', y, bias, rows, cols);
    this.kernels.addBiasRows(this.offset(y, 'y'), this.offset(bias, 'bias'), rows, cols);
  }

  sumRows(x: Float32Array, rows: number, cols: number, out: Float32Array): void {
    checkRows('sumRows', x, out, rows, cols);
    this.kernels.sumRows(this.offset(x, 'x'), rows, cols, this.offset(out, 'out'));
  }

  im2col(x: Float32Array, batch: number, c: number, h: number, w: number, g: Window, col: Float32Array): void {
    checkUnfold('im2col', x, col, batch, c, h, w, g);
    this.kernels.im2col(this.offset(x, 'x'), batch, c, h, w, g.kh, g.kw, g.stride, g.padTop, g.padLeft, g.outH, g.outW, this.offset(col, 'col'));
  }

  col2im(col: Float32Array, batch: number, c: number, h: number, w: number, g: Window, dx: Float32Array): void {
    checkUnfold('col2im', dx, col, batch, c, h, w, g);
    this.kernels.col2im(this.offset(col, 'col'), batch, c, h, w, g.kh, g.kw, g.stride, g.padTop, g.padLeft, g.outH, g.outW, this.offset(dx, 'dx'));
  }

  maxPool(x: Float32Array, planes: number, h: number, w: number, g: Window, y: Float32Array, argmax: Float32Array): void {
    checkPool(x, planes, h, w, g, y, argmax);
    this.kernels.maxPool(this.offset(x, 'x'), planes, h, w, g.kh, g.kw, g.stride, g.outH, g.outW, this.offset(y, 'y'), this.offset(argmax, 'argmax'));
  }

  maxPoolBackward(dy: Float32Array, argmax: Float32Array, n: number, dx: Float32Array, inputs: number): void {
    checkPoolBackward(dy, argmax, n, dx, inputs);
    this.kernels.maxPoolBackward(this.offset(dy, 'dy'), this.offset(argmax, 'argmax'), n, this.offset(dx, 'dx'), inputs);
  }

  /** GELU in WASM SIMD (a profile of the GPT on this backend: 17% of the run in TypeScript's Math.exp). */
  override gelu(x: Float32Array, y: Float32Array, tanh: Float32Array, n: number): void {
    checkLengths('gelu', n, x, y, tanh);
    if (n > 0) this.kernels.gelu(this.offset(x, 'x'), this.offset(y, 'y'), this.offset(tanh, 'tanh'), n);
  }

  leakyRelu(x: Float32Array, y: Float32Array, n: number, alpha: number): void {
    checkLengths('leakyRelu', n, x, y);
    this.kernels.leakyRelu(this.offset(x, 'x'), this.offset(y, 'y'), n, alpha);
  }

  leakyReluBackward(x: Float32Array, dy: Float32Array, dx: Float32Array, n: number, alpha: number): void {
    checkLengths('leakyReluBackward', n, x, dy, dx);
    this.kernels.leakyReluBackward(this.offset(x, 'x'), this.offset(dy, 'dy'), this.offset(dx, 'dx'), n, alpha);
  }

  sgdUpdate(p: Float32Array, g: Float32Array, v: Float32Array | null, h: SgdHyper): void {
    checkSameLength('sgdUpdate', p, g, v);
    this.kernels.sgdUpdate(this.offset(p, 'params'), this.offset(g, 'grads'), v ? this.offset(v, 'velocity') : 0, p.length, h.lr, h.momentum, h.weightDecay, h.nesterov ? 1 : 0);
  }

  adamUpdate(p: Float32Array, g: Float32Array, m: Float32Array, v: Float32Array, h: AdamHyper): void {
    checkSameLength('adamUpdate', p, g, m, v);
    this.kernels.adamUpdate(
      this.offset(p, 'params'), this.offset(g, 'grads'), this.offset(m, 'expAvg'), this.offset(v, 'expAvgSq'), p.length,
      h.stepSize, h.beta1, h.beta2, h.eps, h.rootCorrection, h.l2, h.shrink,
    );
  }

  protected offset(x: Float32Array, name: string): number {
    if (x.buffer !== this.memory.buffer) {
      throw new CoreError('ERR_BACKEND', `wasm backend: ${name} was not allocated by this backend (use backend.alloc), so the kernel cannot see it`);
    }
    return x.byteOffset;
  }
}

/**
 * The kernels built with relaxed-SIMD fused multiply-add (about 15% faster GEMM) when this engine
 * takes them, else the plain SIMD build. Node 20 keeps relaxed SIMD behind a V8 flag, which can be
 * set before the module compiles.
 */
function loadKernelBytes(wantFma: boolean): { bytes: Buffer; fma: boolean } {
  if (wantFma) {
    try {
      const bytes = readFileSync(new URL('../../build/kernels-fma.wasm', import.meta.url));
      if (!WebAssembly.validate(bytes)) v8.setFlagsFromString('--experimental-wasm-relaxed-simd');
      if (WebAssembly.validate(bytes)) return { bytes, fma: true };
    } catch {
      // no FMA build: fall through to the plain one
    }
  }
  return { bytes: readFileSync(new URL('../../build/kernels.wasm', import.meta.url)), fma: false };
}

function checkRows(what: string, matrix: Float32Array, row: Float32Array, rows: number, cols: number): void {
  if (matrix.length < rows * cols || row.length < cols) {
    throw new CoreError('ERR_SHAPE', `${what}: ${rows}×${cols} needs ${rows * cols} and ${cols} elements, got ${matrix.length} and ${row.length}`);
  }
}

function align(n: number): number {
  return Math.ceil(n / ALIGN) * ALIGN;
}
