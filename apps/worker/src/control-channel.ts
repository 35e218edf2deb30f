import { type ControlMessage, decodeControl, encodeControl, type MessageOf } from '@ringtrain/protocol';
import { closeWebSocket, dialUntil } from '@ringtrain/allreduce';
import WebSocket from 'ws';
import { WorkerError } from './errors.js';

/** The control connection ended: a `stop` from the coordinator (its code) or a lost connection. */
export class ChannelError extends WorkerError {
  override name = 'ChannelError';
}

type Type = ControlMessage['type'];

/**
 * The worker's control connection to the coordinator: typed messages in, typed messages out, and
 * `next` to wait (with a deadline) for the next message of some types. A `stop` or the loss of the
 * connection is remembered and reported to whoever waits, and to `onStop`.
 */
export class ControlChannel {
  private readonly inbox: ControlMessage[] = [];
  private waiter: (() => void) | null = null;
  private ended: ChannelError | null = null;
  onStop: ((error: ChannelError) => void) | null = null;
  /** Called for every message queued (after it is queued). */
  onArrival: ((msg: ControlMessage) => void) | null = null;

  private lastSeen = Date.now();
  private lastTick = Date.now();
  private readonly watchdog: NodeJS.Timeout;

  private constructor(
    private readonly ws: WebSocket,
    silenceMs: number,
  ) {
    // The coordinator pings every second. Silence past `silenceMs` (a partition, a host gone
    // without a FIN) ends the channel like a lost connection; a late tick means this process was busy.
    this.watchdog = setInterval(() => {
      const now = Date.now();
      if (now - this.lastTick > 2000) this.lastSeen = now;
      this.lastTick = now;
      if (now - this.lastSeen > silenceMs) {
        this.end(new ChannelError('ERR_COORDINATOR_LOST', `no word from the coordinator for ${now - this.lastSeen} ms`));
        ws.terminate();
      }
    }, 500);
    this.watchdog.unref();
    ws.on('ping', () => (this.lastSeen = Date.now()));
    ws.on('message', (data: Buffer) => {
      this.lastSeen = Date.now();
      let msg: ControlMessage;
      try {
        msg = decodeControl(data);
      } catch (err) {
        this.end(new ChannelError('ERR_PROTOCOL', `bad message from the coordinator: ${(err as Error).message}`, { cause: err }));
        ws.close(1002, 'ERR_PROTOCOL');
        return;
      }
      if (msg.type === 'stop') this.end(new ChannelError(msg.code, msg.reason));
      else {
        this.inbox.push(msg);
        this.onArrival?.(msg);
      }
      this.wake();
    });
    ws.on('close', (code, reason) => this.end(new ChannelError('ERR_COORDINATOR_LOST', `connection to the coordinator closed (code ${code}${reason.length ? `, ${reason}` : ''})`)));
    ws.on('error', (err) => this.end(new ChannelError('ERR_COORDINATOR_LOST', `connection to the coordinator failed: ${err.message}`, { cause: err })));
  }

  /** Dials the coordinator, retrying until the deadline (it may start later). */
  static async connect(url: string, options: { token?: string; ca?: string | Buffer; timeoutMs?: number; silenceMs?: number; signal?: AbortSignal } = {}): Promise<ControlChannel> {
    const headers = options.token !== undefined ? { 'x-ringtrain-token': options.token } : undefined;
    let channel: ControlChannel | null = null;
    const result = await dialUntil(url, { headers, maxPayload: 16 * 1024 * 1024, ...(options.ca ? { ca: options.ca } : {}) }, Date.now() + (options.timeoutMs ?? 30_000), (ws) => {
      channel = new ControlChannel(ws, options.silenceMs ?? 5000);
    }, options.signal);
    if ('status' in result) throw new ChannelError(result.status === 401 ? 'ERR_AUTH' : 'ERR_REJECTED', `the coordinator at ${url} refused the connection: ${result.status} ${result.body}`);
    if ('tls' in result) throw new ChannelError('ERR_TLS', `TLS with the coordinator at ${url} failed: ${result.tls}`);
    if ('aborted' in result) throw new ChannelError('ERR_LEFT', `stopped dialling the coordinator at ${url}: asked to leave`);
    if ('unreachable' in result || !channel) throw new ChannelError('ERR_COORDINATOR_LOST', `cannot reach the coordinator at ${url}${'last' in result && result.last ? `: ${result.last}` : ''}`);
    return channel;
  }

  /** Why the channel ended (a stop, or the connection), or null while it is open. */
  get error(): ChannelError | null {
    return this.ended;
  }

  send(msg: ControlMessage): void {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(encodeControl(msg));
  }

  /** A queued message of `type`, removed from the queue, or null (never waits). */
  take<T extends Type>(type: T): MessageOf<T> | null {
    const i = this.inbox.findIndex((m) => m.type === type);
    return i >= 0 ? (this.inbox.splice(i, 1)[0] as MessageOf<T>) : null;
  }

  /** Puts a message taken by `next` back at the front of the queue. */
  putBack(msg: ControlMessage): void {
    this.inbox.unshift(msg);
  }

  /** Whether a message of `type` is queued (it stays queued). */
  has(type: Type): boolean {
    return this.inbox.some((m) => m.type === type);
  }

  /** The next message of one of `types`; others that arrive meanwhile stay queued. */
  async next<T extends Type>(types: T[], timeoutMs: number, what: string): Promise<MessageOf<T>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.inbox.findIndex((m) => (types as Type[]).includes(m.type));
      if (i >= 0) return this.inbox.splice(i, 1)[0] as MessageOf<T>;
      if (this.ended) throw this.ended;
      const left = deadline - Date.now();
      if (left <= 0) throw new ChannelError('ERR_TIMEOUT', `no ${what} from the coordinator within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  close(): Promise<void> {
    clearInterval(this.watchdog);
    return closeWebSocket(this.ws, 'done');
  }

  private end(error: ChannelError): void {
    if (this.ended) return;
    clearInterval(this.watchdog);
    this.ended = error;
    this.onStop?.(error);
    this.wake();
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }
}
