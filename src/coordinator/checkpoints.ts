import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type * as tf from '@tensorflow/tfjs';
import { MnistDdpError } from '../shared/core/errors.js';
import { loadModelDir, saveModelDir, writeFileAtomic } from '../shared/model/io.js';
import type { OptimizerState } from '../shared/train/optimizers.js';

/**
 * A checkpoint directory: the model in the standard TF.js Layers format (model.json + weights.bin, loadable by
 * stock tf.loadLayersModel) and, beside it, the training state: optimiser slots (optimizer.bin), epoch, cursor,
 * global step, the run's config and how randomness is derived (state.json). Randomness is stateless (seeded by
 * seed/epoch/step/rank), so the seed and the position fully restore it.
 *
 * Each file is written to a temporary name, fsynced and renamed, and the whole directory is staged beside the
 * target and swapped in with two renames, so a crash never leaves a half-written checkpoint under the target name.
 * The swap itself is not one atomic step: a crash between its two renames leaves no directory under the target
 * name, with the complete old checkpoint at `<dir>.previous-<pid>` and the new one at `<dir>.staging-<pid>`.
 */
export const STATE_JSON = 'state.json';
export const OPTIMIZER_BIN = 'optimizer.bin';

export interface TrainingPosition {
  /** Epoch in progress (or the next one when cursor is 0). */
  epoch: number;
  /** Samples of that epoch's order already consumed. */
  cursor: number;
  globalStep: number;
}

export interface CheckpointState extends TrainingPosition {
  version: 1;
  model: string;
  config: Record<string, unknown>;
  optimizer: { name: OptimizerState['name']; step: number; slots: number; length: number };
  rng: { seed: number; scheme: string };
  layoutChecksum: string;
  weightsDigest: string;
  savedAt: string;
}

export async function writeCheckpoint(dir: string, model: tf.LayersModel, optimizer: OptimizerState, state: Omit<CheckpointState, 'version' | 'optimizer' | 'savedAt'>): Promise<void> {
  mkdirSync(dirname(dir), { recursive: true });
  const staging = `${dir}.staging-${process.pid}`;
  rmSync(staging, { recursive: true, force: true });
  await saveModelDir(model, staging);
  const slots = optimizer.slots;
  const bytes = new Uint8Array(slots.reduce((n, s) => n + s.byteLength, 0));
  let off = 0;
  for (const s of slots) {
    bytes.set(new Uint8Array(s.buffer, s.byteOffset, s.byteLength), off);
    off += s.byteLength;
  }
  writeFileAtomic(join(staging, OPTIMIZER_BIN), bytes);
  const full: CheckpointState = {
    ...state, version: 1, savedAt: new Date().toISOString(),
    optimizer: { name: optimizer.name, step: optimizer.step, slots: slots.length, length: slots[0]?.length ?? 0 },
  };
  writeFileAtomic(join(staging, STATE_JSON), JSON.stringify(full, null, 2));
  const previous = `${dir}.previous-${process.pid}`;
  if (existsSync(dir)) renameSync(dir, previous);
  renameSync(staging, dir);
  rmSync(previous, { recursive: true, force: true });
}

export interface LoadedCheckpoint {
  model: tf.LayersModel;
  state: CheckpointState;
  optimizer: OptimizerState;
}

export async function readCheckpoint(dir: string): Promise<LoadedCheckpoint> {
  const statePath = join(dir, STATE_JSON);
  if (!existsSync(statePath)) {
    throw new MnistDdpError('CHECKPOINT_INVALID', `${dir} is not a training checkpoint (no ${STATE_JSON}); pass runs/<run>/checkpoint`, { dir });
  }
  let state: CheckpointState;
  try {
    state = JSON.parse(readFileSync(statePath, 'utf8')) as CheckpointState;
  } catch (err) {
    throw new MnistDdpError('CHECKPOINT_INVALID', `${statePath} is not valid JSON: ${(err as Error).message}`, { file: statePath });
  }
  if (state.version !== 1 || typeof state.epoch !== 'number' || typeof state.cursor !== 'number' || !state.optimizer) {
    throw new MnistDdpError('CHECKPOINT_INVALID', `${statePath} is missing fields or has an unknown version`, { file: statePath });
  }
  const model = await loadModelDir(dir);
  const raw = readFileSync(join(dir, OPTIMIZER_BIN));
  const { slots, length } = state.optimizer;
  if (raw.byteLength !== slots * length * 4) {
    throw new MnistDdpError('CHECKPOINT_INVALID', `${join(dir, OPTIMIZER_BIN)} has ${raw.byteLength} bytes; state.json expects ${slots} slot(s) of ${length} floats`, { dir });
  }
  const all = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
  const optimizer: OptimizerState = {
    name: state.optimizer.name, step: state.optimizer.step,
    slots: Array.from({ length: slots }, (_, i) => all.slice(i * length, (i + 1) * length)),
  };
  return { model, state, optimizer };
}
