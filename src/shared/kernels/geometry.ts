import { backend_util, type Conv2DBackpropFilterAttrs } from '@tensorflow/tfjs';

/**
 * The NHWC window geometry our native kernels take (14 int32, see native/kernels.h `conv_geometry`). Convolutions
 * and pools share it: for a pool, k* is the window and dil* is 1.
 *
 * Column matrices (im2col) have one row per output pixel (b, oh, ow) and one column per filter tap (kh, kw, ci):
 * the order of a tfjs filter [KH, KW, Cin, Cout] flattened to [KH·KW·Cin, Cout], so every convolution gradient is a
 * plain GEMM against the column matrix.
 */
export interface ConvGeometry {
  batch: number; inH: number; inW: number; inC: number;
  outH: number; outW: number; outC: number;
  kH: number; kW: number; strideH: number; strideW: number; dilH: number; dilW: number;
  padTop: number; padLeft: number;
}

export function geometryOf(info: backend_util.Conv2DInfo): ConvGeometry {
  return {
    batch: info.batchSize, inH: info.inHeight, inW: info.inWidth, inC: info.inChannels,
    outH: info.outHeight, outW: info.outWidth, outC: info.outChannels,
    kH: info.filterHeight, kW: info.filterWidth,
    strideH: info.strideHeight, strideW: info.strideWidth,
    dilH: info.dilationHeight, dilW: info.dilationWidth, padTop: info.padInfo.top, padLeft: info.padInfo.left,
  };
}

/**
 * The attributes both convolution backprop kernels read, plus an optional `dilations` (tfjs-core's own Conv2D
 * gradient never passes one; ours, conv2d-grad.ts, does).
 */
export type DilatedConvAttrs = Pick<Conv2DBackpropFilterAttrs, 'strides' | 'pad' | 'dataFormat' | 'dimRoundingMode'> & {
  dilations?: number | [number, number];
};

/**
 * Geometry of an NHWC convolution of x by filter, with p = B·OH·OW output positions and taps = KH·KW·Cin (the
 * column matrix is [p, taps]). Throws, naming the kernel, for NCHW.
 */
export function nhwcConvGeometry(
  kernelName: string, xShape: [number, number, number, number], filterShape: [number, number, number, number],
  attrs: DilatedConvAttrs,
): { g: ConvGeometry; p: number; taps: number } {
  const { strides, pad, dataFormat, dimRoundingMode, dilations } = attrs;
  const info = backend_util.computeConv2DInfo(
    xShape, filterShape, strides, dilations ?? 1, pad, dimRoundingMode, false, backend_util.convertConv2DDataFormat(dataFormat),
  );
  if (info.dataFormat !== 'channelsLast') throw new Error(`${kernelName} (mnist-ddp wasm): only NHWC is supported, got ${dataFormat}`);
  const g = geometryOf(info);
  return { g, p: g.batch * g.outH * g.outW, taps: g.kH * g.kW * g.inC };
}
