/**
 * pm2 ecosystem for mnist-ddp: one coordinator and N data-parallel workers on this machine.
 *
 *   npx pm2 start ecosystem.config.js     # start (MNIST_DDP_WORKERS=4 npx pm2 start … for 4 workers)
 *   npx pm2 scale worker 3                # add/remove workers; the coordinator bumps the membership generation
 *   npx pm2 logs | npx pm2 ls | npx pm2 delete all
 *
 * Environment read here when pm2 loads this file (defaults in brackets) and passed to the apps:
 *   MNIST_DDP_WORKERS                   number of worker processes [2]
 *   MNIST_DDP_COORDINATOR               coordinator control-plane address workers connect to [tcp://127.0.0.1:5555]
 *   MNIST_DDP_BIND                      address the coordinator binds [MNIST_DDP_COORDINATOR]
 *   MNIST_DDP_METRICS_HOST              interface the /metrics servers bind [127.0.0.1]
 *   MNIST_DDP_COORDINATOR_METRICS_PORT  coordinator /metrics port [9400]
 *   MNIST_DDP_METRICS_PORT              workers' /metrics base port; worker i listens on base + i [9401]
 *                                       (i = NODE_APP_INSTANCE, which pm2 sets to 0..N-1 and reuses after scale)
 *   MNIST_DDP_TARGETS_FILE              Prometheus file_sd file the coordinator keeps up to date
 *                                       [runs/prometheus/targets/mnist-ddp.json]
 *   MNIST_DDP_LOG_LEVEL                 pino level [info]
 *   MNIST_DDP_RUN_DIR                   the run directory. pm2 restarts a dead coordinator with the environment of
 *                                       its `pm2 start`, so the restart finds this run unfinished and continues it
 *                                       from its latest checkpoint (auto-resume) [runs/pm2-<start time>]
 *   MNIST_DDP_CHECKPOINT_EVERY          periodic checkpoints, e.g. 200 (steps) or 60s [unset: epoch ends only]
 *   MNIST_DDP_KEYS                      CURVE key directory from `mnist-ddp keygen --out DIR`, relative to this file
 *                                       [unset: plaintext with a warning, allowed only while every address is loopback;
 *                                       a non-loopback MNIST_DDP_BIND or MNIST_DDP_COORDINATOR then fails with
 *                                       TRANSPORT_INSECURE]. The key itself is never put in an environment variable.
 * Logs go to pm2's log files ($PM2_HOME/logs/<app>-out-<id>.log / -error-<id>.log).
 *
 * Why ESM with a named `apps` export: package.json has "type": "module", so Node parses this .js file as ESM, and
 * pm2 6 loads ecosystem files with plain `require()` (lib/Common.js parseConfig) and never `import()`.
 * That works only through Node's require(esm) (on by default from Node 20.19 / 22.12), which hands pm2 the module
 * namespace object; pm2 reads `.apps` from it and does not unwrap `.default`, so `apps` must be a named export.
 * `module.exports` would throw "module is not defined in ES module scope". No top-level await: require(esm)
 * rejects async modules (ERR_REQUIRE_ASYNC_MODULE). On older Node, use a copy named ecosystem.config.cjs.
 */
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = dirname(fileURLToPath(import.meta.url));
const env = process.env;

function positiveInt(name, fallback) {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 1) throw new Error(`${name}=${JSON.stringify(raw)} must be a positive integer`);
  return value;
}

const workers = positiveInt('MNIST_DDP_WORKERS', 2);

const shared = {
  MNIST_DDP_COORDINATOR: env.MNIST_DDP_COORDINATOR ?? 'tcp://127.0.0.1:5555',
  MNIST_DDP_METRICS_HOST: env.MNIST_DDP_METRICS_HOST ?? '127.0.0.1',
  MNIST_DDP_COORDINATOR_METRICS_PORT: String(positiveInt('MNIST_DDP_COORDINATOR_METRICS_PORT', 9400)),
  MNIST_DDP_METRICS_PORT: String(positiveInt('MNIST_DDP_METRICS_PORT', 9401)),
  MNIST_DDP_TARGETS_FILE: resolve(root, env.MNIST_DDP_TARGETS_FILE ?? 'runs/prometheus/targets/mnist-ddp.json'),
  MNIST_DDP_LOG_LEVEL: env.MNIST_DDP_LOG_LEVEL ?? 'info',
  // pm2 keeps these processes up: the coordinator idles after its run, workers wait for the next run.
  MNIST_DDP_EXIT_WHEN_DONE: 'false',
  MNIST_DDP_STAY_ALIVE: 'true',
  MNIST_DDP_MIN_WORKERS: String(workers),
};
// The coordinator listens at the address workers are given (loopback by default: everything on this machine).
// Workers on other machines: MNIST_DDP_BIND=tcp://0.0.0.0:5555 and MNIST_DDP_COORDINATOR=tcp://THIS-HOST:5555.
shared.MNIST_DDP_BIND = env.MNIST_DDP_BIND ?? shared.MNIST_DDP_COORDINATOR;
// Both apps read the same directory: the coordinator its coordinator.key and allowed/, workers worker.key and
// coordinator.pub (on worker-only machines copy just those three files).
if (env.MNIST_DDP_KEYS) shared.MNIST_DDP_KEYS = resolve(root, env.MNIST_DDP_KEYS);
// One run directory per `pm2 start` (this file is read then, and pm2 restarts a process with the environment it was
// started with): a coordinator that pm2 restarts continues the same run instead of starting a new one.
const startedAt = new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
shared.MNIST_DDP_RUN_DIR = resolve(root, env.MNIST_DDP_RUN_DIR ?? `runs/pm2-${startedAt}`);

// Every other MNIST_DDP_* setting of the shell that runs `pm2 start` (model, epochs, batch size, …) reaches the apps.
for (const [key, value] of Object.entries(env)) {
  if (key.startsWith('MNIST_DDP_') && !(key in shared) && value !== undefined) shared[key] = value;
}

const common = {
  cwd: root,
  script: 'bin/mnist-ddp.js',
  exec_mode: 'fork',
  autorestart: true,
  // A crashing worker rejoins as a new generation; back off so a config error does not spin the CPU.
  exp_backoff_restart_delay: 500,
  max_restarts: 20,
  // SIGINT first so a process can leave the ring cleanly (finish the step, tell the coordinator), then SIGKILL.
  kill_timeout: 10_000,
  merge_logs: false,
  env: shared,
};

export const apps = [
  { ...common, name: 'coordinator', args: 'coordinator', instances: 1 },
  { ...common, name: 'worker', args: 'worker', instances: workers },
];
