import { backend_util, broadcastTo, div, Mean, reshape, util, type GradConfig, type MeanAttrs, type NamedAttrMap, type Tensor } from '@tensorflow/tfjs';

/**
 * Mean's gradient as dy / N broadcast to x's shape: the division on the small reduced tensor, then one broadcast
 * (Tile, a block copy on wasm: fast-paths.ts). tfjs-core's computes dy · ones(x.shape) / N, which builds a full-size
 * tensor of ones in JavaScript and uploads it, then makes two full passes: batch norm's moments run it twice per
 * layer in training. The values are the same (dy / N for every element), on every backend.
 */
export const meanGradConfig: GradConfig = {
  kernelName: Mean,
  inputsToSave: ['x'],
  gradFunc: (dy: Tensor | Tensor[], saved: Tensor[], attrs: NamedAttrMap) => {
    const [x] = saved as [Tensor];
    const axes = util.parseAxisParam((attrs as unknown as MeanAttrs).axis, x.shape);
    const reduceSize = util.sizeFromShape(backend_util.computeOutAndReduceShapes(x.shape, axes)[1]);
    const keptShape = x.shape.map((d, i) => (axes.includes(i) ? 1 : d));
    return { x: () => broadcastTo(div(reshape(dy as Tensor, keptShape), reduceSize), x.shape) };
  },
};
