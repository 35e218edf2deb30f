import { z } from 'zod';
import { CoreError } from './errors.js';
import { INITIALIZERS } from './initializers.js';
import { describeIssues } from './validation.js';

const positiveInt = z.number().int().positive();

/**
 * Bounds on a model from a file or the network, checked before anything is allocated: a spec of a
 * few bytes must not ask for gigabytes. Far above what this engine trains in useful time.
 */
export const MODEL_LIMITS = { maxWidth: 1 << 16, maxInputSize: 1 << 24, maxLayers: 256, maxParameters: 1 << 28 } as const;
const width = positiveInt.max(MODEL_LIMITS.maxWidth);

const layerSpecSchema = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('dense'), units: width, init: z.enum(INITIALIZERS).optional() }),
  z.strictObject({ type: z.literal('relu') }),
  z.strictObject({ type: z.literal('leaky_relu'), alpha: z.number().min(0).max(1).optional() }),
  z.strictObject({ type: z.literal('tanh') }),
  z.strictObject({ type: z.literal('sigmoid') }),
  z.strictObject({ type: z.literal('gelu') }),
  z.strictObject({ type: z.literal('dropout'), rate: z.number().min(0).lt(1) }),
]);

export const LOSSES = ['softmax_cross_entropy', 'mse'] as const;

export const modelSpecSchema = z.strictObject({
  inputSize: positiveInt.max(MODEL_LIMITS.maxInputSize),
  layers: z.array(layerSpecSchema).min(1).max(MODEL_LIMITS.maxLayers),
  loss: z.enum(LOSSES),
});

export type LayerSpec = z.infer<typeof layerSpecSchema>;
export type LossName = (typeof LOSSES)[number];
/** A model as JSON: the coordinator ships it, a checkpoint records it. */
export type ModelSpec = z.infer<typeof modelSpecSchema>;

/** Checks a spec from anywhere (a file, the network) and returns it typed, or throws ERR_SPEC. */
export function parseModelSpec(input: unknown): ModelSpec {
  const parsed = modelSpecSchema.safeParse(input, { reportInput: true });
  if (!parsed.success) throw new CoreError('ERR_SPEC', `invalid model spec: ${describeIssues(parsed.error)}`);
  const spec = parsed.data;
  if (!spec.layers.some((l) => l.type === 'dense')) throw new CoreError('ERR_SPEC', 'invalid model spec: it has no dense layer, so nothing to learn');
  const count = parameterCount(spec);
  if (count > MODEL_LIMITS.maxParameters) throw new CoreError('ERR_SPEC', `invalid model spec: ${count} parameters, more than the ${MODEL_LIMITS.maxParameters} this engine takes`);
  if (spec.loss === 'softmax_cross_entropy' && outputSize(spec) < 2) {
    throw new CoreError('ERR_SPEC', `invalid model spec: softmax_cross_entropy needs at least 2 outputs, the model has ${outputSize(spec)}`);
  }
  return spec;
}

/** Width of the model's output (the units of its last dense layer). */
export function outputSize(spec: ModelSpec): number {
  let size = spec.inputSize;
  for (const l of spec.layers) if (l.type === 'dense') size = l.units;
  return size;
}

/** Widths from the input through every dense layer, e.g. [784, 128, 10]. */
export function layerWidths(spec: ModelSpec): number[] {
  return [spec.inputSize, ...spec.layers.flatMap((l) => (l.type === 'dense' ? [l.units] : []))];
}

/** Learned parameters (dense weights and biases), without building the model. */
export function parameterCount(spec: ModelSpec): number {
  const w = layerWidths(spec);
  let n = 0;
  for (let i = 1; i < w.length; i++) n += w[i - 1] * w[i] + w[i];
  return n;
}

/** One line for people: "MLP 784-128-10 (relu)". */
export function describeModel(spec: ModelSpec): string {
  const activations = [...new Set(spec.layers.filter((l) => l.type !== 'dense' && l.type !== 'dropout').map((l) => l.type))];
  return `MLP ${layerWidths(spec).join('-')}${activations.length ? ` (${activations.join(', ')})` : ''}`;
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
