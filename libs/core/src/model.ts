import type { Backend } from './backend.js';
import { CoreError } from './errors.js';
import type { Initializer } from './initializers.js';
import { Gelu, LeakyRelu, Relu, Sigmoid, Tanh } from './layers/activations.js';
import { Conv2d } from './layers/conv2d.js';
import { CausalSelfAttention } from './layers/attention.js';
import { Dense } from './layers/dense.js';
import { Embedding } from './layers/embedding.js';
import { LayerNorm } from './layers/layernorm.js';
import { Positionwise } from './layers/positionwise.js';
import { Residual } from './layers/residual.js';
import { GroupNorm } from './layers/groupnorm.js';
import { Flatten, GlobalAvgPool, Pool2d } from './layers/pooling.js';
import { Dropout } from './layers/dropout.js';
import { BatchBuffer, type Layer } from './layers/layer.js';
import { createLoss, type Loss, type Targets } from './losses.js';
import { type LayerSpec, layerOutputShape, type ModelSpec, parseModelSpec, positionsOf, shapeLayers } from './model-spec.js';
import { argmaxRow } from './ops.js';
import { ParameterStore } from './parameter-store.js';
import { Rng } from './rng.js';

/**
 * ReLU (or a leaky one, α ≥ 0) followed by max pooling runs as max pooling, then the activation on
 * a quarter of the values (lenet: 0.5 ms of a 12 ms step). The maximum commutes with a
 * non-decreasing map, and so do the gradients: where the window's maximum is positive, both orders
 * pick its first occurrence; where it is not, the activation's derivative (0 for ReLU) zeroes the
 * window's gradient either way. The spec, parameter names and shapes seen from outside stay as written.
 */
function poolBeforeActivation(layers: Layer[], backend: Backend): Layer[] {
  const out = [...layers];
  for (let i = 0; i + 1 < out.length; i++) {
    const act = out[i];
    const pool = out[i + 1];
    if (!(act instanceof LeakyRelu && act.alpha >= 0 && pool instanceof Pool2d && pool.type === 'maxpool2d')) continue;
    const pooledAct = act instanceof Relu ? new Relu(act.name, pool.outputSize, backend) : new LeakyRelu(act.name, pool.outputSize, backend, act.alpha);
    out.splice(i, 2, pool, pooledAct);
    i++;
  }
  return out;
}

export interface ModelOptions {
  /** Seeds the initial weights and the dropout masks. */
  seed: number;
}

export interface BatchResult {
  /** Mean loss over the batch. */
  loss: number;
  /** Samples whose arg-max output is the label (classification only; 0 otherwise). */
  correct: number;
}

/**
 * A sequential model built from a JSON spec: its layers, its flat parameter and gradient buffers,
 * and its loss. Parameter names follow the spec's layer index: `layers.0.weight`, `layers.0.bias`, …
 */
export class Model {
  readonly spec: ModelSpec;
  readonly layers: readonly Layer[];
  readonly params: ParameterStore;
  readonly loss: Loss;
  /** Dropout masks draw from this; a checkpoint saves its state. */
  readonly dropoutRng: Rng;
  private readonly lossGrad: BatchBuffer;
  /** Rows of the output each sample has: T for a sequence model (a prediction per token), else 1. */
  readonly positions: number;
  /** Where each layer's parameters (if any) begin in the flat buffers: layer by layer, in order. */
  private readonly paramStart: number[];

  constructor(
    spec: unknown,
    readonly backend: Backend,
    options: ModelOptions,
  ) {
    this.spec = parseModelSpec(spec);
    const initRng = new Rng(options.seed);
    this.dropoutRng = new Rng(options.seed ^ 0x5eed);
    const shaped = shapeLayers(this.spec);
    const layers = poolBeforeActivation(shaped.map((l, i) => this.createLayer(l.spec, l.input, `layers.${i}`, this.spec.layers[i + 1])), backend);
    // A sequence model's output is [T, classes]: its loss is taken at every one of the T positions.
    this.positions = positionsOf(this.spec);
    this.layers = layers;
    this.params = new ParameterStore(backend, layers.flatMap((l) => l.parameters()));
    // Where the store put each layer's first tensor; a layer without one starts where the next does.
    this.paramStart = layers.map(() => this.params.length);
    for (let i = layers.length - 1; i >= 0; i--) {
      const first = layers[i].parameters()[0];
      this.paramStart[i] = first ? this.params.info(first.name).offset : (this.paramStart[i + 1] ?? this.params.length);
    }
    for (const l of layers) {
      l.bind(this.params);
      l.initialize(initRng);
    }
    this.loss = createLoss(this.spec.loss, backend);
    this.lossGrad = new BatchBuffer(backend, this.outputSize);
  }

  get inputSize(): number {
    return this.spec.inputSize;
  }

  get outputSize(): number {
    return this.layers[this.layers.length - 1].outputSize;
  }

  /** Runs the layers; returns the output buffer (owned by the last layer, valid until the next call). */
  forward(x: Float32Array, batch: number, training = false): Float32Array {
    if (x.length < batch * this.inputSize) {
      throw new CoreError('ERR_SHAPE', `model input: ${x.length} values for a batch of ${batch}×${this.inputSize}`);
    }
    let h = x;
    for (const layer of this.layers) h = layer.forward(h, batch, training);
    return h;
  }

  /** Forward, loss and backward on one batch: fills `params.grads` with d(mean loss)/d(params). */
  computeGradients(x: Float32Array, targets: Targets, batch: number): BatchResult {
    const stages = this.gradientStages(x, targets, batch);
    let next = stages.next();
    while (!next.done) next = stages.next();
    return next.value;
  }

  /**
   * `computeGradients` one layer at a time: after each layer's backward it yields the offset in
   * `params.grads` from which the gradients are final (the layers run last to first, so it only
   * falls, to 0). A data-parallel step all-reduces that finished tail while the layers below compute.
   */
  *gradientStages(x: Float32Array, targets: Targets, batch: number): Generator<number, BatchResult, void> {
    const out = this.forward(x, batch, true);
    const grad = this.lossGrad.get(batch);
    const loss = this.loss.compute(out, targets, batch * this.positions, this.outputSize / this.positions, grad);
    const correct = this.countCorrect(out, targets, batch);
    let g: Float32Array | null = grad;
    for (let i = this.layers.length - 1; i >= 0 && g; i--) {
      g = this.layers[i].backward(g, batch, i > 0);
      yield this.paramStart[i];
    }
    return { loss, correct };
  }

  /**
   * Incremental decoding of a language model: the logits for `token` at `position`, given the
   * tokens stepped at positions 0…position−1 before it (since the last position 0). Each call costs
   * one position: attention keeps the earlier positions' keys and values. The row is the model's,
   * valid until its next call.
   */
  step(token: number, position: number): Float32Array {
    if (this.positions < 2) throw new CoreError('ERR_SPEC', 'step: the model is not a language model (its output is not one prediction per input token)');
    this.token ??= this.backend.alloc(1);
    this.token[0] = token;
    let h = this.token;
    for (const layer of this.layers) {
      if (!layer.step) throw new CoreError('ERR_SPEC', `step: ${layer.name} (${layer.type}) cannot decode one position at a time`);
      h = layer.step(h, position);
    }
    return h;
  }
  private token: Float32Array | null = null;

  /** Loss and correct count without gradients (evaluation mode: no dropout). */
  evaluate(x: Float32Array, targets: Targets, batch: number): BatchResult {
    const out = this.forward(x, batch, false);
    return { loss: this.loss.compute(out, targets, batch * this.positions, this.outputSize / this.positions, null), correct: this.countCorrect(out, targets, batch) };
  }

  private countCorrect(out: Float32Array, targets: Targets, batch: number): number {
    if (!(targets instanceof Int32Array)) return 0;
    let correct = 0;
    const classes = this.outputSize / this.positions;
    for (let r = 0; r < batch * this.positions; r++) if (argmaxRow(out, r, classes) === targets[r]) correct++;
    return correct;
  }

  private createLayer(spec: LayerSpec, input: number[], name: string, next: LayerSpec | undefined): Layer {
    const b = this.backend;
    const width = input.reduce((x, y) => x * y, 1);
    const image = input as unknown as [number, number, number];
    // A 2-D input is a sequence [T, C]: dense and LayerNorm act on each of its T rows.
    const [rows, last] = input.length === 2 ? input : [1, width];
    switch (spec.type) {
      case 'dense': {
        // A tied head's weight is the token table of the embedding that comes first (layers.0).
        const dense = new Dense(name, last, spec.units, spec.init ?? defaultInit(next), b, spec.tied ? 'layers.0.weight' : undefined);
        return rows > 1 ? new Positionwise(dense, rows) : dense;
      }
      case 'embedding':
        return new Embedding(name, input[0], spec.vocab, spec.dim, b, this.spec.layers.some((l) => l.type === 'dense' && l.tied));
      case 'layernorm':
        return new LayerNorm(name, rows, last, spec.eps ?? 1e-5, spec.bias ?? true, b);
      case 'attention':
        return new CausalSelfAttention(name, input[0], input[1], spec.heads, b);
      case 'residual': {
        let shape = input;
        const inner = spec.layers.map((l, j) => {
          const layer = this.createLayer(l, shape, `${name}.layers.${j}`, spec.layers[j + 1]);
          shape = layerOutputShape(l, shape);
          return layer;
        });
        return new Residual(name, width, inner, b);
      }
      case 'conv2d':
        return new Conv2d(name, image, { filters: spec.filters, kernelSize: spec.kernelSize, stride: spec.stride ?? 1, padding: spec.padding ?? 'valid', init: spec.init ?? defaultInit(next) }, b);
      case 'maxpool2d':
      case 'avgpool2d':
        return new Pool2d(name, spec.type, image, spec.size, spec.stride ?? spec.size, b);
      case 'globalavgpool':
        return new GlobalAvgPool(name, image, b);
      case 'flatten':
        return new Flatten(name, width);
      case 'groupnorm':
        return new GroupNorm(name, image, spec.groups, spec.eps ?? 1e-5, b);
      case 'relu':
        return new Relu(name, width, b);
      case 'leaky_relu':
        return new LeakyRelu(name, width, b, spec.alpha ?? 0.01);
      case 'tanh':
        return new Tanh(name, width, b);
      case 'sigmoid':
        return new Sigmoid(name, width, b);
      case 'gelu':
        return new Gelu(name, width, b);
      case 'dropout':
        return new Dropout(name, width, spec.rate, this.dropoutRng, b);
    }
  }
}

/** He for ReLU-like activations that follow, Xavier for tanh, sigmoid and the output layer. */
function defaultInit(next: LayerSpec | undefined): Initializer {
  return next && (next.type === 'relu' || next.type === 'leaky_relu' || next.type === 'gelu') ? 'he_normal' : 'xavier_uniform';
}
