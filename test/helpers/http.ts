import { request } from 'node:http';

export interface HttpResponse {
  status: number;
  contentType: string | undefined;
  body: string;
  /** Body length in bytes. */
  bytes: number;
  /** Request sent → last body byte, in ms. */
  ms: number;
}

/**
 * One HTTP request to 127.0.0.1:`port` (GET unless `method` says otherwise), resolved with the whole body. Rejects on
 * a socket error or when no answer completes within `timeoutMs`. `freshConnection` bypasses the keep-alive agent,
 * as a Prometheus server's first scrape does.
 */
export function httpGet(
  port: number,
  path: string,
  opts: { method?: string; timeoutMs?: number; freshConnection?: boolean } = {},
): Promise<HttpResponse> {
  const { method = 'GET', timeoutMs = 5_000 } = opts;
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const req = request({ host: '127.0.0.1', port, path, method, timeout: timeoutMs, ...(opts.freshConnection && { agent: false }) }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const body = Buffer.concat(chunks);
        resolve({ status: res.statusCode ?? 0, contentType: res.headers['content-type'], body: body.toString('utf8'), bytes: body.length, ms: performance.now() - t0 });
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${path} on :${port} timed out after ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}
