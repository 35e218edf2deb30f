import { ProtocolError } from './errors.js';
import { DEFAULT_LIMITS, type Limits, PROTOCOL_VERSION } from './limits.js';

/**
 * A tensor frame: a fixed 48-byte little-endian header, then the raw payload bytes.
 *
 *   0 magic "RTF0"   4 version u8   5 op u8   6 dtype u8   7 flags u8 (0)
 *   8 seq u32       12 step u32    16 from u16   18 chunk u16   20 segment u32
 *  24 offset u32    28 count u32   32 tensorLength u32   36 reserved u32
 *  40 layoutHash 8 bytes           48 payload: count elements of dtype
 *
 * Flag bit 0 (PAYLOAD_FOLLOWS): the header travels alone and the payload is the next message on
 * the same connection, so that large payloads are sent and received without being copied into one
 * buffer with their header. Without it, the payload follows the header in the same message.
 *
 * seq numbers the collective operation; (op, tensorLength, layoutHash, step, seq) is its
 * fingerprint, which every frame carries so that ranks out of step fail instead of mixing data.
 * offset and count are in elements of the whole tensor.
 */
export const FRAME_HEADER_BYTES = 48;
export const FRAME_MAGIC = 0x30465452; // "RTF0" little-endian
export const PAYLOAD_FOLLOWS = 0x01;

export const FrameOp = {
  reduceScatter: 1,
  allGather: 2,
  broadcast: 3,
  gatherValues: 4,
} as const;
export type FrameOp = (typeof FrameOp)[keyof typeof FrameOp];

/**
 * Element types on the wire. float16, bfloat16 and int8 carry compressed gradients; an int8
 * payload starts with its float32 scale (value = q × scale).
 */
export const Dtype = { float32: 1, uint8: 2, float16: 3, bfloat16: 4, int8: 5 } as const;
export type Dtype = (typeof Dtype)[keyof typeof Dtype];
const DTYPE_BYTES: Record<number, number> = { [Dtype.float32]: 4, [Dtype.uint8]: 1, [Dtype.float16]: 2, [Dtype.bfloat16]: 2, [Dtype.int8]: 1 };
const PREFIX_BYTES: Record<number, number> = { [Dtype.int8]: 4 };

/** The payload bytes of `count` elements of `dtype` (with the int8 scale). */
export function payloadBytes(dtype: Dtype, count: number): number {
  return (PREFIX_BYTES[dtype] ?? 0) + count * DTYPE_BYTES[dtype];
}
const OP_NAMES: Record<number, string> = { 1: 'reduce-scatter', 2: 'all-gather', 3: 'broadcast', 4: 'gather-values' };

export interface FrameHeader {
  op: FrameOp;
  dtype: Dtype;
  seq: number;
  step: number;
  from: number;
  chunk: number;
  segment: number;
  offset: number;
  count: number;
  tensorLength: number;
  /** 16 hex digits (8 bytes). */
  layoutHash: string;
}

export function opName(op: number): string {
  return OP_NAMES[op] ?? `op#${op}`;
}

/** Writes the header into a new 48-byte buffer. The payload travels separately (no copy). */
export function encodeFrameHeader(h: FrameHeader, payloadFollows = false): Buffer {
  const b = Buffer.alloc(FRAME_HEADER_BYTES);
  b.writeUInt32LE(FRAME_MAGIC, 0);
  b.writeUInt8(PROTOCOL_VERSION, 4);
  b.writeUInt8(h.op, 5);
  b.writeUInt8(h.dtype, 6);
  b.writeUInt8(payloadFollows ? PAYLOAD_FOLLOWS : 0, 7);
  b.writeUInt32LE(h.seq >>> 0, 8);
  b.writeUInt32LE(h.step >>> 0, 12);
  b.writeUInt16LE(h.from, 16);
  b.writeUInt16LE(h.chunk, 18);
  b.writeUInt32LE(h.segment, 20);
  b.writeUInt32LE(h.offset, 24);
  b.writeUInt32LE(h.count, 28);
  b.writeUInt32LE(h.tensorLength, 32);
  b.write(h.layoutHash.padStart(16, '0').slice(-16), 40, 'hex');
  return b;
}

export interface DecodedFrame {
  header: FrameHeader;
  /** The payload bytes, a view into the received buffer; null when the payload follows. */
  payload: Uint8Array | null;
}

/** Decodes one whole tensor frame, checking every field and the length before using any of it. */
export function decodeTensorFrame(buf: Uint8Array, limits: Limits = DEFAULT_LIMITS): DecodedFrame {
  if (buf.length > limits.maxFrameBytes) throw new ProtocolError('ERR_FRAME_TOO_LARGE', `frame of ${buf.length} bytes exceeds the limit of ${limits.maxFrameBytes}`);
  if (buf.length < FRAME_HEADER_BYTES) throw new ProtocolError('ERR_FRAME_TRUNCATED', `frame of ${buf.length} bytes is shorter than the ${FRAME_HEADER_BYTES}-byte header`);
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const magic = v.getUint32(0, true);
  if (magic !== FRAME_MAGIC) throw new ProtocolError('ERR_BAD_MAGIC', `bad frame magic 0x${magic.toString(16).padStart(8, '0')}`);
  const version = v.getUint8(4);
  if (version !== PROTOCOL_VERSION) throw new ProtocolError('ERR_BAD_VERSION', `frame of protocol version ${version}, expected ${PROTOCOL_VERSION}`);
  const op = v.getUint8(5);
  if (!OP_NAMES[op]) throw new ProtocolError('ERR_BAD_FIELD', `unknown frame operation ${op}`);
  const dtype = v.getUint8(6);
  if (!DTYPE_BYTES[dtype]) throw new ProtocolError('ERR_BAD_FIELD', `unknown frame dtype ${dtype}`);
  const count = v.getUint32(28, true);
  const offset = v.getUint32(24, true);
  const tensorLength = v.getUint32(32, true);
  const flags = v.getUint8(7);
  if (flags & ~PAYLOAD_FOLLOWS) throw new ProtocolError('ERR_BAD_FIELD', `unknown frame flags 0x${flags.toString(16)}`);
  const need = payloadBytes(dtype as Dtype, count);
  if (need + FRAME_HEADER_BYTES > limits.maxFrameBytes) throw new ProtocolError('ERR_FRAME_TOO_LARGE', `frame announces ${need} payload bytes, over the limit of ${limits.maxFrameBytes}`);
  const follows = (flags & PAYLOAD_FOLLOWS) !== 0;
  const have = follows ? need : buf.length - FRAME_HEADER_BYTES;
  if (follows && buf.length !== FRAME_HEADER_BYTES) throw new ProtocolError('ERR_FRAME_LENGTH', `frame with a following payload carries ${buf.length - FRAME_HEADER_BYTES} bytes after its header`);
  if (have < need) throw new ProtocolError('ERR_FRAME_TRUNCATED', `frame announces ${count} elements (${need} bytes) but carries ${have} bytes`);
  if (have > need) throw new ProtocolError('ERR_FRAME_LENGTH', `frame announces ${count} elements (${need} bytes) but carries ${have} bytes`);
  if (offset + count > tensorLength) throw new ProtocolError('ERR_FRAME_LENGTH', `frame covers elements ${offset}..${offset + count} past the tensor length ${tensorLength}`);
  const header: FrameHeader = {
    op: op as FrameOp,
    dtype: dtype as Dtype,
    seq: v.getUint32(8, true),
    step: v.getUint32(12, true),
    from: v.getUint16(16, true),
    chunk: v.getUint16(18, true),
    segment: v.getUint32(20, true),
    offset,
    count,
    tensorLength,
    layoutHash: Buffer.from(buf.buffer, buf.byteOffset + 40, 8).toString('hex'),
  };
  return { header, payload: follows ? null : buf.subarray(FRAME_HEADER_BYTES) };
}

/** Checks the message that carries a PAYLOAD_FOLLOWS frame's payload against its header. */
export function checkFollowingPayload(header: FrameHeader, received: number): void {
  const need = payloadBytes(header.dtype, header.count);
  if (received < need) throw new ProtocolError('ERR_FRAME_TRUNCATED', `payload message of ${received} bytes, the header announced ${need}`);
  if (received > need) throw new ProtocolError('ERR_FRAME_LENGTH', `payload message of ${received} bytes, the header announced ${need}`);
}
