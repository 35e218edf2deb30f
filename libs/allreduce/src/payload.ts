import { addFloat32 } from './reduce-kernel.js';

/**
 * A received frame's payload: its bytes as the socket delivered them, in one piece or in several
 * (one per socket read, at any byte alignment), so that the collectives add or copy them into
 * place with no gathering copy first. Valid only while the handler that receives it runs: copy
 * what you keep (`bytes`).
 */
export class Payload {
  readonly byteLength: number;

  constructor(readonly pieces: readonly Uint8Array[]) {
    let n = 0;
    for (const p of pieces) n += p.length;
    this.byteLength = n;
  }

  static of(bytes: Uint8Array): Payload {
    return new Payload([bytes]);
  }

  /** A fresh copy of all the bytes, which may be kept. */
  bytes(): Uint8Array {
    if (this.pieces.length === 1) return Uint8Array.prototype.slice.call(this.pieces[0]);
    const out = new Uint8Array(this.byteLength);
    this.copyTo(out);
    return out;
  }

  /** Writes the first dst.length bytes into dst. */
  copyTo(dst: Uint8Array): void {
    let at = 0;
    for (const p of this.pieces) {
      if (at >= dst.length) break;
      const take = Math.min(p.length, dst.length - at);
      dst.set(take === p.length ? p : p.subarray(0, take), at);
      at += take;
    }
  }

  /**
   * dst[i] += (the payload's float32 i) for every element of dst; returns whether every sum is
   * finite. A float split between two pieces is put together in a 4-byte scratch; each element
   * gets the same single float32 addition either way, so the sums are bit-identical to an add
   * from one gathered buffer.
   */
  addFloat32To(dst: Float32Array): boolean {
    if (this.pieces.length === 1) return addFloat32(dst, this.pieces[0].subarray(0, dst.length * 4));
    let finite = true;
    let element = 0; // next element of dst to add into
    let carried = 0; // bytes of a split float already in the scratch
    for (const p of this.pieces) {
      let at = 0;
      if (carried) {
        const take = Math.min(4 - carried, p.length);
        splitFloat.set(p.subarray(0, take), carried);
        carried += take;
        at = take;
        if (carried < 4) continue;
        finite = addFloat32(dst.subarray(element, element + 1), splitFloat) && finite;
        element++;
        carried = 0;
      }
      const whole = Math.min((p.length - at) >> 2, dst.length - element);
      if (whole > 0) finite = addFloat32(dst.subarray(element, element + whole), p.subarray(at, at + whole * 4)) && finite;
      element += whole;
      at += whole * 4;
      if (element >= dst.length) break;
      carried = p.length - at;
      if (carried) splitFloat.set(p.subarray(at), 0);
    }
    return finite;
  }
}

const splitFloat = new Uint8Array(4);
