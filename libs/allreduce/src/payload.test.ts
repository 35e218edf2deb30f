import fc from 'fast-check';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it, vi } from 'vitest';
import { Payload } from './payload.js';
import { addFloat32, addFloat32Js, addFloat32Portable, allFiniteFloat32, allFiniteJs, reduceKernel } from './reduce-kernel.js';

const bitsOf = (a: Float32Array): Buffer => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

/** `bytes` copied to `misalign` bytes past an 8-aligned address. */
function at(bytes: Uint8Array, misalign: number): Uint8Array {
  const out = new Uint8Array(bytes.length + 8).subarray(misalign, misalign + bytes.length);
  out.set(bytes);
  return out;
}

/** Float32 values with awkward bits: subnormals, signed zeros, infinities, large and tiny. */
const awkward = fc.float({ noNaN: true });

describe('reduce kernel', () => {
  it('is the native one exactly when the addon is built, and the portable one when disabled', async () => {
    const built = existsSync(fileURLToPath(new URL('../native/build/Release/ringtrain_reduce.node', import.meta.url)));
    if (process.env.RINGTRAIN_EXPECT_NATIVE === '1') expect(built).toBe(true);
    expect(reduceKernel).toEqual(built ? { native: true } : { native: false, reason: expect.stringMatching(/^not built \(.*ringtrain_reduce\.node is missing\)$/) });
    process.env.RINGTRAIN_DISABLE_NATIVE = '1';
    try {
      vi.resetModules();
      const fresh = await import('./reduce-kernel.js');
      expect(fresh.reduceKernel).toEqual({ native: false, reason: 'disabled by RINGTRAIN_DISABLE_NATIVE=1' });
      expect(fresh.addFloat32).toBe(fresh.addFloat32Portable);
      expect(fresh.allFiniteFloat32).toBe(fresh.allFiniteJs);
      // Built and not disabled, the addon's loops are the ones used.
      if (built) expect(addFloat32).not.toBe(addFloat32Portable);
      if (built) expect(allFiniteFloat32).not.toBe(allFiniteJs);
    } finally {
      delete process.env.RINGTRAIN_DISABLE_NATIVE;
      vi.resetModules();
    }
  });

  it('the JS loop gives each sum as one float32 addition, for every length around its unrolling', () => {
    for (let n = 0; n <= 13; n++) {
      const dst = Float32Array.from({ length: n }, (_, i) => Math.fround(1 / (i + 3)));
      const src = Float32Array.from({ length: n }, (_, i) => Math.fround((i + 1) * 1e-3));
      const want = Array.from(dst, (d, i) => Math.fround(d + src[i]));
      addFloat32Js(dst, src);
      expect(Array.from(dst), `n = ${n}`).toEqual(want);
    }
  });

  it('adds float32s at any source alignment, bit-identical to the JS loop, natively and portably', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(awkward, awkward), { maxLength: 300 }), fc.integer({ min: 0, max: 7 }), (pairs, misalign) => {
        const a = Float32Array.from(pairs, (p) => p[0]);
        const b = Float32Array.from(pairs, (p) => p[1]);
        const viaJs = a.slice();
        addFloat32Js(viaJs, b);
        const finite = viaJs.every(Number.isFinite);
        for (const add of [addFloat32, addFloat32Portable]) {
          const viaKernel = a.slice();
          expect(add(viaKernel, at(new Uint8Array(b.buffer), misalign))).toBe(finite);
          expect(bitsOf(viaKernel).equals(bitsOf(viaJs))).toBe(true);
        }
      }),
    );
  });

  it('tells whether every sum is finite, and finds ±Inf and NaN anywhere', () => {
    const big = Float32Array.of(1, 3e38, -2);
    expect(addFloat32(big, new Uint8Array(Float32Array.of(1, 3e38, 5).buffer))).toBe(false); // 6e38 overflows
    expect(big[1]).toBe(Number.POSITIVE_INFINITY);
    expect(addFloat32(Float32Array.of(1, 2), new Uint8Array(Float32Array.of(3, 4).buffer))).toBe(true);
    for (const check of [allFiniteFloat32, allFiniteJs]) {
      for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
        for (const where of [0, 5, 36]) {
          const x = Float32Array.from({ length: 37 }, (_, i) => i - 18.5);
          x[where] = bad;
          expect(check(x)).toBe(false);
        }
      }
      expect(check(Float32Array.of(3.4e38, -3.4e38, 1e-45, -0))).toBe(true);
      expect(check(new Float32Array(0))).toBe(true);
    }
  });

  it('refuses sources and destinations of different sizes', () => {
    for (const add of [addFloat32, addFloat32Portable]) {
      expect(() => add(new Float32Array(4), new Uint8Array(12))).toThrow(/float32s/);
      expect(() => add(new Float32Array(1), new Uint8Array(5))).toThrow(/float32s/);
    }
  });
});

/** src cut at the given sizes (0-byte pieces too), the rest in one last piece; each misaligned. */
function cutInto(src: Uint8Array, cuts: number[]): Uint8Array[] {
  const pieces: Uint8Array[] = [];
  let from = 0;
  for (const c of cuts) {
    const to = Math.min(src.length, from + c);
    pieces.push(at(src.subarray(from, to), (from + c) % 8));
    from = to;
  }
  pieces.push(at(src.subarray(from), 3));
  return pieces;
}

describe('payload in pieces', () => {
  it('adds and copies the same bits as one gathered buffer, wherever the pieces are cut', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(awkward, awkward), { minLength: 1, maxLength: 200 }), fc.array(fc.integer({ min: 0, max: 40 }), { maxLength: 30 }), (pairs, cuts) => {
        const dst = Float32Array.from(pairs, (p) => p[0]);
        const src = new Uint8Array(Float32Array.from(pairs, (p) => p[1]).buffer);
        const payload = new Payload(cutInto(src, cuts));
        expect(payload.byteLength).toBe(src.length);
        expect(Buffer.from(payload.bytes()).equals(Buffer.from(src))).toBe(true);

        const whole = dst.slice();
        addFloat32Js(whole, new Float32Array(src.buffer));
        const split = dst.slice();
        expect(payload.addFloat32To(split)).toBe(whole.every(Number.isFinite));
        expect(bitsOf(split).equals(bitsOf(whole))).toBe(true);

        const copied = new Uint8Array(src.length);
        payload.copyTo(copied);
        expect(Buffer.from(copied).equals(Buffer.from(src))).toBe(true);
      }),
    );
  });

  it('copies and adds into any shorter destination: exactly its prefix, wherever the pieces are cut', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(awkward, awkward), { minLength: 1, maxLength: 60 }), fc.array(fc.integer({ min: 0, max: 13 }), { maxLength: 12 }), fc.nat(), (pairs, cuts, shorten) => {
        const src = new Uint8Array(Float32Array.from(pairs, (p) => p[1]).buffer);
        const payload = new Payload(cutInto(src, cuts));
        const n = shorten % (pairs.length + 1);
        const copied = new Uint8Array(n * 4 + (shorten % 4)).fill(0xee);
        const bytes = Math.min(copied.length, src.length);
        payload.copyTo(copied);
        expect(Buffer.from(copied.subarray(0, bytes)).equals(Buffer.from(src.subarray(0, bytes)))).toBe(true);
        expect(copied.subarray(bytes).every((b) => b === 0xee)).toBe(true);
        const dst = Float32Array.from(pairs.slice(0, n), (p) => p[0]);
        const whole = dst.slice();
        addFloat32Js(whole, new Float32Array(src.buffer, 0, n));
        expect(payload.addFloat32To(dst)).toBe(whole.every(Number.isFinite));
        expect(bitsOf(dst).equals(bitsOf(whole))).toBe(true);
      }),
    );
  });

  it('adds into a destination shorter than the payload, leaving what follows alone', () => {
    const payload = new Payload([at(new Uint8Array(Float32Array.of(1, 2).buffer).subarray(0, 5), 1), at(new Uint8Array(Float32Array.of(1, 2, 3).buffer).subarray(5), 2)]);
    const dst = Float32Array.of(10, 20, 30, 40);
    payload.addFloat32To(dst.subarray(0, 2));
    expect(Array.from(dst)).toEqual([11, 22, 30, 40]);
  });
});
