import type { Backend } from '../backend.js';
import { CoreError } from '../errors.js';
import type { ParameterDecl, ParameterStore } from '../parameter-store.js';
import type { Rng } from '../rng.js';
import { BatchBuffer, type Layer, RowBuffer } from './layer.js';

/**
 * y = x + f(x), f its layers in order (a pre-norm transformer block's two halves: LayerNorm then
 * attention, LayerNorm then the MLP). The gradient takes both paths: dx = dy + df/dx·dy.
 */
export class Residual implements Layer {
  readonly type = 'residual';
  readonly outputSize: number;
  private readonly out: BatchBuffer;
  private readonly dx: BatchBuffer;

  constructor(
    readonly name: string,
    readonly inputSize: number,
    readonly layers: readonly Layer[],
    private readonly backend: Backend,
  ) {
    this.outputSize = inputSize;
    if (layers.length === 0 || layers[0].inputSize !== inputSize || layers.at(-1)!.outputSize !== inputSize) {
      throw new CoreError('ERR_SPEC', `${name} (residual): its layers must take and give ${inputSize} values per sample`);
    }
    this.out = new BatchBuffer(backend, inputSize);
    this.dx = new BatchBuffer(backend, inputSize);
  }

  parameters(): ParameterDecl[] {
    return this.layers.flatMap((l) => l.parameters());
  }
  bind(store: ParameterStore): void {
    for (const l of this.layers) l.bind(store);
  }
  initialize(rng: Rng): void {
    for (const l of this.layers) l.initialize(rng);
  }

  forward(x: Float32Array, batch: number, training: boolean): Float32Array {
    let h = x;
    for (const l of this.layers) h = l.forward(h, batch, training);
    const y = this.out.get(batch);
    const n = batch * this.inputSize;
    for (let i = 0; i < n; i++) y[i] = x[i] + h[i];
    return y;
  }

  step(x: Float32Array, position: number): Float32Array {
    let h = x;
    for (const l of this.layers) {
      if (!l.step) throw new CoreError('ERR_SPEC', `${l.name} (${l.type}) cannot decode one position at a time`);
      h = l.step(h, position);
    }
    this.row ??= new RowBuffer(this.backend, x.length);
    const y = this.row.get().subarray(0, x.length);
    for (let i = 0; i < x.length; i++) y[i] = x[i] + h[i];
    return y;
  }
  private row: RowBuffer | null = null;

  backward(dy: Float32Array, batch: number, needInputGrad: boolean): Float32Array | null {
    let g: Float32Array | null = dy;
    for (let i = this.layers.length - 1; i >= 0 && g; i--) g = this.layers[i].backward(g, batch, true);
    if (!needInputGrad) return null;
    const dx = this.dx.get(batch);
    const n = batch * this.inputSize;
    for (let i = 0; i < n; i++) dx[i] = dy[i] + g![i];
    return dx;
  }
}
