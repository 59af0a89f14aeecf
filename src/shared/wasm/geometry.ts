import type { backend_util } from '@tensorflow/tfjs';

/**
 * The NHWC window geometry our native kernels take (14 int32, see native/kernels.c `conv_geometry`). Convolutions
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
    kH: info.effectiveFilterHeight === info.filterHeight || info.dilationHeight > 1 ? info.filterHeight : info.effectiveFilterHeight,
    kW: info.effectiveFilterWidth === info.filterWidth || info.dilationWidth > 1 ? info.filterWidth : info.effectiveFilterWidth,
    strideH: info.strideHeight, strideW: info.strideWidth,
    dilH: info.dilationHeight, dilW: info.dilationWidth, padTop: info.padInfo.top, padLeft: info.padInfo.left,
  };
}
