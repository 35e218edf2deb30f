export type CollectiveErrorCode =
  | 'ERR_PEER_LOST' // a ring neighbour disconnected or stopped answering
  | 'ERR_COLLECTIVE_TIMEOUT' // an operation passed its deadline
  | 'ERR_FINGERPRINT_MISMATCH' // ranks called different operations (length, layout, step, sequence)
  | 'ERR_PROTOCOL' // a peer sent bytes that do not decode
  | 'ERR_AUTH' // a ring connection with a wrong or missing token
  | 'ERR_TLS' // a ring connection whose TLS failed (an untrusted certificate, TLS on one side only)
  | 'ERR_RENDEZVOUS' // the ring could not be formed in time
  | 'ERR_EARLY_LIMIT' // a peer ran too far ahead (too many bytes for operations not yet started)
  | 'ERR_CLOSED'; // the communicator was closed

/** Fields that locate a failure; messages repeat them in words. */
export interface CollectiveErrorContext {
  /** The rank that raised (or first raised) the error. */
  rank?: number;
  /** The peer it concerns. */
  peer?: number;
  op?: string;
  seq?: number;
  step?: number;
}

export class CollectiveError extends Error {
  readonly rank?: number;
  readonly peer?: number;
  readonly op?: string;
  readonly seq?: number;
  readonly step?: number;

  constructor(
    readonly code: CollectiveErrorCode,
    message: string,
    context: CollectiveErrorContext = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'CollectiveError';
    Object.assign(this, context);
  }
}
