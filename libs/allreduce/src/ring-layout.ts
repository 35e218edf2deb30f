/**
 * How a tensor of `length` elements is cut for a ring of `world` ranks: N chunks (chunk c covers
 * [⌊c·L/N⌋, ⌊(c+1)·L/N⌋), so sizes differ by at most one and may be 0), each cut into segments of
 * at most `segmentElems` — the unit that is sent, received and added, so they overlap.
 */
export class RingLayout {
  constructor(
    readonly length: number,
    readonly world: number,
    readonly segmentElems: number,
  ) {}

  chunkStart(c: number): number {
    return Math.floor((c * this.length) / this.world);
  }

  chunkLength(c: number): number {
    return this.chunkStart(c + 1) - this.chunkStart(c);
  }

  segments(c: number): number {
    return Math.ceil(this.chunkLength(c) / this.segmentElems);
  }

  /** [offset, count] of segment j of chunk c, in elements of the whole tensor. */
  segment(c: number, j: number): [number, number] {
    const start = this.chunkStart(c) + j * this.segmentElems;
    return [start, Math.min(this.segmentElems, this.chunkStart(c + 1) - start)];
  }
}
