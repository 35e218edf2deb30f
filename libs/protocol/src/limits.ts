/** Protocol version carried by every frame and message; peers of another version are refused. */
export const PROTOCOL_VERSION = 1;

export interface Limits {
  /** Largest tensor frame, header included (bytes). */
  maxFrameBytes: number;
  /** Largest control message (bytes). */
  maxMessageBytes: number;
}

export const DEFAULT_LIMITS: Limits = {
  maxFrameBytes: 64 * 1024 * 1024 + 64,
  maxMessageBytes: 1024 * 1024,
};
