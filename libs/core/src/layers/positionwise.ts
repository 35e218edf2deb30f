import type { ParameterDecl, ParameterStore } from '../parameter-store.js';
import type { Rng } from '../rng.js';
import type { Layer } from './layer.js';

/**
 * A layer over the last axis of a sequence: each of a sample's `positions` rows goes through
 * `inner` as a row of its own (a dense layer on [T, C] is nn.Linear on every position), so the
 * GEMMs run over batch·T rows at once.
 */
export class Positionwise implements Layer {
  readonly inputSize: number;
  readonly outputSize: number;

  constructor(
    readonly inner: Layer,
    readonly positions: number,
  ) {
    this.inputSize = inner.inputSize * positions;
    this.outputSize = inner.outputSize * positions;
  }

  get name(): string {
    return this.inner.name;
  }
  get type(): string {
    return this.inner.type;
  }
  parameters(): ParameterDecl[] {
    return this.inner.parameters();
  }
  bind(store: ParameterStore): void {
    this.inner.bind(store);
  }
  initialize(rng: Rng): void {
    this.inner.initialize(rng);
  }
  forward(x: Float32Array, batch: number, training: boolean): Float32Array {
    return this.inner.forward(x, batch * this.positions, training);
  }
  backward(dy: Float32Array, batch: number, needInputGrad: boolean): Float32Array | null {
    return this.inner.backward(dy, batch * this.positions, needInputGrad);
  }
  step(x: Float32Array): Float32Array {
    return this.inner.forward(x, 1, false);
  }
}
