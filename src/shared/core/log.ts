import pino, { type Logger } from 'pino';

export type { Logger };

/**
 * The process-wide root logger. Components take a child (`rootLogger.child({ component: 'ring' })`).
 * Logs go to stderr so that stdout stays clean for `--json` results. The level is the environment variable
 * MNIST_DDP_LOG_LEVEL (default info), read here rather than through config.ts: the logger exists before any config is
 * resolved, and config errors are logged with it.
 */
let root: Logger | undefined;

function rootLogger(): Logger {
  if (!root) root = pino({ level: process.env.MNIST_DDP_LOG_LEVEL ?? 'info', base: { pid: process.pid } }, pino.destination({ fd: 2, sync: true }));
  return root;
}

export function componentLogger(component: string, bindings: Record<string, unknown> = {}): Logger {
  return rootLogger().child({ component, ...bindings });
}
