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

/**
 * Frames a rank keeps for collectives it has not started yet. A peer legitimately runs a few
 * collectives ahead, each of at most a few hundred segments; empty frames (barriers, acknowledgements)
 * have no bytes to count, so they are counted here.
 */
export const MAX_EARLY_FRAMES = 16_384;

/** Every listener: a connection must have sent its whole request (or upgrade) within this (slow writers). */
export const HANDSHAKE_TIMEOUT_MS = 10_000;

/** Connections a ring endpoint takes at once: its right neighbour, one retrying, and probes. */
export const MAX_RING_CONNECTIONS = 16;
