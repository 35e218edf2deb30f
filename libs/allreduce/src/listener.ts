import { createServer, type RequestListener, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Duplex } from 'node:stream';
import { HANDSHAKE_TIMEOUT_MS } from '@ringtrain/protocol';

export interface ListenerOptions {
  /** A connection's request (or upgrade) must arrive whole within this, and it may not sit idle longer before it (default HANDSHAKE_TIMEOUT_MS). */
  handshakeMs?: number;
  /** Connections at once; more are refused by the kernel's backlog, not taken. */
  maxConnections: number;
  /** PEM certificate and key: the listener speaks HTTPS (and so wss://). */
  tls?: { cert: string | Buffer; key: string | Buffer };
}

/**
 * An HTTP(S) server for a port that strangers can reach, the one shape every listener of ringtrain
 * takes: slow writers are cut off (the header deadline, checked every second rather than Node's
 * 30 s, catches one that keeps trickling; the idle timeout one that stops), connections are
 * capped, and an upgraded socket gets an error listener first, so that a client that resets it
 * cannot crash the process.
 */
export function guardedServer(handler: RequestListener, options: ListenerOptions): Server {
  const handshake = options.handshakeMs ?? HANDSHAKE_TIMEOUT_MS;
  const base = { headersTimeout: handshake, requestTimeout: handshake, connectionsCheckingInterval: Math.min(1000, handshake) };
  const server = options.tls ? (createHttpsServer({ ...base, ...options.tls }, handler) as unknown as Server) : createServer(base, handler);
  server.setTimeout(handshake);
  server.maxConnections = options.maxConnections;
  server.on('upgrade', (_req, socket: Duplex) => socket.on('error', () => {}));
  return server;
}

const REASONS: Record<number, string> = { 401: 'Unauthorized', 403: 'Forbidden', 409: 'Conflict', 503: 'Service Unavailable' };

/** Marks ringtrain's own refusals: a dialler shows the reason of these, and no other server's body. */
export const REFUSAL_HEADER = 'x-ringtrain-refusal';

/** Refuses a WebSocket upgrade before the handshake: an HTTP status, a one-line reason, and the close. */
export function refuseUpgrade(socket: Duplex, status: number, reason: string): void {
  const body = `${reason}\n`;
  socket.end(`HTTP/1.1 ${status} ${REASONS[status] ?? 'Error'}\r\nConnection: close\r\n${REFUSAL_HEADER}: 1\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
}
