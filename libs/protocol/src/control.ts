import { Packr } from 'msgpackr';
import { z } from 'zod';
import { ProtocolError } from './errors.js';
import { DEFAULT_LIMITS, type Limits, PROTOCOL_VERSION } from './limits.js';

/**
 * A control message: "RTC0", a version byte, 3 reserved bytes, then a msgpack object with `type`
 * and `v`, validated against its schema on receipt.
 */
export const CONTROL_MAGIC = 0x30435452; // "RTC0" little-endian
const CONTROL_HEADER_BYTES = 8;

const rank = z.number().int().min(0).max(65535);

/** A collective failed on `origin`: every rank that hears it fails the same operations and passes it on. */
export const abortMessageSchema = z.strictObject({
  type: z.literal('abort'),
  v: z.literal(PROTOCOL_VERSION),
  origin: rank,
  code: z.string().min(1).max(64),
  message: z.string().max(4096),
  /** The peer the origin lost or disagreed with, if any. */
  peer: rank.optional(),
  seq: z.number().int().min(0).optional(),
});

export const controlMessageSchema = z.discriminatedUnion('type', [abortMessageSchema]);
export type ControlMessage = z.infer<typeof controlMessageSchema>;
export type AbortMessage = z.infer<typeof abortMessageSchema>;

// moreTypes keeps typed arrays typed (otherwise they come back as Buffer).
const packr = new Packr({ moreTypes: true, useRecords: false });

export function encodeControl(msg: ControlMessage): Buffer {
  const body = packr.pack(msg);
  const header = Buffer.alloc(CONTROL_HEADER_BYTES);
  header.writeUInt32LE(CONTROL_MAGIC, 0);
  header.writeUInt8(PROTOCOL_VERSION, 4);
  return Buffer.concat([header, body]);
}

/** True when `buf` starts like a control message (the rest is checked by decodeControl). */
export function isControl(buf: Uint8Array): boolean {
  return buf.length >= 4 && buf[0] === 0x52 && buf[1] === 0x54 && buf[2] === 0x43 && buf[3] === 0x30;
}

export function decodeControl(buf: Uint8Array, limits: Limits = DEFAULT_LIMITS): ControlMessage {
  if (buf.length > limits.maxMessageBytes) throw new ProtocolError('ERR_MESSAGE_TOO_LARGE', `control message of ${buf.length} bytes exceeds the limit of ${limits.maxMessageBytes}`);
  if (buf.length < CONTROL_HEADER_BYTES) throw new ProtocolError('ERR_FRAME_TRUNCATED', `control message of ${buf.length} bytes is shorter than its ${CONTROL_HEADER_BYTES}-byte header`);
  if (!isControl(buf)) throw new ProtocolError('ERR_BAD_MAGIC', 'bad control message magic');
  if (buf[4] !== PROTOCOL_VERSION) throw new ProtocolError('ERR_BAD_VERSION', `control message of protocol version ${buf[4]}, expected ${PROTOCOL_VERSION}`);
  let body: unknown;
  try {
    body = packr.unpack(buf.subarray(CONTROL_HEADER_BYTES));
  } catch (err) {
    throw new ProtocolError('ERR_MESSAGE_DECODE', `control message body is not valid msgpack: ${(err as Error).message}`, { cause: err });
  }
  const parsed = controlMessageSchema.safeParse(body);
  if (!parsed.success) {
    const why = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    throw new ProtocolError('ERR_MESSAGE_INVALID', `invalid control message: ${why}`);
  }
  return parsed.data;
}
