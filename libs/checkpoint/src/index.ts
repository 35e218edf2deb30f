export {
  applyRetention,
  type Checkpoint,
  CHECKPOINT_FORMAT,
  type CheckpointMeta,
  checkpointName,
  findLatestCheckpoint,
  listCheckpoints,
  loadCheckpoint,
  readCheckpointMeta,
  type RetentionPolicy,
  saveCheckpoint,
  WEIGHTS_FORMAT,
} from './checkpoint-store.js';
export { CheckpointError, type CheckpointErrorCode } from './errors.js';
export {
  CHECKSUM_KEY,
  HEADER_CHECKSUM_KEY,
  MAX_HEADER_BYTES,
  type NamedTensor,
  type RawTensor,
  readSafetensors,
  readSafetensorsRaw,
  type ReadOptions,
  readSafetensorsHeader,
  type SafetensorsFile,
  writeSafetensors,
  writeSafetensorsAsync,
} from './safetensors.js';
