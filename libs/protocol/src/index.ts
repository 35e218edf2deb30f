export { type AbortMessage, CONTROL_MAGIC, type ControlMessage, decodeControl, encodeControl, isControl, type MessageOf, RUN_ID_PATTERN } from './control.js';
export { ProtocolError, type ProtocolErrorCode } from './errors.js';
export { DEFAULT_LIMITS, HANDSHAKE_TIMEOUT_MS, type Limits, MAX_EARLY_FRAMES, MAX_RING_CONNECTIONS, PROTOCOL_VERSION } from './limits.js';
export {
  checkFollowingPayload,
  type DecodedFrame,
  decodeTensorFrame,
  Dtype,
  encodeFrameHeader,
  FRAME_HEADER_BYTES,
  FRAME_MAGIC,
  type FrameHeader,
  FrameOp,
  opName,
  PAYLOAD_FOLLOWS,
  payloadBytes,
} from './tensor-frame.js';
export {
  type CheckpointInfo,
  type ConfigSummary,
  type Evaluation,
  type GenerationChange,
  type HealthReport,
  type MetricsPoint,
  parseStatusEvent,
  type Phases,
  type RankInfo,
  type RankState,
  rankStates,
  type RingProbe,
  type RunError,
  type RunJournalFile,
  type RunState,
  runStates,
  STATUS_VERSION,
  type StatusCommand,
  type StatusEvent,
  type StatusEventBody,
  type StatusEventOf,
  statusJsonSchema,
  statusSchemas,
  type StatusWarning,
} from './status.js';
export { sameSecret } from './secret.js';
