import type { Backend } from '../backend.js';
import { CoreError } from '../errors.js';
import { type Initializer, initialize } from '../initializers.js';
import type { ParameterDecl, ParameterStore } from '../parameter-store.js';
import type { Rng } from '../rng.js';
import { BatchBuffer, type Layer } from './layer.js';

/**
 * y = x·Wᵀ + b with W stored [out, in] (as PyTorch's nn.Linear, so exported weights match).
 * The three GEMM forms: forward x·Wᵀ, weight gradient dyᵀ·x, input gradient dy·W. A tied layer's W
 * is another layer's tensor (`tiedTo`: a language model's head and its token embedding): it declares
 * only its bias, and its weight gradient is written first, for that layer to add its own to.
 */
export class Dense implements Layer {
  readonly type = 'dense';
  private weight!: Float32Array;
  private bias!: Float32Array;
  private gradWeight!: Float32Array;
  private gradBias!: Float32Array;
  private input: Float32Array | null = null;
  private readonly out: BatchBuffer;
  private readonly dx: BatchBuffer;

  constructor(
    readonly name: string,
    readonly inputSize: number,
    readonly outputSize: number,
    readonly init: Initializer,
    private readonly backend: Backend,
    readonly tiedTo?: string,
  ) {
    this.out = new BatchBuffer(backend, outputSize);
    this.dx = new BatchBuffer(backend, inputSize);
  }

  parameters(): ParameterDecl[] {
    const bias: ParameterDecl = { name: `${this.name}.bias`, shape: [this.outputSize], role: 'bias' };
    return this.tiedTo ? [bias] : [{ name: `${this.name}.weight`, shape: [this.outputSize, this.inputSize], role: 'weight' }, bias];
  }

  bind(store: ParameterStore): void {
    const weight = this.tiedTo ?? `${this.name}.weight`;
    if (this.tiedTo && store.info(weight).shape.join('x') !== `${this.outputSize}x${this.inputSize}`) throw new CoreError('ERR_SPEC', `${this.name}: tied to ${weight} of shape [${store.info(weight).shape}], needs [${this.outputSize}, ${this.inputSize}]`);
    this.weight = store.value(weight);
    this.bias = store.value(`${this.name}.bias`);
    this.gradWeight = store.grad(weight);
    this.gradBias = store.grad(`${this.name}.bias`);
  }

  initialize(rng: Rng): void {
    if (!this.tiedTo) initialize(this.weight, this.init, this.inputSize, this.outputSize, rng);
    this.bias.fill(0);
  }

  forward(x: Float32Array, batch: number, _training: boolean): Float32Array {
    if (x.length < batch * this.inputSize) {
      throw new CoreError('ERR_SHAPE', `${this.name} (dense ${this.inputSize}→${this.outputSize}): input has ${x.length} values, a batch of ${batch} needs ${batch}×${this.inputSize}`);
    }
    const y = this.out.get(batch);
    this.backend.gemm(false, true, batch, this.outputSize, this.inputSize, x, this.weight, y);
    this.backend.addBiasRows(y, this.bias, batch, this.outputSize);
    this.input = x;
    return y;
  }

  backward(dy: Float32Array, batch: number, needInputGrad: boolean): Float32Array | null {
    if (!this.input) throw new CoreError('ERR_STATE', `${this.name}: backward called before forward`);
    this.backend.gemm(true, false, this.outputSize, this.inputSize, batch, dy, this.input, this.gradWeight);
    this.backend.sumRows(dy, batch, this.outputSize, this.gradBias);
    if (!needInputGrad) return null;
    const dx = this.dx.get(batch);
    this.backend.gemm(false, false, batch, this.inputSize, this.outputSize, dy, this.weight, dx);
    return dx;
  }
}
