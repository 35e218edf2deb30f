import type { IncomingMessage, Server } from 'node:http';
import type { AddressInfo, NetConnectOpts, Socket } from 'node:net';
import { hostname } from 'node:os';
import type { Duplex } from 'node:stream';
import {
  checkFollowingPayload,
  type ControlMessage,
  decodeControl,
  decodeTensorFrame,
  DEFAULT_LIMITS,
  encodeControl,
  encodeFrameHeader,
  type FrameHeader,
  isControl,
  type Limits,
  MAX_EARLY_FRAMES,
  MAX_RING_CONNECTIONS,
  PROTOCOL_VERSION,
  ProtocolError,
  sameSecret,
} from '@ringtrain/protocol';
import type { Logger } from 'pino';
import WebSocket, { WebSocketServer } from 'ws';
import { closeWebSocket, dialUntil } from './dial.js';
import { CollectiveError } from './errors.js';
import { guardedServer, refuseUpgrade } from './listener.js';
import { Payload } from './payload.js';
import { connectWithArena, type HeldBytes, ReadArena } from './read-arena.js';
import { nextRank, prevRank, type Transport, type TransportHandler } from './transport.js';

/** PEM contents (not paths) for TLS. */
export interface TlsFiles {
  cert?: string | Buffer;
  key?: string | Buffer;
  ca?: string | Buffer;
}

export interface WebSocketTransportOptions {
  /** Interface to listen on (default 127.0.0.1) and port (default 0: any free port). */
  host?: string;
  port?: number;
  /** The address neighbours dial, when it differs from ws://host:port (containers, NAT). */
  advertise?: string;
  /** Listening on all interfaces: the host name or address neighbours dial (default: this host's name). */
  advertiseHost?: string;
  /** Shared secret; a ring connection without it is refused during the HTTP upgrade. */
  token?: string;
  /** TLS: with `cert` and `key` this endpoint listens for wss://; `ca` is what the neighbours' certificates are checked against (default: the system's). */
  tls?: TlsFiles;
  limits?: Limits;
  /**
   * Ping period (default 250 ms) and the silence after which a peer counts as lost (default 1.5 s,
   * plus however long this rank's own event loop was last blocked: see startHeartbeat).
   */
  heartbeatMs?: number;
  peerTimeoutMs?: number;
  /** Deadline for forming the ring in `connect` (default 30 s). */
  connectTimeoutMs?: number;
  logger?: Logger;
}

/** A rank's place in the ring, known once the coordinator assigns it. */
export interface RingPlace {
  rank: number;
  worldSize: number;
  /** Both ends must name the same ring (e.g. job and generation); others are refused. */
  ringId?: string;
  /** Address of the left neighbour, which this rank dials. */
  prevAddress: string;
}

const H = { token: 'x-ringtrain-token', rank: 'x-ringtrain-rank', world: 'x-ringtrain-world', version: 'x-ringtrain-version', ring: 'x-ringtrain-ring' };

interface Link {
  ws: WebSocket;
  peer: number;
  lastSeen: number;
  /** A header whose payload is the next message. */
  awaiting: FrameHeader | null;
  /** The next message's bytes, left in the socket's read buffers (see receiveInPieces). */
  pieces: Buffer[] | null;
}

/** Payloads up to this size share one message with their header (one small copy); larger ones follow it. */
const INLINE_PAYLOAD_BYTES = 64 * 1024;

/**
 * The ring over WebSockets: each rank listens, dials its left neighbour and is dialled by its
 * right one. Tensor data flows left to right on the connection the right neighbour opened, so it
 * leaves as unmasked server frames. A large payload goes as its own message right after its
 * header's (PAYLOAD_FOLLOWS): not copied on sending (both leave in one writev), and not gathered
 * on receiving: the collectives add or copy it straight from the socket's read buffers, which
 * come from a per-connection pool (ReadArena) rather than a fresh allocation per read.
 *
 * A peer that sends bytes that do not decode is cut off (close code 1002, reason = the error code)
 * and reported lost with ERR_PROTOCOL; a closed, failed or silent connection is reported lost with
 * ERR_PEER_LOST. Ping/pong heartbeats find silent peers.
 */
export class WebSocketTransport implements Transport {
  private place: RingPlace | null = null;
  private handler: TransportHandler | null = null;
  /** What arrived before a handler was set (a fast neighbour starts as soon as the ring forms). */
  private held: ((h: TransportHandler) => void)[] = [];
  private heldBytes = 0;
  private upstream: Link | null = null; // to the left neighbour (we dialled it)
  private downstream: Link | null = null; // from the right neighbour (it dialled us)
  private downstreamReady: (() => void) | null = null;
  private readonly lostPeers = new Set<number>();
  private closing = false;
  private heartbeat: NodeJS.Timeout | null = null;
  private lastTick = Date.now();
  /** How long this process's event loop was last blocked (a long step), decaying: the grace a peer doing the same work gets. */
  private busyMs = 0;
  /** Counts the rings this endpoint has been part of: a link of an older one is ignored. */
  private ringEpoch = 0;
  private abandonJoin: (() => void) | null = null;
  private readonly limits: Limits;
  private readonly heartbeatMs: number;
  private readonly peerTimeoutMs: number;
  private readonly log?: Logger;

  private constructor(
    private readonly options: WebSocketTransportOptions,
    private readonly http: Server,
    private readonly wss: WebSocketServer,
  ) {
    this.limits = options.limits ?? DEFAULT_LIMITS;
    this.heartbeatMs = options.heartbeatMs ?? 250;
    this.peerTimeoutMs = options.peerTimeoutMs ?? 1500;
    this.log = options.logger;
  }

  /**
   * Starts listening, before this rank knows its place: its address goes to the coordinator, which
   * hands out ranks. Dialling neighbours are told to retry (503) until `join` sets the place.
   */
  static async listen(options: WebSocketTransportOptions = {}): Promise<WebSocketTransport> {
    const { cert, key } = options.tls ?? {};
    const http = guardedServer((_req, res) => void res.writeHead(426, { 'content-type': 'text/plain' }).end('ringtrain ring endpoint: WebSocket only\n'), {
      maxConnections: MAX_RING_CONNECTIONS,
      ...(cert && key ? { tls: { cert, key } } : {}),
    });
    const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: (options.limits ?? DEFAULT_LIMITS).maxFrameBytes });
    const t = new WebSocketTransport(options, http, wss);
    http.on('upgrade', (req, socket, head) => t.onUpgrade(req, socket, head));
    await new Promise<void>((resolve, reject) => {
      http.once('error', reject);
      http.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => resolve());
    });
    return t;
  }

  get rank(): number {
    return this.joined().rank;
  }

  get worldSize(): number {
    return this.joined().worldSize;
  }

  private joined(): RingPlace {
    if (!this.place) throw new CollectiveError('ERR_RENDEZVOUS', 'the transport has not joined a ring yet');
    return this.place;
  }

  /** The address neighbours dial: `advertise`, or the listening address (this host's name when listening on all interfaces). */
  get address(): string {
    if (this.options.advertise) return this.options.advertise;
    const a = this.http.address() as AddressInfo;
    const host = a.address === '0.0.0.0' || a.address === '::' ? (this.options.advertiseHost ?? hostname()) : a.family === 'IPv6' ? `[${a.address}]` : a.address;
    return `${this.options.tls?.cert ? 'wss' : 'ws'}://${host.includes(':') && !host.startsWith('[') ? `[${host}]` : host}:${a.port}`;
  }

  setHandler(handler: TransportHandler): void {
    this.handler = handler;
    for (const deliver of this.held.splice(0)) deliver(handler);
    this.heldBytes = 0;
  }

  /** Hands an event to the handler, or holds it (bounded) until there is one. */
  private deliver(bytes: number, event: (h: TransportHandler) => void): void {
    if (this.handler) return event(this.handler);
    this.heldBytes += bytes;
    if (this.heldBytes > this.limits.maxFrameBytes * 2) throw new ProtocolError('ERR_FRAME_TOO_LARGE', `over ${this.limits.maxFrameBytes * 2} bytes arrived before this rank was ready to receive`);
    if (this.held.length >= MAX_EARLY_FRAMES) throw new ProtocolError('ERR_FRAME_TOO_LARGE', `over ${MAX_EARLY_FRAMES} frames arrived before this rank was ready to receive`);
    this.held.push(event);
  }

  /** A frame to the handler; one held for later is copied, since its bytes live in reused read buffers. */
  private deliverFrame(peer: number, header: FrameHeader, payload: Payload): void {
    if (this.handler) return this.handler.frame(peer, header, payload);
    const kept = Payload.of(payload.bytes());
    this.deliver(kept.byteLength, (h) => h.frame(peer, header, kept));
  }

  /** Takes its place: dials the left neighbour and waits for the right one to dial in. */
  async join(place: RingPlace): Promise<void> {
    const { rank, worldSize } = place;
    if (this.place) throw new CollectiveError('ERR_RENDEZVOUS', `rank ${this.place.rank}: already joined a ring`);
    if (!Number.isInteger(worldSize) || worldSize < 1 || worldSize > 65535 || !Number.isInteger(rank) || rank < 0 || rank >= worldSize) {
      throw new CollectiveError('ERR_RENDEZVOUS', `invalid rank ${rank} for world size ${worldSize}`);
    }
    this.place = { ...place };
    if (worldSize === 1) return;
    const prevAddress = place.prevAddress;
    const deadline = Date.now() + (this.options.connectTimeoutMs ?? 30_000);
    // `leave` during the join (the generation was replaced meanwhile) ends it at once.
    const left = new AbortController();
    this.abandonJoin = () => left.abort();
    const accepted = this.downstream
      ? Promise.resolve()
      : new Promise<void>((resolve) => {
          this.downstreamReady = resolve;
        });
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<never>((_, reject) => {
      const fail = (): void => reject(new CollectiveError('ERR_CLOSED', `rank ${rank}: left the ring of ${worldSize} while joining it`, { rank }));
      left.signal.addEventListener('abort', fail);
      timer = setTimeout(
        () => reject(new CollectiveError('ERR_RENDEZVOUS', `rank ${rank}: rank ${nextRank(rank, worldSize)} did not connect within the deadline`, { rank, peer: nextRank(rank, worldSize) })),
        Math.max(0, deadline - Date.now()),
      );
    });
    expired.catch(() => {});
    try {
      await Promise.race([this.dial(prevAddress, deadline, left.signal), expired]);
      await Promise.race([accepted, expired]);
    } finally {
      clearTimeout(timer);
      this.abandonJoin = null;
    }
    this.startHeartbeat();
  }

  sendFrame(to: number, header: FrameHeader, payload: Uint8Array): Promise<void> {
    return new Promise((resolve, reject) => {
      const link = this.linkTo(to);
      if (!link || link.ws.readyState !== WebSocket.OPEN) {
        reject(new CollectiveError('ERR_PEER_LOST', `rank ${this.rank}: no open connection to peer rank ${to}`, { rank: this.rank, peer: to }));
        return;
      }
      const done = (err?: Error): void => {
        if (err) reject(new CollectiveError('ERR_PEER_LOST', `rank ${this.rank}: send to peer rank ${to} failed: ${err.message}`, { rank: this.rank, peer: to }, { cause: err }));
        else resolve();
      };
      if (payload.length <= INLINE_PAYLOAD_BYTES) {
        link.ws.send(Buffer.concat([encodeFrameHeader(header), payload]), { binary: true }, done);
      } else {
        // Header and payload leave in one writev: two would wake the receiver twice, and on
        // loopback each syscall runs the whole TCP path. Node's cork nests around ws's own.
        const socket = socketOf(link.ws);
        socket?.cork();
        link.ws.send(encodeFrameHeader(header, true), { binary: true });
        link.ws.send(payload, { binary: true }, done);
        socket?.uncork();
      }
    });
  }

  sendControl(to: number, message: ControlMessage): void {
    const link = this.linkTo(to, true);
    if (link?.ws.readyState === WebSocket.OPEN) link.ws.send(encodeControl(message), { binary: true });
  }

  /**
   * Leaves the current ring but keeps listening at the same address, ready to `join` the next
   * generation's. Links of the old ring close; nothing they report reaches the next one.
   */
  leave(): void {
    this.abandonJoin?.();
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = null;
    const links = [this.upstream, this.downstream].filter((l): l is Link => l !== null);
    this.ringEpoch++;
    this.place = null;
    this.handler = null;
    this.held = [];
    this.heldBytes = 0;
    this.upstream = null;
    this.downstream = null;
    this.downstreamReady = null;
    this.lostPeers.clear();
    // Closed in the background: a graceful close flushes what is still queued for a neighbour, but
    // a hung one never answers it, and the next ring must not wait for that (1 s, then terminated).
    for (const l of links) void closeWebSocket(l.ws, 'generation over');
  }

  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    if (this.heartbeat) clearInterval(this.heartbeat);
    const links = [this.upstream, this.downstream].filter((l): l is Link => l !== null);
    await Promise.all(links.map((l) => closeWebSocket(l.ws, 'closing')));
    this.wss.close();
    this.http.closeAllConnections();
    await new Promise<void>((resolve) => this.http.close(() => resolve()));
  }

  /** Frames go to the right neighbour over the link it opened; control may go either way. */
  private linkTo(to: number, control = false): Link | null {
    if (to === nextRank(this.rank, this.worldSize) && this.downstream) return this.downstream;
    if (control && to === prevRank(this.rank, this.worldSize)) return this.upstream;
    return null;
  }

  private onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const refuse = (status: number, reason: string): void => {
      this.log?.warn({ status, remote: req.socket.remoteAddress }, `ring connection refused: ${reason}`);
      refuseUpgrade(socket, status, reason);
    };
    const header = (name: string): string => String(req.headers[name] ?? '');
    if (!this.place) return refuse(503, 'this rank has not been given its place yet; retry');
    if (this.options.token !== undefined && !sameSecret(header(H.token), this.options.token)) return refuse(401, 'wrong or missing ring token');
    if (header(H.version) !== String(PROTOCOL_VERSION)) return refuse(409, `protocol version ${header(H.version) || 'missing'}, expected ${PROTOCOL_VERSION}`);
    const ring = this.place.ringId ?? '';
    if (ring !== header(H.ring)) {
      // Another generation of the same ring ("<family>/<generation>"): one of the two is still on its
      // way from one generation to the next, so the dialler retries; another ring is refused for good.
      const family = (id: string): string => id.slice(0, Math.max(0, id.lastIndexOf('/')));
      const transient = family(ring) !== '' && family(ring) === family(header(H.ring));
      return refuse(transient ? 503 : 409, `ring "${header(H.ring)}", expected "${ring}"${transient ? '; retry' : ''}`);
    }
    if (header(H.world) !== String(this.worldSize)) return refuse(409, `world size ${header(H.world)}, expected ${this.worldSize}`);
    const expected = nextRank(this.rank, this.worldSize);
    if (header(H.rank) !== String(expected)) return refuse(409, `rank ${header(H.rank)} is not this rank's right neighbour (${expected})`);
    if (this.downstream || this.closing) return refuse(409, `rank ${expected} is already connected`);
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      this.downstream = this.attach(ws, expected);
      this.downstreamReady?.();
    });
  }

  /** Dials the left neighbour until it accepts, refuses for good, or the deadline passes. */
  private async dial(address: string, deadline: number, signal?: AbortSignal): Promise<void> {
    const rank = this.rank;
    const headers: Record<string, string> = {
      [H.rank]: String(this.rank),
      [H.world]: String(this.worldSize),
      [H.version]: String(PROTOCOL_VERSION),
      [H.ring]: this.place?.ringId ?? '',
    };
    if (this.options.token !== undefined) headers[H.token] = this.options.token;
    const peer = prevRank(this.rank, this.worldSize);
    // The tensor data arrive on this connection: its reads go to a block pool (plain TCP only).
    let arena: ReadArena | null = null;
    const createConnection = (opts: NetConnectOpts): Socket => connectWithArena(opts, (arena = new ReadArena()));
    const pooled = address.startsWith('ws://') ? { createConnection: createConnection as never } : {};
    // Synchronous message events (ws's default for clients, pinned here): the pool relies on a
    // consumed message being used only during its event.
    const ca = this.options.tls?.ca ? { ca: this.options.tls.ca } : {};
    const result = await dialUntil(address, { headers, maxPayload: this.limits.maxFrameBytes, allowSynchronousEvents: true, ...pooled, ...ca }, deadline, (ws) => {
      this.upstream = this.attach(ws, peer);
      const receiver = receiverOf(ws);
      if (arena && receiver) arena.track(receiver);
    }, signal);
    if ('aborted' in result) throw new CollectiveError('ERR_CLOSED', `rank ${rank}: left the ring while dialling rank ${peer}`, { rank, peer });
    if ('tls' in result) throw new CollectiveError('ERR_TLS', `rank ${rank}: TLS with rank ${peer} at ${address} failed: ${result.tls}`, { rank, peer });
    if ('status' in result) {
      const code = result.status === 401 ? 'ERR_AUTH' : 'ERR_RENDEZVOUS';
      // The address came from a peer: another server's answer (a cloud metadata service, say) is
      // never repeated, only its status and length; ringtrain's own refusals say why.
      const why = result.fromRingtrain ? result.body : `and is no ringtrain worker (its ${Buffer.byteLength(result.body)}-byte answer is not shown)`;
      throw new CollectiveError(code, `rank ${this.rank}: rank ${peer} at ${address} refused the ring connection: ${result.status} ${why}`, { rank: this.rank, peer });
    }
    if ('unreachable' in result) throw new CollectiveError('ERR_RENDEZVOUS', `rank ${this.rank}: could not reach rank ${peer} at ${address} before the deadline${result.last ? ` (${result.last})` : ''}`, { rank: this.rank, peer });
  }

  private attach(ws: WebSocket, peer: number): Link {
    const link: Link = { ws, peer, lastSeen: Date.now(), awaiting: null, pieces: null };
    const epoch = this.ringEpoch;
    const current = (): boolean => epoch === this.ringEpoch;
    ws.binaryType = 'nodebuffer';
    receiveInPieces(ws, (pieces) => (link.pieces = pieces));
    ws.on('message', (message: Buffer, isBinary: boolean) => {
      if (!current()) return;
      link.lastSeen = Date.now();
      const pieces = link.pieces;
      link.pieces = null;
      try {
        if (!isBinary) throw new ProtocolError('ERR_BAD_MAGIC', 'text message on a ring connection');
        if (link.awaiting) {
          const header = link.awaiting;
          link.awaiting = null;
          const payload = pieces ? new Payload(pieces) : Payload.of(message);
          checkFollowingPayload(header, payload.byteLength);
          this.deliverFrame(peer, header, payload);
          return;
        }
        // A large message that is not a following payload (another sender may inline one): gathered.
        const data = pieces ? Buffer.concat(pieces) : message;
        if (isControl(data)) {
          const control = decodeControl(data, this.limits);
          this.deliver(data.length, (h) => h.control(peer, control));
        } else {
          const { header, payload } = decodeTensorFrame(data, this.limits);
          if (payload) this.deliverFrame(peer, header, Payload.of(payload));
          else link.awaiting = header;
        }
      } catch (err) {
        if (!(err instanceof ProtocolError)) throw err;
        ws.close(1002, err.code);
        this.lost(peer, new CollectiveError('ERR_PROTOCOL', `rank ${this.rank}: rank ${peer} sent a bad frame (${err.code}: ${err.message}); connection closed`, { rank: this.rank, peer }, { cause: err }));
      }
    });
    ws.on('ping', () => (link.lastSeen = Date.now()));
    ws.on('pong', () => (link.lastSeen = Date.now()));
    ws.on('error', (err: Error & { code?: string }) => {
      if (!current()) return;
      const code = err.code?.startsWith('WS_ERR_') ? 'ERR_PROTOCOL' : 'ERR_PEER_LOST';
      this.lost(peer, new CollectiveError(code, `rank ${this.rank}: connection to peer rank ${peer} failed: ${err.message}`, { rank: this.rank, peer }, { cause: err }));
    });
    ws.on('close', (code: number, reason: Buffer) => {
      if (!current()) return;
      this.lost(peer, new CollectiveError('ERR_PEER_LOST', `rank ${this.rank}: connection to peer rank ${peer} closed (code ${code}${reason.length ? `, ${reason.toString()}` : ''})`, { rank: this.rank, peer }));
    });
    return link;
  }

  private lost(peer: number, error: CollectiveError): void {
    if (this.closing || this.lostPeers.has(peer)) return;
    this.lostPeers.add(peer);
    for (const link of [this.upstream, this.downstream]) if (link?.peer === peer && link.ws.readyState === WebSocket.OPEN) link.ws.terminate();
    this.deliver(0, (h) => h.peerLost(peer, error));
  }

  /**
   * Pings both neighbours; one silent for longer than the deadline is lost. A tick that comes late
   * means this process was busy (a long compute step), not that the peer was silent, so it resets the
   * clocks. A peer doing the same step may finish it later than this rank did (uneven slices, shared
   * cores), so the deadline grows by the time this rank was last busy: a hang is still found within
   * peerTimeoutMs where steps are short, and steps longer than the ping period are not mistaken for one.
   */
  private startHeartbeat(): void {
    this.lastTick = Date.now();
    this.heartbeat = setInterval(() => {
      const now = Date.now();
      const gap = now - this.lastTick;
      const late = gap > 2 * this.heartbeatMs;
      this.busyMs = Math.max(gap - this.heartbeatMs, this.busyMs * 0.95);
      this.lastTick = now;
      const deadline = this.peerTimeoutMs + Math.round(this.busyMs);
      for (const link of [this.upstream, this.downstream]) {
        if (!link || link.ws.readyState !== WebSocket.OPEN) continue;
        if (late) link.lastSeen = now;
        else if (now - link.lastSeen > deadline) {
          this.lost(link.peer, new CollectiveError('ERR_PEER_LOST', `rank ${this.rank}: peer rank ${link.peer} silent for ${now - link.lastSeen} ms (heartbeat timeout ${deadline} ms)`, { rank: this.rank, peer: link.peer }));
          continue;
        }
        link.ws.ping();
      }
    }, this.heartbeatMs);
    this.heartbeat.unref();
  }
}


/** The TCP socket under a ws connection (ws 8 keeps it in `_socket`; pinned), or undefined. */
function socketOf(ws: WebSocket): Duplex | undefined {
  const socket = (ws as unknown as { _socket?: Duplex })._socket;
  return typeof socket?.cork === 'function' ? socket : undefined;
}

/** Messages at least this large are handed over in the socket's read buffers. */
const PIECES_FROM_BYTES = 128 * 1024;

/** What the transport uses of ws 8's receiver (pinned), which the read pool's HeldBytes is part of. */
interface WsReceiver extends HeldBytes {
  _buffers: Buffer[];
  _fin: boolean;
  _opcode: number;
  _masked: boolean;
  _compressed: boolean;
  _fragments: Buffer[];
  consume(n: number): Buffer;
}

/** ws's receiver, or undefined if its shape is not the one this transport relies on. */
function receiverOf(ws: WebSocket): WsReceiver | undefined {
  const r = (ws as unknown as { _receiver?: WsReceiver })._receiver;
  const shaped = r && typeof r.consume === 'function' && Array.isArray(r._buffers) && Array.isArray(r._fragments) && typeof r._bufferedBytes === 'number' && typeof r.writableLength === 'number';
  return shaped ? r : undefined;
}

/**
 * ws gathers a message that spans several socket reads into one fresh buffer: for the ring's
 * 1 MiB segments a copy of every received byte (5% of a 16 MiB all-reduce's CPU at N = 4) and a
 * new allocation that V8 answers with scavenges. Here a large, whole, unmasked binary message is
 * instead left in the read buffers it arrived in: `onPieces` gets them, and ws emits the message
 * as empty. They stay valid while the message event runs (the read pool reuses them after).
 * Relies on ws 8's receiver (pinned); if its shape differs, ws gathers as before.
 */
function receiveInPieces(ws: WebSocket, onPieces: (pieces: Buffer[]) => void): void {
  const receiver = receiverOf(ws);
  if (!receiver) return;
  const own = receiver.consume.bind(receiver);
  receiver.consume = (n: number): Buffer => {
    const buffers = receiver._buffers;
    const whole = receiver._fin && receiver._fragments.length === 0 && receiver._opcode === 2 && !receiver._masked && !receiver._compressed;
    if (n < PIECES_FROM_BYTES || !whole) return own(n);
    receiver._bufferedBytes -= n;
    const pieces: Buffer[] = [];
    for (let left = n; left > 0; ) {
      const buf = buffers[0];
      if (buf.length <= left) {
        pieces.push(buffers.shift()!);
        left -= buf.length;
      } else {
        pieces.push(buf.subarray(0, left));
        buffers[0] = buf.subarray(left);
        left = 0;
      }
    }
    onPieces(pieces);
    return Buffer.alloc(0);
  };
}
