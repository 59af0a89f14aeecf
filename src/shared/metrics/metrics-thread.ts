/**
 * The /metrics HTTP server's thread (started by threaded-server.ts). It serves the body the main thread last
 * published, so a scrape never waits for the main thread's event loop. Messages in: MetricsThreadInbound; out:
 * MetricsThreadOutbound. Its only dependencies are Node built-ins.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parentPort, workerData } from 'node:worker_threads';

export interface MetricsThreadData {
  host: string;
  port: number;
}

export type MetricsThreadInbound = { type: 'body'; body: string; contentType: string } | { type: 'close' };

export type MetricsThreadOutbound = { type: 'listening'; port: number } | { type: 'error'; code: string | undefined; message: string };

const TEXT = 'text/plain; charset=utf-8';

function serve(port: NonNullable<typeof parentPort>, { host, port: listenPort }: MetricsThreadData): void {
  const post = (message: MetricsThreadOutbound): void => port.postMessage(message);
  let body = '# no metrics published yet\n';
  let contentType = 'text/plain; version=0.0.4; charset=utf-8';

  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?', 1)[0];
    if (path !== '/metrics' && path !== '/healthz') return void res.writeHead(404, { 'content-type': TEXT }).end('not found\n');
    if (req.method !== 'GET' && req.method !== 'HEAD') return void res.writeHead(405, { allow: 'GET, HEAD', 'content-type': TEXT }).end('method not allowed\n');
    if (path === '/healthz') return void res.writeHead(200, { 'content-type': TEXT }).end('ok\n');
    res.writeHead(200, { 'content-type': contentType, 'content-length': Buffer.byteLength(body) });
    res.end(req.method === 'HEAD' ? undefined : body);
  });
  server.keepAliveTimeout = 5000;
  server.on('error', (err: NodeJS.ErrnoException) => post({ type: 'error', code: err.code, message: err.message }));
  server.listen(listenPort, host, () => post({ type: 'listening', port: (server.address() as AddressInfo).port }));

  port.on('message', (m: MetricsThreadInbound) => {
    if (m.type === 'body') {
      body = m.body;
      contentType = m.contentType;
    } else {
      server.close(() => process.exit(0));
    }
  });
}

if (parentPort) serve(parentPort, workerData as MetricsThreadData);
