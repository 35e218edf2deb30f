import type { Server } from 'node:http';
import { guardedServer } from '@ringtrain/allreduce';
import { answerProbe, type Health } from '@ringtrain/coordinator';

/**
 * A small plain-HTTP listener for probes (Kubernetes, Docker's HEALTHCHECK): `/healthz` and
 * `/readyz`, nothing else. Plain even when the job speaks TLS: probes carry no secrets and get none.
 */
export async function startHealthServer(host: string, port: number, health: () => Health): Promise<Server> {
  const server = guardedServer(
    (req, res) => {
      const probe = answerProbe(new URL(req.url ?? '/', 'http://x').pathname, health());
      if (!probe) return void res.writeHead(404, { 'content-type': 'text/plain' }).end('only /healthz and /readyz here\n');
      res.writeHead(probe.status, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(`${probe.body}\n`);
    },
    { handshakeMs: 5000, maxConnections: 16 },
  );
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  server.unref();
  return server;
}
