import type { TensorInfo } from '@tensorflow/tfjs';
import type { ConvGeometry } from './geometry.js';
import { f32, type WasmBackend } from './heap.js';

/**
 * dy as the contiguous [B, OH, OW, C] our native kernels read. tfjs's kernels accept a dy larger in height or width
 * than the window geometry implies and read its top-left [OH, OW] window with dy's own strides (the cpu backend's
 * Conv2DBackpropInput/Filter and MaxPoolGrad loop over the geometry's output size); tfjs-core's conv2dTranspose spec
 * 'input=8x8x8,output=4x4x8,…' relies on it (issue #17). validate.ts's assertDyShape has already checked that dy is
 * at least that large, with the geometry's batch and channels.
 *
 * Returns dy itself when it is exactly [B, OH, OW, C] (every training call); otherwise a compacted copy that the
 * caller owns and must dispose (`release`). The copy runs in JavaScript: it happens only for such calls, never in
 * training.
 */
export function dyWindow(backend: WasmBackend, dy: TensorInfo, g: ConvGeometry, channels: number): { dy: TensorInfo; release(): void } {
  const [, dyH, dyW] = dy.shape as [number, number, number, number];
  if (dyH === g.outH && dyW === g.outW) return { dy, release: () => {} };
  const window = backend.makeOutput([g.batch, g.outH, g.outW, channels], 'float32');
  // Views after the allocation: makeOutput may grow wasm memory (heap.ts).
  const src = f32(backend, dy);
  const dst = f32(backend, window);
  const run = g.outW * channels;
  for (let b = 0; b < g.batch; b++) {
    for (let oh = 0; oh < g.outH; oh++) {
      const from = ((b * dyH + oh) * dyW) * channels;
      dst.set(src.subarray(from, from + run), (b * g.outH + oh) * run);
    }
  }
  return { dy: window, release: () => backend.disposeData(window.dataId) };
}
