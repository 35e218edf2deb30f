import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { checkGemm } from '../backend.js';
import { CoreError } from '../errors.js';
import { WasmBackend, type WasmBackendOptions } from './wasm-backend.js';

interface Addon {
  gemm(ta: boolean, tb: boolean, m: number, n: number, k: number, a: Float32Array, b: Float32Array, c: Float32Array, acc: boolean): void;
  setThreads(n: number): void;
  config(): string;
}

const addonPath = fileURLToPath(new URL('../../native/build/Release/ringtrain_blas.node', import.meta.url));

/** Loads the OpenBLAS addon, or says why it cannot. */
export function loadNativeAddon(): { addon: Addon } | { reason: string } {
  if (process.env.RINGTRAIN_DISABLE_NATIVE === '1') return { reason: 'disabled by RINGTRAIN_DISABLE_NATIVE=1' };
  if (!existsSync(addonPath)) return { reason: `addon not built (${addonPath} is missing)` };
  try {
    return { addon: createRequire(import.meta.url)(addonPath) as Addon };
  } catch (err) {
    return { reason: `addon failed to load: ${(err as Error).message}` };
  }
}

/**
 * GEMM by the system's OpenBLAS `cblas_sgemm` through the project's N-API addon, pinned to one
 * thread; everything else (memory, optimizer updates) as the WASM backend, whose SIMD loops beat
 * plain JS on the elementwise work. The addon reads the WASM memory in place: no copies.
 */
export class NativeBackend extends WasmBackend {
  override readonly name = 'native' as const;
  override readonly description: string;
  private readonly addon: Addon;

  constructor(options: WasmBackendOptions = {}) {
    super(options);
    const loaded = loadNativeAddon();
    if ('reason' in loaded) throw new CoreError('ERR_BACKEND', `native backend unavailable: ${loaded.reason}`);
    this.addon = loaded.addon;
    this.description = `native (${this.addon.config().trim()}, 1 thread; elementwise on WASM SIMD)`;
  }

  override   gemm(transA: boolean, transB: boolean, m: number, n: number, k: number, a: Float32Array, b: Float32Array, c: Float32Array, accumulate = false): void {
    checkGemm(m, n, k, a, b, c);
    this.offset(a, 'A');
    this.offset(b, 'B');
    this.offset(c, 'C');
    this.addon.gemm(transA, transB, m, n, k, a, b, c, accumulate);
  }
}
