import { constants } from 'node:os';
import type { Logger } from '../shared/core/log.js';

/**
 * A graceful stop for a run: the first SIGINT or SIGTERM (Ctrl-C, `pm2 stop`, a Kubernetes pod being deleted) aborts
 * `signal`, and the driver stops at the next step boundary with a resumable checkpoint (driver.ts TrainOptions.stop).
 * A second signal exits at once, without one. `dispose()` restores the default handling.
 */
export function stopOnSignals(log: Logger): { signal: AbortSignal; dispose: () => void } {
  const controller = new AbortController();
  const onSignal = (name: NodeJS.Signals): void => {
    if (controller.signal.aborted) {
      log.error({ signal: name }, `${name} again: exiting now, without a checkpoint`);
      process.exit(128 + (constants.signals[name] ?? 0));
    }
    log.warn({ signal: name }, `${name}: stopping at the next step boundary with a checkpoint (send it again to exit at once)`);
    controller.abort(name);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return {
    signal: controller.signal,
    dispose: () => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}
