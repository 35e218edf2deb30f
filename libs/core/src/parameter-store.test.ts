import { describe, expect, it } from 'vitest';
import { ReferenceBackend } from './backends/reference-backend.js';
import { ParameterStore } from './parameter-store.js';

const decls = [
  { name: 'a.weight', shape: [2, 3], role: 'weight' as const },
  { name: 'a.bias', shape: [3], role: 'bias' as const },
  { name: 'b.weight', shape: [3, 1], role: 'weight' as const },
];

describe('parameter store', () => {
  it('lays tensors out back to back, in order, with views into the flat buffers', () => {
    const s = new ParameterStore(new ReferenceBackend(), decls);
    expect(s.tensors.map((t) => [t.name, t.offset, t.length])).toEqual([['a.weight', 0, 6], ['a.bias', 6, 3], ['b.weight', 9, 3]]);
    expect(s.length).toBe(12);
    expect(s.values.length).toBe(12);
    expect(s.grads.length).toBe(12);
    s.value('a.bias').set([1, 2, 3]);
    expect(Array.from(s.values.subarray(6, 9))).toEqual([1, 2, 3]);
    s.grad('b.weight')[2] = 5;
    expect(s.grads[11]).toBe(5);
    const slot = s.newSlot();
    expect(slot).not.toBe(s.values);
    expect(Array.from(slot)).toEqual(new Array(12).fill(0));
    expect(s.viewOf(slot, 'a.bias').byteOffset).toBe(6 * 4);
    expect(s.counts()).toEqual({ weights: 9, biases: 3, total: 12 });
    expect(s.info('a.bias').shape).toEqual([3]);
    expect(s.tensorAt(0)?.name).toBe('a.weight');
    expect(s.tensorAt(5)?.name).toBe('a.weight');
    expect(s.tensorAt(6)?.name).toBe('a.bias');
    expect(s.tensorAt(11)?.name).toBe('b.weight');
    expect(s.tensorAt(12)).toBeUndefined();
    expect(s.tensorAt(-1)).toBeUndefined();
  });

  it('refuses a name declared twice and names what exists for an unknown one', () => {
    expect(() => new ParameterStore(new ReferenceBackend(), [decls[0], decls[0]])).toThrow(/"a.weight" is declared twice/);
    const s = new ParameterStore(new ReferenceBackend(), decls);
    expect(() => s.value('c.weight')).toThrow(expect.objectContaining({ code: 'ERR_SPEC', message: 'no parameter named "c.weight"; have a.weight, a.bias, b.weight' }));
  });

  it('norms per tensor, of the values or of any buffer laid out alike', () => {
    const s = new ParameterStore(new ReferenceBackend(), decls);
    s.value('a.weight').set([3, 4, 0, 0, 0, 0]);
    s.value('b.weight').set([1, 2, 2]);
    expect(s.tensorNorms()).toEqual([5, 0, 3]);
    s.grad('a.bias').set([0, 0, 2]);
    expect(s.tensorNorms(s.grads)).toEqual([0, 2, 0]);
  });

  it('the values hash covers every weight bit, and only the weights', () => {
    const s = new ParameterStore(new ReferenceBackend(), decls);
    s.values.forEach((_, i) => (s.values[i] = i / 7));
    const h = s.valuesHash();
    expect(h).toMatch(/^[0-9a-f]{64}$/);
    // The last element, one ulp up: a different hash.
    const last = s.values.length - 1;
    const bits = new Uint32Array(s.values.buffer, s.values.byteOffset, s.values.length);
    bits[last] += 1;
    expect(s.values[last]).not.toBe(Math.fround(last / 7));
    expect(s.valuesHash()).not.toBe(h);
    bits[last] -= 1;
    expect(s.valuesHash()).toBe(h);
    // The first element too; gradients never enter it.
    bits[0] ^= 1;
    expect(s.valuesHash()).not.toBe(h);
    bits[0] ^= 1;
    s.grads.fill(9);
    expect(s.valuesHash()).toBe(h);
  });

  it('the layout hash changes with any name, shape or order, not with the values', () => {
    const hash = (d: typeof decls) => new ParameterStore(new ReferenceBackend(), d).layoutHash();
    const h = hash(decls);
    expect(h).toMatch(/^[0-9a-f]{16}$/);
    expect(hash([decls[1], decls[0], decls[2]])).not.toBe(h);
    expect(hash([decls[0], decls[1], { ...decls[2], shape: [1, 3] }])).not.toBe(h);
    expect(hash([decls[0], decls[1], { ...decls[2], name: 'c.weight' }])).not.toBe(h);
    const s = new ParameterStore(new ReferenceBackend(), decls);
    s.values.fill(1);
    expect(s.layoutHash()).toBe(h);
  });
});
