import type { Dataset } from './dataset.js';
import { DataError } from './errors.js';

export type Allocator = (length: number) => Float32Array;

/**
 * Copies chosen rows of a dataset into buffers allocated once (by the compute backend, so the
 * model reads them without a copy) and reused for every batch.
 */
export class Batcher {
  readonly x: Float32Array;
  readonly labels: Int32Array | null;
  readonly targets: Float32Array | null;

  constructor(
    readonly dataset: Dataset,
    readonly capacity: number,
    alloc: Allocator = (n) => new Float32Array(n),
  ) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new DataError('ERR_DATA_CONFIG', `Batcher: capacity must be a positive integer, got ${capacity}`);
    this.x = alloc(capacity * dataset.features);
    this.labels = dataset.labels ? new Int32Array(capacity * (dataset.labelWidth ?? 1)) : null;
    this.targets = dataset.targets ? alloc(capacity * dataset.targetSize) : null;
  }

  /** Loads rows order[start .. start+count) and returns how many were loaded (fewer at the end). */
  fill(order: ArrayLike<number>, start: number, count: number): number {
    const n = Math.max(0, Math.min(count, this.capacity, order.length - start));
    for (let r = 0; r < n; r++) this.copyRow(order[start + r], r);
    return n;
  }

  /** Loads rows start .. start+count in dataset order (evaluation) and returns how many. */
  fillRange(start: number, count: number): number {
    const n = Math.max(0, Math.min(count, this.capacity, this.dataset.size - start));
    for (let r = 0; r < n; r++) this.copyRow(start + r, r);
    return n;
  }

  private copyRow(i: number, r: number): void {
    const { features, targetSize, codes, codeValues, readRow } = this.dataset;
    if (readRow) {
      readRow(i, this.x, r * features);
    } else if (codes) {
      // Bytes become floats here, one batch at a time, in this reused buffer.
      const x = this.x;
      for (let f = 0, src = i * features, dst = r * features; f < features; f++) x[dst + f] = codeValues![codes[src + f]];
    } else {
      this.x.set(this.dataset.x.subarray(i * features, (i + 1) * features), r * features);
    }
    const w = this.dataset.labelWidth ?? 1;
    if (this.labels) {
      if (w === 1) this.labels[r] = this.dataset.labels![i];
      else this.labels.set(this.dataset.labels!.subarray(i * w, (i + 1) * w), r * w);
    }
    if (this.targets) this.targets.set(this.dataset.targets!.subarray(i * targetSize, (i + 1) * targetSize), r * targetSize);
  }

  /** The loss targets of the loaded rows: labels for classification, target rows for regression. */
  batchTargets(): Int32Array | Float32Array {
    return (this.labels ?? this.targets)!;
  }
}
