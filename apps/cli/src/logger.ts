import { createRequire } from 'node:module';
import { Writable } from 'node:stream';
import pino, { type Logger } from 'pino';
import type prettyFactory from 'pino-pretty';

// pino-pretty is CommonJS, loaded only for a terminal: piped (every worker `launch` starts) it is not needed.
const require = createRequire(import.meta.url);

/** Where a terminal's log lines go while something else owns the bottom line (a progress bar); stderr when null. */
let terminalWriter: ((line: string) => void) | null = null;

/** A progress bar takes the terminal's log lines while it is shown (`null` gives them back to stderr). */
export function setTerminalWriter(writer: ((line: string) => void) | null): void {
  terminalWriter = writer;
}

export interface LoggerOptions {
  level?: string;
  /** Fields on every line, e.g. `{ rank: 2 }`. */
  base?: Record<string, unknown>;
}

/**
 * JSON lines when stderr is piped (for machines); on a terminal one readable line per event, the
 * message carrying the figures (the structured fields stay in the JSON).
 */
export function createLogger(options: LoggerOptions = {}): Logger {
  const level = options.level ?? process.env.RINGTRAIN_LOG_LEVEL ?? 'info';
  const base = { ...options.base };
  if (process.stderr.isTTY) {
    const pretty = require('pino-pretty') as typeof prettyFactory;
    // Each line goes through `terminalWriter`: a progress bar on screen keeps its line below it.
    const terminal = new Writable({
      write(chunk: Buffer, _encoding, done) {
        (terminalWriter ?? ((line: string) => process.stderr.write(line)))(String(chunk));
        done();
      },
    });
    return pino({ level, base }, pretty({
        destination: terminal,
        sync: true,
        ignore: 'pid,hostname',
        translateTime: 'HH:MM:ss',
        hideObject: true,
        // A message may carry a peer's words (a worker id, a failure's text): no control character
        // of theirs reaches the terminal (a function here bypasses pino-pretty's own stripping).
        messageFormat: (log, key) => printable(log.rank !== undefined ? `[rank ${log.rank}] ${log[key]}` : String(log[key])),
      }));
  }
  return pino({ level, base: { pid: process.pid, ...base } }, pino.destination({ dest: 2, sync: true }));
}

/** Control characters (newlines, ANSI escapes) shown as visible escapes: text from elsewhere cannot rewrite a terminal. */
export function printable(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => (c === '\t' ? ' ' : `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`));
}
