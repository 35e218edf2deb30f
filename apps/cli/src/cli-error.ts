/** An error the CLI prints as `ringtrain: CODE: message`. */
export function errorWithCode(code: string, message: string): Error {
  return Object.assign(new Error(message), { code });
}

/** A port that cannot be listened on, as the user can act on it (EADDRINUSE, EACCES), else the error itself. */
export function portError(err: unknown, host: string, port: number, flag: string): unknown {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'EADDRINUSE') return errorWithCode('ERR_PORT_IN_USE', `port ${port} on ${host} is in use (another run, or another program, listens there): give another ${flag}, or leave it out to take a free port`);
  if (code === 'EACCES') return errorWithCode('ERR_PORT_DENIED', `port ${port} on ${host} needs privileges this process does not have: give a ${flag} above 1023`);
  if (code === 'EADDRNOTAVAIL') return errorWithCode('ERR_ARGUMENT', `${host} is not an address of this machine, so nothing can listen on it: give one of its addresses, or 0.0.0.0 for all`);
  return err;
}
