import { z } from 'zod';
import { CoreError } from './errors.js';
import { INITIALIZERS } from './initializers.js';
import { windowOver } from './layers/conv-geometry.js';
import { describeIssues, type SchemaVocabulary, schemaVocabulary } from './validation.js';

const positiveInt = z.number().int().positive();

/**
 * Bounds on a model from a file or the network, checked before anything is allocated: a spec of a
 * few bytes must not ask for gigabytes. Far above what this engine trains in useful time.
 */
export const MODEL_LIMITS = { maxWidth: 1 << 16, maxInputSize: 1 << 24, maxLayers: 256, maxParameters: 1 << 28, maxContext: 4096, maxHeads: 256 } as const;
const width = positiveInt.max(MODEL_LIMITS.maxWidth);

const small = positiveInt.max(64);

/** Every layer but a residual block (whose layers are these: blocks do not nest). */
const innerLayerSchemas = [
  /** `tied`: a language model's head whose weight is its embedding's token table (no weight of its own). */
  z.strictObject({ type: z.literal('dense'), units: width, init: z.enum(INITIALIZERS).optional(), tied: z.boolean().optional() }),
  /** Token ids [T] → rows [T, dim]: a token table and a learned position table. */
  z.strictObject({ type: z.literal('embedding'), vocab: width, dim: width }),
  /** Normalizes each row over its last axis; `bias` (default true) adds a learned shift. */
  z.strictObject({ type: z.literal('layernorm'), eps: z.number().positive().max(1).optional(), bias: z.boolean().optional() }),
  /** Causal multi-head self-attention over [T, C]; the heads split C. */
  z.strictObject({ type: z.literal('attention'), heads: positiveInt.max(MODEL_LIMITS.maxHeads) }),
  z.strictObject({
    type: z.literal('conv2d'),
    filters: width,
    kernelSize: small,
    stride: small.optional(),
    padding: z.union([z.enum(['same', 'valid']), z.number().int().min(0).max(64)]).optional(),
    init: z.enum(INITIALIZERS).optional(),
  }),
  z.strictObject({ type: z.literal('maxpool2d'), size: small, stride: small.optional() }),
  z.strictObject({ type: z.literal('avgpool2d'), size: small, stride: small.optional() }),
  z.strictObject({ type: z.literal('globalavgpool') }),
  z.strictObject({ type: z.literal('flatten') }),
  z.strictObject({ type: z.literal('groupnorm'), groups: width, eps: z.number().positive().max(1).optional() }),
  z.strictObject({ type: z.literal('relu') }),
  z.strictObject({ type: z.literal('leaky_relu'), alpha: z.number().min(0).max(1).optional() }),
  z.strictObject({ type: z.literal('tanh') }),
  z.strictObject({ type: z.literal('sigmoid') }),
  z.strictObject({ type: z.literal('gelu') }),
  z.strictObject({ type: z.literal('dropout'), rate: z.number().min(0).lt(1) }),
] as const;
const innerLayerSchema = z.discriminatedUnion('type', innerLayerSchemas);
const layerSpecSchema = z.discriminatedUnion('type', [
  ...innerLayerSchemas,
  /** y = x + f(x), f its layers: a pre-norm transformer block's half. */
  z.strictObject({ type: z.literal('residual'), layers: z.array(innerLayerSchema).min(1).max(16) }),
]);

export const LOSSES = ['softmax_cross_entropy', 'mse'] as const;

export const modelSpecSchema = z.strictObject({
  /** Features per sample; with `inputShape`, its product. */
  inputSize: positiveInt.max(MODEL_LIMITS.maxInputSize).optional(),
  /** [C, H, W] for images (NCHW), or [F]. */
  inputShape: z.array(width).min(1).max(3).optional(),
  layers: z.array(layerSpecSchema).min(1).max(MODEL_LIMITS.maxLayers),
  loss: z.enum(LOSSES),
});

export type LayerSpec = z.infer<typeof layerSpecSchema>;
export type InnerLayerSpec = z.infer<typeof innerLayerSchema>;
export type LossName = (typeof LOSSES)[number];
/** A model as JSON: the coordinator ships it, a checkpoint records it. `inputSize` is always there once parsed. */
export type ModelSpec = Omit<z.infer<typeof modelSpecSchema>, 'inputSize'> & { inputSize: number };

/** Layers that hold parameters. */
const LEARNED = new Set(['dense', 'conv2d', 'groupnorm', 'embedding', 'layernorm', 'attention', 'residual']);

/** The model spec's field names and layer types, for "did you mean" (made at the first invalid spec). */
let specVocabulary: SchemaVocabulary | undefined;

/** Checks a spec from anywhere (a file, the network) and returns it typed, or throws ERR_SPEC. */
export function parseModelSpec(input: unknown): ModelSpec {
  const parsed = modelSpecSchema.safeParse(expandShortForms(input), { reportInput: true });
  if (!parsed.success) throw new CoreError('ERR_SPEC', `invalid model spec: ${describeIssues(parsed.error, (specVocabulary ??= schemaVocabulary(modelSpecSchema)))}`);
  const { inputShape, inputSize } = parsed.data;
  if (inputShape && inputShape.length === 2) throw new CoreError('ERR_SPEC', `invalid model spec: inputShape [${inputShape.join(', ')}] must be [C, H, W] or [F]`);
  const size = inputShape ? inputShape.reduce((a, b) => a * b, 1) : inputSize;
  if (size === undefined) throw new CoreError('ERR_SPEC', 'invalid model spec: it needs inputSize or inputShape');
  if (size > MODEL_LIMITS.maxInputSize) throw new CoreError('ERR_SPEC', `invalid model spec: an input of ${size} values, more than ${MODEL_LIMITS.maxInputSize}`);
  if (inputSize !== undefined && inputSize !== size) throw new CoreError('ERR_SPEC', `invalid model spec: inputSize ${inputSize} does not match inputShape [${inputShape!.join(', ')}] (${size} values)`);
  const spec: ModelSpec = { ...parsed.data, inputSize: size };
  if (!spec.layers.some((l) => LEARNED.has(l.type))) throw new CoreError('ERR_SPEC', 'invalid model spec: it has no dense or conv2d layer, so nothing to learn');
  const count = parameterCount(spec);
  if (count > MODEL_LIMITS.maxParameters) throw new CoreError('ERR_SPEC', `invalid model spec: ${count} parameters, more than the ${MODEL_LIMITS.maxParameters} this engine takes`);
  const tied = spec.layers.findIndex((l) => l.type === 'dense' && l.tied);
  if (tied >= 0) {
    const [first, head] = [spec.layers[0], spec.layers[tied]];
    const width = shapeLayers(spec)[tied].input.at(-1);
    if (tied !== spec.layers.length - 1 || first.type !== 'embedding' || head.type !== 'dense' || head.units !== first.vocab || width !== first.dim) {
      throw new CoreError('ERR_SPEC', 'invalid model spec: a tied dense layer is the last layer of a language model, over the vocabulary of the embedding that comes first (units = vocab) and from its width (dim)');
    }
  }
  if (spec.loss === 'softmax_cross_entropy' && outputSize(spec) < 2) {
    throw new CoreError('ERR_SPEC', `invalid model spec: softmax_cross_entropy needs at least 2 outputs, the model has ${outputSize(spec)}`);
  }
  return spec;
}

/** One layer with the shapes it takes and gives (without the batch) and its parameter count. */
export interface ShapedLayer {
  spec: LayerSpec;
  input: number[];
  output: number[];
  parameters: number;
}

/**
 * Each layer's input and output shape, from the model's input on. Convolutions and pools need
 * [C, H, W]; dense layers take whatever comes flat. Every intermediate tensor is bounded, so a spec
 * of a few bytes cannot ask for gigabytes.
 */
export function shapeLayers(spec: Pick<ModelSpec, 'inputSize' | 'inputShape' | 'layers'>): ShapedLayer[] {
  let shape: number[] = spec.inputShape ? [...spec.inputShape] : [spec.inputSize];
  return spec.layers.map((l, i) => {
    const input = shape;
    const { output, parameters } = shapeOf(l, shape, `layers.${i} (${l.type})`);
    shape = output;
    return { spec: l, input, output, parameters };
  });
}

const size = (s: number[]): number => s.reduce((a, b) => a * b, 1);

/** The shape `l` gives for an input of `shape` (checked as shapeLayers checks it). */
export function layerOutputShape(l: LayerSpec, shape: number[]): number[] {
  return shapeOf(l, shape, l.type).output;
}

/**
 * One layer's output shape and parameter count. A 2-D shape is a sequence [T, C] (an embedding
 * makes one): dense layers and LayerNorm act on its last axis, attention across its rows.
 */
function shapeOf(l: LayerSpec, shape: number[], what: string): { output: number[]; parameters: number } {
  const image = (): [number, number, number] => {
    if (shape.length !== 3) throw new CoreError('ERR_SPEC', `invalid model spec: ${what} needs a [C, H, W] input, it gets [${shape.join(', ')}] (give the model an inputShape)`);
    return shape as [number, number, number];
  };
  const sequence = (): [number, number] => {
    if (shape.length !== 2) throw new CoreError('ERR_SPEC', `invalid model spec: ${what} needs a sequence [T, C] (an embedding first), it gets [${shape.join(', ')}]`);
    return shape as [number, number];
  };
  let output = shape;
  let parameters = 0;
  switch (l.type) {
    case 'dense':
      if (shape.length === 2) {
        parameters = shape[1] * l.units + l.units;
        output = [shape[0], l.units];
      } else {
        parameters = size(shape) * l.units + l.units;
        output = [l.units];
      }
      if (l.tied) parameters = l.units; // its weight is the embedding's token table, counted there
      break;
    case 'embedding': {
      if (shape.length !== 1) throw new CoreError('ERR_SPEC', `invalid model spec: ${what} takes [T] token ids, it gets [${shape.join(', ')}]`);
      const [t] = shape;
      if (t > MODEL_LIMITS.maxContext) throw new CoreError('ERR_SPEC', `invalid model spec: ${what}: a context of ${t} tokens, more than ${MODEL_LIMITS.maxContext}`);
      parameters = (l.vocab + t) * l.dim;
      output = [t, l.dim];
      break;
    }
    case 'layernorm': {
      const c = shape[shape.length - 1];
      parameters = (l.bias ?? true) ? 2 * c : c;
      break;
    }
    case 'attention': {
      const [t, c] = sequence();
      if (c % l.heads !== 0) throw new CoreError('ERR_SPEC', `invalid model spec: ${what}: ${l.heads} heads do not divide the dimension ${c}`);
      if (l.heads * t * t > MODEL_LIMITS.maxInputSize) throw new CoreError('ERR_SPEC', `invalid model spec: ${what}: ${l.heads} heads × ${t}² attention weights per sample, more than ${MODEL_LIMITS.maxInputSize}`);
      parameters = c * 3 * c + 3 * c + c * c + c;
      break;
    }
    case 'residual':
      l.layers.forEach((inner, j) => {
        const r = shapeOf(inner, output, `${what.split(' ')[0]}.layers.${j} (${inner.type})`);
        output = r.output;
        parameters += r.parameters;
      });
      if (output.join() !== shape.join()) throw new CoreError('ERR_SPEC', `invalid model spec: ${what} turns [${shape.join(', ')}] into [${output.join(', ')}]; a residual block must keep its shape`);
      break;
    case 'conv2d': {
      const [c, h, w] = image();
      const g = windowOver(h, w, l.kernelSize, l.kernelSize, l.stride ?? 1, l.padding ?? 'valid', `invalid model spec: ${what}`);
      if (c * l.kernelSize * l.kernelSize * g.outH * g.outW > MODEL_LIMITS.maxInputSize) throw new CoreError('ERR_SPEC', `invalid model spec: ${what} unfolds to more than ${MODEL_LIMITS.maxInputSize} values per sample`);
      parameters = l.filters * c * l.kernelSize * l.kernelSize + l.filters;
      output = [l.filters, g.outH, g.outW];
      break;
    }
    case 'maxpool2d':
    case 'avgpool2d': {
      const [c, h, w] = image();
      const g = windowOver(h, w, l.size, l.size, l.stride ?? l.size, 'valid', `invalid model spec: ${what}`);
      output = [c, g.outH, g.outW];
      break;
    }
    case 'globalavgpool':
      output = [image()[0]];
      break;
    case 'flatten':
      output = [size(shape)];
      break;
    case 'groupnorm': {
      const [c] = image();
      if (c % l.groups !== 0) throw new CoreError('ERR_SPEC', `invalid model spec: ${what}: ${c} channels do not split into ${l.groups} groups`);
      parameters = 2 * c;
      break;
    }
    default:
      break;
  }
  if (size(output) > MODEL_LIMITS.maxInputSize) throw new CoreError('ERR_SPEC', `invalid model spec: ${what} gives ${size(output)} values per sample, more than ${MODEL_LIMITS.maxInputSize}`);
  return { output, parameters };
}

/**
 * Floats one sample occupies in a training pass: every layer's output and input gradient, and a
 * convolution's unfolded input. Sizes evaluation batches, which must not take gigabytes.
 */
export function activationFloatsPerSample(spec: ModelSpec): number {
  // Beyond its output and gradients: a convolution's unfolded input; attention's q, k, v and its
  // T×T weights per head; a block's inner layers.
  const extra = (l: LayerSpec, input: number[]): number => {
    if (l.type === 'conv2d') {
      const out = shapeOf(l, input, 'conv2d').output;
      return (input[0] * l.kernelSize ** 2 + l.filters) * (out[1] * out[2]);
    }
    if (l.type === 'attention') return 6 * size(input) + l.heads * input[0] * input[0];
    if (l.type === 'residual') return l.layers.reduce((n, inner) => n + 3 * size(shapeOf(inner, input, inner.type).output) + extra(inner, input), 0);
    return 0;
  };
  return shapeLayers(spec).reduce((n, l) => n + 2 * size(l.output) + size(l.input) + extra(l.spec, l.input), 0);
}

/** Width of the model's output (the units of its last dense layer, or its last layer's size). */
/**
 * A language model's vocabulary: its first layer's embedding rows, which its last dense layer
 * predicts over; null for other models.
 */
export function vocabularyOf(spec: { layers: readonly LayerSpec[] }): number | null {
  const first = spec.layers[0];
  const last = spec.layers.at(-1);
  return first?.type === 'embedding' && last?.type === 'dense' && last.units === first.vocab ? first.vocab : null;
}

/** The same language model over a vocabulary of `vocab` tokens (fine-tuning on a text with new characters). */
export function withVocabulary<S extends { layers: readonly LayerSpec[] }>(spec: S, vocab: number): S {
  if (vocabularyOf(spec) === null) throw new CoreError('ERR_SPEC', 'withVocabulary: the model is not a language model (an embedding first, a dense layer over its vocabulary last)');
  const layers = spec.layers.map((l, i) => (i === 0 && l.type === 'embedding' ? { ...l, vocab } : i === spec.layers.length - 1 && l.type === 'dense' ? { ...l, units: vocab } : l));
  return { ...spec, layers };
}

/** Predictions per sample: T for a sequence model (an output row per token, each with its loss), else 1. */
export function positionsOf(spec: ModelSpec): number {
  const out = shapeLayers(spec).at(-1)!.output;
  return out.length === 2 ? out[0] : 1;
}

export function outputSize(spec: ModelSpec): number {
  return shapeLayers(spec).at(-1)!.output.reduce((a, b) => a * b, 1);
}

/** Widths from the input through every dense layer, e.g. [784, 128, 10]. */
export function layerWidths(spec: ModelSpec): number[] {
  return [spec.inputSize, ...spec.layers.flatMap((l) => (l.type === 'dense' ? [l.units] : []))];
}

/** Learned parameters (weights, biases, normalization scales and shifts), without building the model. */
export function parameterCount(spec: ModelSpec): number {
  return shapeLayers(spec).reduce((n, l) => n + l.parameters, 0);
}

const isConvNet = (spec: ModelSpec): boolean => spec.layers.some((l) => l.type === 'conv2d' || l.type.endsWith('pool2d') || l.type === 'globalavgpool');

/** One line for people: "MLP 784-128-10 (relu)", or "CNN 1×28×28 conv16k5 maxpool2 … dense10 (relu)". */
export function describeModel(spec: ModelSpec): string {
  const embedding = spec.layers.find((l) => l.type === 'embedding');
  if (embedding) {
    const blocks = spec.layers.filter((l) => l.type === 'residual' && l.layers.some((x) => x.type === 'attention'));
    const attention = blocks.flatMap((b) => (b.type === 'residual' ? b.layers : [])).find((l) => l.type === 'attention');
    const tied = spec.layers.some((l) => l.type === 'dense' && l.tied);
    return `GPT ${blocks.length} layers × ${attention?.type === 'attention' ? attention.heads : 0} heads × ${embedding.dim} dims, context ${spec.inputSize}, vocabulary ${embedding.vocab}${tied ? ', tied embeddings' : ''}`;
  }
  const activations = [...new Set(spec.layers.filter((l) => !LEARNED.has(l.type) && ['relu', 'leaky_relu', 'tanh', 'sigmoid', 'gelu'].includes(l.type)).map((l) => l.type))];
  const acts = activations.length ? ` (${activations.join(', ')})` : '';
  if (!isConvNet(spec)) return `MLP ${layerWidths(spec).join('-')}${acts}`;
  const parts = spec.layers.flatMap((l) => {
    switch (l.type) {
      case 'conv2d':
        return [`conv${l.filters}k${l.kernelSize}${(l.stride ?? 1) > 1 ? `s${l.stride}` : ''}`];
      case 'maxpool2d':
      case 'avgpool2d':
        return [`${l.type.slice(0, 3)}pool${l.size}`];
      case 'globalavgpool':
        return ['gap'];
      case 'groupnorm':
        return [`gn${l.groups}`];
      case 'dense':
        return [`dense${l.units}`];
      default:
        return [];
    }
  });
  return `CNN ${(spec.inputShape ?? [spec.inputSize]).join('×')} ${parts.join(' ')}${acts}`;
}

/** The short form of a GPT (nanoGPT's model): `{ "type": "gpt", "layers": 4, "heads": 4, "dim": 128, "context": 64 }`. */
export const gptShortFormSchema = z.strictObject({
  type: z.literal('gpt'),
  /** Tokens in the vocabulary: the data's tokenizer sets it where the spec leaves it out. */
  vocab: width.optional(),
  context: positiveInt.max(MODEL_LIMITS.maxContext),
  layers: positiveInt.max(64),
  heads: positiveInt.max(MODEL_LIMITS.maxHeads),
  dim: width,
  /** LayerNorm biases (nanoGPT's `bias`); default true. */
  bias: z.boolean().optional(),
  /** The head's weight is the token embedding's table (GPT-2's weight tying); default false. */
  tied: z.boolean().optional(),
  dropout: z.number().min(0).lt(1).optional(),
});
export type GptShortForm = z.infer<typeof gptShortFormSchema>;

/**
 * The general form of a GPT: token and position embedding, `layers` pre-norm blocks (LayerNorm →
 * attention, LayerNorm → dense 4·dim → GELU → dense dim, each added to its input), a final
 * LayerNorm and the head over the vocabulary, cross-entropy at every position.
 */
export function gptSpec(short: GptShortForm & { vocab: number }): { inputShape: number[]; layers: LayerSpec[]; loss: LossName } {
  const norm: InnerLayerSpec = short.bias === false ? { type: 'layernorm', bias: false } : { type: 'layernorm' };
  const drop: InnerLayerSpec[] = short.dropout ? [{ type: 'dropout', rate: short.dropout }] : [];
  const layers: LayerSpec[] = [{ type: 'embedding', vocab: short.vocab, dim: short.dim }, ...drop];
  for (let i = 0; i < short.layers; i++) {
    layers.push({ type: 'residual', layers: [norm, { type: 'attention', heads: short.heads }, ...drop] });
    layers.push({ type: 'residual', layers: [norm, { type: 'dense', units: 4 * short.dim, init: 'gpt_normal' }, { type: 'gelu' }, { type: 'dense', units: short.dim, init: 'gpt_normal' }, ...drop] });
  }
  layers.push(norm, { type: 'dense', units: short.vocab, init: 'gpt_normal', ...(short.tied ? { tied: true } : {}) });
  return { inputShape: [short.context], layers, loss: 'softmax_cross_entropy' };
}

/** A spec in a short form (`"type": "gpt"`) in its general form; any other input as it is. */
export function expandShortForms(input: unknown): unknown {
  if (typeof input !== 'object' || input === null || (input as { type?: unknown }).type !== 'gpt') return input;
  const parsed = gptShortFormSchema.safeParse(input, { reportInput: true });
  if (!parsed.success) throw new CoreError('ERR_SPEC', `invalid gpt model: ${describeIssues(parsed.error)}`);
  const short = parsed.data;
  if (short.dim % short.heads !== 0) throw new CoreError('ERR_SPEC', `invalid gpt model: ${short.heads} heads do not divide the dimension ${short.dim}`);
  if (short.vocab === undefined) throw new CoreError('ERR_SPEC', 'invalid gpt model: it needs its vocab (the text data sets it: train with --data text:FILE)');
  return gptSpec({ ...short, vocab: short.vocab });
}

/** An MLP spec: dense layers of the given widths with `activation` between them. */
export function mlpSpec(
  sizes: number[],
  options: { activation?: 'relu' | 'leaky_relu' | 'tanh' | 'sigmoid' | 'gelu'; loss?: LossName } = {},
): ModelSpec {
  if (sizes.length < 2) throw new CoreError('ERR_SPEC', `mlpSpec: needs at least input and output sizes, got [${sizes.join(', ')}]`);
  const layers: LayerSpec[] = [];
  for (let i = 1; i < sizes.length; i++) {
    layers.push({ type: 'dense', units: sizes[i] });
    if (i < sizes.length - 1) layers.push({ type: options.activation ?? 'relu' });
  }
  return parseModelSpec({ inputSize: sizes[0], layers, loss: options.loss ?? 'softmax_cross_entropy' });
}
