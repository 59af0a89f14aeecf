import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { REQUEST_TIMEOUT_MS, type TrainConfig } from '../shared/core/config.js';
import { componentLogger, type Logger } from '../shared/core/log.js';
import type { Replica } from '../shared/train/replica.js';
import type { TrainingPosition } from './checkpoints.js';
import { ControlServer, type ControlRejectReason } from './control-server.js';
import { RemoteWorkerGroup, type RemoteGroupOptions } from './remote-group.js';

/** What a group starts from: the config every worker receives, and the replica whose state every worker starts with. */
export interface GroupStart {
  config: TrainConfig;
  replica: Replica;
  /** Where the run stands; a resumed run's workers have applied every step before start.globalStep. */
  start: TrainingPosition;
}

const BIN = fileURLToPath(new URL('../../bin/mnist-ddp.js', import.meta.url));

export interface CoordinatorOptions {
  /** ROUTER address; `tcp://0.0.0.0:5555` for workers on other machines. */
  bind: string;
  elastic: boolean;
  joinTimeoutMs: number;
  stepTimeoutMs: number;
  heartbeatTimeoutMs: number;
  digestEvery: number;
  onMembershipChange?: RemoteGroupOptions['onMembershipChange'];
  /** Called for every control frame the coordinator drops; feeds mnistddp_rejected_frames_total. */
  onRejectedFrame?: (reason: ControlRejectReason) => void;
  onClosed?: RemoteGroupOptions['onClosed'];
}

export const DEFAULT_COORDINATOR_OPTIONS: CoordinatorOptions = {
  bind: 'tcp://127.0.0.1:*', elastic: false, joinTimeoutMs: 120_000, stepTimeoutMs: 60_000, heartbeatTimeoutMs: 5_000, digestEvery: 50,
};

/** Binds the control socket, waits for `workers` to join, forms the ring and hands every replica the same state. */
export async function startRemoteGroup(run: GroupStart, workers: number, o: CoordinatorOptions, log: Logger, onBound?: (endpoint: string) => void): Promise<RemoteWorkerGroup> {
  const server = await ControlServer.bind(o.bind, log, o.onRejectedFrame);
  log.info({ endpoint: server.endpoint }, `coordinator listening on ${server.endpoint}; waiting for ${workers} worker(s)`);
  let group: RemoteWorkerGroup | undefined;
  try {
    onBound?.(server.endpoint);
    group = new RemoteWorkerGroup(server, {
      config: { ...run.config }, model: run.config.model, layout: run.replica.layout, requestTimeoutMs: REQUEST_TIMEOUT_MS,
      stepTimeoutMs: o.stepTimeoutMs, heartbeatTimeoutMs: o.heartbeatTimeoutMs, digestEvery: o.digestEvery, elastic: o.elastic, log,
      ...(o.onMembershipChange ? { onMembershipChange: o.onMembershipChange } : {}),
      ...(o.onClosed ? { onClosed: o.onClosed } : {}),
    });
    const { replica } = run;
    await group.start(workers, o.joinTimeoutMs, { weights: replica.allWeights(), optimizer: replica.optimizer.state() }, run.start.globalStep - 1);
    return group;
  } catch (err) {
    if (group) {
      await group.close('start-up failed');
    } else {
      server.close();
      await o.onClosed?.();
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
  };
  const o = { ...DEFAULT_COORDINATOR_OPTIONS, ...options, onClosed: reap };
  const spawnWorkers = (endpoint: string): void => {
    for (let i = 0; i < workers; i++) {
      const child = spawn(process.execPath, [BIN, 'worker', '--coordinator', endpoint, '--backend', backend, '--metrics-port', '0'], {
        stdio: ['ignore', 'ignore', 'inherit'],
        env: { ...process.env, MNIST_DDP_LOG_LEVEL: process.env.MNIST_DDP_LOG_LEVEL ?? 'warn', NODE_APP_INSTANCE: String(i) },
      });
      child.on('exit', (code, signal) => {
        if (code !== 0) log.warn({ worker: i, code, signal }, `worker process ${i} exited with ${signal ?? `code ${code}`}`);
      });
      children.push(child);
    }
  };
  const group = await startRemoteGroup(run, workers, o, log, spawnWorkers);
  started = true;
  return group;
}
