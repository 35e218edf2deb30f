import { readFileSync } from 'node:fs';
import { type Command, Option } from 'commander';

export interface TlsFlags {
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
}

/** PEM contents read from the flags' files. */
export interface Tls {
  cert?: Buffer;
  key?: Buffer;
  ca?: Buffer;
}

/**
 * `--tls-cert`/`--tls-key` (this process's listeners speak wss:// and https://) and `--tls-ca`
 * (what the other side's certificate is checked against), each also from RINGTRAIN_TLS_*.
 */
export function addTlsOptions(cmd: Command, sides: 'server' | 'client' | 'both'): Command {
  if (sides !== 'client') {
    cmd.addOption(new Option('--tls-cert <file>', 'TLS certificate (PEM): listen for wss:// and https://').env('RINGTRAIN_TLS_CERT'));
    cmd.addOption(new Option('--tls-key <file>', 'its private key (PEM)').env('RINGTRAIN_TLS_KEY'));
  }
  cmd.addOption(new Option('--tls-ca <file>', "CA certificate (PEM) that the other side's certificate must chain to (default: the system's)").env('RINGTRAIN_TLS_CA'));
  return cmd;
}

/** Reads the files; a certificate without its key (or the reverse) is an error. */
export function readTls(flags: TlsFlags): Tls {
  if (Boolean(flags.tlsCert) !== Boolean(flags.tlsKey)) throw Object.assign(new Error('--tls-cert and --tls-key go together'), { code: 'ERR_TLS_CONFIG' });
  const read = (file: string | undefined, what: string): Buffer | undefined => {
    if (!file) return undefined;
    try {
      return readFileSync(file);
    } catch (err) {
      throw Object.assign(new Error(`cannot read the TLS ${what} ${file}: ${(err as Error).message}`), { code: 'ERR_TLS_CONFIG' });
    }
  };
  return { cert: read(flags.tlsCert, 'certificate'), key: read(flags.tlsKey, 'key'), ca: read(flags.tlsCa, 'CA certificate') };
}

/** The flags that pass TLS on to a local worker: its ring endpoint uses the same certificate, and it trusts the coordinator's. */
export function tlsArgsForWorkers(flags: TlsFlags): string[] {
  const ca = flags.tlsCa ?? flags.tlsCert;
  return [...(flags.tlsCert && flags.tlsKey ? ['--tls-cert', flags.tlsCert, '--tls-key', flags.tlsKey] : []), ...(ca ? ['--tls-ca', ca] : [])];
}
