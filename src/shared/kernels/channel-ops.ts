import { Add, Multiply, RealDiv, Sub, util, type KernelFunc, type NamedAttrMap, type NamedTensorInfoMap, type TensorInfo } from '@tensorflow/tfjs';
import { assertWasmBackend } from './heap.js';
import { CHANNEL_OP, nativeKernels, type ChannelOp } from './native.js';

type KernelArgs = { inputs: NamedTensorInfoMap; backend: unknown; attrs?: NamedAttrMap };

/** How many values v holds along x's last axis: C, or 1 for a single value; undefined when v is neither. */
function channelOperand(v: TensorInfo, x: TensorInfo): number | undefined {
  const rank = x.shape.length;
  if (rank < 1 || v.shape.length > rank) return undefined;
  const size = util.sizeFromShape(v.shape);
  if (size === 1) return 1;
  const channels = x.shape[rank - 1]!;
  return v.shape[v.shape.length - 1] === channels && size === channels ? channels : undefined;
}

/**
 * Channel-wise Add, Multiply, Sub and RealDiv: x[..., C] op v where v holds C values along the last axis ([C] or
 * [1, …, 1, C]) or a single value ([] or [1, …, 1]), in either operand order. tfjs-layers adds every conv and dense
 * layer's bias this way, and batch norm's gradient and the gradients of `tf.moments` are made of these. One native
 * pass (channel_op in native/kernels.c); every other call, and every non-float32 one, goes to the stock kernel.
 *
 * The stock kernels (XNNPACK) broadcast well; the native pass is still faster, by a third per channel operand and by
 * a few per cent per scalar. `npx tsx bench/batch-norm-kernels.ts --reps 30` (min): [64,28,28,32] + [32] (a bias)
 * 0.64 → 0.44 ms and [64,14,14,64] + [64] 0.25 → 0.22 ms (M3); [64,28,28,32]·[32] 0.75 → 0.46 ms,
 * [64,14,14,64]·[64] 0.27 → 0.21 ms, Sub alike, [64,28,28,32]/[] 0.46 → 0.44 ms. Per `cnn-large` step at B=64
 * (`bench --model cnn-large --backend wasm --profile --steps 10`): Multiply 46.6 → 37.8 ms over 100 calls, Sub
 * 10.6 → 8.4 ms over 34, RealDiv 6.8 → 6.2 ms over 13. Equal shapes of more than one axis are left to the stock
 * kernel: a native pass was no faster there (0.67 ms stock, 0.66 ms native on [64,28,28,32] in isolation); [C] op [C]
 * takes the native pass as a channel operand.
 */
function channelFastPath(ops: { xFirst: ChannelOp; vFirst: ChannelOp }) {
  return (stock: KernelFunc): KernelFunc =>
    ((args: KernelArgs) => {
      const { a, b } = args.inputs as { a: TensorInfo; b: TensorInfo };
      if (a.dtype !== 'float32' || b.dtype !== 'float32') return stock(args as never);
      const bChannels = channelOperand(b, a);
      const aChannels = bChannels === undefined ? channelOperand(a, b) : undefined;
      const [x, v, op, channels] = bChannels !== undefined ? [a, b, ops.xFirst, bChannels]
        : aChannels !== undefined ? [b, a, ops.vFirst, aChannels] : [undefined, undefined, undefined, undefined];
      if (!x || !v || op === undefined || channels === undefined) return stock(args as never);
      const size = util.sizeFromShape(x.shape);
      if (size === 0) return stock(args as never);
      const { backend } = args;
      assertWasmBackend(backend);
      const out = backend.makeOutput([...x.shape], 'float32');
      nativeKernels(backend).channelOp(x, v, out, size / channels, channels, op);
      return out;
    }) as KernelFunc;
}

export const CHANNEL_PATHS: ReadonlyArray<{ kernelName: string; wrap: (stock: KernelFunc) => KernelFunc }> = [
  { kernelName: Add, wrap: channelFastPath({ xFirst: CHANNEL_OP.add, vFirst: CHANNEL_OP.add }) },
  { kernelName: Multiply, wrap: channelFastPath({ xFirst: CHANNEL_OP.mul, vFirst: CHANNEL_OP.mul }) },
  { kernelName: Sub, wrap: channelFastPath({ xFirst: CHANNEL_OP.sub, vFirst: CHANNEL_OP.subFrom }) },
  { kernelName: RealDiv, wrap: channelFastPath({ xFirst: CHANNEL_OP.div, vFirst: CHANNEL_OP.divInto }) },
];
