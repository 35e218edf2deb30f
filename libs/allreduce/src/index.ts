export { type AllReduceResult, type CollectiveOptions, Communicator, type CommunicatorOptions } from './communicator.js';
export { closeWebSocket, type DialResult, dialUntil } from './dial.js';
export { CollectiveError, type CollectiveErrorCode, type CollectiveErrorContext } from './errors.js';
export { MemoryHub, MemoryTransport } from './memory-transport.js';
export { type RingPlace, type TlsFiles, WebSocketTransport, type WebSocketTransportOptions } from './websocket-transport.js';
export { type CollectiveKind, describeFingerprint, type Fingerprint } from './operations.js';
export { RingLayout } from './ring-layout.js';
export { nextRank, prevRank, type Transport, type TransportHandler } from './transport.js';
export { hasRingNodeFlags, hasRingProcessEnv, RING_NODE_FLAGS, ringProcessEnv } from './process-env.js';
