import { Registry } from 'prom-client';
import { deviceLabel, initBackend } from '../shared/core/backend.js';
import { isExplicit, trainConfigSchema, type WorkerConfig } from '../shared/core/config.js';
import { PROTOCOL_VERSION, type NarrowCoordinatorMessage } from '../shared/wire/control-messages.js';
import { planDataset } from '../shared/data/dataset-plan.js';
import { isMnistDdpError, MnistDdpError } from '../shared/core/errors.js';
import { componentLogger } from '../shared/core/log.js';
import { createTransportMetrics, createWorkerMetrics, instanceIndexFromEnv, metricsPortFor, startThreadedMetricsServer, type WorkerMetrics } from '../shared/metrics/index.js';
import { newKeyPair } from '../shared/security/keys.js';
import { isLoopbackEndpoint, workerSecurity } from '../shared/security/transport.js';
import { WORKER_CONTROL_FRAME_LIMIT } from '../shared/wire/frame-limits.js';
import { describeLayout } from '../shared/model/layout.js';
import { LocalReducer, type AllReducer } from '../shared/train/reducer.js';
import { openRingInbox, RingAllReducer } from './ring/ring-allreduce.js';
import { DoublingAllReducer, linkTokensOf } from './ring/doubling-allreduce.js';
import { ControlClient } from './control-client.js';
import { resolveAdvertisedAddress } from './advertise.js';
import { withHost } from '../shared/wire/endpoints.js';
import { optimizerConfigOf } from '../shared/train/optimizers.js';
import { Replica } from '../shared/train/replica.js';
import { recordStep } from './step-metrics.js';
import { WorkerCore } from '../shared/train/worker-core.js';

/**
 * `mnist-ddp worker`: connects to the coordinator, receives the run's config, builds its replica and data plan,
 * then serves the coordinator's orders until told to stop. SIGINT/SIGTERM (pm2 scale-down, Ctrl-C) make it leave
 * gracefully: it announces the departure and keeps serving until the coordinator has re-formed the ring without it.
 * Returns the process exit code.
 */
export async function runWorker(cfg: WorkerConfig, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const instance = instanceIndexFromEnv(env);
  let log = componentLogger('worker', { instance });
  const device = deviceLabel(await initBackend(cfg.backend, log));
  const registry = new Registry();
  // Without keys, a worker of a loopback coordinator keeps its ring inbox on loopback too, unless told otherwise:
  // a plaintext inbox on 0.0.0.0 would take forged gradients from the network (issue #15).
  const keyless = !cfg.keys && !cfg.insecure;
  const bindHost = keyless && isLoopbackEndpoint(cfg.coordinator) && !isExplicit(cfg, 'bindHost') ? '127.0.0.1' : cfg.bindHost;
  const security = workerSecurity(cfg, [cfg.coordinator, `tcp://${bindHost}:*`], log);
  // Ring sockets use a keypair made now and announced over the authenticated control connection: ring peers admit
  // exactly the keys the coordinator hands out for the current ring.
  const ringKeys = security.mode === 'curve' ? newKeyPair() : undefined;
  const metrics: WorkerMetrics | undefined = cfg.metrics ? createWorkerMetrics(registry) : undefined;
  const transportMetrics = cfg.metrics ? createTransportMetrics(registry) : undefined;
  const metricsServer = cfg.metrics ? await startThreadedMetricsServer({ registry, host: cfg.metricsHost, port: metricsPortFor(cfg.metricsPort, instance), log }) : undefined;
  const client = ControlClient.connect(cfg.coordinator, log, { security, maxMessageSize: WORKER_CONTROL_FRAME_LIMIT });
  let leaving = false;
  const onSignal = (signal: string): void => {
    if (leaving) return;
    leaving = true;
    // In a ring, the coordinator releases this worker at the next step boundary (it then says stop). Outside one
    // (waiting for a coordinator, or admitted but not yet in a ring) nothing waits on it: it leaves now.
    const idle = ringGeneration < 0;
    log.info({ signal }, idle ? 'leaving now (not in a ring)' : 'leaving the run at the next step boundary');
    const said = client.send({ type: 'leave', reason: signal }).catch(() => undefined);
    if (idle) void said.then(() => client.close());
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  let heartbeat: NodeJS.Timeout | undefined;
  let reducer: AllReducer = new LocalReducer();
  // Opened on open-inbox, handed to the ring on `ring`; closed here if the run ends in between.
  let inbox: Awaited<ReturnType<typeof openRingInbox>> | undefined;
  // Which generation the current reducer serves; an `abort` for it (or a later one) closes it, which ends the
  // all-reduce this worker may be waiting in now instead of at its ring timeout (issue #14).
  let ringGeneration = -1;
  let failedGeneration = -1;
  // The ring being connected (its start-up barrier), with the generation it is for.
  let connecting: { generation: number; controller: AbortController } | undefined;
  client.onGenerationAbort((m) => {
    if (connecting && connecting.generation <= m.generation) connecting.controller.abort();
    if (m.generation < ringGeneration) return;
    failedGeneration = Math.max(failedGeneration, m.generation);
    log.warn({ generation: m.generation, reason: m.reason }, `generation ${m.generation} aborted by the coordinator: ${m.reason}`);
    void reducer.close().catch(() => undefined);
  });
  try {
    session: for (;;) {
    // Chosen again at every hello: after a restart or a cut-off the route to the coordinator may have changed.
    const address = await resolveAdvertisedAddress({ coordinator: cfg.coordinator, bindHost, advertiseHost: cfg.advertiseHost });
    const advertiseHost = address.host;
    if (address.problem) log.warn({ advertiseHost, source: address.source, problem: address.problem }, `advertising the ring inbox at ${advertiseHost} (${address.source}): ${address.problem}`);
    else log.info({ advertiseHost, source: address.source, via: address.via }, `advertising the ring inbox at ${advertiseHost} (${address.source})`);
    const connection = client.connection;
    await client.send({
      type: 'hello', protocolVersion: PROTOCOL_VERSION, host: advertiseHost, pid: process.pid, instance, metricsPort: metricsServer?.port ?? 0, device,
      ...(metricsServer ? { metricsHost: cfg.metricsHost } : {}), ...(address.via ? { via: address.via } : {}), ...(ringKeys ? { ringKey: ringKeys.publicKey } : {}),
    });
    let welcome = await client.next(cfg.coordinatorTimeoutMs);
    // Left over from before this hello (a restarted coordinator asks once per heartbeat): not an answer to it. Unless
    // the client dialled a fresh connection meanwhile: this hello may have been lost with the old one.
    while (welcome.type === 'hello-again') {
      if (client.connection !== connection) continue session;
      welcome = await client.next(cfg.coordinatorTimeoutMs);
    }
    if (welcome.type === 'reject') return fail(log, welcome);
    if (welcome.type !== 'welcome') throw new MnistDdpError('FRAME_UNEXPECTED', `expected welcome from the coordinator at ${cfg.coordinator}, got ${welcome.type}`, { type: welcome.type });
    const workerId = welcome.workerId;
    // A new membership: aborts and failures of the previous one (an abort may even arrive between hello and welcome)
    // say nothing about the rings this session forms.
    ringGeneration = -1;
    failedGeneration = -1;
    // Twice the coordinator's heartbeat timeout, and at least 5 s more (building the replica before the first
    // heartbeat): by then the coordinator has dropped this worker, so a fresh connection loses nothing it expects.
    if (welcome.heartbeatTimeoutMs) client.watchCoordinator(Math.max(2 * welcome.heartbeatTimeoutMs, welcome.heartbeatTimeoutMs + 5000));
    log = log.child({ worker: workerId });
    const config = trainConfigSchema.parse({ ...welcome.config, ...(cfg.dataDir ? { dataDir: cfg.dataDir } : {}) });
    const replica = await Replica.create({ model: config.model, seed: config.seed, freeze: config.freeze, optimizer: optimizerConfigOf(config) });
    const plan = planDataset(config);
    const core = new WorkerCore(replica, plan, { seed: config.seed, batchSize: config.batchSize, augment: config.augment, anomaly: { onAnomaly: config.onAnomaly, anomalyFactor: config.anomalyFactor, log } }, reducer);
    await client.send({ type: 'join', workerId, model: config.model, layoutChecksum: replica.layout.checksum, shapes: describeLayout(replica.layout) });
    heartbeat = setInterval(() => void client.send({ type: 'heartbeat', workerId }).catch(() => undefined), 1000);
    let appliedStep = -1;
    let generation = -1;
    for (;;) {
      const m = await client.next(cfg.coordinatorTimeoutMs);
      switch (m.type) {
        case 'admitted':
          log.info('admitted; waiting for the ring');
          break;
        case 'reject':
          return fail(log, m);
        case 'open-inbox': {
          inbox?.close();
          inbox = undefined;
          if (ringKeys && !m.allowKeys) throw new MnistDdpError('HANDSHAKE_MISMATCH', `the coordinator at ${cfg.coordinator} named no ring key for this worker's senders; run the same mnist-ddp version everywhere`, {});
          const curve = ringKeys && m.allowKeys ? { keyPair: ringKeys, allowKey: m.allowKeys } : undefined;
          inbox = await openRingInbox(`tcp://${bindHost}:*`, {
            log, ...(curve ? { curve } : {}), ...(transportMetrics ? { observer: transportMetrics } : {}), ...(cfg.ringPorts ? { ports: cfg.ringPorts } : {}),
          });
          await client.send({ type: 'inbox', generation: m.generation, endpoint: withHost(inbox.endpoint, advertiseHost) });
          break;
        }
        case 'ring': {
          if (m.generation <= failedGeneration) {
            // Aborted before this worker got to it (the abort overtakes queued orders): do not wait on its barrier.
            inbox?.close();
            inbox = undefined;
            await client.send({ type: 'worker-error', generation: m.generation, step: -1, code: 'PEER_LOST', message: `generation ${m.generation} was aborted before its ring formed` });
            break;
          }
          const previous = reducer;
          if (m.worldSize === 1) {
            inbox?.close();
            reducer = new LocalReducer();
          } else {
            // A peer lost during the ring's start-up barrier: say so at once (step -1) and wait for the next
            // generation, instead of exiting.
            connecting = { generation: m.generation, controller: new AbortController() };
            const ringConfig = { rank: m.rank, worldSize: m.worldSize, generation: m.generation, peers: m.peers, timeoutMs: cfg.ringTimeoutMs };
            const ringOptions = {
              inbox, logger: log, onRejectedFrame: (err: MnistDdpError) => metrics?.rejectFrame(rejectReasonOf(err.code)),
              ...(ringKeys ? { curve: { keyPair: ringKeys, peerKeys: m.keys ?? [] } } : {}),
              signal: connecting.controller.signal,
            };
            const connected = await (m.collective === 'doubling'
              ? DoublingAllReducer.connect(ringConfig, { ...ringOptions, ...(m.links ? { links: linkTokensOf(m.links) } : {}) })
              : RingAllReducer.connect({ ...ringConfig, compress: config.compress }, ringOptions)
            ).catch((err: Error & { code?: string; details?: { missingRank?: unknown } }) => err);
            connecting = undefined;
            if (connected instanceof Error) {
              // The inbox stays bound until the next open-inbox (or the end of the session): until the coordinator
              // has heard this report, the predecessor must not find it gone and blame this worker.
              failedGeneration = m.generation;
              log.warn({ generation: m.generation, err: connected.message }, `ring of generation ${m.generation} failed to form: ${connected.message}`);
              // missingRank names the rank whose inbox could not be reached (PEER_UNREACHABLE) or stayed silent.
              const missingRank = connected.details?.missingRank;
              await client.send({ type: 'worker-error', generation: m.generation, step: -1, code: connected.code ?? 'PEER_LOST', message: connected.message, ...(typeof missingRank === 'number' ? { missingRank } : {}) });
              break;
            }
            reducer = connected;
          }
          ringGeneration = m.generation;
          inbox = undefined;
          await previous.close();
          core.setReducer(reducer);
          generation = m.generation;
          metrics?.setRank(m.rank);
          log.info({ rank: m.rank, worldSize: m.worldSize, generation }, 'joined the ring');
          await client.send({ type: 'ring-ready', generation });
          break;
        }
        case 'load-state':
          core.restore(m);
          appliedStep = m.appliedStep;
          break;
        case 'step': {
          // The coordinator queues the next order before this one is done; after a failed step, the orders queued
          // behind it in the same generation are answered at once instead of run against a broken ring.
          if (m.generation === failedGeneration) {
            await client.send({ type: 'worker-error', generation: m.generation, step: m.step, code: 'STEP_ABORTED', message: `step ${m.step} not run: an earlier step of generation ${m.generation} failed on this worker` });
            break;
          }
          try {
            const sentBefore = reducer.bytesSent;
            const report = await core.runStep(m);
            appliedStep = m.step;
            await client.send({ type: 'step-done', generation: m.generation, ...report, step: m.step, ...(m.digest ? { digest: replica.digest() } : {}) });
            // --on-anomaly evict: every rank reached the same verdict; each asks for the others named to be dropped.
            if (config.onAnomaly === 'evict') for (const rank of report.anomaly?.ranks.filter((r) => r !== core.rank) ?? []) await client.send({ type: 'leave', reason: `anomalous gradients at step ${m.step}: ${report.anomaly!.reasons.join('; ')}`, rank });
            // After the report: the coordinator (and the next step's order) need not wait for the serialisation.
            if (metrics) {
              recordStep(metrics, report, m, plan.train.length, reducer.bytesSent - sentBefore, core.worldSize);
              metricsServer?.publish();
            }
          } catch (err) {
            const e = err as Error & { code?: string; details?: { missingRank?: number } };
            failedGeneration = m.generation;
            log.error({ step: m.step, code: e.code, err: e.message }, `step ${m.step} failed: ${e.message}`);
            await client.send({
              type: 'worker-error', generation: m.generation, step: m.step, code: e.code ?? 'INTERNAL', message: e.message,
              ...(typeof e.details?.missingRank === 'number' ? { missingRank: e.details.missingRank } : {}),
            });
          }
          break;
        }
        case 'evaluate': {
          const counts = await core.evaluate(m.split, m.mistakes);
          await client.send({ type: 'evaluation', requestId: m.requestId, rank: core.rank, ...counts, confusion: Array.from(counts.confusion) });
          break;
        }
        case 'snapshot-request':
          await client.send({ type: 'snapshot', requestId: m.requestId, appliedStep, ...(await core.snapshot()) });
          break;
        case 'stop':
          log.info({ reason: m.reason }, `stopping: ${m.reason}`);
          return 0;
        case 'welcome':
          log.warn('ignoring a second welcome');
          break;
        case 'hello-again':
          // The coordinator restarted, or declared this worker gone while it was stopped: rejoin as a new worker.
          log.warn({ reason: m.reason }, `the coordinator asks this worker to say hello again: ${m.reason}`);
          clearInterval(heartbeat);
          heartbeat = undefined;
          inbox?.close();
          inbox = undefined;
          await reducer.close().catch(() => undefined);
          reducer = new LocalReducer();
          ringGeneration = -1;
          failedGeneration = -1;
          continue session;
      }
    }
    }
  } catch (err) {
    // The control connection closed by a signal while idle (onSignal): a clean leave.
    if (leaving && isMnistDdpError(err) && err.code === 'PEER_LOST') return 0;
    if (isMnistDdpError(err)) {
      log.error({ code: err.code }, err.message);
      return 1;
    }
    throw err;
  } finally {
    if (heartbeat) clearInterval(heartbeat);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    inbox?.close();
    await reducer.close().catch(() => undefined);
    client.close();
    await metricsServer?.close();
  }
}

function fail(log: ReturnType<typeof componentLogger>, m: NarrowCoordinatorMessage<'reject'>): number {
  log.error({ code: m.code }, `the coordinator rejected this worker: ${m.message}`);
  process.stderr.write(`mnist-ddp worker: error [${m.code}]: ${m.message}\n`);
  return 1;
}

function rejectReasonOf(code: string): 'malformed' | 'stale' | 'duplicate' | 'unexpected' {
  return code === 'FRAME_STALE' ? 'stale' : code === 'FRAME_DUPLICATE' ? 'duplicate' : code === 'FRAME_MALFORMED' ? 'malformed' : 'unexpected';
}
