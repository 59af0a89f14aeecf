import { Worker } from 'node:worker_threads';
import type { Registry } from 'prom-client';
import { envName } from '../core/config.js';
import { MnistDdpError } from '../core/errors.js';
import type { Logger } from '../core/log.js';

/**
 * /metrics for a training worker. A training step is one synchronous ~100 ms block of tfjs work, and an HTTP server
 * on the main event loop answers a scrape only after it (measured: p50 ≈ 110 ms, p99 ≈ 560 ms during training).
 * Here the HTTP server runs in its own thread and answers at once with the latest body, which the main thread
 * serialises after each step (`publish`, at most every `minIntervalMs`) and once a second when idle. A scrape
 * therefore sees the state at the last step boundary.
 */
const THREAD_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { createServer } = require('node:http');
let body = '# no metrics published yet\\n';
let contentType = 'text/plain; version=0.0.4; charset=utf-8';
parentPort.on('message', (m) => { if (m.type === 'body') { body = m.body; contentType = m.contentType; } else if (m.type === 'close') server.close(() => process.exit(0)); });
const server = createServer((req, res) => {
  const path = (req.url || '/').split('?', 1)[0];
  if (path !== '/metrics' && path !== '/healthz') return res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('not found\\n');
  if (req.method !== 'GET' && req.method !== 'HEAD') return res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain; charset=utf-8' }).end('method not allowed\\n');
  if (path === '/healthz') return res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' }).end('ok\\n');
  res.writeHead(200, { 'content-type': contentType, 'content-length': Buffer.byteLength(body) });
  res.end(req.method === 'HEAD' ? undefined : body);
});
server.keepAliveTimeout = 5000;
server.on('error', (err) => parentPort.postMessage({ type: 'error', code: err.code, message: err.message }));
server.listen(workerData.port, workerData.host, () => parentPort.postMessage({ type: 'listening', port: server.address().port }));
`;

export interface MetricsServerOptions {
  registry: Registry;
  /** Interface to bind; use 127.0.0.1 unless Prometheus scrapes from another host. */
  host: string;
  /** 0 picks a free ephemeral port; read the bound one from the result. */
  port: number;
  /** The config key the port came from, named when it cannot be bound (default metricsPort). */
  portKey?: string;
  log?: Logger;
}

export interface MetricsServer {
  readonly port: number;
  /** Serialises the registry for the server thread; cheap to call after every step (rate-limited). */
  publish(): void;
  /** Stops the server thread, dropping keep-alive connections with it. */
  close(): Promise<void>;
}

/**
 * Serves `GET /metrics` (Prometheus text format, the last published body) and `GET /healthz` ("ok") from its own
 * thread, 404 for any other path, 405 for other methods. Resolves once listening; rejects with CONFIG_INVALID if
 * the port cannot be bound.
 */
export async function startThreadedMetricsServer(options: MetricsServerOptions & { minIntervalMs?: number }): Promise<MetricsServer> {
  const { registry, host, log } = options;
  const minIntervalMs = options.minIntervalMs ?? 250;
  const thread = new Worker(THREAD_SOURCE, { eval: true, workerData: { host, port: options.port } });
  thread.unref();
  const port = await new Promise<number>((resolve, reject) => {
    thread.once('message', (m: { type: string; port?: number; code?: string; message?: string }) => {
      if (m.type === 'listening') return resolve(m.port!);
      const key = options.portKey ?? 'metricsPort';
      reject(new MnistDdpError('CONFIG_INVALID', `metrics server cannot listen on ${host}:${options.port} (${m.code ?? m.message}); choose another port (${envName(key)})`, { key, host, port: options.port }));
    });
    thread.once('error', reject);
  }).catch(async (err: unknown) => {
    await thread.terminate();
    throw err;
  });
  let last = 0;
  let pending = false;
  const send = async (r: Registry): Promise<void> => {
    pending = true;
    try {
      thread.postMessage({ type: 'body', body: await r.metrics(), contentType: r.contentType });
    } catch (err) {
      log?.warn({ err: (err as Error).message }, 'could not serialise metrics');
    } finally {
      pending = false;
    }
  };
  const publish = (): void => {
    const now = Date.now();
    if (pending || now - last < minIntervalMs) return;
    last = now;
    void send(registry);
  };
  const idle = setInterval(publish, 1000);
  idle.unref();
  publish();
  log?.info({ host, port }, 'metrics server listening (own thread)');
  return {
    port,
    publish,
    async close() {
      clearInterval(idle);
      await thread.terminate();
    },
  };
}
