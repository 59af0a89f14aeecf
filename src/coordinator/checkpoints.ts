import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type * as tf from '@tensorflow/tfjs';
import { z } from 'zod';
import { MnistDdpError } from '../shared/core/errors.js';
import { readJsonFile } from '../shared/core/json-file.js';
import { loadModelDir, saveModelDir, writeFileAtomic } from '../shared/model/io.js';
import { OPTIMIZER_NAMES, type OptimizerState } from '../shared/train/optimizers.js';

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

const uint = z.number().int().nonnegative();

export const trainingPositionSchema = z.object({
  /** Epoch in progress (or the next one when cursor is 0). */
  epoch: uint,
  /** Samples of that epoch's order already consumed. */
  cursor: uint,
  globalStep: uint,
});
export type TrainingPosition = z.infer<typeof trainingPositionSchema>;

/** state.json. optimizer.bin holds `optimizer.slots` Float32 slots of `optimizer.length` values each, back to back. */
export const checkpointStateSchema = trainingPositionSchema.extend({
  version: z.literal(1),
  model: z.string(),
  /** The run's config: what a resumed run takes everything but its operational keys from. */
  config: z.record(z.string(), z.unknown()),
  optimizer: z.object({ name: z.enum(OPTIMIZER_NAMES), step: uint, slots: uint, length: uint }),
  rng: z.object({ seed: z.number().int(), scheme: z.string() }),
  layoutChecksum: z.string(),
  weightsDigest: z.string(),
  savedAt: z.string(),
});
export type CheckpointState = z.infer<typeof checkpointStateSchema>;

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
  const state = readJsonFile(statePath, checkpointStateSchema, 'the state.json of a version 1 checkpoint');
  const model = await loadModelDir(dir);
  const optimizerPath = join(dir, OPTIMIZER_BIN);
  if (!existsSync(optimizerPath)) throw new MnistDdpError('CHECKPOINT_INVALID', `${optimizerPath} is missing: the checkpoint has no optimiser state`, { file: optimizerPath });
  const raw = readFileSync(optimizerPath);
  const { slots, length } = state.optimizer;
  if (raw.byteLength !== slots * length * 4) {
    throw new MnistDdpError('CHECKPOINT_INVALID', `${optimizerPath} has ${raw.byteLength} bytes; state.json expects ${slots} slot(s) of ${length} floats`, { dir });
  }
  const all = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
  const optimizer: OptimizerState = {
    name: state.optimizer.name, step: state.optimizer.step,
    slots: Array.from({ length: slots }, (_, i) => all.slice(i * length, (i + 1) * length)),
  };
  return { model, state, optimizer };
}
