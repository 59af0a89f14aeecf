import { cpSync, existsSync, mkdirSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { readCheckpoint, writeCheckpoint, type TrainingPosition } from './checkpoints.js';
import { runTraining, type TrainEvents, type WorkerGroup } from './driver.js';
import { HistoryWriter } from './history.js';
import { LocalWorkerGroup } from './local-group.js';
import { createProgress } from './progress.js';
import { initBackend } from '../shared/core/backend.js';
import * as tf from '@tensorflow/tfjs';
import { isExplicit, parseCheckpointEvery, trainConfigSchema, type TrainConfig } from '../shared/core/config.js';
import { isMnistDdpError, MnistDdpError } from '../shared/core/errors.js';
import { isModelName } from '../shared/model/zoo.js';
import { loadModelDir, writeFileAtomic } from '../shared/model/io.js';
import { planDataset } from '../shared/data/dataset-plan.js';
import { DEFAULT_MISCLASSIFIED } from '../report/html.js';
import { runReport } from '../report/write-report.js';
import { evaluationReport, formatEvaluation } from '../shared/train/evaluation.js';
import { componentLogger } from '../shared/core/log.js';
import { LocalReducer } from '../shared/train/reducer.js';
import { optimizerConfigOf } from '../shared/train/optimizers.js';
import { globalBatch, peakLearningRate } from '../shared/train/lr-schedule.js';
import { Replica } from '../shared/train/replica.js';
import { WorkerCore } from '../shared/train/worker-core.js';
import { startLocalWorkerGroup } from './start-group.js';
import { stopOnSignals } from './stop-signals.js';

export interface TrainSummary {
  testAccuracy: number;
  macroF1: number;
  epochs: number;
  samplesPerSec: number;
  wallSeconds: number;
  checkpoint: string;
  runDir: string;
  stoppedEarly: boolean;
}

import type { Io } from '../shared/core/io.js';
export type { Io };

/** Keys a resumed run takes from the new invocation; everything else (what defines the run) comes from the checkpoint. */
const OPERATIONAL_KEYS = ['epochs', 'maxSteps', 'backend', 'workers', 'debug', 'json', 'report', 'runDir', 'resume', 'checkpointEvery', 'keepCheckpoints', 'balance', 'heartbeatTimeoutMs', 'compress', 'collective', 'doublingMaxKib'] as const;

export function defaultRunDir(model: string): string {
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
  return join('runs', `${stamp}-${model}`);
}

export interface PreparedRun {
  config: TrainConfig;
  replica: Replica;
  start: TrainingPosition;
  runDir: string;
}

/** Builds the replica and start position: fresh, or restored exactly from --resume. */
export async function prepareRun(config: TrainConfig): Promise<PreparedRun> {
  if (config.from && !config.resume) return prepareFinetune(config);
  if (!config.resume) {
    const replica = await Replica.create({ model: config.model, seed: config.seed, freeze: config.freeze, optimizer: optimizerConfigOf(config) });
    return { config, replica, start: { epoch: 0, cursor: 0, globalStep: 0 }, runDir: config.runDir ?? defaultRunDir(config.model) };
  }
  const loaded = await readCheckpoint(config.resume);
  // Operational keys come from this invocation, unset ones included: a --max-steps that stopped the saved run
  // must not stop the resumed one. --epochs is the exception: without the flag the saved run's total stands (the
  // schema default would silently shorten a longer run and change its learning-rate schedule).
  const operational: Record<string, unknown> = Object.fromEntries(OPERATIONAL_KEYS.map((k) => [k, config[k]]));
  if (!isExplicit(config, 'epochs')) delete operational.epochs;
  const merged = Object.freeze(trainConfigSchema.parse({ ...loaded.state.config, ...operational }));
  const replica = await Replica.create({ model: loaded.model, seed: merged.seed, freeze: merged.freeze, optimizer: optimizerConfigOf(merged) });
  replica.optimizer.load(loaded.optimizer);
  const { epoch, cursor, globalStep } = loaded.state;
  return { config: merged, replica, start: { epoch, cursor, globalStep }, runDir: config.runDir ?? dirname(resolve(config.resume)) };
}

/**
 * Fine-tuning: start from a pretrained checkpoint's weights, optionally with a freshly initialised `head`, and freeze
 * layers by name (--freeze a,b) or everything up to and including a layer (--freeze-until conv2). The resolved
 * freeze list goes into the run's config, so distributed workers build the same trainable layout; frozen weights
 * reach them with the initial state.
 */
async function prepareFinetune(config: TrainConfig): Promise<PreparedRun> {
  const pretrained = await loadModelDir(config.from!);
  const model = isModelName(pretrained.name) ? pretrained.name : config.model;
  const layerNames = pretrained.layers.map((l) => l.name);
  const freeze = new Set(config.freeze);
  if (config.freezeUntil) {
    const until = layerNames.indexOf(config.freezeUntil);
    if (until < 0) {
      throw new MnistDdpError('LAYER_UNKNOWN', `--freeze-until ${config.freezeUntil}: model '${pretrained.name}' has layers ${layerNames.join(', ')}`, { layer: config.freezeUntil });
    }
    for (const name of layerNames.slice(0, until + 1)) if (pretrained.getLayer(name).weights.length > 0) freeze.add(name);
  }
  if (config.newHead) {
    const head = pretrained.getLayer('head');
    // getWeights() returns the live variables: read their shapes, never dispose them.
    const [kernel, bias] = head.getWeights();
    const fresh = [tf.initializers.glorotUniform({ seed: config.seed }).apply(kernel!.shape), tf.zeros(bias!.shape)];
    head.setWeights(fresh);
    tf.dispose(fresh);
  }
  const merged: TrainConfig = Object.freeze({ ...config, model: model as TrainConfig['model'], freeze: [...freeze], freezeUntil: undefined });
  const replica = await Replica.create({ model: pretrained, seed: merged.seed, freeze: merged.freeze, optimizer: optimizerConfigOf(merged) });
  return { config: merged, replica, start: { epoch: 0, cursor: 0, globalStep: 0 }, runDir: config.runDir ?? defaultRunDir(`${model}-finetune`) };
}

/**
 * `mnist-ddp train`: data → model → training → evaluation → checkpoint, with the coordinator's loop driving a
 * worker group: one in-process worker (also --debug), or with --workers N that many worker processes on this machine
 * (coordinator/start-group.ts). `makeGroup` replaces that choice (the `coordinator` command's remote workers).
 */
export async function runTrain(
  input: TrainConfig, io: Io, makeGroup?: (run: PreparedRun) => Promise<WorkerGroup>, observers: Pick<TrainEvents, 'onStep' | 'onEpoch'> = {},
): Promise<TrainSummary> {
  const log = componentLogger('train');
  const t0 = performance.now();
  await initBackend(input.backend, log);
  const run = await prepareRun(input);
  const { config, replica, start, runDir } = run;
  mkdirSync(runDir, { recursive: true });
  const plan = planDataset(config);
  log.info({ runDir, model: config.model, train: plan.train.length, validation: plan.validation.length, test: plan.test.length, start }, 'run prepared');

  const group: WorkerGroup = makeGroup
    ? await makeGroup(run)
    : config.workers > 0 && !config.debug
      ? await startLocalWorkerGroup(run, config.workers, config.backend, config.heartbeatTimeoutMs ? { heartbeatTimeoutMs: config.heartbeatTimeoutMs } : {})
      : new LocalWorkerGroup(new WorkerCore(replica, plan, { seed: config.seed, batchSize: config.batchSize, augment: config.augment }, new LocalReducer()));
  // Written once the group has formed: its world size sets the starting global batch, hence the scaled peak lr.
  const startLr = startingLearningRate(config, group.worldSize);
  log.info(startLr, startLr.peakLr === config.lr
    ? `peak learning rate ${startLr.peakLr} (--lr-scaling ${config.lrScaling}; global batch ${startLr.globalBatch})`
    : `peak learning rate ${startLr.peakLr} = ${config.lr} × global batch ${startLr.globalBatch} / ${config.lrReferenceBatch} (--lr-scaling linear)`);
  writeFileAtomic(join(runDir, 'config.json'), JSON.stringify({ ...config, dataDir: plan.data.dataDir, startLr }, null, 2));
  const checkpointDir = join(runDir, 'checkpoint');
  const history = new HistoryWriter(join(runDir, 'history.jsonl'));
  const progress = createProgress({ tty: Boolean(process.stderr.isTTY) && !config.json, totalSamples: config.epochs * plan.train.length, log });
  let outcome;
  let failure: unknown;
  // A resumed run redoes the steps after its checkpoint: the records a dead coordinator wrote for them are superseded.
  if (config.resume) history.rewind(start, 'resumed from a checkpoint');
  const stop = stopOnSignals(log);
  try {
    outcome = await runTraining(config, group, plan, start, {
      onStep: (e) => { history.step(e); progress.step(e); observers.onStep?.(e); },
      onEpoch: (e) => { history.epoch(e); progress.epoch(e); observers.onEpoch?.(e); },
      onRewind: (to) => history.rewind(to, 'no surviving worker held the state; restored the latest checkpoint'),
      onRecovered: (o, runPhase) => history.recovery(o, runPhase),
      checkpoint: async (position) => {
        const snapshot = await group.snapshot();
        replica.setAllWeights(snapshot.weights);
        await writeCheckpoint(checkpointDir, replica.model, snapshot.optimizer, {
          model: config.model, ...position, config: { ...config }, rng: { seed: config.seed, scheme: 'stateless: deriveSeed(seed, epoch, step, rank) per step' },
          layoutChecksum: replica.layout.checksum, weightsDigest: replica.digest(),
        });
        keepCheckpoint(checkpointDir, join(runDir, 'checkpoints'), position.globalStep, config.keepCheckpoints);
        group.setRestorePoint?.(snapshot, position);
      },
    }, { checkpointEvery: parseCheckpointEvery(config.checkpointEvery), finalEvaluation: { split: 'test', mistakes: DEFAULT_MISCLASSIFIED }, stop: stop.signal });
  } catch (err) {
    failure = err;
    // Said before the teardown, so the reason is on record even if releasing the workers hangs or the process dies
    // there; the command still reports it again as its exit error.
    const code = isMnistDdpError(err) ? err.code : 'INTERNAL';
    log.error({ code }, `the run failed: error [${code}]: ${(err as Error).message}; stopping the workers`);
    throw err;
  } finally {
    stop.dispose();
    progress.stop();
    // Always release the workers (and child processes): a failed run must end, not hang on open sockets.
    await group.close(failure ? `the run failed: ${(failure as Error).message}` : 'training finished').catch(() => undefined);
  }
  if (outcome.interrupted) {
    const signal = String(stop.signal.reason);
    throw new MnistDdpError('RUN_INTERRUPTED',
      `stopped by ${signal} after step ${outcome.position.globalStep}, with a checkpoint at ${checkpointDir}: \`mnist-ddp coordinator\` continues from it when started again with --run-dir ${runDir}; \`train\` continues with --resume ${checkpointDir}`,
      { signal, globalStep: outcome.position.globalStep, checkpoint: checkpointDir });
  }
  const counts = outcome.finalEvaluation!;
  const report = evaluationReport(counts.confusion, counts.lossSum);
  // Atomic: eval.json's existence marks a finished run (resumableCheckpoint) and readers wait for it to appear.
  writeFileAtomic(join(runDir, 'eval.json'), JSON.stringify({ ...report, misclassified: counts.mistakes }, null, 2));
  if (!config.json) io.stdout(formatEvaluation(report, 'test'));
  const summary: TrainSummary = {
    testAccuracy: report.accuracy, macroF1: report.macroF1, epochs: outcome.position.epoch,
    samplesPerSec: Math.round(outcome.samplesPerSec * 10) / 10, wallSeconds: Math.round((performance.now() - t0) / 100) / 10,
    checkpoint: checkpointDir, runDir, stoppedEarly: outcome.stoppedEarly,
  };
  if (config.report) {
    try {
      await runReport({ run: runDir }, { stdout: () => {} });
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'could not write report.html');
    }
  }
  io.stdout(config.json ? JSON.stringify(summary) : `\ntrained ${config.model} for ${summary.epochs} epoch(s) in ${summary.wallSeconds} s at ${summary.samplesPerSec} samples/s; checkpoint: ${checkpointDir}`);
  return summary;
}

/**
 * config.json's `startLr`: what the run's flags made of the learning rate at its first step (derived, not a setting;
 * an elastic run's later generations recompute it from their world size, and history.jsonl has every step's lr).
 */
export interface StartingLearningRate {
  worldSize: number;
  globalBatch: number;
  /** The schedule's peak for that world: warm-up ramps up to it. */
  peakLr: number;
}

export function startingLearningRate(config: TrainConfig, worldSize: number): StartingLearningRate {
  return { worldSize, globalBatch: globalBatch(config, worldSize), peakLr: peakLearningRate(config, worldSize) };
}

/**
 * Copies the checkpoint just written into `<run>/checkpoints/step-<N>` (staged and renamed, so never half there) and
 * removes all but the newest `keep` of them.
 */
function keepCheckpoint(latest: string, dir: string, globalStep: number, keep: number): void {
  mkdirSync(dir, { recursive: true });
  const name = `step-${String(globalStep).padStart(9, '0')}`;
  const staging = join(dir, `.${name}.staging-${process.pid}`);
  rmSync(staging, { recursive: true, force: true });
  cpSync(latest, staging, { recursive: true });
  rmSync(join(dir, name), { recursive: true, force: true });
  renameSync(staging, join(dir, name));
  const all = readdirSync(dir).filter((n) => /^step-\d+$/.test(n)).sort();
  for (const old of all.slice(0, Math.max(0, all.length - keep))) rmSync(join(dir, old), { recursive: true, force: true });
}

/** The checkpoint an unfinished run directory can continue from (a coordinator restarted by pm2), if any. */
export function resumableCheckpoint(runDir: string | undefined): string | undefined {
  if (!runDir) return undefined;
  const dir = join(runDir, 'checkpoint');
  return existsSync(join(dir, 'state.json')) && !runFinished(runDir) ? dir : undefined;
}

/** Whether runDir holds a finished run: eval.json, written last and atomically, marks one. */
export function runFinished(runDir: string | undefined): boolean {
  return runDir !== undefined && existsSync(join(runDir, 'eval.json'));
}
