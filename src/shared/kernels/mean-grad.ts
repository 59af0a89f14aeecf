import { backend_util, broadcastTo, div, Mean, reshape, util, zeros, type GradConfig, type MeanAttrs, type NamedAttrMap, type Tensor } from '@tensorflow/tfjs';

/**
 * Mean's gradient as dy / N broadcast to x's shape: the division on the small reduced tensor, then one broadcast
 * (Tile, a block copy on wasm: fast-paths.ts). tfjs-core's computes dy · ones(x.shape) / N, which builds a full-size
 * tensor of ones in JavaScript and uploads it, then makes two full passes: batch norm's moments run it twice per
 * layer in training. Registered for every backend: the values are tfjs-core's (dy / N for every element, float32).
 */
export const meanGradConfig: GradConfig = {
  kernelName: Mean,
  inputsToSave: ['x'],
  gradFunc: (dy: Tensor | Tensor[], saved: Tensor[], attrs: NamedAttrMap) => {
    const [x] = saved as [Tensor];
    const axes = util.parseAxisParam((attrs as unknown as MeanAttrs).axis, x.shape);
    // An empty x (a reduced axis of size 0) has an empty gradient; broadcastTo cannot produce one from dy.
    if (util.sizeFromShape(x.shape) === 0) return { x: () => zeros(x.shape) };
    const reduceSize = util.sizeFromShape(backend_util.computeOutAndReduceShapes(x.shape, axes)[1]);
    const keptShape = x.shape.map((d, i) => (axes.includes(i) ? 1 : d));
    return { x: () => broadcastTo(div(reshape(dy as Tensor, keptShape), reduceSize), x.shape) };
  },
};
