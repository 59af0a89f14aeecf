import { backend_util, type TensorInfo } from '@tensorflow/tfjs';
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
