/**
 * Per-layer convolution benchmark (issue #17, part 3): each 3×3 convolution of `cnn` and `cnn-large` at B=64, forward
 * (FusedConv2D with bias, as tfjs-layers runs it), input gradient and filter gradient, on the wasm backend with our
 * kernels, through two routes in one run:
 *   - ours: what training uses (native/winograd.c for 3×3 stride-1 layers; for the first layers, native/conv_direct.c
 *     forward and kernels.c filter_grad_direct for dW);
 *   - im2col: our convolution kernels turned off (setConvKernelsEnabled(false)): im2col + GEMM for the gradients and
 *     XNNPACK for the forward pass.
 * Each kernel is called through the engine, alternating the routes, `reps` times after 2 warm-up calls; its output is
 * disposed without being read (wasm kernels run synchronously). Reports median ms and our route's speed-up.
 *   npx tsx bench/conv-layers.ts [--reps 15] [--batch-size 64] [--thin] [--json]
 * --thin adds 28×28 'same' layers of 4 → 4, 8 → 8, 16 → 16 and 4 → 32 channels (where Winograd's channel rule comes
 * from: src/shared/kernels/winograd.ts).
 */
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/shared/core/backend.js';
import { setConvKernelsEnabled } from '../src/shared/kernels/winograd.js';
import { flag, median, roundTo } from './common.js';

const reps = Number(flag('reps', '15'));
const batch = Number(flag('batch-size', '64'));
const json = process.argv.includes('--json');

/** [layer, H, W, Cin, Cout, padding]. */
const THIN: Array<[string, number, number, number, number, 'valid' | 'same']> = [
  ['thin 4→4', 28, 28, 4, 4, 'same'], ['thin 8→8', 28, 28, 8, 8, 'same'], ['thin 16→16', 28, 28, 16, 16, 'same'], ['thin 4→32', 28, 28, 4, 32, 'same'],
];
const LAYERS: Array<[string, number, number, number, number, 'valid' | 'same']> = [
  ['cnn conv1', 28, 28, 1, 32, 'valid'],
  ['cnn conv2', 13, 13, 32, 64, 'valid'],
  ['cnn-large conv1a', 28, 28, 1, 32, 'same'],
  ['cnn-large conv1b', 28, 28, 32, 32, 'same'],
  ['cnn-large conv2a', 14, 14, 32, 64, 'same'],
  ['cnn-large conv2b', 14, 14, 64, 64, 'same'],
];

type Pass = 'forward' | 'dx' | 'dW';

async function main(): Promise<void> {
  await initBackend('wasm');
  const rows: Array<Record<string, unknown>> = [];
  for (const [layer, h, w, cin, cout, pad] of [...(process.argv.includes('--thin') ? THIN : []), ...LAYERS]) {
    const x = tf.randomNormal([batch, h, w, cin], 0, 1, 'float32', 1) as tf.Tensor4D;
    const filter = tf.randomNormal([3, 3, cin, cout], 0, 0.1, 'float32', 2) as tf.Tensor4D;
    const bias = tf.randomNormal([cout], 0, 0.1, 'float32', 3);
    const outShape = tf.tidy(() => tf.conv2d(x, filter, 1, pad).shape);
    const dy = tf.randomNormal(outShape, 0, 1, 'float32', 4);
    const common = { strides: [1, 1], pad, dataFormat: 'NHWC', dilations: [1, 1], dimRoundingMode: undefined };
    const run: Record<Pass, () => tf.Tensor> = {
      forward: () => tf.engine().runKernel('FusedConv2D', { x, filter, bias }, { ...common, activation: 'linear' } as never) as tf.Tensor,
      dx: () => tf.engine().runKernel('Conv2DBackpropInput', { dy, filter }, { ...common, inputShape: x.shape } as never) as tf.Tensor,
      dW: () => tf.engine().runKernel('Conv2DBackpropFilter', { x, dy }, { ...common, filterShape: filter.shape } as never) as tf.Tensor,
    };
    const row: Record<string, unknown> = { layer, input: [batch, h, w, cin], cout, pad };
    for (const pass of ['forward', 'dx', 'dW'] as const) {
      const times = { ours: [] as number[], im2col: [] as number[] };
      for (let r = 0; r < reps + 2; r++) {
        for (const route of ['ours', 'im2col'] as const) {
          setConvKernelsEnabled(route === 'ours');
          const t0 = performance.now();
          const out = run[pass]();
          const dt = performance.now() - t0;
          out.dispose();
          if (r >= 2) times[route].push(dt);
        }
      }
      const [ours, im2col] = [median(times.ours), median(times.im2col)];
      row[pass] = { oursMs: roundTo(ours, 3), im2colMs: roundTo(im2col, 3), speedup: roundTo(im2col / ours, 2) };
    }
    setConvKernelsEnabled(true);
    rows.push(row);
    tf.dispose([x, filter, bias, dy]);
  }
  if (json) console.log(JSON.stringify({ node: process.version, batch, reps, rows }));
  else for (const r of rows) console.log(JSON.stringify(r));
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
