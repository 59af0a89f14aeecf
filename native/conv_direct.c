/*
 * Direct convolution for layers with few taps (KH*KW*Cin <= 32: first layers, Cin = 1), where neither a GEMM
 * (K = KH*KW*Cin is too short to amortise a tile's loads and stores) nor Winograd (one input channel) pays off.
 * Each output pixel's 16 output channels at a time live in four v128 accumulators while its taps are swept: one splat
 * of x and four multiply-adds per tap and input channel. Any stride, dilation and padding. The filter (at most
 * 32 x Cout floats) stays in L1. src/shared/kernels/conv2d.ts routes layers here and gives the measurements.
 */
#include "kernels.h"

/*
 * One output pixel's channels [co, co + 4 * LANES4) for the window at (ih0, iw0): LANES4 v128 accumulators (8 = 32
 * channels fit the 16 registers V8 allocates on x64 alongside the loop's scalars).
 */
#define PIXEL_BLOCK(LANES4)                                                                                         \
  do {                                                                                                             \
    v128_t acc[LANES4];                                                                                            \
    for (int j = 0; j < LANES4; j++) acc[j] = has_bias ? wasm_v128_load(bias + co + 4 * j) : zero;                 \
    for (int kh = 0; kh < g.k_h; kh++) {                                                                           \
      const int ih = ih0 + kh * g.dil_h;                                                                           \
      if (ih < 0 || ih >= g.in_h) continue;                                                                        \
      for (int kw = 0; kw < g.k_w; kw++) {                                                                         \
        const int iw = iw0 + kw * g.dil_w;                                                                         \
        if (iw < 0 || iw >= g.in_w) continue;                                                                      \
        const float* xs = image + ((long)ih * g.in_w + iw) * g.in_c;                                               \
        const float* ws = w + (long)(kh * g.k_w + kw) * g.in_c * out_c + co;                                       \
        for (int ci = 0; ci < g.in_c; ci++, ws += out_c) {                                                         \
          const v128_t xv = wasm_f32x4_splat(xs[ci]);                                                              \
          for (int j = 0; j < LANES4; j++) acc[j] = MADD(xv, wasm_v128_load(ws + 4 * j), acc[j]);                  \
        }                                                                                                          \
      }                                                                                                            \
    }                                                                                                              \
    for (int j = 0; j < LANES4; j++) wasm_v128_store(out + co + 4 * j, relu ? wasm_f32x4_max(acc[j], zero) : acc[j]); \
  } while (0)

/*
 * y[B, OH, OW, Cout] <- x conv w (w: [KH, KW, Cin, Cout], Cout a multiple of 16), + bias[Cout] if flags & 1, then
 * ReLU if flags & 2 (the epilogue flags of winograd_conv); overwrites y.
 */
EXPORT(conv_direct) void conv_direct(const float* x, const float* w, const float* bias, float* y, int out_c, int flags, const int* geometry) {
  const conv_geometry g = load_geometry(geometry);
  const v128_t zero = wasm_f32x4_splat(0.0f);
  const int has_bias = flags & 1, relu = flags & 2;
  float* out = y;
  for (int b = 0; b < g.batch; b++) {
    const float* image = x + (long)b * g.in_h * g.in_w * g.in_c;
    for (int oh = 0; oh < g.out_h; oh++) {
      const int ih0 = oh * g.stride_h - g.pad_top;
      for (int ow = 0; ow < g.out_w; ow++, out += out_c) {
        const int iw0 = ow * g.stride_w - g.pad_left;
        int co = 0;
        for (; co + 32 <= out_c; co += 32) PIXEL_BLOCK(8);
        for (; co < out_c; co += 16) PIXEL_BLOCK(4);
      }
    }
  }
}
