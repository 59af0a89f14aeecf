import { createHash } from 'node:crypto';
import type * as tf from '@tensorflow/tfjs';

/**
 * Where each trainable weight lives in the flat buffers the data plane moves: one Float32Array per step holds every
 * gradient back to back (Horovod tensor fusion), followed by two scalars that ride the same all-reduce:
 * the summed loss and the number of samples the rank contributed.
 *
 * `synced` are non-trainable weights that must stay identical across replicas (batch-norm moving statistics):
 * each rank contributes value × samples, so after the sum and the division by the global sample count every
 * replica holds the same sample-weighted average.
 */
export interface ParamSlot {
  name: string;
  shape: number[];
  size: number;
  offset: number;
}

export interface ParamLayout {
  trainable: ParamSlot[];
  synced: ParamSlot[];
  /** Number of trainable parameters. */
  paramCount: number;
  /** Length of the all-reduce buffer: trainable + synced + [lossSum, sampleCount]. */
  bufferLength: number;
  lossIndex: number;
  countIndex: number;
  /** Stable digest of names and shapes, compared at join. */
  checksum: string;
}

function slots(weights: tf.LayerVariable[], start: number): { slots: ParamSlot[]; end: number } {
  let offset = start;
  const out = weights.map((w) => {
    const shape = w.shape.map((d) => d ?? 1);
    const size = shape.reduce((a, b) => a * b, 1);
    const slot = { name: w.originalName, shape, size, offset };
    offset += size;
    return slot;
  });
  return { slots: out, end: offset };
}

export function paramLayout(model: tf.LayersModel): ParamLayout {
  const trainable = slots(model.trainableWeights, 0);
  const synced = slots(model.nonTrainableWeights.filter((w) => /moving_(mean|variance)/.test(w.originalName)), trainable.end);
  const digest = createHash('sha256');
  for (const s of [...trainable.slots, ...synced.slots]) digest.update(`${s.name}:${s.shape.join('x')};`);
  return {
    trainable: trainable.slots,
    synced: synced.slots,
    paramCount: trainable.end,
    bufferLength: synced.end + 2,
    lossIndex: synced.end,
    countIndex: synced.end + 1,
    checksum: digest.digest('hex').slice(0, 16),
  };
}

/** Shapes as "name:AxBxC" strings, for error messages that name both sides of a mismatch. */
export function describeLayout(layout: ParamLayout): string[] {
  return [...layout.trainable, ...layout.synced].map((s) => `${s.name}:${s.shape.join('x')}`);
}

/** Digest of parameter bytes: replicas compare it to prove they hold identical weights. */
export function weightsDigest(params: Float32Array): string {
  return createHash('sha256').update(new Uint8Array(params.buffer, params.byteOffset, params.byteLength)).digest('hex').slice(0, 16);
}
