import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadCoordinatorKeys, writeKeyDir } from '../shared/security/keys.js';
import type { CoordinatorSecurity, TransportObserver } from '../shared/security/transport.js';
import { controlFrameLimit } from '../shared/wire/frame-limits.js';
import { coordinatorConfigSchema, REQUEST_TIMEOUT_MS, type TrainConfig } from '../shared/core/config.js';
import { componentLogger, type Logger } from '../shared/core/log.js';
import type { Replica } from '../shared/train/replica.js';
import type { TrainingPosition } from './checkpoints.js';
import { ControlServer, type ControlRejectReason } from './control-server.js';
import { RemoteWorkerGroup, type RemoteGroupOptions } from './remote-group.js';
import { chooseCollective } from '../shared/wire/collectives.js';

/** What a group starts from: the config every worker receives, and the replica whose state every worker starts with. */
export interface GroupStart {
  config: TrainConfig;
  replica: Replica;
  /** Where the run stands; a resumed run's workers have applied every step before start.globalStep. */
  start: TrainingPosition;
}

/**
 * The entry that worker processes run: bin/mnist-ddp.js from dist/coordinator/ (or src/coordinator/ under tsx). The
 * self-contained bundle (scripts/bundle.ts) keeps this relative path: its modules sit two levels below its own
 * bin/mnist-ddp.js, and test/e2e/bundle.test.ts trains with 2 workers from it.
 */
const BIN = fileURLToPath(new URL('../../bin/mnist-ddp.js', import.meta.url));

export interface CoordinatorOptions {
  /** ROUTER address; `tcp://0.0.0.0:5555` for workers on other machines. */
  bind: string;
  elastic: boolean;
  joinTimeoutMs: number;
  stepTimeoutMs: number;
  heartbeatTimeoutMs: number;
  digestEvery: number;
  /** With fewer than `minWorkers` left, how long recovery waits for joiners (default 60 s). */
  rejoinTimeoutMs?: number;
  /** Workers the run needs to go on (--min-workers; default 1): below it, recovery waits for joiners. */
  minWorkers?: number;
  onMembershipChange?: RemoteGroupOptions['onMembershipChange'];
  /** Called for every control frame the coordinator drops; feeds mnistddp_rejected_frames_total. */
  onRejectedFrame?: (reason: ControlRejectReason) => void;
  onClosed?: RemoteGroupOptions['onClosed'];
  /** CURVE or plaintext (shared/security/transport.ts coordinatorSecurity); required, so no caller forgets it. */
  security: CoordinatorSecurity;
  /** Counts refused handshakes and dropped connections (mnistddp_auth_refused_total, …). */
  transportObserver?: TransportObserver;
}

/**
 * How `train --workers N` runs its coordinator where it departs from `mnist-ddp coordinator`'s defaults, and why:
 * its workers are child processes of this one, so the control socket listens on loopback at a free port; a worker
 * that has not joined within two minutes failed to start (the coordinator command waits ten for workers that
 * operators start by hand or pm2 deploys); and a lost local worker fails the run instead of shrinking it.
 */
export const LOCAL_WORKERS_COORDINATOR: Pick<CoordinatorOptions, 'bind' | 'joinTimeoutMs' | 'elastic'> = {
  bind: 'tcp://127.0.0.1:*', joinTimeoutMs: 120_000, elastic: false,
};

/** The other deadlines and checks as the coordinator command's config schema defaults them. */
function coordinatorDefaults(): Pick<CoordinatorOptions, 'stepTimeoutMs' | 'heartbeatTimeoutMs' | 'digestEvery'> {
  return coordinatorConfigSchema.pick({ stepTimeoutMs: true, heartbeatTimeoutMs: true, digestEvery: true }).parse({});
}

/** Binds the control socket, waits for `workers` to join, forms the ring and hands every replica the same state. */
export async function startRemoteGroup(run: GroupStart, workers: number, coordinator: CoordinatorOptions, log: Logger, onBound?: (endpoint: string) => void): Promise<RemoteWorkerGroup> {
  const initial = { weights: await run.replica.allWeights(), optimizer: run.replica.optimizer.state() };
  const server = await ControlServer.bind(coordinator.bind, log, coordinator.onRejectedFrame, {
    security: coordinator.security, maxMessageSize: controlFrameLimit(initial.weights.length), ...(coordinator.transportObserver ? { observer: coordinator.transportObserver } : {}),
    heartbeatTimeoutMs: coordinator.heartbeatTimeoutMs,
  });
  log.info({ endpoint: server.endpoint }, `coordinator listening on ${server.endpoint}; waiting for ${workers} worker(s)`);
  let group: RemoteWorkerGroup | undefined;
  try {
    onBound?.(server.endpoint);
    group = new RemoteWorkerGroup(server, {
      config: { ...run.config }, model: run.config.model, layout: run.replica.layout, requestTimeoutMs: REQUEST_TIMEOUT_MS,
      stepTimeoutMs: coordinator.stepTimeoutMs, heartbeatTimeoutMs: coordinator.heartbeatTimeoutMs, digestEvery: coordinator.digestEvery, elastic: coordinator.elastic, log,
      balance: { mode: run.config.balance, batchSize: run.config.batchSize },
      collectiveFor: (worldSize) => chooseCollective({
        mode: run.config.collective, bufferBytes: 4 * run.replica.layout.bufferLength, worldSize, compress: run.config.compress, doublingMaxKib: run.config.doublingMaxKib,
      }),
      ...(coordinator.rejoinTimeoutMs ? { rejoinTimeoutMs: coordinator.rejoinTimeoutMs } : {}),
      ...(coordinator.minWorkers ? { minWorkers: coordinator.minWorkers } : {}),
      curve: coordinator.security.mode === 'curve',
      ...(coordinator.onMembershipChange ? { onMembershipChange: coordinator.onMembershipChange } : {}),
      ...(coordinator.onClosed ? { onClosed: coordinator.onClosed } : {}),
    });
    await group.start(workers, coordinator.joinTimeoutMs, initial, run.start.globalStep - 1, run.start);
    return group;
  } catch (err) {
    if (group) {
      await group.close('start-up failed');
    } else {
      server.close();
      await coordinator.onClosed?.();
    }
    throw err;
  }
}

/**
 * Starts a coordinator for `run` and `workers` local `mnist-ddp worker` child processes that join it. The returned
 * group's close() stops the workers and waits for the child processes to exit (SIGKILL after 10 s; at once when
 * the start-up failed).
 * Workers log warnings and errors to this terminal.
 */
export async function startLocalWorkerGroup(
  run: GroupStart, workers: number, backend: string, options: Partial<Omit<CoordinatorOptions, 'onClosed'>> = {}, log: Logger = componentLogger('coordinator'),
): Promise<RemoteWorkerGroup> {
  const children: ChildProcess[] = [];
  let started = false;
  // Keys of this run only, so `train --workers N` is CURVE with no user step (issue #15): a fresh key directory in
  // a 0700 temp directory, handed to the child workers as MNIST_DDP_KEYS and removed when the group closes.
  const keyDir = mkdtempSync(join(tmpdir(), 'mnist-ddp-keys-'));
  const removeKeys = (): void => rmSync(keyDir, { recursive: true, force: true });
  let security: CoordinatorSecurity;
  try {
    writeKeyDir(keyDir);
    security = { mode: 'curve', keys: loadCoordinatorKeys(keyDir) };
  } catch (err) {
    removeKeys();
    throw err;
  }
  // After a run the workers were told to stop: give them 10 s to exit. After a failed start-up, kill them now.
  const reap = async (): Promise<void> => {
    await Promise.all(children.map((c) => new Promise<void>((resolve) => {
      if (c.exitCode !== null || c.signalCode !== null) return resolve();
      const timer = setTimeout(() => c.kill('SIGKILL'), started ? 10_000 : 0);
      c.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
    })));
    removeKeys();
  };
  const coordinator: CoordinatorOptions = { ...coordinatorDefaults(), ...LOCAL_WORKERS_COORDINATOR, security, ...options, onClosed: reap };
  const spawnWorkers = (endpoint: string): void => {
    for (let i = 0; i < workers; i++) {
      const child = spawn(process.execPath, [BIN, 'worker', '--coordinator', endpoint, '--backend', backend, '--metrics-port', '0'], {
        stdio: ['ignore', 'ignore', 'inherit'],
        env: { ...process.env, MNIST_DDP_KEYS: keyDir, MNIST_DDP_LOG_LEVEL: process.env.MNIST_DDP_LOG_LEVEL ?? 'warn', NODE_APP_INSTANCE: String(i) },
      });
      child.on('exit', (code, signal) => {
        if (code !== 0) log.warn({ worker: i, code, signal }, `worker process ${i} exited with ${signal ?? `code ${code}`}`);
      });
      children.push(child);
    }
  };
  const group = await startRemoteGroup(run, workers, coordinator, log, spawnWorkers).catch((err: unknown) => {
    removeKeys();
    throw err;
  });
  started = true;
  return group;
}
