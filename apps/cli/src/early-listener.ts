import { createServer, type Server, type Socket } from 'node:net';

/**
 * The coordinator's port, bound before the coordinator's modules load, so that `launch` starts its
 * workers at once and they boot while the coordinator does. A worker that connects before the
 * coordinator takes the port over waits, paused, and is handed over with it.
 */
export class EarlyListener {
  private readonly waiting: Socket[] = [];
  private handedOver = false;

  private constructor(private readonly server: Server) {
    server.on('connection', (socket) => {
      socket.on('error', () => {}); // until the coordinator's server adds its own handler
      this.waiting.push(socket);
    });
  }

  /** Listens on `host:port` (0: any free port). */
  static bind(host: string, port: number): Promise<EarlyListener> {
    const server = createServer({ pauseOnConnect: true });
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve(new EarlyListener(server));
      });
    });
  }

  get port(): number {
    return (this.server.address() as { port: number }).port;
  }

  /** `target` (an HTTP or HTTPS server) listens on this port from now on, and takes the connections that arrived before. */
  async handOver(target: Server): Promise<void> {
    if (this.handedOver) throw new Error('the early listener was already handed over');
    this.handedOver = true;
    this.server.removeAllListeners('connection');
    await new Promise<void>((resolve, reject) => {
      target.once('error', reject);
      // A server as the handle: target takes over its listening socket (nothing is closed or re-bound).
      target.listen(this.server, () => {
        target.off('error', reject);
        resolve();
      });
    });
    for (const socket of this.waiting.splice(0)) {
      socket.removeAllListeners('error');
      target.emit('connection', socket);
      socket.resume();
    }
  }

  /** Closes the port if it was never handed over (the launch failed before its coordinator listened). */
  close(): void {
    if (this.handedOver) return;
    this.handedOver = true;
    this.server.close();
    for (const socket of this.waiting.splice(0)) socket.destroy();
  }
}
