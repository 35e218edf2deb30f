import { type LayerSpec, layerOutputShape, type Model } from '@ringtrain/core';
import protobuf from 'protobufjs';

/**
 * A ringtrain model as a standard ONNX model (IR 8, opset 17), to serve it without ringtrain
 * (onnxruntime in Python, C#, Java, a browser). The graph computes what the model's forward pass
 * computes, layer for layer, in standard operators: its input is a batch of samples (a language
 * model's: int64 token ids [batch, sequence], any sequence up to its context); its output is the
 * last layer's (logits, before any softmax). A CSV model's standardization is its first two nodes.
 */
export const ONNX_OPSET = 17;
const IR_VERSION = 8;
const FLOAT = 1;
const INT64 = 7;
const ATTRIBUTE = { FLOAT: 1, INT: 2, INTS: 7 } as const;

/**
 * The ONNX messages the export writes, with onnx.proto's field numbers (a subset: a reader skips
 * nothing it needs). protobufjs encodes them; the schema lives here, not in a .proto file, so that
 * the bundle needs no file at run time.
 */
const ONNX_SCHEMA = {
  nested: {
    onnx: {
      nested: {
        ModelProto: { fields: { irVersion: { type: 'int64', id: 1 }, producerName: { type: 'string', id: 2 }, producerVersion: { type: 'string', id: 3 }, docString: { type: 'string', id: 6 }, graph: { type: 'GraphProto', id: 7 }, opsetImport: { rule: 'repeated', type: 'OperatorSetIdProto', id: 8 }, metadataProps: { rule: 'repeated', type: 'StringStringEntryProto', id: 14 } } },
        OperatorSetIdProto: { fields: { domain: { type: 'string', id: 1 }, version: { type: 'int64', id: 2 } } },
        StringStringEntryProto: { fields: { key: { type: 'string', id: 1 }, value: { type: 'string', id: 2 } } },
        GraphProto: { fields: { node: { rule: 'repeated', type: 'NodeProto', id: 1 }, name: { type: 'string', id: 2 }, initializer: { rule: 'repeated', type: 'TensorProto', id: 5 }, input: { rule: 'repeated', type: 'ValueInfoProto', id: 11 }, output: { rule: 'repeated', type: 'ValueInfoProto', id: 12 } } },
        NodeProto: { fields: { input: { rule: 'repeated', type: 'string', id: 1 }, output: { rule: 'repeated', type: 'string', id: 2 }, name: { type: 'string', id: 3 }, opType: { type: 'string', id: 4 }, attribute: { rule: 'repeated', type: 'AttributeProto', id: 5 } } },
        AttributeProto: { fields: { name: { type: 'string', id: 1 }, f: { type: 'float', id: 2 }, i: { type: 'int64', id: 3 }, ints: { rule: 'repeated', type: 'int64', id: 8 }, type: { type: 'int32', id: 20 } } },
        TensorProto: { fields: { dims: { rule: 'repeated', type: 'int64', id: 1 }, dataType: { type: 'int32', id: 2 }, name: { type: 'string', id: 8 }, rawData: { type: 'bytes', id: 9 } } },
        ValueInfoProto: { fields: { name: { type: 'string', id: 1 }, type: { type: 'TypeProto', id: 2 } } },
        TypeProto: { fields: { tensorType: { type: 'Tensor', id: 1 } }, nested: { Tensor: { fields: { elemType: { type: 'int32', id: 1 }, shape: { type: 'TensorShapeProto', id: 2 } } } } },
        TensorShapeProto: { fields: { dim: { rule: 'repeated', type: 'Dimension', id: 1 } }, nested: { Dimension: { oneofs: { value: { oneof: ['dimValue', 'dimParam'] } }, fields: { dimValue: { type: 'int64', id: 1 }, dimParam: { type: 'string', id: 2 } } } } },
      },
    },
  },
};

type Attribute = { name: string; type: number; f?: number; i?: number; ints?: number[] };
type Dim = number | string;

/** Nodes and weights, named in order; each op returns its output's name. */
class GraphBuilder {
  readonly nodes: { input: string[]; output: string[]; name: string; opType: string; attribute: Attribute[] }[] = [];
  readonly initializers: { name: string; dims: number[]; dataType: number; rawData: Uint8Array }[] = [];
  private readonly constants = new Map<string, string>();
  private count = 0;

  op(opType: string, inputs: string[], attrs: Record<string, number | number[]> = {}): string {
    const output = `${opType.toLowerCase()}_${this.count++}`;
    const attribute = Object.entries(attrs).map(([name, v]): Attribute => (Array.isArray(v) ? { name, type: ATTRIBUTE.INTS, ints: v } : Number.isInteger(v) && name !== 'epsilon' && name !== 'alpha' ? { name, type: ATTRIBUTE.INT, i: v } : { name, type: ATTRIBUTE.FLOAT, f: v }));
    this.nodes.push({ input: inputs, output: [output], name: output, opType, attribute });
    return output;
  }

  floats(name: string, dims: number[], values: Float32Array): string {
    this.initializers.push({ name, dims, dataType: FLOAT, rawData: new Uint8Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength)) });
    return name;
  }

  /** A shared constant: a float scalar, or a 1-D int64 list (shapes, slice bounds). */
  scalar(v: number): string {
    return this.constant(`f:${v}`, () => this.floats(`const_${this.count++}`, [], Float32Array.of(v)));
  }
  ints(values: number[]): string {
    return this.constant(`i:${values}`, () => {
      const name = `const_${this.count++}`;
      this.initializers.push({ name, dims: [values.length], dataType: INT64, rawData: new Uint8Array(BigInt64Array.from(values, BigInt).buffer) });
      return name;
    });
  }
  private constant(key: string, make: () => string): string {
    let name = this.constants.get(key);
    if (!name) this.constants.set(key, (name = make()));
    return name;
  }
}

/** `w` [rows, cols] as [cols, rows]: ringtrain's dense weights are [out, in], MatMul takes [in, out]. */
function transposed(w: Float32Array, rows: number, cols: number): Float32Array {
  const t = new Float32Array(w.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) t[c * rows + r] = w[r * cols + c];
  return t;
}

/** The graph of `model`, layer by layer, from `input`. */
class OnnxGraph {
  readonly g = new GraphBuilder();
  /** The sequence length of a language model's input ([1] int64), and its causal mask cut to it. */
  private sequence: string | null = null;
  private mask: string | null = null;

  constructor(private readonly model: Model) {}

  private param(name: string): Float32Array {
    return this.model.params.value(name);
  }

  private weight(name: string): string {
    const { shape } = this.model.params.info(name);
    return this.g.floats(name, shape, this.param(name));
  }

  /** A dense layer's weight as MatMul's [in, out] (a tied head's is the token table). */
  private denseWeight(name: string, tied: boolean): string {
    const source = tied ? 'layers.0.weight' : `${name}.weight`;
    const [rows, cols] = this.model.params.info(source).shape;
    return this.g.floats(`${name}.weight_t`, [cols, rows], transposed(this.param(source), rows, cols));
  }

  layers(layers: readonly LayerSpec[], x: string, shape: number[], prefix: string): { x: string; shape: number[] } {
    layers.forEach((l, i) => {
      x = this.layer(l, x, shape, `${prefix}${i}`);
      shape = layerOutputShape(l, shape);
    });
    return { x, shape };
  }

  private layer(l: LayerSpec, x: string, shape: number[], name: string): string {
    const { g } = this;
    switch (l.type) {
      case 'dense': {
        // On an image, dense reads the flat [C·H·W] values, as ringtrain stores them.
        const input = shape.length === 3 ? g.op('Flatten', [x], { axis: 1 }) : x;
        return g.op('Add', [g.op('MatMul', [input, this.denseWeight(name, l.tied ?? false)]), this.weight(`${name}.bias`)]);
      }
      case 'embedding': {
        const tokens = g.op('Gather', [this.weight(`${name}.weight`), x], { axis: 0 });
        const positions = g.op('Slice', [this.weight(`${name}.position`), g.ints([0]), this.sequenceLength(x), g.ints([0])]);
        return g.op('Add', [tokens, positions]);
      }
      case 'layernorm':
        return g.op('LayerNormalization', [x, this.weight(`${name}.weight`), ...((l.bias ?? true) ? [this.weight(`${name}.bias`)] : [])], { axis: -1, epsilon: l.eps ?? 1e-5 });
      case 'attention':
        return this.attention(x, shape as [number, number], l.heads, name);
      case 'residual':
        return g.op('Add', [x, this.layers(l.layers as LayerSpec[], x, shape, `${name}.layers.`).x]);
      case 'conv2d': {
        const [, h, w] = shape;
        const [, oh, ow] = layerOutputShape(l, shape);
        const k = l.kernelSize;
        const stride = l.stride ?? 1;
        const padding = l.padding ?? 'valid';
        const pads = (size: number, out: number): [number, number] => {
          if (padding === 'valid') return [0, 0];
          if (typeof padding === 'number') return [padding, padding];
          const total = Math.max(0, (out - 1) * stride + k - size);
          return [Math.floor(total / 2), total - Math.floor(total / 2)];
        };
        const [top, bottom] = pads(h, oh);
        const [left, right] = pads(w, ow);
        return g.op('Conv', [x, this.weight(`${name}.weight`), this.weight(`${name}.bias`)], { kernel_shape: [k, k], strides: [stride, stride], pads: [top, left, bottom, right] });
      }
      case 'maxpool2d':
      case 'avgpool2d': {
        const stride = l.stride ?? l.size;
        return g.op(l.type === 'maxpool2d' ? 'MaxPool' : 'AveragePool', [x], { kernel_shape: [l.size, l.size], strides: [stride, stride] });
      }
      case 'globalavgpool':
        return g.op('Flatten', [g.op('GlobalAveragePool', [x])], { axis: 1 });
      case 'flatten':
        return g.op('Flatten', [x], { axis: 1 });
      case 'groupnorm': {
        // Normalize each group's values as one instance ([N, G, C/G·H·W]), then scale and shift each channel.
        const [c] = shape;
        const grouped = g.op('Reshape', [x, g.ints([0, l.groups, -1])]);
        const normalized = g.op('InstanceNormalization', [grouped, g.floats(`${name}.ones`, [l.groups], new Float32Array(l.groups).fill(1)), g.floats(`${name}.zeros`, [l.groups], new Float32Array(l.groups))], { epsilon: l.eps ?? 1e-5 });
        const back = g.op('Reshape', [normalized, g.op('Shape', [x])]);
        const perChannel = (p: string): string => g.floats(`${name}.${p}_c11`, [c, 1, 1], this.param(`${name}.${p}`));
        return g.op('Add', [g.op('Mul', [back, perChannel('weight')]), perChannel('bias')]);
      }
      case 'relu':
        return g.op('Relu', [x]);
      case 'leaky_relu':
        return g.op('LeakyRelu', [x], { alpha: l.alpha ?? 0.01 });
      case 'tanh':
        return g.op('Tanh', [x]);
      case 'sigmoid':
        return g.op('Sigmoid', [x]);
      case 'gelu': {
        // The tanh form ringtrain trains with: ½x(1 + tanh(√(2/π)(x + 0.044715x³))).
        const cube = g.op('Mul', [g.op('Mul', [x, x]), x]);
        const u = g.op('Mul', [g.op('Add', [x, g.op('Mul', [cube, g.scalar(0.044715)])]), g.scalar(Math.sqrt(2 / Math.PI))]);
        return g.op('Mul', [g.op('Mul', [x, g.scalar(0.5)]), g.op('Add', [g.op('Tanh', [u]), g.scalar(1)])]);
      }
      case 'dropout':
        return x; // inference: the identity
    }
  }

  /** The input's sequence length, [1] int64 (a slice bound). */
  private sequenceLength(tokens: string): string {
    return (this.sequence ??= this.g.op('Shape', [tokens], { start: 1, end: 2 }));
  }

  /** Causal multi-head self-attention on [B, S, C]: fused q|k|v, heads contiguous within each. */
  private attention(x: string, [T, C]: [number, number], heads: number, name: string): string {
    const { g } = this;
    const d = C / heads;
    const qkv = g.op('Add', [g.op('MatMul', [x, this.denseWeight(`${name}.qkv`, false)]), this.weight(`${name}.qkv.bias`)]);
    const [q, k, v] = ['q', 'k', 'v'].map((_, j) => g.op('Reshape', [g.op('Slice', [qkv, g.ints([j * C]), g.ints([(j + 1) * C]), g.ints([2])]), g.ints([0, 0, heads, d])]));
    const qh = g.op('Transpose', [q], { perm: [0, 2, 1, 3] });
    const kt = g.op('Transpose', [k], { perm: [0, 2, 3, 1] });
    const vh = g.op('Transpose', [v], { perm: [0, 2, 1, 3] });
    const scores = g.op('Add', [g.op('Mul', [g.op('MatMul', [qh, kt]), g.scalar(1 / Math.sqrt(d))]), this.causalMask(T)]);
    const mixed = g.op('MatMul', [g.op('Softmax', [scores], { axis: -1 }), vh]);
    const merged = g.op('Reshape', [g.op('Transpose', [mixed], { perm: [0, 2, 1, 3] }), g.ints([0, 0, C])]);
    return g.op('Add', [g.op('MatMul', [merged, this.denseWeight(`${name}.proj`, false)]), this.weight(`${name}.proj.bias`)]);
  }

  /** 0 on and below the diagonal, −10⁹ above (exp gives exact zeros), cut to the input's length. */
  private causalMask(T: number): string {
    if (this.mask) return this.mask;
    const values = new Float32Array(T * T);
    for (let t = 0; t < T; t++) for (let s = t + 1; s < T; s++) values[t * T + s] = -1e9;
    const S = this.sequence!;
    this.mask = this.g.op('Slice', [this.g.floats('causal_mask', [T, T], values), this.g.ints([0, 0]), this.g.op('Concat', [S, S], { axis: 0 }), this.g.ints([0, 1])]);
    return this.mask;
  }
}

export interface OnnxOptions {
  /** A CSV model's standardization, applied to the raw features first. */
  scaling?: { shift: number[]; scale: number[] };
  /** Written into the model's metadata_props (a class's name, the job). */
  metadata?: Record<string, string>;
  producerVersion?: string;
}

/** The model's ONNX bytes. */
export function onnxModel(model: Model, options: OnnxOptions = {}): Uint8Array {
  const graph = new OnnxGraph(model);
  const { g } = graph;
  const spec = model.spec;
  const lm = spec.layers[0].type === 'embedding';
  const sampleShape = spec.inputShape ? [...spec.inputShape] : [spec.inputSize];
  const inputDims: Dim[] = lm ? ['batch', 'sequence'] : ['batch', ...sampleShape];
  let x = 'input';
  if (options.scaling) {
    const f = options.scaling.shift.length;
    x = g.op('Div', [g.op('Sub', [x, g.floats('scaling.shift', [f], Float32Array.from(options.scaling.shift))]), g.floats('scaling.scale', [f], Float32Array.from(options.scaling.scale))]);
  }
  const out = graph.layers(spec.layers, x, sampleShape, 'layers.');
  const outputName = spec.loss === 'softmax_cross_entropy' ? 'logits' : 'output';
  g.op('Identity', [out.x]);
  g.nodes.at(-1)!.output = [outputName];
  const outputDims: Dim[] = lm ? ['batch', 'sequence', out.shape[1]] : ['batch', ...out.shape];
  const valueInfo = (name: string, elemType: number, dims: Dim[]) => ({ name, type: { tensorType: { elemType, shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } } } });
  const message = {
    irVersion: IR_VERSION,
    producerName: 'ringtrain',
    producerVersion: options.producerVersion ?? '',
    opsetImport: [{ domain: '', version: ONNX_OPSET }],
    metadataProps: Object.entries(options.metadata ?? {}).map(([key, value]) => ({ key, value })),
    graph: {
      name: 'ringtrain',
      node: g.nodes,
      initializer: g.initializers,
      input: [valueInfo('input', lm ? INT64 : FLOAT, inputDims)],
      output: [valueInfo(outputName, FLOAT, outputDims)],
    },
  };
  const ModelProto = protobuf.Root.fromJSON(ONNX_SCHEMA).lookupType('onnx.ModelProto');
  return ModelProto.encode(ModelProto.fromObject(message)).finish();
}
