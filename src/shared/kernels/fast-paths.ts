import {
  BatchMatMul, Cast, Identity, Mean, Sum, Tile, util,
  type BatchMatMulAttrs, type CastAttrs, type TileAttrs, type KernelFunc, type NamedAttrMap, type NamedTensorInfoMap, type TensorInfo,
  type SumAttrs,
} from '@tensorflow/tfjs';
import { BATCH_NORM_PATH } from './batch-norm.js';
import { CHANNEL_PATHS } from './channel-ops.js';
import { CONV2D_PATHS } from './conv2d.js';
import { gemm } from './gemm.js';
import { assertWasmBackend, f32 } from './heap.js';
import { nativeKernels } from './native.js';
import { transpose2d } from './transpose.js';

type KernelArgs = { inputs: NamedTensorInfoMap; backend: unknown; attrs?: NamedAttrMap };

/**
 * Fast paths in front of stock tfjs-backend-wasm kernels, for the shapes training produces; every other call goes to
 * the stock kernel unchanged.
 *
 * - Channel-wise Add, Multiply, Sub and RealDiv (channel-ops.ts): the bias add of every conv and dense layer's forward
 *   pass, batch norm's arithmetic.
 * - Sum and Mean over every axis but the last (bias gradients; batch norm's mean and variance): a native column
 *   pass (columnReduceFastPath). The stock kernels transpose the whole input first.
 * - Identity, and Cast to the dtype the tensor already has, share the input's memory instead of copying it (see
 *   identityFastPath).
 * - FusedBatchNorm with per-channel parameters (batch-norm.ts).
 * - Conv2D and FusedConv2D of the layers the Winograd or direct kernels take (conv2d.ts).
 * - BatchMatMul with a transposed operand and batch 1 (both dense-layer gradients): the stock kernel reaches
 *   XNNPACK only without transposes and otherwise runs a naive loop; we transpose each flagged operand natively and
 *   run the untransposed GEMM.
 */
/**
 * Sum or Mean of a float32 tensor over every axis but the last (Sum: the bias gradient of every conv and dense layer;
 * Mean: batch norm's mean and variance in training, `tf.moments`): one native column pass, sum_rows / mean_rows in
 * native/kernels.c. The stock kernels transpose the whole input first: `npx tsx bench/batch-norm-kernels.ts --reps
 * 30` (min) Mean 7.4 → 0.44 ms on [64,28,28,32] and 5.3 → 0.36 ms on [64,14,14,64]; per `cnn-large` step
 * (`bench --model cnn-large --backend wasm --profile --steps 10`) Mean 61.6 → 5.1 ms over 10 calls.
 * The output is float32 as the stock kernels make it; empty inputs go to the stock kernel.
 */
function columnReduceFastPath(reduce: 'sum' | 'mean') {
  return (stock: KernelFunc): KernelFunc =>
    ((args: KernelArgs) => {
      const x = args.inputs.x!;
      const { axis, keepDims } = args.attrs as unknown as SumAttrs;
      const rank = x.shape.length;
      const axes = util.parseAxisParam(axis, x.shape).sort((a, b) => a - b);
      const allButLast = rank >= 2 && x.dtype === 'float32' && axes.length === rank - 1 && axes.every((a, i) => a === i);
      if (!allButLast || (reduce === 'mean' && util.sizeFromShape(x.shape) === 0)) return stock(args as never);
      const { backend } = args;
      assertWasmBackend(backend);
      const channels = x.shape[rank - 1]!;
      const rows = util.sizeFromShape(x.shape) / channels;
      const out = backend.makeOutput(keepDims ? [...new Array<number>(rank - 1).fill(1), channels] : [channels], 'float32');
      if (reduce === 'sum') nativeKernels(backend).sumRows(x, out, rows, channels);
      else nativeKernels(backend).meanRows(x, out, rows, channels);
      return out;
    }) as KernelFunc;
}

function batchMatMulFastPath(stock: KernelFunc): KernelFunc {
  return ((args: KernelArgs) => {
    const a = args.inputs.a!;
    const b = args.inputs.b!;
    const { transposeA, transposeB } = args.attrs as unknown as BatchMatMulAttrs;
    const batchOne = util.sizeFromShape(a.shape.slice(0, -2)) === 1 && util.sizeFromShape(b.shape.slice(0, -2)) === 1;
    const [aRows, aCols] = a.shape.slice(-2) as [number, number];
    const [bRows, bCols] = b.shape.slice(-2) as [number, number];
    const m = transposeA ? aCols : aRows;
    const k = transposeA ? aRows : aCols;
    const n = transposeB ? bRows : bCols;
    // Operands whose inner dimensions disagree (or of rank < 2) go to the stock kernel, which throws tfjs's "Error in
    // matMul: inner shapes … must match" (issue #15: this path used to multiply them, reading past one operand).
    const innerAgree = a.shape.length >= 2 && b.shape.length >= 2 && k === (transposeB ? bCols : bRows);
    if (!(transposeA || transposeB) || !batchOne || !innerAgree || a.dtype !== 'float32' || b.dtype !== 'float32') {
      return stock(args as never);
    }
    const { backend } = args;
    assertWasmBackend(backend);
    const left = transposeA ? transpose2d(backend, a, aRows, aCols) : a;
    const right = transposeB ? transpose2d(backend, b, bRows, bCols) : b;
    const product = gemm(backend, left, right, m, k, n);
    if (left !== a) backend.disposeData(left.dataId);
    if (right !== b) backend.disposeData(right.dataId);
    const rank = Math.max(a.shape.length, b.shape.length);
    return { dataId: product.dataId, shape: [...new Array<number>(rank - 2).fill(1), m, n], dtype: 'float32' };
  }) as KernelFunc;
}

/**
 * Tile that only repeats the whole input block: every repeated axis lies before every axis the input actually
 * spans (e.g. [1,1,1,C] tiled by [B,H,W,1], which batch-norm's gradient does for every normalised activation).
 * The output is the input repeated back to back, filled by doubling copies (memmove speed). The stock kernel
 * computes a source index per output element, which made batch-norm gradients most of a `cnn-large` step.
 */
function tileFastPath(stock: KernelFunc): KernelFunc {
  return ((args: KernelArgs) => {
    const x = args.inputs.x!;
    const { reps } = args.attrs as unknown as TileAttrs;
    const firstSpanned = x.shape.findIndex((d) => d > 1);
    const lastRepeated = reps.reduce((last, r, i) => (r > 1 ? i : last), -1);
    // Only whole repeat counts ≥ 1: the output then holds at least one copy of the input (0 gives an empty tensor,
    // which the stock kernel makes).
    const wholeReps = reps.length === x.shape.length && reps.every((r) => Number.isInteger(r) && r >= 1);
    const blockRepeat = x.dtype === 'float32' && wholeReps && (firstSpanned === -1 || lastRepeated < firstSpanned);
    if (!blockRepeat) return stock(args as never);
    const { backend } = args;
    assertWasmBackend(backend);
    const out = backend.makeOutput(x.shape.map((d, i) => d * reps[i]!), 'float32');
    const dst = f32(backend, out);
    const block = util.sizeFromShape(x.shape);
    dst.set(f32(backend, x));
    for (let filled = block; filled < dst.length; filled *= 2) dst.copyWithin(filled, 0, Math.min(filled, dst.length - filled));
    return out;
  }) as KernelFunc;
}

/**
 * Identity of a numeric tensor: the output shares the input's memory (one more reference; the memory is freed with
 * the last owner), as tfjs's cpu backend does and as the wasm backend's own Reshape does. tfjs-core clones every
 * tensor a gradient saves for the backward pass through this kernel, and the stock wasm kernel copies each one, the
 * largest activations included. Sharing is safe because tfjs tensors are
 * immutable: kernels write only to outputs they allocate, and Variable.assign swaps the variable's memory rather
 * than writing into it.
 */
function identityFastPath(stock: KernelFunc): KernelFunc {
  return ((args: KernelArgs) => (args.inputs.x!.dtype === 'string' ? stock(args as never) : sharedWith(args))) as KernelFunc;
}

/** The kernel's input x itself, as a second owner of its memory. */
function sharedWith(args: KernelArgs): TensorInfo {
  const x = args.inputs.x!;
  const { backend } = args;
  assertWasmBackend(backend);
  backend.incRef(x.dataId);
  return { dataId: x.dataId, shape: [...x.shape], dtype: x.dtype };
}

/**
 * Cast to the dtype the tensor already has shares its memory, as Identity does (identityFastPath says why that is
 * safe); the stock kernel copies. `tf.moments` casts its whole input to float32, and so does the gradient of Square:
 * 4.7 ms over 18 calls per `cnn-large` step (`bench --model cnn-large --backend wasm --profile --steps 10`), 0.09 ms
 * shared.
 */
function castFastPath(stock: KernelFunc): KernelFunc {
  return ((args: KernelArgs) => {
    const { dtype } = args.attrs as unknown as CastAttrs;
    const same = args.inputs.x!.dtype === dtype && (dtype === 'float32' || dtype === 'int32' || dtype === 'bool');
    return same ? sharedWith(args) : stock(args as never);
  }) as KernelFunc;
}

export const FAST_PATHS: ReadonlyArray<{ kernelName: string; wrap: (stock: KernelFunc) => KernelFunc }> = [
  { kernelName: Sum, wrap: columnReduceFastPath('sum') },
  { kernelName: Mean, wrap: columnReduceFastPath('mean') },
  { kernelName: BatchMatMul, wrap: batchMatMulFastPath },
  { kernelName: Tile, wrap: tileFastPath },
  { kernelName: Identity, wrap: identityFastPath },
  { kernelName: Cast, wrap: castFastPath },
  BATCH_NORM_PATH,
  ...CHANNEL_PATHS,
  ...CONV2D_PATHS,
];
