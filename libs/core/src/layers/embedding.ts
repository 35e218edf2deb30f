import type { Backend } from '../backend.js';
import { CoreError } from '../errors.js';
import type { ParameterDecl, ParameterStore } from '../parameter-store.js';
import type { Rng } from '../rng.js';
import { BatchBuffer, type Layer, RowBuffer } from './layer.js';

/** GPT-2's initial scale of embeddings and projections. */
export const GPT_INIT_STD = 0.02;

/**
 * Token and learned position embedding: a sample is `context` token ids (as floats), its output
 * the `context`×`dim` rows y[t] = W[id_t] + P[t]. Both tables start at N(0, 0.02²), as GPT-2's.
 * Its input is ids, so it has no input gradient.
 */
export class Embedding implements Layer {
  readonly type = 'embedding';
  readonly inputSize: number;
  readonly outputSize: number;
  private table!: Float32Array;
  private position!: Float32Array;
  private gradTable!: Float32Array;
  private gradPosition!: Float32Array;
  private ids: Float32Array | null = null;
  private readonly out: BatchBuffer;
  private readonly row: RowBuffer;

  constructor(
    readonly name: string,
    readonly context: number,
    readonly vocab: number,
    readonly dim: number,
    backend: Backend,
    /** The model's head shares the token table: its gradient is there already, this layer adds to it. */
    readonly tiedHead = false,
  ) {
    this.inputSize = context;
    this.outputSize = context * dim;
    this.out = new BatchBuffer(backend, this.outputSize);
    this.row = new RowBuffer(backend, dim);
  }

  parameters(): ParameterDecl[] {
    return [
      { name: `${this.name}.weight`, shape: [this.vocab, this.dim], role: 'weight' },
      { name: `${this.name}.position`, shape: [this.context, this.dim], role: 'weight' },
    ];
  }

  bind(store: ParameterStore): void {
    this.table = store.value(`${this.name}.weight`);
    this.position = store.value(`${this.name}.position`);
    this.gradTable = store.grad(`${this.name}.weight`);
    this.gradPosition = store.grad(`${this.name}.position`);
  }

  initialize(rng: Rng): void {
    rng.fillNormal(this.table, GPT_INIT_STD);
    rng.fillNormal(this.position, GPT_INIT_STD);
  }

  forward(x: Float32Array, batch: number, _training: boolean): Float32Array {
    const { context: T, dim: C, vocab: V } = this;
    if (x.length < batch * T) throw new CoreError('ERR_SHAPE', `${this.name} (embedding): input has ${x.length} token ids, a batch of ${batch} needs ${batch}×${T}`);
    const y = this.out.get(batch);
    for (let r = 0; r < batch * T; r++) {
      const id = x[r];
      if (!(Number.isInteger(id) && id >= 0 && id < V)) throw new CoreError('ERR_SHAPE', `${this.name} (embedding): token id ${id} at position ${r % T} of sample ${Math.floor(r / T)} is outside the vocabulary 0..${V - 1}`);
      const w = id * C;
      const p = (r % T) * C;
      const o = r * C;
      for (let c = 0; c < C; c++) y[o + c] = this.table[w + c] + this.position[p + c];
    }
    this.ids = x;
    return y;
  }

  /** x[0]: the token id at `position`. */
  step(x: Float32Array, position: number): Float32Array {
    const { dim: C, vocab: V } = this;
    const id = x[0];
    if (!(Number.isInteger(id) && id >= 0 && id < V)) throw new CoreError('ERR_SHAPE', `${this.name} (embedding): token id ${id} is outside the vocabulary 0..${V - 1}`);
    if (!(Number.isInteger(position) && position >= 0 && position < this.context)) throw new CoreError('ERR_SHAPE', `${this.name} (embedding): position ${position} is outside the context 0..${this.context - 1}`);
    const y = this.row.get();
    for (let c = 0; c < C; c++) y[c] = this.table[id * C + c] + this.position[position * C + c];
    return y;
  }

  backward(dy: Float32Array, batch: number, _needInputGrad: boolean): Float32Array | null {
    if (!this.ids) throw new CoreError('ERR_STATE', `${this.name}: backward called before forward`);
    const { context: T, dim: C } = this;
    if (!this.tiedHead) this.gradTable.fill(0);
    this.gradPosition.fill(0);
    for (let r = 0; r < batch * T; r++) {
      const w = this.ids[r] * C;
      const p = (r % T) * C;
      const o = r * C;
      for (let c = 0; c < C; c++) {
        this.gradTable[w + c] += dy[o + c];
        this.gradPosition[p + c] += dy[o + c];
      }
    }
    return null;
  }
}
