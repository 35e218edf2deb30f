export type CheckpointErrorCode =
  | 'ERR_CHECKPOINT_TRUNCATED' // shorter than its header says
  | 'ERR_CHECKPOINT_FORMAT' // not a safetensors file, or a header that breaks the format
  | 'ERR_CHECKPOINT_CHECKSUM' // the data does not match the recorded SHA-256
  | 'ERR_CHECKPOINT_IO' // the file system refused (missing, unwritable, full)
  | 'ERR_CHECKPOINT_NOT_FOUND'; // no checkpoint in a folder that the caller can use

export class CheckpointError extends Error {
  constructor(
    readonly code: CheckpointErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'CheckpointError';
  }
}
