import { createHash } from 'node:crypto';
import type { Backend } from './backend.js';
import { CoreError } from './errors.js';
import { sumSquares } from './ops.js';
import { shapeSize } from './shape.js';

export type ParameterRole = 'weight' | 'bias';

export interface ParameterDecl {
  name: string;
  shape: number[];
  role: ParameterRole;
}

/** Where one named tensor lives inside the flat buffers. */
export interface TensorInfo extends ParameterDecl {
  offset: number;
  length: number;
}

export interface ParameterCounts {
  weights: number;
  biases: number;
  total: number;
}

/**
 * All parameters of a model in one contiguous Float32Array, and all gradients in another of the
 * same layout; per-tensor arrays are views into them. All-reduce, optimizer and checkpoint work on
 * the flat buffers directly.
 */
export class ParameterStore {
  readonly tensors: readonly TensorInfo[];
  readonly values: Float32Array;
  readonly grads: Float32Array;
  private readonly byName: Map<string, TensorInfo>;

  constructor(
    readonly backend: Backend,
    decls: ParameterDecl[],
  ) {
    let offset = 0;
    const tensors: TensorInfo[] = [];
    this.byName = new Map();
    for (const d of decls) {
      if (this.byName.has(d.name)) throw new CoreError('ERR_SPEC', `parameter name "${d.name}" is declared twice`);
      const info = { ...d, shape: [...d.shape], offset, length: shapeSize(d.shape) };
      tensors.push(info);
      this.byName.set(d.name, info);
      offset += info.length;
    }
    this.tensors = tensors;
    this.values = backend.alloc(offset);
    this.grads = backend.alloc(offset);
  }

  get length(): number {
    return this.values.length;
  }

  info(name: string): TensorInfo {
    const info = this.byName.get(name);
    if (!info) throw new CoreError('ERR_SPEC', `no parameter named "${name}"; have ${[...this.byName.keys()].join(', ')}`);
    return info;
  }

  /** The parameter `name` as a view into `values`. */
  value(name: string): Float32Array {
    return this.viewOf(this.values, name);
  }

  /** The gradient of `name` as a view into `grads`. */
  grad(name: string): Float32Array {
    return this.viewOf(this.grads, name);
  }

  /** The tensor `name` inside any buffer laid out like `values` (e.g. an optimizer slot). */
  viewOf(buffer: Float32Array, name: string): Float32Array {
    const { offset, length } = this.info(name);
    return buffer.subarray(offset, offset + length);
  }

  /** A new zero-filled buffer with the same layout (one optimizer slot). */
  newSlot(): Float32Array {
    return this.backend.alloc(this.values.length);
  }

  /** The L2 norm of each tensor's slice of `buffer` (values, gradients, or a delta laid out alike). */
  tensorNorms(buffer: Float32Array = this.values): number[] {
    return this.tensors.map((t) => Math.sqrt(sumSquares(buffer.subarray(t.offset, t.offset + t.length))));
  }

  /** The tensor holding element `index` of the flat buffers. */
  tensorAt(index: number): TensorInfo | undefined {
    return this.tensors.find((t) => index >= t.offset && index < t.offset + t.length);
  }

  counts(): ParameterCounts {
    let weights = 0;
    let biases = 0;
    for (const t of this.tensors) {
      if (t.role === 'weight') weights += t.length;
      else biases += t.length;
    }
    return { weights, biases, total: weights + biases };
  }

  /** A short hash of the names, shapes and order: two replicas agree on it or cannot exchange buffers. */
  layoutHash(): string {
    const h = createHash('sha256');
    for (const t of this.tensors) h.update(`${t.name}:${t.shape.join('x')}@${t.offset};`);
    return h.digest('hex').slice(0, 16);
  }

  /** SHA-256 of the parameter bytes: replicas compare it to prove they hold identical weights. */
  valuesHash(): string {
    return createHash('sha256').update(new Uint8Array(this.values.buffer, this.values.byteOffset, this.values.byteLength)).digest('hex');
  }
}
