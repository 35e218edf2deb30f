import type { Backend, BackendName } from '../backend.js';
import { CoreError } from '../errors.js';
import { loadNativeAddon, NativeBackend } from './native-backend.js';
import { ReferenceBackend } from './reference-backend.js';
import { WasmBackend, type WasmBackendOptions } from './wasm-backend.js';

export type BackendChoice = BackendName | 'auto';

export const NATIVE_HINT =
  'native OpenBLAS backend unavailable; to enable it: apt-get install -y libopenblas-dev g++ make python3, then npm run build:native';

export interface CreatedBackend {
  backend: Backend;
  /** Set when `auto` fell back from native: why, and how to enable it. */
  hint?: string;
}

/** `auto` picks the fastest backend that loads here: native, else WASM SIMD. */
export function createBackend(choice: BackendChoice = 'auto', options: WasmBackendOptions = {}): CreatedBackend {
  switch (choice) {
    case 'reference':
      return { backend: new ReferenceBackend() };
    case 'wasm':
      return { backend: new WasmBackend(options) };
    case 'native':
      return { backend: new NativeBackend(options) };
    case 'auto': {
      const native = loadNativeAddon();
      if ('addon' in native) return { backend: new NativeBackend(options) };
      return { backend: new WasmBackend(options), hint: `${NATIVE_HINT} (${native.reason})` };
    }
    default:
      throw new CoreError('ERR_BACKEND', `unknown backend "${String(choice)}"; expected auto, native, wasm or reference`);
  }
}
