import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import { MnistDdpError } from '../errors.js';
import type { Logger } from '../log.js';

export interface MetricsServerOptions {
  registry: Registry;
  /** Interface to bind; use 127.0.0.1 unless Prometheus scrapes from another host. */
  host: string;
  /** 0 picks a free ephemeral port; read the bound one from the result. */
  port: number;
  log?: Logger;
}

export interface MetricsServer {
  readonly port: number;
  /** Stops listening and drops keep-alive connections; resolves once the socket is closed. */
  close(): Promise<void>;
}

/**
 * Serves `GET /metrics` (Prometheus text format) and `GET /healthz` ("ok"), 404 for any other path.
 * Resolves once listening; rejects with CONFIG_INVALID if the port cannot be bound.
 */
export async function startMetricsServer(options: MetricsServerOptions): Promise<MetricsServer> {
  const { registry, host, log } = options;

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const path = (req.url ?? '/').split('?', 1)[0];
    if (path !== '/metrics' && path !== '/healthz') {
      res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('not found\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain; charset=utf-8' }).end('method not allowed\n');
      return;
    }
    if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' }).end('ok\n');
      return;
    }
    const body = await registry.metrics();
    res.writeHead(200, { 'content-type': registry.contentType, 'content-length': Buffer.byteLength(body) });
    res.end(req.method === 'HEAD' ? undefined : body);
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      log?.error({ err }, 'metrics scrape failed');
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' });
      res.end('metrics collection failed\n');
    });
  });
  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      reject(
        new MnistDdpError(
          'CONFIG_INVALID',
          `metrics server cannot listen on ${host}:${options.port} (${err.code ?? err.message}); ` +
            'choose another port (MNIST_DDP_METRICS_PORT) or stop the process holding it',
          { host, port: options.port },
          { cause: err },
        ),
      );
    };
    server.once('error', onError);
    server.listen(options.port, host, () => {
      server.off('error', onError);
      resolve();
    });
  });

  const port = (server.address() as AddressInfo).port;
  log?.info({ host, port }, 'metrics server listening');

  let closing: Promise<void> | undefined;
  return {
    port,
    close() {
      closing ??= new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      });
      return closing;
    },
  };
}
