import { z } from 'zod';
import { CoreError } from './errors.js';
import { INITIALIZERS } from './initializers.js';
import { windowOver } from './layers/conv-geometry.js';
import { describeIssues } from './validation.js';

const positiveInt = z.number().int().positive();

/**
 * Bounds on a model from a file or the network, checked before anything is allocated: a spec of a
 * few bytes must not ask for gigabytes. Far above what this engine trains in useful time.
 */
export const MODEL_LIMITS = { maxWidth: 1 << 16, maxInputSize: 1 << 24, maxLayers: 256, maxParameters: 1 << 28 } as const;
const width = positiveInt.max(MODEL_LIMITS.maxWidth);

const small = positiveInt.max(64);

const layerSpecSchema = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('dense'), units: width, init: z.enum(INITIALIZERS).optional() }),
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
export type LossName = (typeof LOSSES)[number];
/** A model as JSON: the coordinator ships it, a checkpoint records it. `inputSize` is always there once parsed. */
export type ModelSpec = Omit<z.infer<typeof modelSpecSchema>, 'inputSize'> & { inputSize: number };

/** Layers that hold parameters. */
const LEARNED = new Set(['dense', 'conv2d', 'groupnorm']);

/** Checks a spec from anywhere (a file, the network) and returns it typed, or throws ERR_SPEC. */
export function parseModelSpec(input: unknown): ModelSpec {
  const parsed = modelSpecSchema.safeParse(input, { reportInput: true });
  if (!parsed.success) throw new CoreError('ERR_SPEC', `invalid model spec: ${describeIssues(parsed.error)}`);
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
  const size = (s: number[]): number => s.reduce((a, b) => a * b, 1);
  return spec.layers.map((l, i) => {
    const what = `layers.${i} (${l.type})`;
    const image = (): [number, number, number] => {
      if (shape.length !== 3) throw new CoreError('ERR_SPEC', `invalid model spec: ${what} needs a [C, H, W] input, it gets [${shape.join(', ')}] (give the model an inputShape)`);
      return shape as [number, number, number];
    };
    const input = shape;
    let parameters = 0;
    switch (l.type) {
      case 'dense':
        parameters = size(shape) * l.units + l.units;
        shape = [l.units];
        break;
      case 'conv2d': {
        const [c, h, w] = image();
        const g = windowOver(h, w, l.kernelSize, l.kernelSize, l.stride ?? 1, l.padding ?? 'valid', `invalid model spec: ${what}`);
        if (c * l.kernelSize * l.kernelSize * g.outH * g.outW > MODEL_LIMITS.maxInputSize) throw new CoreError('ERR_SPEC', `invalid model spec: ${what} unfolds to more than ${MODEL_LIMITS.maxInputSize} values per sample`);
        parameters = l.filters * c * l.kernelSize * l.kernelSize + l.filters;
        shape = [l.filters, g.outH, g.outW];
        break;
      }
      case 'maxpool2d':
      case 'avgpool2d': {
        const [c, h, w] = image();
        const g = windowOver(h, w, l.size, l.size, l.stride ?? l.size, 'valid', `invalid model spec: ${what}`);
        shape = [c, g.outH, g.outW];
        break;
      }
      case 'globalavgpool':
        shape = [image()[0]];
        break;
      case 'flatten':
        shape = [size(shape)];
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
    if (size(shape) > MODEL_LIMITS.maxInputSize) throw new CoreError('ERR_SPEC', `invalid model spec: ${what} gives ${size(shape)} values per sample, more than ${MODEL_LIMITS.maxInputSize}`);
    return { spec: l, input, output: shape, parameters };
  });
}

/**
 * Floats one sample occupies in a training pass: every layer's output and input gradient, and a
 * convolution's unfolded input. Sizes evaluation batches, which must not take gigabytes.
 */
export function activationFloatsPerSample(spec: ModelSpec): number {
  const size = (s: number[]): number => s.reduce((a, b) => a * b, 1);
  return shapeLayers(spec).reduce((n, l) => {
    const unfolded = l.spec.type === 'conv2d' ? (l.input[0] * l.spec.kernelSize ** 2 + l.spec.filters) * (l.output[1] * l.output[2]) : 0;
    return n + 2 * size(l.output) + size(l.input) + unfolded;
  }, 0);
}

/** Width of the model's output (the units of its last dense layer, or its last layer's size). */
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
