import WebSocket, { type ClientOptions } from 'ws';
import { REFUSAL_HEADER } from './listener.js';

/** How a dial ended: connected, refused with an HTTP status (and its body), or never reached. */
export type DialResult = { ws: WebSocket } | { status: number; body: string; fromRingtrain: boolean } | { unreachable: true; last?: string } | { aborted: true } | { tls: string };

/**
 * TLS failures that retrying cannot mend: the server's certificate is not trusted or not for this
 * name, or one side speaks TLS and the other does not.
 */
const TLS_FAILURES = /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS|ERR_SSL|EPROTO|wrong version number|packet length too long|unknown protocol|HPE_INVALID_CONSTANT|Expected HTTP/i;

/** How long a refusal's body may take to arrive: a server that never ends it must not hang the dial. */
const REFUSAL_BODY_MS = 2000;
const REFUSAL_BODY_BYTES = 4096;

/**
 * Dials `url` until it accepts, refuses with a status other than 503 (503 means "not ready yet,
 * retry"), or `deadline` (ms since the epoch) passes. `onOpen` runs synchronously when the
 * connection opens, so that a peer that speaks first is never missed (ws delivers messages that
 * arrive with the handshake reply before any promise continuation could attach a listener).
 */
export async function dialUntil(url: string, options: ClientOptions, deadline: number, onOpen: (ws: WebSocket) => void, signal?: AbortSignal): Promise<DialResult> {
  let last: string | undefined;
  for (let attempt = 0; ; attempt++) {
    if (signal?.aborted) return { aborted: true };
    const result = await new Promise<DialResult | 'retry'>((resolve) => {
      const ws = new WebSocket(url, { perMessageDeflate: false, handshakeTimeout: Math.max(100, Math.min(5000, deadline - Date.now())), ...options });
      let refused = false;
      ws.once('open', () => {
        if (signal?.aborted) {
          ws.terminate();
          return resolve({ aborted: true });
        }
        onOpen(ws);
        resolve({ ws });
      });
      ws.once('unexpected-response', (req, res) => {
        refused = true;
        let body = '';
        const settle = (): void => {
          clearTimeout(timer);
          req.destroy();
          resolve(res.statusCode === 503 ? 'retry' : { status: res.statusCode ?? 0, body: body.trim().slice(0, REFUSAL_BODY_BYTES), fromRingtrain: res.headers[REFUSAL_HEADER] === '1' });
        };
        const timer = setTimeout(settle, REFUSAL_BODY_MS);
        // Only the start of the body is kept: a server that streams one without end gets no memory.
        res.on('data', (d: Buffer) => {
          if (body.length < REFUSAL_BODY_BYTES) body += d.toString('utf8', 0, REFUSAL_BODY_BYTES);
        });
        res.on('end', settle);
        res.on('error', settle);
      });
      ws.on('error', (err: NodeJS.ErrnoException) => {
        if (refused) return;
        if (TLS_FAILURES.test(`${err.code ?? ''} ${err.message}`)) return resolve({ tls: `${err.code ? `${err.code}: ` : ''}${err.message}` });
        // A TLS server answers a plain dial by hanging up: worth a hint if that is all it ever does.
        last = `${err.message}${err.code ? ` (${err.code})` : ''}${err.code === 'ECONNRESET' && url.startsWith('ws:') ? '; if the server speaks TLS, dial wss://' : ''}`;
        resolve('retry');
      });
    });
    if (result !== 'retry') return result;
    if (signal?.aborted) return { aborted: true };
    if (Date.now() + 100 > deadline) return { unreachable: true, ...(last ? { last } : {}) };
    // Soon at first (a ring neighbour takes its place within milliseconds of this one), then slower.
    await new Promise((r) => setTimeout(r, Math.min(20 * 2 ** attempt, 500)));
  }
}

/** Closes `ws` normally; a peer that does not answer the close within `ms` is cut off. */
export function closeWebSocket(ws: WebSocket, reason: string, ms = 1000): Promise<void> {
  return new Promise((resolve) => {
    if (ws.readyState === WebSocket.CLOSED) return resolve();
    const force = setTimeout(() => ws.terminate(), ms);
    ws.once('close', () => {
      clearTimeout(force);
      resolve();
    });
    ws.close(1000, reason);
  });
}

