import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import type { Duplex } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { sameSecret, STATUS_VERSION, type StatusCommand, type StatusEventBody, statusJsonSchema, statusSchemas } from '@ringtrain/protocol';
import { closeWebSocket, refuseUpgrade } from '@ringtrain/allreduce';
import type { Logger } from 'pino';
import WebSocket, { WebSocketServer } from 'ws';
import type { PrometheusMetrics } from './prometheus.js';
import type { StatusFeed } from './status-feed.js';

export type Access = 'read' | 'admin';
export type CommandOutcome = { ok: true; message: string } | { ok: false; code: string; message: string };

export interface StatusServerOptions {
  feed: StatusFeed;
  metrics: PrometheusMetrics;
  /** Needed to read the status, the dashboard's data and /metrics, when set. */
  statusToken?: string;
  /** Needed for control actions (stop, checkpoint); without one they are disabled. */
  adminToken?: string;
  onCommand: (action: StatusCommand['action']) => CommandOutcome;
  logger: Logger;
  /** A client with more than this many bytes unsent is behind: it gets a snapshot when it catches up (default 1 MiB). */
  maxBufferedBytes?: number;
  /** Status socket clients at once (default MAX_STATUS_CLIENTS); more are refused with 503. */
  maxClients?: number;
  /** For /healthz and /readyz (no token: probes carry none, and the answer is only the state). */
  health?: () => Health;
}

/** What the probes see: alive while the process answers; ready while the run takes workers and trains. */
export interface Health {
  ready: boolean;
  state: string;
}

/** `/healthz` (alive) and `/readyz` (ready), as JSON; null for another path. */
export function answerProbe(path: string, health: Health): { status: number; body: string } | null {
  if (path === '/healthz') return { status: 200, body: JSON.stringify({ status: 'alive', state: health.state }) };
  if (path === '/readyz') return { status: health.ready ? 200 : 503, body: JSON.stringify({ status: health.ready ? 'ready' : 'not ready', state: health.state }) };
  return null;
}

/** Status socket clients at once: a dashboard per person watching, and scrapers, not thousands. */
export const MAX_STATUS_CLIENTS = 64;

/**
 * Every HTTP answer forbids framing and sniffing; the page loads only its own files and talks only
 * to its own origin (uPlot sets element styles from script, which CSP allows).
 */
const SECURITY_HEADERS = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'cross-origin-resource-policy': 'same-origin',
};

const require = createRequire(import.meta.url);
const dashboardDir = fileURLToPath(new URL('../dashboard/', import.meta.url));

/** Files the dashboard page loads, all served from here (no CDN); each read once, when first asked for. */
const ASSETS: Record<string, { file: string; type: string; body?: Buffer }> = {
  '/': { file: `${dashboardDir}index.html`, type: 'text/html; charset=utf-8' },
  '/dashboard.js': { file: `${dashboardDir}dashboard.js`, type: 'text/javascript; charset=utf-8' },
  '/dashboard.css': { file: `${dashboardDir}dashboard.css`, type: 'text/css; charset=utf-8' },
  '/assets/uPlot.iife.min.js': { file: require.resolve('uplot/dist/uPlot.iife.min.js'), type: 'text/javascript; charset=utf-8' },
  '/assets/uPlot.min.css': { file: require.resolve('uplot/dist/uPlot.min.css'), type: 'text/css; charset=utf-8' },
};

/** One status socket client: numbered events, and a bound on what may wait unsent for it. */
class Client {
  private seq = 0;
  /** Behind: events are dropped until its buffer drains, then it gets a fresh snapshot. */
  behind = false;
  alive = true;

  constructor(
    readonly ws: WebSocket,
    readonly access: Access,
    private readonly maxBuffered: number,
  ) {}

  /** Sends unless the client is behind; returns false when the event was dropped. */
  offer(event: StatusEventBody, force = false): boolean {
    if (this.ws.readyState !== WebSocket.OPEN) return true;
    if (!force && (this.behind || this.ws.bufferedAmount > this.maxBuffered)) {
      this.behind = true;
      return false;
    }
    this.ws.send(JSON.stringify({ v: STATUS_VERSION, seq: ++this.seq, time: Date.now(), ...event }));
    return true;
  }

  get drained(): boolean {
    return this.ws.bufferedAmount < this.maxBuffered / 4;
  }
}

/**
 * The coordinator's read side, on the coordinator's port: the status socket (`/status`), the
 * dashboard (`/`), `/metrics` (Prometheus), `/api/status` (one snapshot as JSON) and
 * `/api/status-schema` (the events' JSON Schema). Training never
 * waits for a client: events are dropped for a client that is behind, which then gets a snapshot.
 */
export class StatusServer {
  private readonly wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 4096 });
  private readonly clients = new Set<Client>();
  private readonly timer: NodeJS.Timeout;
  private readonly maxBuffered: number;
  private readonly unsubscribe: () => void;

  constructor(private readonly options: StatusServerOptions) {
    this.maxBuffered = options.maxBufferedBytes ?? 1024 * 1024;
    this.unsubscribe = options.feed.subscribe((event) => this.publish(event));
    // Catch up clients that were behind, and drop the ones that stopped answering pings.
    let ticks = 0;
    this.timer = setInterval(() => {
      for (const c of this.clients) {
        if (c.behind && c.drained) {
          c.behind = false;
          c.offer(this.options.feed.snapshot(c.access, true));
          this.options.metrics.statusResyncs.inc();
        }
      }
      if (++ticks % 40 === 0) {
        for (const c of this.clients) {
          if (!c.alive) c.ws.terminate();
          c.alive = false;
          c.ws.ping();
        }
      }
    }, 250);
    this.timer.unref();
  }

  /** Plain HTTP: the dashboard, its assets, /metrics and /api/status. */
  handleRequest(req: IncomingMessage, res: ServerResponse): void {
    for (const [k, v] of Object.entries(SECURITY_HEADERS)) res.setHeader(k, v);
    const url = new URL(req.url ?? '/', 'http://x');
    if (req.method !== 'GET' && req.method !== 'HEAD') return void res.writeHead(405, { allow: 'GET, HEAD' }).end();
    const probe = this.options.health && answerProbe(url.pathname, this.options.health());
    if (probe) {
      res.writeHead(probe.status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      return void res.end(req.method === 'HEAD' ? undefined : `${probe.body}\n`);
    }
    const asset = ASSETS[url.pathname];
    if (asset) {
      // The page and its code carry no data of the run; the data needs the token.
      res.writeHead(200, { 'content-type': asset.type, 'cache-control': 'no-cache' });
      return void res.end(req.method === 'HEAD' ? undefined : (asset.body ??= readFileSync(asset.file)));
    }
    if (url.pathname === '/api/status-schema') {
      res.writeHead(200, { 'content-type': 'application/schema+json' });
      return void res.end(JSON.stringify(statusJsonSchema(), null, 2));
    }
    if (url.pathname === '/metrics' || url.pathname === '/api/status') {
      if (!this.hostAllowed(req)) return void res.writeHead(403, { 'content-type': 'text/plain' }).end(`${HOST_REFUSED(req)}\n`);
      const access = this.authorize(req);
      if (!access) return void res.writeHead(401, { 'content-type': 'text/plain', 'www-authenticate': 'Bearer' }).end('wrong or missing status token\n');
      if (url.pathname === '/api/status') {
        res.writeHead(200, { 'content-type': 'application/json' });
        return void res.end(JSON.stringify({ v: STATUS_VERSION, seq: 1, time: Date.now(), ...this.options.feed.snapshot(access) }));
      }
      this.options.metrics.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': this.options.metrics.registry.contentType }).end(text),
        (err: Error) => res.writeHead(500).end(err.message),
      );
      return;
    }
    if (req.headers.upgrade === undefined && url.pathname === '/status') return void res.writeHead(426, { 'content-type': 'text/plain' }).end('the status socket speaks WebSocket\n');
    res.writeHead(404, { 'content-type': 'text/plain' }).end(`not found: ${url.pathname}\n`);
  }

  /** A WebSocket upgrade to /status: checked for the token before the handshake completes. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const refuse = (status: number, why: string): void => {
      this.options.logger.warn({ remote: req.socket.remoteAddress }, `status client refused: ${why}`);
      refuseUpgrade(socket, status, why);
    };
    // A page of another site, open in the operator's browser, must not read the run (or, with a
    // token in its URL, act on it): browsers always say where a page comes from, other clients do not.
    if (!sameOrigin(req)) return refuse(403, `origin ${String(req.headers.origin).slice(0, 200)} is not this server's`);
    if (!this.hostAllowed(req)) return refuse(403, HOST_REFUSED(req));
    const access = this.authorize(req);
    if (!access) return refuse(401, 'wrong or missing status token');
    if (this.clients.size >= (this.options.maxClients ?? MAX_STATUS_CLIENTS)) return refuse(503, `already ${this.clients.size} status clients, the most this server takes`);
    this.wss.handleUpgrade(req, socket, head, (ws) => this.onConnection(ws, access));
  }

  /** The run is over: every client gets what is left and a normal close. */
  async close(): Promise<void> {
    clearInterval(this.timer);
    this.unsubscribe();
    await Promise.all([...this.clients].map((c) => closeWebSocket(c.ws, 'run ended', 2000)));
    this.wss.close();
  }

  private onConnection(ws: WebSocket, access: Access): void {
    const client = new Client(ws, access, this.maxBuffered);
    this.clients.add(client);
    this.options.metrics.statusClients.set(this.clients.size);
    client.offer(this.options.feed.snapshot(access), true);
    ws.on('pong', () => (client.alive = true));
    ws.on('message', (data, isBinary) => this.onCommand(client, isBinary ? null : String(data)));
    ws.on('close', () => {
      this.clients.delete(client);
      this.options.metrics.statusClients.set(this.clients.size);
    });
    ws.on('error', () => {});
  }

  private onCommand(client: Client, text: string | null): void {
    let command: StatusCommand;
    try {
      if (text === null) throw new Error('commands are JSON text');
      command = statusSchemas().statusCommandSchema.parse(JSON.parse(text));
    } catch (err) {
      this.reply(client, { type: 'commandResult', id: 0, ok: false, code: 'ERR_BAD_COMMAND', message: `not a command: ${(err as Error).message.slice(0, 500)}` });
      return;
    }
    const reply = (o: CommandOutcome): void => this.reply(client, { type: 'commandResult', id: command.id, ...o });
    if (this.options.adminToken === undefined) return reply({ ok: false, code: 'ERR_FORBIDDEN', message: 'control actions are disabled: start the coordinator with --admin-token' });
    if (client.access !== 'admin') return reply({ ok: false, code: 'ERR_FORBIDDEN', message: `${command.action} needs the admin token` });
    this.options.logger.warn({ action: command.action }, `status client asked: ${command.action}`);
    reply(this.options.onCommand(command.action));
  }

  /**
   * Replies are never dropped, so a client that sends commands and reads no replies is closed
   * once its unsent bytes pass the limit, instead of growing this process's memory.
   */
  private reply(client: Client, event: StatusEventBody): void {
    if (client.ws.bufferedAmount > this.maxBuffered) {
      this.options.logger.warn('status client closed: it sends commands and does not read the replies');
      client.ws.terminate();
      return;
    }
    client.offer(event, true);
  }

  private publish(event: StatusEventBody): void {
    const terminal = event.type === 'end';
    for (const c of this.clients) {
      if (terminal && c.behind) {
        // The last word goes out whole: a fresh picture, then the end.
        c.behind = false;
        c.offer(this.options.feed.snapshot(c.access, true), true);
      }
      if (!c.offer(event, terminal)) this.options.metrics.statusDropped.inc();
    }
  }

  /** The access a request's token gives (`Authorization: Bearer T` or `?token=T`), or null. */
  /** A name in Host is fine once a token guards the status (see namesAnAddress). */
  private hostAllowed(req: IncomingMessage): boolean {
    return this.options.statusToken !== undefined || namesAnAddress(req);
  }

  private authorize(req: IncomingMessage): Access | null {
    const url = new URL(req.url ?? '/', 'http://x');
    const auth = String(req.headers.authorization ?? '');
    const given = auth.startsWith('Bearer ') ? auth.slice(7) : (url.searchParams.get('token') ?? '');
    const { statusToken, adminToken } = this.options;
    if (adminToken !== undefined && sameSecret(given, adminToken)) return 'admin';
    if (statusToken === undefined || sameSecret(given, statusToken)) return 'read';
    return null;
  }
}

/**
 * Without a status token, the run is readable by whoever reaches the port, so requests must name
 * the server by an address: a web page whose own host name an attacker's DNS rebinds to this
 * address (DNS rebinding) names that host name, and is refused.
 */
function namesAnAddress(req: IncomingMessage): boolean {
  const host = (req.headers.host ?? '').toLowerCase();
  const name = host.startsWith('[') ? host.slice(0, host.indexOf(']') + 1) : host.replace(/:\d+$/, '');
  return name === 'localhost' || /^\d{1,3}(\.\d{1,3}){3}$/.test(name) || /^\[[0-9a-f:.]+\]$/.test(name);
}

const HOST_REFUSED = (req: IncomingMessage): string =>
  `Host ${JSON.stringify(String(req.headers.host ?? '').slice(0, 100))} is a name: without a status token this server answers its status only to its addresses (127.0.0.1, localhost, its IP), so that no web page can rebind a name to it; use the address, or set a status token`;

/** True unless a browser says the request comes from a page of another origin than this server. */
function sameOrigin(req: IncomingMessage): boolean {
  const origin = req.headers.origin;
  if (origin === undefined) return true;
  try {
    return new URL(origin).host === req.headers.host;
  } catch {
    return false;
  }
}
