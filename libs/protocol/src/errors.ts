/** Stable codes for malformed input on the wire. */
export type ProtocolErrorCode =
  | 'ERR_FRAME_TRUNCATED' // fewer bytes than the header announces
  | 'ERR_FRAME_LENGTH' // more bytes than the header announces, or a count past the tensor's end
  | 'ERR_FRAME_TOO_LARGE' // over the configured limit
  | 'ERR_BAD_MAGIC' // not a ringtrain frame
  | 'ERR_BAD_VERSION' // another protocol version
  | 'ERR_BAD_FIELD' // an unknown operation or dtype
  | 'ERR_MESSAGE_TOO_LARGE' // a control message over the limit
  | 'ERR_MESSAGE_DECODE' // a control body that is not msgpack
  | 'ERR_MESSAGE_INVALID'; // msgpack that fails the schema

export class ProtocolError extends Error {
  constructor(
    readonly code: ProtocolErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'ProtocolError';
  }
}
