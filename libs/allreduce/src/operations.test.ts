import { Dtype, type FrameHeader, FrameOp } from '@ringtrain/protocol';
import { describe, expect, it } from 'vitest';
import { AllGatherOp, AllReduceOp, BroadcastOp, describeFingerprint, type Fingerprint, kindOfFrame, type OperationHost } from './operations.js';
import { RingLayout } from './ring-layout.js';

/** A host that records what the operation sends (no network: the unit is the frame check). */
function host(rank: number, world: number): OperationHost & { sent: FrameHeader[] } {
  const sent: FrameHeader[] = [];
  return { rank, world, sent, send: (_op, header) => sent.push(header) };
}
const fp = (kind: Fingerprint['kind'], length: number): Fingerprint => ({ kind, seq: 3, step: 9, length, layoutHash: 'ab'.repeat(8) });
const frame = (over: Partial<FrameHeader>): FrameHeader => ({ op: FrameOp.reduceScatter, dtype: Dtype.float32, seq: 3, step: 9, from: 0, chunk: 0, segment: 0, offset: 0, count: 0, tensorLength: 0, layoutHash: 'ab'.repeat(8), ...over });

describe('operations refuse every frame their layout does not have', () => {
  it('all-reduce (rank 1 of 3, 10 elements, segments of 2): dtype, chunk, segment, direction, range, repeats', () => {
    const op = new AllReduceOp(host(1, 3), fp('allreduce', 10), new Float32Array(10), true, 2);
    const layout = new RingLayout(10, 3, 2);
    const [offset, count] = layout.segment(0, 1);
    const rs = (over: Partial<FrameHeader>) => frame({ op: FrameOp.reduceScatter, chunk: 0, segment: 1, offset, count, ...over });
    expect(op.refuse(rs({ dtype: Dtype.uint8 }))).toBe('dtype 2, expected float32');
    expect(op.refuse(rs({ chunk: 3 }))).toBe('chunk 3 segment 1 is not in the layout');
    expect(op.refuse(rs({ segment: layout.segments(0) }))).toBe(`chunk 0 segment ${layout.segments(0)} is not in the layout`);
    // Rank 1 never receives the reduce-scatter of its own chunk, nor the all-gather of the chunk it owns (2).
    expect(op.refuse(rs({ chunk: 1, segment: 0, offset: layout.segment(1, 0)[0], count: layout.segment(1, 0)[1] }))).toBe('chunk 1 never comes to rank 1 in reduce-scatter');
    const [o2, c2] = layout.segment(2, 0);
    expect(op.refuse(frame({ op: FrameOp.allGather, chunk: 2, segment: 0, offset: o2, count: c2 }))).toBe('chunk 2 never comes to rank 1 in all-gather');
    expect(op.refuse(rs({ offset: offset + 1 }))).toBe(`range ${offset + 1}+${count}, the layout says ${offset}+${count}`);
    expect(op.refuse(rs({ count: count - 1 }))).toBe(`range ${offset}+${count - 1}, the layout says ${offset}+${count}`);
    expect(op.refuse(rs({}))).toBeNull();
    expect(op.refuse(rs({}))).toBe('a second frame for chunk 0 segment 1');
    // The last chunk and its last segment are in the layout (the limits are exclusive).
    const last = layout.segments(2) - 1;
    expect(op.refuse(rs({ chunk: 2, segment: last, offset: layout.segment(2, last)[0], count: layout.segment(2, last)[1] }))).toBeNull();
    expect(op.refuse(frame({ op: FrameOp.allGather, chunk: 0, segment: 0, offset: layout.segment(0, 0)[0], count: layout.segment(0, 0)[1] }))).toBeNull();
  });

  it('all-reduce counts what it must receive and sends its own chunk first; complete only when both are done', () => {
    const h = host(1, 3);
    const op = new AllReduceOp(h, fp('allreduce', 10), new Float32Array(10), true, 2);
    op.start();
    const layout = new RingLayout(10, 3, 2);
    expect(h.sent.map((f) => [f.op, f.chunk, f.segment])).toEqual(Array.from({ length: layout.segments(1) }, (_, j) => [FrameOp.reduceScatter, 1, j]));
    expect(op.complete).toBe(false);
    expect(op.progress).toBe(`0/${layout.segments(0) + layout.segments(2) + layout.segments(0) + layout.segments(1)} frames received, 0 sends pending`);
  });

  it('broadcast: only the root takes acknowledgements, and only empty ones; others take segments of chunk 0', () => {
    const root = new BroadcastOp(host(0, 3), fp('broadcast', 5), new Float32Array(5), 0, 2);
    const other = new BroadcastOp(host(2, 3), fp('broadcast', 5), new Float32Array(5), 0, 2);
    const ack = frame({ op: FrameOp.broadcast, chunk: 1, segment: 0, count: 0 });
    expect(root.refuse({ ...ack, dtype: Dtype.uint8 })).toBe('dtype 2, expected float32');
    expect(root.refuse({ ...ack, count: 1 })).toBe('an acknowledgement that is not for this rank');
    expect(other.refuse(ack)).toBe('an acknowledgement that is not for this rank');
    expect(root.refuse(ack)).toBeNull();
    expect(root.refuse(ack)).toBe('a second frame for chunk 1 segment 0');
    const seg = (j: number, over: Partial<FrameHeader> = {}) => frame({ op: FrameOp.broadcast, chunk: 0, segment: j, offset: 2 * j, count: Math.min(2, 5 - 2 * j), ...over });
    expect(root.refuse(seg(0))).toBe('chunk 0 segment 0 is not in the layout'); // the root sends, it does not receive
    expect(other.refuse(seg(0, { chunk: 2 }))).toBe('chunk 2 segment 0 is not in the layout');
    expect(other.refuse(seg(3))).toBe('chunk 0 segment 3 is not in the layout');
    expect(other.refuse(seg(1, { offset: 3 }))).toBe('range 3+2, the layout says 2+2');
    expect(other.refuse(seg(2, { count: 2 }))).toBe('range 4+2, the layout says 4+1');
    expect(other.refuse(seg(2))).toBeNull();
    expect(other.refuse(seg(2))).toBe('a second frame for chunk 0 segment 2');
  });

  it('the broadcast root sends every segment; the rank before the root acknowledges once it has all', () => {
    const r = host(0, 2);
    new BroadcastOp(r, fp('broadcast', 5), Float32Array.of(1, 2, 3, 4, 5), 0, 2).start();
    expect(r.sent.map((f) => [f.chunk, f.segment, f.offset, f.count])).toEqual([[0, 0, 0, 2], [0, 1, 2, 2], [0, 2, 4, 1]]);
    const last = host(1, 2);
    const op = new BroadcastOp(last, fp('broadcast', 5), new Float32Array(5), 0, 2);
    op.start();
    expect(last.sent).toEqual([]);
    const payload = { copyTo: (dst: Uint8Array) => dst.fill(0), bytes: () => new Uint8Array(0), addFloat32To: () => true } as never;
    for (const [j, offset, count] of [[0, 0, 2], [1, 2, 2]]) op.handle(frame({ op: FrameOp.broadcast, chunk: 0, segment: j, offset, count }), payload);
    expect(last.sent).toEqual([]);
    op.handle(frame({ op: FrameOp.broadcast, chunk: 0, segment: 2, offset: 4, count: 1 }), payload);
    expect(last.sent.map((f) => [f.chunk, f.count])).toEqual([[1, 0]]);
  });

  it('all-gather takes uint8 parts from the other ranks only, once each', () => {
    const h = host(1, 3);
    const op = new AllGatherOp(h, fp('allgather', 0), Uint8Array.of(7, 7));
    expect(op.parts.map((p) => Array.from(p))).toEqual([[], [7, 7], []]);
    op.start();
    expect(h.sent.map((f) => [f.op, f.dtype, f.chunk, f.count, f.tensorLength])).toEqual([[FrameOp.gatherValues, Dtype.uint8, 1, 2, 2]]);
    const part = (chunk: number, over: Partial<FrameHeader> = {}) => frame({ op: FrameOp.gatherValues, dtype: Dtype.uint8, chunk, ...over });
    expect(op.refuse(part(0, { dtype: Dtype.float32 }))).toBe('dtype 1, expected uint8');
    expect(op.refuse(part(3))).toBe('part 3 never comes to rank 1');
    expect(op.refuse(part(1))).toBe('part 1 never comes to rank 1');
    expect(op.refuse(part(2))).toBeNull();
    expect(op.refuse(part(2))).toBe('a second frame for chunk 2 segment 0');
  });

  it('names kinds and fingerprints for the logs', () => {
    expect([FrameOp.reduceScatter, FrameOp.allGather, FrameOp.broadcast, FrameOp.gatherValues].map(kindOfFrame)).toEqual(['allreduce', 'allreduce', 'broadcast', 'allgather']);
    expect(describeFingerprint(fp('broadcast', 5))).toBe('broadcast seq 3 step 9 length 5 layout abababababababab');
  });
});
