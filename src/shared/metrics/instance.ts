import { MnistDdpError } from '../core/errors.js';

/**
 * pm2 gives each process of an app started with `instances: N` a distinct NODE_APP_INSTANCE in 0..N-1 (fork and
 * cluster mode alike). After `pm2 scale` it reuses the lowest free number, so indexes stay dense. `pm_id` is NOT
 * usable: it is pm2's global process id, shared across all apps (the coordinator usually holds 0).
 * pm2 lets the variable be renamed (`instance_var` in the app config, or PM2_PROCESS_INSTANCE_VAR for the daemon);
 * pass that name if you do.
 *
 * Outside pm2 the variable is absent and the index is 0. This is the only place that reads it.
 */
export function instanceIndexFromEnv(
  env: Readonly<Record<string, string | undefined>>,
  variable = 'NODE_APP_INSTANCE',
): number {
  const raw = env[variable];
  if (raw === undefined || raw === '') return 0;
  const index = Number(raw);
  if (!Number.isInteger(index) || index < 0) {
    throw new MnistDdpError('CONFIG_INVALID', `${variable}=${JSON.stringify(raw)} is not a non-negative integer`, {
      key: variable,
      value: raw,
    });
  }
  return index;
}

/** A worker's metrics port: the configured base port plus its pm2 instance index, so N workers never collide. */
export function metricsPortFor(basePort: number, instanceIndex: number): number {
  const port = basePort + instanceIndex;
  if (!Number.isInteger(basePort) || basePort < 0 || !Number.isInteger(instanceIndex) || instanceIndex < 0 || port > 65535) {
    throw new MnistDdpError(
      'CONFIG_INVALID',
      `metrics port ${basePort} + instance ${instanceIndex} is not a valid TCP port; lower MNIST_DDP_METRICS_PORT`,
      { basePort, instanceIndex },
    );
  }
  // Port 0 means "ephemeral" for every instance; adding an offset would turn it into a fixed low port.
  return basePort === 0 ? 0 : port;
}
