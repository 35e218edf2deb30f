import type { ControlMessage, FrameHeader } from '@ringtrain/protocol';
import type { CollectiveError } from './errors.js';
import type { Payload } from './payload.js';

/** What a transport delivers to the algorithms above it. */
export interface TransportHandler {
  /** A frame; `payload` is valid only during the call (the transport may reuse its memory): copy what you keep. */
  frame(from: number, header: FrameHeader, payload: Payload): void;
  control(from: number, message: ControlMessage): void;
  /** A neighbour is gone (closed, failed, silent); raised at most once per peer. */
  peerLost(peer: number, error: CollectiveError): void;
}

/**
 * Moves frames between ring neighbours. The collectives never see sockets: they send to a rank
 * and receive from a rank. Frames between two ranks arrive in the order they were sent.
 */
export interface Transport {
  readonly rank: number;
  readonly worldSize: number;
  setHandler(handler: TransportHandler): void;
  /**
   * Sends a tensor frame to a neighbour. Resolves once the payload has been handed to the wire,
   * after which the caller may change it; rejects if the peer is gone.
   */
  sendFrame(to: number, header: FrameHeader, payload: Uint8Array): Promise<void>;
  /** Best-effort control message (an abort must not fail because the peer is already gone). */
  sendControl(to: number, message: ControlMessage): void;
  close(): Promise<void>;
}

export const nextRank = (rank: number, world: number): number => (rank + 1) % world;
export const prevRank = (rank: number, world: number): number => (rank - 1 + world) % world;
