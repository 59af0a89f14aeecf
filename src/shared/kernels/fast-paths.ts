import {
  _FusedMatMul, BatchMatMul, Cast, Identity, Mean, Sum, Tile, util,
  type _FusedMatMulAttrs, type BatchMatMulAttrs, type CastAttrs, type TileAttrs, type KernelFunc, type NamedAttrMap, type NamedTensorInfoMap, type TensorInfo,
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
 * - BatchMatMul with a transposed operand and batch 1 (both dense-layer gradients), and _FusedMatMul without
 *   transposes (the dense layers' forward pass): our GEMM (batchMatMulFastPath, fusedMatMulFastPath say why).
 * - Tile that repeats the whole input block (batch norm's gradient through tfjs-core's ops): back-to-back copies
 *   (tileFastPath).
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

/** The two operands' rows and columns and the product's M, K, N; undefined unless both are rank ≥ 2, batch 1. */
function gemmShape(a: TensorInfo, b: TensorInfo, transposeA: boolean, transposeB: boolean) {
  const batchOne = util.sizeFromShape(a.shape.slice(0, -2)) === 1 && util.sizeFromShape(b.shape.slice(0, -2)) === 1;
  if (a.shape.length < 2 || b.shape.length < 2 || !batchOne) return undefined;
  const [aRows, aCols] = a.shape.slice(-2) as [number, number];
  const [bRows, bCols] = b.shape.slice(-2) as [number, number];
  return { aRows, aCols, bRows, bCols, m: transposeA ? aCols : aRows, k: transposeA ? aRows : aCols, n: transposeB ? bRows : bCols, kB: transposeB ? bCols : bRows };
}

/**
 * BatchMatMul of batch 1 with a transposed operand (the dense layers' gradients: dW = xᵀ · dy, dx = dy · Wᵀ), as one
 * of our GEMMs with the fewest floats transposed first: Aᵀ · B reads A as stored (gemm_f32's transposed form);
 * A · Bᵀ transposes B, or computes (B · Aᵀ)ᵀ where A and the product are smaller than B (fc1's dx: dy and dx are
 * [64, 128] and [64, 3136], W [3136, 128]); Aᵀ · Bᵀ is (B · A)ᵀ. The stock kernel reaches XNNPACK only without
 * transposes and otherwise runs a naive loop.
 */
function batchMatMulFastPath(stock: KernelFunc): KernelFunc {
  return ((args: KernelArgs) => {
    const a = args.inputs.a!;
    const b = args.inputs.b!;
    const { transposeA, transposeB } = args.attrs as unknown as BatchMatMulAttrs;
    const s = gemmShape(a, b, transposeA, transposeB);
    // Operands whose inner dimensions disagree go to the stock kernel, which throws tfjs's "Error in matMul: inner
    // shapes … must match" (test/unit/kernel-validation.test.ts).
    if (!(transposeA || transposeB) || !s || s.k !== s.kB || a.dtype !== 'float32' || b.dtype !== 'float32') return stock(args as never);
    const { backend } = args;
    assertWasmBackend(backend);
    const { m, k, n } = s;
    // Temporaries: a transposed operand, or the product's transpose Cᵀ [N, M].
    const scratch: TensorInfo[] = [];
    const keep = (t: TensorInfo): TensorInfo => (scratch.push(t), t);
    let product: TensorInfo;
    if (transposeA && !transposeB) {
      product = gemm(backend, a, b, m, k, n, true);
    } else if (transposeA) {
      product = transpose2d(backend, keep(gemm(backend, b, a, n, k, m)), n, m);
    } else if (k * n <= m * k + m * n) {
      product = gemm(backend, a, keep(transpose2d(backend, b, n, k)), m, k, n);
    } else {
      product = transpose2d(backend, keep(gemm(backend, b, keep(transpose2d(backend, a, m, k)), n, k, m)), n, m);
    }
    for (const t of scratch) backend.disposeData(t.dataId);
    const rank = Math.max(a.shape.length, b.shape.length);
    return { dataId: product.dataId, shape: [...new Array<number>(rank - 2).fill(1), m, n], dtype: 'float32' };
  }) as KernelFunc;
}

/**
 * _FusedMatMul without transposes, batch 1, with a bias of N values (or none) and a linear or ReLU activation: what
 * tfjs-layers' dense layers run forward. One of our GEMMs, then the bias and the activation in one pass over the
 * product. The stock kernel hands XNNPACK a fully-connected operator that packs the weights when it is created, and
 * creates it again for every new weight tensor, that is at every training step: fc1 of `cnn-large` ([64, 3136] ·
 * [3136, 128]) 3.2 ms with fresh weights, 1.8 ms with the same ones (bench/RESULTS.md, 2026-12-05 04:40).
 */
function fusedMatMulFastPath(stock: KernelFunc): KernelFunc {
  return ((args: KernelArgs) => {
    const { a, b, bias, preluActivationWeights } = args.inputs;
    const { transposeA, transposeB, activation } = args.attrs as unknown as _FusedMatMulAttrs;
    const s = a && b ? gemmShape(a, b, transposeA, transposeB) : undefined;
    const simple = !transposeA && !transposeB && !preluActivationWeights && (activation === 'linear' || activation === 'relu');
    const biasOk = !bias || (bias.dtype === 'float32' && util.sizeFromShape(bias.shape) === s?.n && bias.shape[bias.shape.length - 1] === s.n);
    if (!simple || !s || s.k !== s.kB || !biasOk || a!.dtype !== 'float32' || b!.dtype !== 'float32') return stock(args as never);
    const { backend } = args;
    assertWasmBackend(backend);
    const product = gemm(backend, a!, b!, s.m, s.k, s.n);
    if (bias || activation === 'relu') nativeKernels(backend).biasReluRows(product, bias, s.m, s.n, activation === 'relu');
    const rank = Math.max(a!.shape.length, b!.shape.length);
    return { dataId: product.dataId, shape: [...new Array<number>(rank - 2).fill(1), s.m, s.n], dtype: 'float32' };
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
  { kernelName: _FusedMatMul, wrap: fusedMatMulFastPath },
  { kernelName: Tile, wrap: tileFastPath },
  { kernelName: Identity, wrap: identityFastPath },
  { kernelName: Cast, wrap: castFastPath },
  BATCH_NORM_PATH,
  ...CHANNEL_PATHS,
  ...CONV2D_PATHS,
];
