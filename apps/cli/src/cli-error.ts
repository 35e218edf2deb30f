/** An error the CLI prints as `ringtrain: CODE: message`. */
export function errorWithCode(code: string, message: string): Error {
  return Object.assign(new Error(message), { code });
}
