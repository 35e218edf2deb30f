import { readFileSync, statSync } from 'node:fs';
import { type Command, Option } from 'commander';

/**
 * The three tokens and where each may come from. A token on the command line is visible to every
 * user of the host (`ps`), so each also comes from the environment or from a file (a mounted
 * Secret); the command line stays possible, with a warning.
 */
export const SECRETS = {
  token: { flag: 'token', env: 'RINGTRAIN_TOKEN', what: 'job token: workers need it to join' },
  statusToken: { flag: 'status-token', env: 'RINGTRAIN_STATUS_TOKEN', what: 'token to read the status socket, dashboard data and /metrics (open when unset)' },
  adminToken: { flag: 'admin-token', env: 'RINGTRAIN_ADMIN_TOKEN', what: 'token for control actions over the status socket: stop, checkpoint now (disabled when unset)' },
} as const;
export type SecretName = keyof typeof SECRETS;
export type Secrets = Partial<Record<SecretName, string>>;

/** A token file larger than this is not a token (a wrong path, a device). */
export const MAX_TOKEN_FILE_BYTES = 4096;

/** `--<name> <secret>` and `--<name>-file <file>`, both also read from the environment. */
export function addSecretOptions(cmd: Command, ...names: SecretName[]): Command {
  for (const name of names) {
    const s = SECRETS[name];
    cmd.addOption(new Option(`--${s.flag} <secret>`, `${s.what} (visible in ps: prefer ${s.env} or --${s.flag}-file)`));
    cmd.addOption(new Option(`--${s.flag}-file <file>`, `read the ${s.flag.replace('-', ' ')} from this file (or ${s.env}_FILE)`));
  }
  return cmd;
}

/**
 * Each secret from, in order: its flag, its `-file` flag, its environment variable, the file its
 * `_FILE` variable names. `warn` hears of each secret given on the command line.
 */
export function readSecrets(flags: Record<string, unknown>, names: SecretName[], warn: (message: string) => void, env: NodeJS.ProcessEnv = process.env): Secrets {
  const out: Secrets = {};
  for (const name of names) {
    const s = SECRETS[name];
    const key = camel(s.flag);
    const given = flags[key] as string | undefined;
    if (given !== undefined) warn(`--${s.flag} on the command line is visible to every user of this host (ps); prefer ${s.env} or --${s.flag}-file`);
    const value = readSecret(given, flags[`${key}File`] as string | undefined, s.env, env, s.flag.replace('-', ' '));
    if (value !== undefined) out[name] = value;
  }
  return out;
}

/** One secret: given on the command line, else from `file`, else from `envName`, else from the file `<envName>_FILE` names. */
export function readSecret(given: string | undefined, file: string | undefined, envName: string, env: NodeJS.ProcessEnv = process.env, what = 'token'): string | undefined {
  if (given) return given;
  const path = file ?? env[`${envName}_FILE`];
  if (path === undefined) return env[envName] || undefined;
  return readTokenFile(path, what);
}

/** A token from a file: one line, surrounding white space (a trailing newline) dropped. */
export function readTokenFile(path: string, what = 'token'): string {
  let text: string;
  try {
    const size = statSync(path).size;
    if (size > MAX_TOKEN_FILE_BYTES) throw new Error(`${size} bytes, more than the ${MAX_TOKEN_FILE_BYTES} a token file may hold`);
    text = readFileSync(path, 'utf8').trim();
  } catch (err) {
    throw Object.assign(new Error(`cannot read the ${what} file ${path}: ${(err as Error).message}`), { code: 'ERR_TOKEN_FILE' });
  }
  if (!text) throw Object.assign(new Error(`the ${what} file ${path} is empty`), { code: 'ERR_TOKEN_FILE' });
  if (/[\r\n]/.test(text)) throw Object.assign(new Error(`the ${what} file ${path} holds more than one line`), { code: 'ERR_TOKEN_FILE' });
  return text;
}

/**
 * The environment for a child process: only the secrets it needs (a worker: the job token), never
 * the status or admin tokens, never a secret on its command line, and none of the parent's options.
 */
export function childEnv(base: NodeJS.ProcessEnv, secrets: Secrets, optionEnv: Iterable<string> = []): NodeJS.ProcessEnv {
  const env = { ...base };
  // The parent's options from the environment are the parent's: a child takes its own flags.
  for (const name of optionEnv) delete env[name];
  for (const s of Object.values(SECRETS)) {
    delete env[s.env];
    delete env[`${s.env}_FILE`];
  }
  if (secrets.token !== undefined) env[SECRETS.token.env] = secrets.token;
  return env;
}

/** The command line less its secret flags (`--token X`, `--token=X`), to run it again with the secrets in `childEnv`. */
export function withoutSecretArgs(argv: readonly string[]): string[] {
  const flags = Object.values(SECRETS).map((s) => `--${s.flag}`);
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (flags.includes(a)) i++;
    else if (!flags.some((f) => a.startsWith(`${f}=`))) out.push(a);
  }
  return out;
}

/** True for an address that only this host can reach. */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

function camel(flag: string): string {
  return flag.replace(/-(\w)/g, (_, c: string) => c.toUpperCase());
}
