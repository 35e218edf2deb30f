import { readFileSync } from 'node:fs';
import { readSafetensorsRaw } from '@ringtrain/checkpoint';
import { dequantizeRows, fromFloat16, type Model, unpackInt4 } from '@ringtrain/core';

/** A weight of two or more dimensions as [output rows, values per row]; null for vectors (biases, norms). */
export function asMatrix(shape: readonly number[]): [number, number] | null {
  return shape.length >= 2 ? [shape[0], shape.slice(1).reduce((a, b) => a * b, 1)] : null;
}

const fail = (path: string, why: string): never => {
  throw Object.assign(new Error(`${path}: ${why}`), { code: 'ERR_MODEL_MISMATCH' });
};

/**
 * Loads an exported weights file (`ringtrain export`) into `model`, decoding what the file holds:
 * F32 as is, F16, int8 (I8 with a per-row `.scale`), int4 (two's-complement nibbles packed low
 * first into U8, with a per-row `.scale`), or the JSON format. The model then computes with exactly
 * the file's weights: what export reports and what a user deploys are the same numbers.
 */
export function loadWeightsInto(model: Model, path: string, format: 'safetensors' | 'json' = 'safetensors'): void {
  if (format === 'json') {
    const json = JSON.parse(readFileSync(path, 'utf8')) as { tensors?: Record<string, { shape: number[]; values: number[] }> };
    for (const t of model.params.tensors) {
      const src = json.tensors?.[t.name];
      if (!src || src.values.length !== t.length) fail(path, `tensor ${t.name}: missing or not ${t.length} values`);
      model.params.value(t.name).set(src!.values);
    }
    return;
  }
  const { tensors } = readSafetensorsRaw(path, { requireChecksum: true });
  const byName = new Map(tensors.map((t) => [t.name, t]));
  for (const t of model.params.tensors) {
    const src = byName.get(t.name) ?? fail(path, `no tensor ${t.name}`);
    const out = model.params.value(t.name);
    const [rows, cols] = asMatrix(t.shape) ?? [1, t.length];
    const scales = (): Float32Array => {
      const s = byName.get(`${t.name}.scale`) ?? fail(path, `tensor ${t.name} is ${src.dtype} without ${t.name}.scale`);
      if (s.dtype !== 'F32' || s.bytes.length !== rows * 4) fail(path, `${t.name}.scale: expected ${rows} F32 scales`);
      return new Float32Array(Uint8Array.from(s.bytes).buffer);
    };
    const shapeIs = (shape: number[]) => src.shape.join('x') === shape.join('x') || fail(path, `tensor ${t.name}: shape [${src.shape.join(', ')}] of ${src.dtype}, the model needs [${shape.join(', ')}]`);
    if (src.dtype === 'F32') {
      shapeIs(t.shape);
      out.set(new Float32Array(Uint8Array.from(src.bytes).buffer));
    } else if (src.dtype === 'F16') {
      shapeIs(t.shape);
      const half = new Uint16Array(Uint8Array.from(src.bytes).buffer);
      for (let i = 0; i < half.length; i++) out[i] = fromFloat16(half[i]);
    } else if (src.dtype === 'I8') {
      shapeIs(t.shape);
      dequantizeRows({ bits: 8, rows, cols, values: new Int8Array(Uint8Array.from(src.bytes).buffer), scales: scales() }, out);
    } else {
      shapeIs([rows, Math.ceil(cols / 2)]);
      dequantizeRows({ bits: 4, rows, cols, values: unpackInt4(src.bytes, rows, cols), scales: scales() }, out);
    }
  }
}
