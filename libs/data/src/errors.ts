export type DataErrorCode =
  | 'ERR_DATA_FORMAT' // a file that is not what it claims (bad magic, bad number, wrong type)
  | 'ERR_DATA_TRUNCATED' // a file shorter than its header says
  | 'ERR_DATA_NOT_FOUND' // a missing file or folder
  | 'ERR_DATA_TOO_LARGE' // past a size limit (a gzip bomb)
  | 'ERR_DATA_CONFIG' // an invalid dataset setting
  | 'ERR_VOCABULARY'; // a text with characters outside a trained model's vocabulary

export class DataError extends Error {
  constructor(
    readonly code: DataErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'DataError';
  }
}
