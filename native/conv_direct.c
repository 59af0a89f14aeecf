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
    for (int j = 0; j < LANES4; j++) wasm_v128_store(out + co + 4 * j, relu ? RELU(acc[j]) : acc[j]); \
  } while (0)

/*
 * Two horizontally adjacent output pixels whose windows lie inside x, channels [co, co + 16): each weight load
 * serves both pixels, and no tap needs a bounds check.
 */
ALWAYS_INLINE void pixel_pair_taps(const float* x0, long x_step, const float* w, const float* bias, float* out, int co,
                                   int out_c, long row, int k_h, int k_w, int in_c, int dil_h, int dil_w, int relu) {
  const v128_t zero = wasm_f32x4_splat(0.0f);
  v128_t a0 = zero, a1 = zero, a2 = zero, a3 = zero;
  if (bias) a0 = wasm_v128_load(bias + co), a1 = wasm_v128_load(bias + co + 4), a2 = wasm_v128_load(bias + co + 8), a3 = wasm_v128_load(bias + co + 12);
  v128_t b0 = a0, b1 = a1, b2 = a2, b3 = a3;
  for (int kh = 0; kh < k_h; kh++) {
    for (int kw = 0; kw < k_w; kw++) {
      const float* xs = x0 + kh * dil_h * row + (long)kw * dil_w * in_c;
      const float* ws = w + (long)(kh * k_w + kw) * in_c * out_c + co;
      for (int ci = 0; ci < in_c; ci++, ws += out_c) {
        const v128_t p = wasm_f32x4_splat(xs[ci]), q = wasm_f32x4_splat(xs[x_step + ci]);
        const v128_t w0 = wasm_v128_load(ws), w1 = wasm_v128_load(ws + 4), w2 = wasm_v128_load(ws + 8), w3 = wasm_v128_load(ws + 12);
        a0 = MADD(p, w0, a0), a1 = MADD(p, w1, a1), a2 = MADD(p, w2, a2), a3 = MADD(p, w3, a3);
        b0 = MADD(q, w0, b0), b1 = MADD(q, w1, b1), b2 = MADD(q, w2, b2), b3 = MADD(q, w3, b3);
      }
    }
  }
  if (relu) {
    a0 = RELU(a0), a1 = RELU(a1), a2 = RELU(a2), a3 = RELU(a3);
    b0 = RELU(b0), b1 = RELU(b1), b2 = RELU(b2), b3 = RELU(b3);
  }
  float* o = out + co;
  wasm_v128_store(o, a0), wasm_v128_store(o + 4, a1), wasm_v128_store(o + 8, a2), wasm_v128_store(o + 12, a3);
  o += out_c;
  wasm_v128_store(o, b0), wasm_v128_store(o + 4, b1), wasm_v128_store(o + 8, b2), wasm_v128_store(o + 12, b3);
}

/*
 * The pair for any geometry, and for the first layers' 3x3 one-channel undilated filters with the taps as constants,
 * so that the tap loops unroll and their address arithmetic folds away.
 */
ALWAYS_INLINE void pixel_pair_inside(const float* x0, long x_step, const float* w, const float* bias, float* out, int co,
                                     int out_c, const conv_geometry* g, int relu) {
  const long row = (long)g->in_w * g->in_c;
  if (g->k_h == 3 && g->k_w == 3 && g->in_c == 1 && g->dil_h == 1 && g->dil_w == 1) {
    pixel_pair_taps(x0, x_step, w, bias, out, co, out_c, row, 3, 3, 1, 1, 1, relu);
  } else {
    pixel_pair_taps(x0, x_step, w, bias, out, co, out_c, row, g->k_h, g->k_w, g->in_c, g->dil_h, g->dil_w, relu);
  }
}

/*
 * The pooled form for 3x3 one-channel undilated filters at stride 1 without padding (`cnn`'s first layer; the caller
 * checks that every window's 4x4 input patch lies inside x): each 2x2 window of outputs is computed for 8 channels at
 * a time in eight accumulators (four pixels, two vectors), then biased, ReLU'd and pooled in registers (pool_window),
 * so no output row is staged. Same values and codes as
 * computing the rows and pooling them. Measured against the staged form on [64, 28, 28, 1] ⋆ 3x3x1x32 with its pool
 * (a development harness on this file's two loops, median of 31, three alternated runs): 1.18-1.20 ms staged,
 * 0.92-1.03 ms in registers.
 */
ALWAYS_INLINE void conv3x3_relu_pool(const float* x, const float* w, const float* bias, float* pooled, unsigned char* codes, int out_c,
                                     const conv_geometry* g) {
  const int pool_h = g->out_h / 2, pool_w = g->out_w / 2, in_w = g->in_w;
  const v128_t zero = wasm_f32x4_splat(0.0f);
  long at = 0;
  for (int b = 0; b < g->batch; b++) {
    for (int ph = 0; ph < pool_h; ph++) {
      for (int pw = 0; pw < pool_w; pw++, at += out_c) {
        const float* x0 = x + ((long)b * g->in_h + 2 * ph) * in_w + 2 * pw;
        for (int co = 0; co < out_c; co += 8) {
          const v128_t bias0 = bias ? wasm_v128_load(bias + co) : zero, bias1 = bias ? wasm_v128_load(bias + co + 4) : zero;
          v128_t a0 = bias0, a1 = bias1, b0 = bias0, b1 = bias1, c0 = bias0, c1 = bias1, d0 = bias0, d1 = bias1;
          for (int kh = 0; kh < 3; kh++) {
            for (int kw = 0; kw < 3; kw++) {
              const float* ws = w + (long)(kh * 3 + kw) * out_c + co;
              const float* xs = x0 + kh * in_w + kw;
              const v128_t w0 = wasm_v128_load(ws), w1 = wasm_v128_load(ws + 4);
              const v128_t s00 = wasm_f32x4_splat(xs[0]), s01 = wasm_f32x4_splat(xs[1]);
              const v128_t s10 = wasm_f32x4_splat(xs[in_w]), s11 = wasm_f32x4_splat(xs[in_w + 1]);
              a0 = MADD(s00, w0, a0), a1 = MADD(s00, w1, a1), b0 = MADD(s01, w0, b0), b1 = MADD(s01, w1, b1);
              c0 = MADD(s10, w0, c0), c1 = MADD(s10, w1, c1), d0 = MADD(s11, w0, d0), d1 = MADD(s11, w1, d1);
            }
          }
          pool_window(RELU(a0), RELU(b0), RELU(c0), RELU(d0), pooled + at + co, codes + at + co);
          pool_window(RELU(a1), RELU(b1), RELU(c1), RELU(d1), pooled + at + co + 4, codes + at + co + 4);
        }
      }
    }
  }
}

/*
 * y[B, OH, OW, Cout] <- x conv w (w: [KH, KW, Cin, Cout], Cout a multiple of 16), then the epilogue `flags` asks for
 * (kernels.h); overwrites y. With pooled non-null instead (y is then unused): pooled[B, OH / 2, OW / 2, Cout] and
 * codes (bytes at pooled's indices) <- the 2x2, stride-2 max pool of that output (pool.c), each pair of rows written
 * to scratch (2 * OW * Cout floats) and pooled there, so the output itself never reaches memory. With mean non-null
 * (and y written), also y's mean and (biased) variance per channel, each row folded in as it is written (kernels.h
 * fold_moments; scratch then holds the 4 * Cout floats of running sums): batch norm's moments without another pass.
 */
EXPORT(conv_direct) void conv_direct(const float* x, const float* w, const float* bias, float* y, float* pooled, unsigned char* codes,
                                     float* mean, float* variance, float* scratch, int out_c, int flags, const int* geometry) {
  const conv_geometry g = load_geometry(geometry);
  double* stats = mean && !pooled ? (double*)scratch : 0;
  if (stats) __builtin_memset(stats, 0, (unsigned)(2 * out_c) * sizeof(double));
  const v128_t zero = wasm_f32x4_splat(0.0f);
  const int has_bias = flags & EPILOGUE_BIAS, relu = flags & EPILOGUE_RELU;
  const int pool_h = g.out_h / 2, pool_w = g.out_w / 2;
  const long out_row = (long)g.out_w * out_c;
  /* Every window's 4x4 input patch inside x: no padding on any side (explicit padding may pad only the bottom or right). */
  if (pooled && relu && g.k_h == 3 && g.k_w == 3 && g.in_c == 1 && g.stride_h == 1 && g.stride_w == 1 && g.dil_h == 1 && g.dil_w == 1 &&
      g.pad_top == 0 && g.pad_left == 0 && 2 * (g.out_h / 2) + 2 <= g.in_h && 2 * (g.out_w / 2) + 2 <= g.in_w) {
    conv3x3_relu_pool(x, w, has_bias ? bias : 0, pooled, codes, out_c, &g);
    return;
  }
  /* Rows no window covers are not computed when pooling: the last one of an odd height. */
  const int rows = pooled ? 2 * pool_h : g.out_h;
  float* out = y;
  for (int b = 0; b < g.batch; b++) {
    const float* image = x + (long)b * g.in_h * g.in_w * g.in_c;
    for (int oh = 0; oh < rows; oh++) {
      if (pooled) out = scratch + (oh % 2) * out_row;
      const int ih0 = oh * g.stride_h - g.pad_top;
      const int rows_inside = ih0 >= 0 && ih0 + (g.k_h - 1) * g.dil_h < g.in_h;
      for (int ow = 0; ow < g.out_w; ow++, out += out_c) {
        const int iw0 = ow * g.stride_w - g.pad_left;
        const int pair_inside = rows_inside && ow + 1 < g.out_w && iw0 >= 0 && iw0 + g.stride_w + (g.k_w - 1) * g.dil_w < g.in_w;
        if (pair_inside) {
          const float* x0 = image + ((long)ih0 * g.in_w + iw0) * g.in_c;
          for (int co = 0; co < out_c; co += 16) pixel_pair_inside(x0, (long)g.stride_w * g.in_c, w, has_bias ? bias : 0, out, co, out_c, &g, relu);
          ow++, out += out_c;
          continue;
        }
        int co = 0;
        for (; co + 32 <= out_c; co += 32) PIXEL_BLOCK(8);
        for (; co < out_c; co += 16) PIXEL_BLOCK(4);
      }
      if (pooled && oh % 2 == 1) {
        const long at = ((long)b * pool_h + oh / 2) * pool_w * out_c;
        max_pool_2x2_region(scratch, out_row, pooled + at, codes + at, (long)pool_w * out_c, out_c, 1, pool_w);
      }
      if (stats) fold_moments(out - out_row, out_row, 1, g.out_w, out_c, stats, stats + out_c, ((double)b * g.out_h + oh) * g.out_w);
    }
  }
  if (stats) store_moments(stats, stats + out_c, (double)g.batch * g.out_h * g.out_w, mean, variance, out_c);
}
