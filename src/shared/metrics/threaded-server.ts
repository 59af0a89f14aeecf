import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { Registry } from 'prom-client';
import { envName } from '../core/config.js';
import { MnistDdpError } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import type { MetricsThreadData, MetricsThreadInbound, MetricsThreadOutbound } from './metrics-thread.js';

/**
 * /metrics for a training worker. A training step is one long synchronous block of tfjs work, and an HTTP server
 * on the main event loop answers a scrape only after it. Here the HTTP server runs in its own thread
 * (metrics-thread.ts) and answers at once with the latest body, which the main thread serialises after each step
 * (`publish`, at most every `minIntervalMs`) and once a second when idle. A scrape therefore sees the state at the
 * last step boundary.
 */

/**
 * Starts metrics-thread: the compiled .js next to this file when it runs from dist/. Run from src/ (vitest, tsx) it
 * loads the .ts source through tsx's require hook (tsx is a devDependency). tsx's `--import` hooks do not reach
 * worker threads on Node 20, so the thread registers the hook itself in a two-statement bootstrap.
 */
function startMetricsThread(data: MetricsThreadData): Worker {
  if (!import.meta.url.endsWith('.ts')) return new Worker(new URL('./metrics-thread.js', import.meta.url), { workerData: data });
  const tsxApi = createRequire(import.meta.url).resolve('tsx/cjs/api');
  const source = fileURLToPath(new URL('./metrics-thread.ts', import.meta.url));
  return new Worker(`require(${JSON.stringify(tsxApi)}).register(); require(${JSON.stringify(source)});`, { eval: true, workerData: data });
}

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
  /**
   * Keeps the process running while the server does. The thread does not by default, so that a process exits when
   * its work is done; a coordinator kept by pm2 after its run (--no-exit-when-done) serves until it is stopped.
   */
  keepProcessAlive(): void;
}

/**
 * Serves `GET /metrics` (Prometheus text format, the last published body) and `GET /healthz` ("ok") from its own
 * thread, 404 for any other path, 405 for other methods. Resolves once listening; rejects with CONFIG_INVALID if
 * the port cannot be bound.
 */
export async function startThreadedMetricsServer(options: MetricsServerOptions & { minIntervalMs?: number }): Promise<MetricsServer> {
  const { registry, host, log } = options;
  const minIntervalMs = options.minIntervalMs ?? 250;
  const thread = startMetricsThread({ host, port: options.port });
  thread.unref();
  const port = await new Promise<number>((resolve, reject) => {
    thread.once('message', (m: MetricsThreadOutbound) => {
      if (m.type === 'listening') return resolve(m.port);
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
      const message: MetricsThreadInbound = { type: 'body', body: await r.metrics(), contentType: r.contentType };
      thread.postMessage(message);
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
    keepProcessAlive() {
      thread.ref();
    },
  };
}
