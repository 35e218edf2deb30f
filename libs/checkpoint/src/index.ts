export { CheckpointError, type CheckpointErrorCode } from './errors.js';
export { CHECKSUM_KEY, MAX_HEADER_BYTES, type NamedTensor, readSafetensors, type SafetensorsFile, writeSafetensors } from './safetensors.js';
