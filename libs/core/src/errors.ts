/** Stable codes for everything @ringtrain/core throws. */
export type CoreErrorCode =
  | 'ERR_SHAPE' // arrays or dimensions that do not fit together
  | 'ERR_SPEC' // an invalid model spec
  | 'ERR_HYPERPARAM' // an invalid optimizer, schedule or initializer setting
  | 'ERR_BACKEND' // a backend that cannot load or run
  | 'ERR_ARENA_FULL' // the WASM backend's memory is exhausted
  | 'ERR_NON_FINITE' // NaN or ±Infinity where a finite number is required
  | 'ERR_STATE'; // a saved state that does not match what it is loaded into

export class CoreError extends Error {
  constructor(
    readonly code: CoreErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'CoreError';
  }
}
