import type { AddressInfo } from 'node:net';
import { initBackend } from '../shared/core/backend.js';
import type { ServeConfig } from '../shared/core/config.js';
import { componentLogger } from '../shared/core/log.js';
import { loadModelDir, modelArtifacts, modelJsonOf } from '../shared/model/io.js';
import { loadPreprocess, loadStaticAssets } from '../serve/assets.js';
import { createPredictServer } from '../serve/http.js';
import type { Io } from '../shared/core/io.js';

export interface RunningServer {
  /** http://host:port/ with the bound port. */
  url: string;
  port: number;
  /** Stops accepting connections, ends idle ones and releases the model. */
  close(): Promise<void>;
}

const log = componentLogger('serve');

/**
 * Serves the drawing page and POST /predict (see src/serve/http.ts). The page runs the model in the browser from
 * /model/model.json, which is the checkpoint re-serialised as float32, so page and server use identical weights.
 */
export async function runServe(opts: ServeConfig, io: Io): Promise<RunningServer> {
  await initBackend(opts.backend, log);
  const model = await loadModelDir(opts.checkpoint);
  const artifacts = await modelArtifacts(model);
  const server = createPredictServer({
    model,
    webModel: { modelJson: modelJsonOf(artifacts, artifacts.weightSpecs, 'mnist-ddp serve'), weightsBin: Buffer.from(artifacts.weightData) },
    assets: loadStaticAssets(),
    preprocess: await loadPreprocess(),
    log,
    timeouts: { headersTimeoutMs: opts.headersTimeoutMs, requestTimeoutMs: opts.requestTimeoutMs },
  });
  const host = opts.host;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const shownHost = host === '0.0.0.0' || host === '::' ? 'localhost' : host.includes(':') ? `[${host}]` : host;
  const url = `http://${shownHost}:${port}/`;
  io.stdout(`serving ${opts.checkpoint} at ${url} (draw a digit there; POST /predict for the API)\n`);
  log.info({ url, checkpoint: opts.checkpoint }, 'serving');
  return {
    url,
    port,
    close: () => new Promise<void>((resolve, reject) => {
      server.close((err) => {
        model.dispose();
        if (err) reject(err);
        else resolve();
      });
      server.closeIdleConnections();
    }),
  };
}
