import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { type ControlMessage, decodeControl, encodeControl, sameSecret } from '@ringtrain/protocol';
import { refuseUpgrade } from '@ringtrain/allreduce';
import type { Logger } from 'pino';
import WebSocket, { WebSocketServer } from 'ws';
import type { Conn, MembershipEvent } from './membership.js';

/** What a worker's connection says or does, for the membership machine. */
export type LinkEvent = Extract<MembershipEvent, { conn: Conn }>;

export interface WorkerLinksOptions {
  /** Shared secret; a worker without it is refused during the HTTP upgrade. */
  token?: string;
  /** Ping period and the silence after which a watched worker counts as lost (defaults 500 ms and 3 s). */
  heartbeatMs?: number;
  peerTimeoutMs?: number;
  logger: Logger;
  onEvent: (event: LinkEvent) => void;
  /** Whether a connection's silence counts on its own: a ring member of the live generation while it forms or runs. */
  watched: (conn: Conn) => boolean;
  /** Whether a connection belongs to a member at all (the ones a regroup asks). */
  member: (conn: Conn) => boolean;
}

interface Link {
  ws: WebSocket;
  lastSeen: number;
}

/** Messages from workers are small: a hello, reports, a state offer's figures. */
const MAX_CONTROL_BYTES = 1024 * 1024;
const HELLO_DEADLINE_MS = 10_000;

/**
 * The coordinator's connections to its workers: the WebSocket upgrade (token checked), decoding
 * (a worker that cannot speak the protocol is cut off), heartbeats and silence. Everything a
 * connection says or does becomes an event for the membership machine, which decides; this module
 * carries out its sends and closes. It knows nothing of ranks or generations but what `watched`
 * and `member` tell it.
 */
export class WorkerLinks {
  private readonly links = new Map<Conn, Link>();
  private nextConn = 1;
  private readonly wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: MAX_CONTROL_BYTES });
  private heartbeat: NodeJS.Timeout | null = null;
  private lastTick = Date.now();
  private readonly log: Logger;

  constructor(private readonly options: WorkerLinksOptions) {
    this.log = options.logger;
  }

  private get period(): number {
    return this.options.heartbeatMs ?? 500;
  }

  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const token = this.options.token;
    const given = String(req.headers['x-ringtrain-token'] ?? '');
    if (token !== undefined && !sameSecret(given, token)) {
      this.log.warn({ remote: req.socket.remoteAddress }, 'worker refused: wrong or missing token');
      return refuseUpgrade(socket, 401, 'wrong or missing job token');
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => this.onConnection(ws));
  }

  send(conn: Conn, msg: ControlMessage): void {
    const link = this.links.get(conn);
    if (link?.ws.readyState === WebSocket.OPEN) link.ws.send(encodeControl(msg));
  }

  /** 1001 (gone: lost or dropped) cuts the connection at once; other codes close it cleanly. */
  close(conn: Conn, code: number, reason: string): void {
    const link = this.links.get(conn);
    if (!link) return;
    if (code === 1001) link.ws.terminate();
    else link.ws.close(code, reason);
  }

  /**
   * A regroup asks every member whether it is alive (a ping; any message answers). One already
   * silent here for four heartbeat periods (hung, or cut off) is reported silent instead of waited
   * for, and so is `suspect` (the one a fault was blamed on: its ring neighbour found it silent)
   * once it has missed two.
   */
  askAlive(suspect?: Conn): void {
    const now = Date.now();
    for (const [conn, link] of this.links) {
      if (link.ws.readyState !== WebSocket.OPEN) continue;
      const silence = (conn === suspect ? 2 : 4) * this.period;
      const ms = now - link.lastSeen;
      if (ms > silence && this.options.member(conn)) queueMicrotask(() => this.options.onEvent({ type: 'silent', conn, ms }));
      else link.ws.ping();
    }
  }

  /** A watched worker silent for peerTimeoutMs is lost; a late tick means this process was busy, not the worker. */
  startHeartbeat(): void {
    const timeout = this.options.peerTimeoutMs ?? 3000;
    this.lastTick = Date.now();
    this.heartbeat = setInterval(() => {
      const now = Date.now();
      const late = now - this.lastTick > 2 * this.period;
      this.lastTick = now;
      for (const [conn, link] of this.links) {
        if (link.ws.readyState !== WebSocket.OPEN) continue;
        if (late) link.lastSeen = now;
        // A worker loads its data before it is prepared (and a member), and every step and every
        // ring wait yields to answer pings. A member that hangs while its ring forms would
        // otherwise hold the others up to the ready deadline.
        else if (this.options.watched(conn) && now - link.lastSeen > timeout) {
          this.options.onEvent({ type: 'silent', conn, ms: now - link.lastSeen });
          continue;
        }
        link.ws.ping();
      }
    }, this.period);
    this.heartbeat.unref();
  }

  stopHeartbeat(): void {
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = null;
  }

  closeAll(): void {
    this.stopHeartbeat();
    for (const link of this.links.values()) link.ws.close(1000, 'coordinator closing');
    this.wss.close();
  }

  private onConnection(ws: WebSocket): void {
    const conn = this.nextConn++;
    const link: Link = { ws, lastSeen: Date.now() };
    this.links.set(conn, link);
    let said = false;
    // Once cut off, a connection says nothing more: ws still emits the frames already received.
    let cutOff = false;
    const cut = (code: number, reason: string): void => {
      cutOff = true;
      ws.close(code, reason);
    };
    const helloTimer = setTimeout(() => cut(1008, 'no hello'), HELLO_DEADLINE_MS);
    ws.on('message', (data: Buffer) => {
      if (cutOff) return;
      link.lastSeen = Date.now();
      let msg: ControlMessage;
      try {
        msg = decodeControl(data);
      } catch (err) {
        const code = (err as { code?: string }).code ?? 'ERR_PROTOCOL';
        // A worker that cannot speak the protocol is cut off; the membership machine sees a lost connection.
        this.log.warn({ code, conn }, `a worker sent a bad message, connection closed: ${(err as Error).message}`);
        cut(1002, code);
        return;
      }
      if (!said) {
        if (msg.type !== 'hello') return void cut(1002, 'expected hello');
        said = true;
        clearTimeout(helloTimer);
        this.options.onEvent({ type: 'hello', conn, hello: msg });
      } else {
        this.options.onEvent({ type: 'message', conn, msg });
      }
    });
    ws.on('pong', () => {
      link.lastSeen = Date.now();
      this.options.onEvent({ type: 'alive', conn });
    });
    ws.on('close', () => {
      clearTimeout(helloTimer);
      this.links.delete(conn);
      this.options.onEvent({ type: 'disconnect', conn });
    });
    ws.on('error', () => {});
  }
}
