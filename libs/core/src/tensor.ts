import { CoreError } from './errors.js';

/** A shaped view on a Float32Array. The data is never copied: tensors are windows on flat buffers. */
export class Tensor {
  readonly size: number;

  constructor(
    readonly data: Float32Array,
    readonly shape: readonly number[],
  ) {
    this.size = shapeSize(shape);
    if (data.length !== this.size) {
      throw new CoreError('ERR_SHAPE', `Tensor: shape [${shape.join(', ')}] needs ${this.size} elements, data has ${data.length}`);
    }
  }

  /** Element at a multi-index (row-major); for tests and inspection, not hot loops. */
  at(...index: number[]): number {
    if (index.length !== this.shape.length) throw new CoreError('ERR_SHAPE', `Tensor.at: ${index.length} indices for rank ${this.shape.length}`);
    let flat = 0;
    for (let d = 0; d < index.length; d++) {
      if (index[d] < 0 || index[d] >= this.shape[d]) throw new CoreError('ERR_SHAPE', `Tensor.at: index ${index[d]} out of range for dim ${d} of size ${this.shape[d]}`);
      flat = flat * this.shape[d] + index[d];
    }
    return this.data[flat];
  }
}

export function shapeSize(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw new CoreError('ERR_SHAPE', `invalid dimension ${d} in shape [${shape.join(', ')}]`);
    n *= d;
  }
  return n;
}
