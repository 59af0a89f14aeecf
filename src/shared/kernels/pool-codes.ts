import { backend_util, util, type TensorInfo } from '@tensorflow/tfjs';
import { geometryOf, type ConvGeometry } from './geometry.js';
import type { WasmBackend } from './heap.js';

/**
 * A 2×2, stride-2 max pool kept for its gradient without the activation in front of it (native/pool.c): the pooled
 * output [B, ⌊H/2⌋, ⌊W/2⌋, C] and, per pooled element, one byte naming where its window's first maximum is, packed
 * four channels to an int32 ([B, ⌊H/2⌋, ⌊W/2⌋, C/4]; C is a multiple of 4). A quarter of the activation's floats
 * plus a sixteenth in codes, instead of the activation itself.
 */
export interface PooledWithCodes {
  pooled: TensorInfo;
  codes: TensorInfo;
}

/** Whether an activation of `channels` channels can be pooled with codes: the codes pack channels in fours. */
export function codesApply(channels: number): boolean {
  return channels > 0 && channels % 4 === 0;
}

/**
 * Checks a pool's gradient inputs against the [B, H, W, C] activation in front of it, as a stock kernel checks its
 * inputs: dy and pooled float32 of the pooled shape, codes int32 of the codes' shape, C in fours.
 */
export function assertPooledWithCodes(op: string, activationShape: readonly number[], dy: TensorInfo, pool: PooledWithCodes): void {
  util.assert(activationShape.length === 4, () => `Error in ${op}: the activation must be of rank 4, got [${activationShape.join(',')}].`);
  util.assert(codesApply(activationShape[3]!), () => `Error in ${op}: channels must be a multiple of 4, got ${activationShape[3]}.`);
  util.assert(dy.dtype === 'float32' && pool.pooled.dtype === 'float32', () => `Error in ${op}: dy and pooled must be float32.`);
  const shapes = pooledShapes(activationShape);
  util.assertShapesMatch(dy.shape, shapes.pooled, `Error in ${op}: dy must have the pooled shape.`);
  util.assertShapesMatch(pool.pooled.shape, shapes.pooled, `Error in ${op}: pooled must have the pooled shape.`);
  util.assertShapesMatch(pool.codes.shape, shapes.codes, `Error in ${op}: codes must be [B, H/2, W/2, C/4].`);
  util.assert(pool.codes.dtype === 'int32', () => `Error in ${op}: codes must be int32, got ${pool.codes.dtype}.`);
}

/** The pooled output of a [B, H, W, C] activation, and its codes' shape. */
export function pooledShapes([b, h, w, c]: readonly number[]): { pooled: number[]; codes: number[] } {
  const pooled = [b!, Math.floor(h! / 2), Math.floor(w! / 2), c!];
  return { pooled, codes: [...pooled.slice(0, 3), c! / 4] };
}

/** Fresh outputs for the pool of a [B, H, W, C] activation. */
export function makePooledWithCodes(backend: WasmBackend, activationShape: readonly number[]): PooledWithCodes {
  const shapes = pooledShapes(activationShape);
  return { pooled: backend.makeOutput(shapes.pooled, 'float32'), codes: backend.makeOutput(shapes.codes, 'int32') };
}

/** The geometry of the 2×2, stride-2, unpadded pool of a [B, H, W, C] activation. */
export function poolGeometry(activationShape: readonly number[]): ConvGeometry {
  return geometryOf(backend_util.computePool2DInfo(activationShape as [number, number, number, number], 2, 2, 1, 'valid'));
}
