import {
  Conv2D, Conv2DBackpropFilter, Conv2DBackpropInput, engine, getBackend,
  type Conv2DAttrs, type GradConfig, type NamedAttrMap, type Tensor, type Tensor4D,
} from '@tensorflow/tfjs';

/**
 * Gradient of Conv2D that forwards `dilations` to the backprop kernels. tfjs-core's own gradient rejects dilation
 * rates > 1; our wasm kernels implement them. Other backends' stock kernels ignore the attribute, so dilated
 * gradients are refused there, with tfjs-core's wording.
 */
export const conv2dGradConfig: GradConfig = {
  kernelName: Conv2D,
  inputsToSave: ['x', 'filter'],
  gradFunc: (dy: Tensor | Tensor[], saved: Tensor[], attrs) => {
    const [x, filter] = saved as [Tensor4D, Tensor4D];
    const { dilations, strides, pad, dataFormat, dimRoundingMode } = attrs as unknown as Conv2DAttrs;
    const dilated = Array.isArray(dilations) ? dilations.some((d) => d !== 1) : dilations !== 1;
    if (dilated && getBackend() !== 'wasm') {
      throw new Error(`Error in gradient of conv2D: dilation rates greater than 1 are not yet supported in gradients on backend '${getBackend()}'. Got dilations '${String(dilations)}'`);
    }
    const g = dy as Tensor4D;
    const common = { strides, pad, dataFormat, dimRoundingMode, dilations };
    return {
      x: () => engine().runKernel(Conv2DBackpropInput, { dy: g, filter }, { ...common, inputShape: x.shape } as unknown as NamedAttrMap) as Tensor,
      filter: () => engine().runKernel(Conv2DBackpropFilter, { x, dy: g }, { ...common, filterShape: filter.shape } as unknown as NamedAttrMap) as Tensor,
    };
  },
};
