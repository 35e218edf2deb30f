import { CoreError } from './errors.js';

/** Elements in a tensor of `shape`; refuses negative or fractional dimensions. */
export function shapeSize(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw new CoreError('ERR_SHAPE', `invalid dimension ${d} in shape [${shape.join(', ')}]`);
    n *= d;
  }
  return n;
}
