import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import * as tf from '@tensorflow/tfjs';
import { MnistDdpError, isMnistDdpError } from '../shared/core/errors.js';
import type { Logger } from '../shared/core/log.js';
import type { Preprocess, StaticAsset } from './assets.js';
import { requestPixels } from './predict-request.js';

export const MAX_BODY_BYTES = 1024 * 1024;
/** A client that keeps sending past the limit is cut off after this much, so a 413 cannot be used to stream forever. */
const MAX_DRAIN_BYTES = 16 * MAX_BODY_BYTES;

export interface PredictResponse {
  probabilities: number[];
  predicted: number;
}

/** The `code` of an error body: the product's error codes plus the HTTP-level ones that have no catalogue entry. */
export type HttpErrorCode = 'BAD_REQUEST' | 'PAYLOAD_TOO_LARGE' | 'NOT_FOUND' | 'METHOD_NOT_ALLOWED' | 'INTERNAL';

export interface PredictServerOptions {
  /** Outputs probabilities for [N, 28, 28, 1] normalised images. */
  model: tf.LayersModel;
  /** The files served under /model/: model.json (manifest paths ./weights.bin) and weights.bin. */
  webModel: { modelJson: string; weightsBin: Buffer };
  assets: Map<string, StaticAsset>;
  preprocess: Preprocess;
  log: Logger;
  /** Slow-client bounds (ServeConfig's): headers within headersTimeoutMs, the whole request within requestTimeoutMs. */
  timeouts: { headersTimeoutMs: number; requestTimeoutMs: number };
}

/** The connection closed before the request was read: nobody is left to answer. */
class ClientGone extends Error {}

class HttpError extends Error {
  constructor(readonly status: number, readonly code: HttpErrorCode, message: string, readonly headers: Record<string, string> = {}) {
    super(message);
  }
}

function sendJson(res: ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}): void {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(body), ...headers });
  res.end(body);
}

function sendError(res: ServerResponse, err: HttpError): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  sendJson(res, err.status, { error: { code: err.code, message: err.message } }, err.headers);
}

/**
 * Reads the body up to MAX_BODY_BYTES. Over the limit (by Content-Length or by counting) it rejects with 413;
 * the rest of the body is drained so the client can read the response, and the connection is closed after it.
 * A connection that closes first (the client left, or the server's request timeout cut it off) rejects too.
 */
function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length']);
    const tooLarge = (): HttpError => new HttpError(413, 'PAYLOAD_TOO_LARGE',
      `request body exceeds ${MAX_BODY_BYTES} bytes (1 MiB); send a smaller image`, { Connection: 'close' });
    const chunks: Buffer[] = [];
    let size = 0;
    let over = Number.isFinite(declared) && declared > MAX_BODY_BYTES;
    if (over) reject(tooLarge());
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (over) {
        if (size > MAX_DRAIN_BYTES) req.destroy();
        return;
      }
      if (size > MAX_BODY_BYTES) {
        over = true;
        chunks.length = 0;
        reject(tooLarge());
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (!over) resolve(Buffer.concat(chunks));
    });
    // A request stream fails only when its connection does ('aborted', ECONNRESET): nobody is left to answer.
    req.on('error', () => reject(new ClientGone()));
    req.on('close', () => {
      if (!req.complete) reject(new ClientGone());
    });
  });
}

/** Read back with `await data()`: on webgpu, `dataSync()` of a GPU tensor throws in Node. */
async function predict(model: tf.LayersModel, normalised: Float32Array): Promise<PredictResponse> {
  const probs = tf.tidy(() => model.predict(tf.tensor4d(normalised, [1, 28, 28, 1])) as tf.Tensor2D);
  const values = Array.from(await probs.data());
  probs.dispose();
  let predicted = 0;
  for (let k = 1; k < values.length; k++) if (values[k]! > values[predicted]!) predicted = k;
  return { probabilities: values, predicted };
}

/**
 * Routes: GET / (drawing page), GET /app.js, /preprocess.js, /tf.min.js, GET /model/model.json, /model/weights.bin,
 * POST /predict. Every failure answers `{error: {code, message}}` with a 4xx (5xx only for our own bugs); a bad
 * request never takes the server down.
 */
export function createPredictServer(opts: PredictServerOptions): Server {
  const { model, webModel, assets, preprocess, log, timeouts } = opts;
  const getRoutes = new Map<string, StaticAsset>(assets);
  getRoutes.set('/model/model.json', { body: Buffer.from(webModel.modelJson), contentType: 'application/json; charset=utf-8' });
  getRoutes.set('/model/weights.bin', { body: webModel.weightsBin, contentType: 'application/octet-stream' });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    if (path === '/predict') {
      if (req.method !== 'POST') throw new HttpError(405, 'METHOD_NOT_ALLOWED', `${req.method} /predict is not allowed; use POST`, { Allow: 'POST' });
      const body = await readBody(req);
      let pixels: Float32Array | Float64Array;
      try {
        pixels = requestPixels(req.headers['content-type'], body, preprocess);
      } catch (err) {
        if (isMnistDdpError(err)) {
          const status = typeof err.details.status === 'number' ? err.details.status : 400;
          throw new HttpError(status, err.code === 'PAYLOAD_TOO_LARGE' ? 'PAYLOAD_TOO_LARGE' : 'BAD_REQUEST', err.message);
        }
        throw err;
      }
      sendJson(res, 200, await predict(model, preprocess.normalise(pixels)));
      return;
    }
    const asset = getRoutes.get(path);
    if (!asset) throw new HttpError(404, 'NOT_FOUND', `no route ${path}; try GET / or POST /predict`);
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      throw new HttpError(405, 'METHOD_NOT_ALLOWED', `${req.method} ${path} is not allowed; use GET`, { Allow: 'GET, HEAD' });
    }
    res.writeHead(200, { 'Content-Type': asset.contentType, 'Content-Length': asset.body.length, 'Cache-Control': 'no-cache' });
    res.end(req.method === 'HEAD' ? undefined : asset.body);
  }

  // Slow clients (issue #15: 250 clients trickling headers and bodies were never disconnected). Node answers 408 and
  // closes a connection whose headers (headersTimeout) or whole request (requestTimeout) is late, but checks only
  // every connectionsCheckingInterval (30 s by default), so that interval is a fraction of the header bound. A
  // socket that sends nothing for headersTimeoutMs is closed too (server.setTimeout), as is an idle keep-alive one.
  const headersTimeout = Math.min(timeouts.headersTimeoutMs, timeouts.requestTimeoutMs); // Node requires ≤
  const server = createServer({
    headersTimeout,
    requestTimeout: timeouts.requestTimeoutMs,
    keepAliveTimeout: Math.min(5_000, headersTimeout),
    connectionsCheckingInterval: Math.max(50, Math.min(1_000, Math.floor(headersTimeout / 4))),
  }, (req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (err instanceof ClientGone) return;
      if (err instanceof HttpError) {
        log.debug({ status: err.status, code: err.code, url: req.url }, err.message);
        sendError(res, err);
        if (err.headers.Connection === 'close') req.resume();
        return;
      }
      log.error({ err, url: req.url }, 'request failed');
      const message = err instanceof MnistDdpError || err instanceof Error ? err.message : String(err);
      sendError(res, new HttpError(500, 'INTERNAL', `internal error: ${message}`));
    });
  });
  server.setTimeout(headersTimeout); // no 'timeout' listener: Node destroys the idle socket
  return server;
}
