import { createServer, type AddressInfo, type Server } from 'node:net';

function listenOn(port: number): Promise<Server | undefined> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(undefined));
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

/**
 * First port p of `count` consecutive ports on 127.0.0.1 that are all free now (worker i of a pm2 app serves on
 * base + NODE_APP_INSTANCE). Free only when checked: bind them soon, another process may take one in between.
 */
export async function freePortRange(count: number): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const first = await listenOn(0);
    if (!first) continue;
    const base = (first.address() as AddressInfo).port;
    const held = [first];
    for (let i = 1; i < count && held.length === i; i++) {
      const next = base + i <= 65535 ? await listenOn(base + i) : undefined;
      if (next) held.push(next);
    }
    await Promise.all(held.map((s) => new Promise<void>((r) => s.close(() => r()))));
    if (held.length === count) return base;
  }
  throw new Error(`no run of ${count} free ports found`);
}

export function freePort(): Promise<number> {
  return freePortRange(1);
}

/**
 * A coordinator's addresses on loopback, on free ports: its control endpoint (what workers pass to --coordinator),
 * its metrics port, and the coordinator flags that bind both.
 */
export async function loopbackCoordinator(): Promise<{ endpoint: string; metricsPort: number; flags: string[] }> {
  const [control, metricsPort] = await Promise.all([freePort(), freePort()]);
  const endpoint = `tcp://127.0.0.1:${control}`;
  return { endpoint, metricsPort, flags: ['--bind', endpoint, '--coordinator-metrics-port', String(metricsPort)] };
}
