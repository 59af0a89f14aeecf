/*
 * mnist-ddp training glue kernels, WebAssembly SIMD128: the memory-bound passes around the convolution GEMMs
 * (im2col and its adjoint, max-pool and ReLU gradients, bias sums, transposes, channel-wise arithmetic) and the
 * ring's adds, and the first layers' direct filter gradient (filter_grad_direct). The other files of native/ hold one
 * kernel family each (gemm.c, winograd.c, conv_direct.c, pool.c, batch_norm.c, dropout.c); kernels.h holds what they
 * share and says how they use tfjs-backend-wasm's memory. native/README.md maps them to their TypeScript callers.
 * Each kernel's caller in src/shared/kernels/ gives the stock kernel it replaces and the times measured.
 */
#include "kernels.h"

static inline void add_run(float* restrict dst, const float* restrict src, int n) {
  int i = 0;
  for (; i + 4 <= n; i += 4) {
    wasm_v128_store(dst + i, wasm_f32x4_add(wasm_v128_load(dst + i), wasm_v128_load(src + i)));
  }
  for (; i < n; i++) dst[i] += src[i];
}

/*
 * dst[i] += src[i] for i < n: the ring all-reduce's reduce-scatter add (src/worker/ring/sum-arena.ts), which runs this
 * module on a WebAssembly.Memory of its own rather than on tfjs's.
 */
EXPORT(add_f32) void add_f32(float* restrict dst, const float* restrict src, int n) { add_run(dst, src, n); }

/*
 * dst[i] += src[i], and out[i] = the sum: the last reduce-scatter step, whose sum is both the result (dst, the
 * caller's buffer) and the all-gather frame to send (out, the ring's staging). One pass instead of an add and a copy.
 */
EXPORT(add_f32_out) void add_f32_out(float* restrict dst, const float* restrict src, float* restrict out, int n) {
  int i = 0;
  for (; i + 4 <= n; i += 4) {
    const v128_t sum = wasm_f32x4_add(wasm_v128_load(dst + i), wasm_v128_load(src + i));
    wasm_v128_store(dst + i, sum);
    wasm_v128_store(out + i, sum);
  }
  for (; i < n; i++) out[i] = dst[i] += src[i];
}

/* col[P, KH*KW*C] <- x[B, H, W, C]; P = B*OH*OW rows in (b, oh, ow) order, columns in (kh, kw, c) order. */
EXPORT(im2col) void im2col(const float* x, float* col, const int* geometry) {
  const conv_geometry g = load_geometry(geometry);
  const int row_run = g.k_w * g.in_c;
  float* o = col;
  for (int b = 0; b < g.batch; b++) {
    for (int oh = 0; oh < g.out_h; oh++) {
      const int ih0 = oh * g.stride_h - g.pad_top;
      for (int ow = 0; ow < g.out_w; ow++) {
        const int iw0 = ow * g.stride_w - g.pad_left;
        const int contiguous = g.dil_w == 1 && iw0 >= 0 && iw0 + g.k_w <= g.in_w;
        for (int kh = 0; kh < g.k_h; kh++) {
          const int ih = ih0 + kh * g.dil_h;
          if (ih < 0 || ih >= g.in_h) {
            __builtin_memset(o, 0, (unsigned)row_run * sizeof(float));
            o += row_run;
            continue;
          }
          const float* row = x + (long)(b * g.in_h + ih) * g.in_w * g.in_c;
          if (contiguous) {
            __builtin_memcpy(o, row + iw0 * g.in_c, (unsigned)row_run * sizeof(float));
            o += row_run;
            continue;
          }
          for (int kw = 0; kw < g.k_w; kw++) {
            const int iw = iw0 + kw * g.dil_w;
            if (iw < 0 || iw >= g.in_w) __builtin_memset(o, 0, (unsigned)g.in_c * sizeof(float));
            else __builtin_memcpy(o, row + iw * g.in_c, (unsigned)g.in_c * sizeof(float));
            o += g.in_c;
          }
        }
      }
    }
  }
}

/* Output position p's window: its image in x and the input coordinate of tap (0, 0), which may lie in the padding. */
typedef struct {
  const float* image;
  int ih0, iw0;
} window_origin;

static inline window_origin window_of(const float* x, const conv_geometry* g, int p) {
  const int ow = p % g->out_w, rest = p / g->out_w;
  const int oh = rest % g->out_h, b = rest / g->out_h;
  const window_origin o = {x + (long)b * g->in_h * g->in_w * g->in_c, oh * g->stride_h - g->pad_top, ow * g->stride_w - g->pad_left};
  return o;
}

/* Where the window's tap (kh, kw) starts in x, or 0 when it falls in the padding. */
static inline const float* tap_source(window_origin o, const conv_geometry* g, int kh, int kw) {
  const int ih = o.ih0 + kh * g->dil_h, iw = o.iw0 + kw * g->dil_w;
  if (ih < 0 || ih >= g->in_h || iw < 0 || iw >= g->in_w) return 0;
  return o.image + ((long)ih * g->in_w + iw) * g->in_c;
}

/* Stores the transpose of the 4x4 block whose rows are a, b, c, d: column j of the block goes to out + j * stride. */
static inline void store_transposed(v128_t a, v128_t b, v128_t c, v128_t d, float* out, long stride) {
  const v128_t ab_lo = wasm_i32x4_shuffle(a, b, 0, 4, 1, 5), ab_hi = wasm_i32x4_shuffle(a, b, 2, 6, 3, 7);
  const v128_t cd_lo = wasm_i32x4_shuffle(c, d, 0, 4, 1, 5), cd_hi = wasm_i32x4_shuffle(c, d, 2, 6, 3, 7);
  wasm_v128_store(out, wasm_i32x4_shuffle(ab_lo, cd_lo, 0, 1, 4, 5));
  wasm_v128_store(out + stride, wasm_i32x4_shuffle(ab_lo, cd_lo, 2, 3, 6, 7));
  wasm_v128_store(out + 2 * stride, wasm_i32x4_shuffle(ab_hi, cd_hi, 0, 1, 4, 5));
  wasm_v128_store(out + 3 * stride, wasm_i32x4_shuffle(ab_hi, cd_hi, 2, 3, 6, 7));
}

/*
 * colT[KH*KW*C, P] <- x[B, H, W, C]: im2col's transpose, written directly. The filter gradient needs col(x)ᵀ as the
 * left GEMM operand; building col and transposing it moved the 8.9 MB matrix three times (im2col 0.34 ms + transpose
 * 3.99 ms on `cnn`'s second layer at B=64, in isolation; this kernel 1.3 ms). Here four positions at a time are
 * gathered and turned into columns with 4x4 register transposes.
 */
EXPORT(im2col_t) void im2col_t(const float* x, float* col_t, const int* geometry) {
  const conv_geometry g = load_geometry(geometry);
  const int p_total = g.batch * g.out_h * g.out_w;
  const v128_t zero = wasm_f32x4_splat(0.0f);
  int p = 0;
  for (; p + 4 <= p_total && g.in_c % 4 == 0; p += 4) {
    const window_origin w0 = window_of(x, &g, p), w1 = window_of(x, &g, p + 1);
    const window_origin w2 = window_of(x, &g, p + 2), w3 = window_of(x, &g, p + 3);
    for (int kh = 0; kh < g.k_h; kh++) {
      for (int kw = 0; kw < g.k_w; kw++) {
        const float* s0 = tap_source(w0, &g, kh, kw);
        const float* s1 = tap_source(w1, &g, kh, kw);
        const float* s2 = tap_source(w2, &g, kh, kw);
        const float* s3 = tap_source(w3, &g, kh, kw);
        float* dst = col_t + (long)((kh * g.k_w + kw) * g.in_c) * p_total + p;
        for (int c = 0; c < g.in_c; c += 4, dst += 4L * p_total) {
          store_transposed(s0 ? wasm_v128_load(s0 + c) : zero, s1 ? wasm_v128_load(s1 + c) : zero,
                           s2 ? wasm_v128_load(s2 + c) : zero, s3 ? wasm_v128_load(s3 + c) : zero, dst, p_total);
        }
      }
    }
  }
  for (; p < p_total; p++) {
    const window_origin w = window_of(x, &g, p);
    for (int kh = 0; kh < g.k_h; kh++) {
      for (int kw = 0; kw < g.k_w; kw++) {
        const float* src = tap_source(w, &g, kh, kw);
        float* dst = col_t + (long)((kh * g.k_w + kw) * g.in_c) * p_total + p;
        for (int c = 0; c < g.in_c; c++) dst[(long)c * p_total] = src ? src[c] : 0.0f;
      }
    }
  }
}

/* dW[kh, kw, c, :] += sum over output columns [ow0, ow1) of one output row of x(tap) * dy (filter_grad_direct). */
ALWAYS_INLINE void accumulate_columns(const float* x_row, const float* dy_row, float* dw, const conv_geometry* gp, int out_c, int vec_c,
                                      int kh, int kw, int shift, int ow0, int ow1) {
  const conv_geometry g = *gp;
  for (int c = 0; c < g.in_c; c++) {
    float* acc = dw + (long)((kh * g.k_w + kw) * g.in_c + c) * out_c;
    const float* xs = x_row + c;
    for (int co = 0; co < vec_c; co += 16) {
      v128_t a0 = wasm_v128_load(acc + co), a1 = wasm_v128_load(acc + co + 4);
      v128_t a2 = wasm_v128_load(acc + co + 8), a3 = wasm_v128_load(acc + co + 12);
      for (int ow = ow0; ow < ow1; ow++) {
        const v128_t xv = wasm_f32x4_splat(xs[(long)(ow * g.stride_w + shift) * g.in_c]);
        const float* d = dy_row + (long)ow * out_c + co;
        a0 = MADD(xv, wasm_v128_load(d), a0);
        a1 = MADD(xv, wasm_v128_load(d + 4), a1);
        a2 = MADD(xv, wasm_v128_load(d + 8), a2);
        a3 = MADD(xv, wasm_v128_load(d + 12), a3);
      }
      wasm_v128_store(acc + co, a0);
      wasm_v128_store(acc + co + 4, a1);
      wasm_v128_store(acc + co + 8, a2);
      wasm_v128_store(acc + co + 12, a3);
    }
    for (int co = vec_c; co < out_c; co++) {
      float a = acc[co];
      for (int ow = ow0; ow < ow1; ow++) a += xs[(long)(ow * g.stride_w + shift) * g.in_c] * dy_row[(long)ow * out_c + co];
      acc[co] = a;
    }
  }
}

/* dW += the contribution of output row oh of image b, whose dy is dy_row (OW x Cout floats) (filter_grad_direct). */
ALWAYS_INLINE void filter_grad_row(const float* x, const float* dy_row, float* dw, const conv_geometry* gp, int out_c, int b, int oh) {
  const conv_geometry g = *gp;
  const int vec_c = out_c & ~15;
  for (int kh = 0; kh < g.k_h; kh++) {
    const int ih = oh * g.stride_h - g.pad_top + kh * g.dil_h;
    if (ih < 0 || ih >= g.in_h) continue;
    const float* x_row = x + (long)(b * g.in_h + ih) * g.in_w * g.in_c;
    /*
     * Three horizontal taps over one channel at stride 1 (every zoo model's first layer, in the interior of the
     * row): the three taps' 8-channel slices accumulate together, so each dy load serves three multiply-adds and
     * each x splat is loaded once and reused by the next two columns. Conv2DBackpropFilter of [64,28,28,1] ⋆
     * 3x3x1x32 in isolation (median of 41, two alternating runs each): 'valid' 0.959 and 0.927 ms tap by tap,
     * 0.848 and 0.775 ms so; 'same' 0.987 and 1.019 ms, 0.958 and 0.930 ms.
     */
    int ow_lo = 0, ow_hi = 0;
    if (g.k_w == 3 && g.in_c == 1 && g.stride_w == 1 && g.dil_w == 1 && (out_c & 7) == 0) {
      ow_lo = g.pad_left;
      ow_hi = g.in_w - 2 + g.pad_left < g.out_w ? g.in_w - 2 + g.pad_left : g.out_w;
      if (ow_hi < ow_lo) ow_hi = ow_lo;
    }
    if (ow_lo < ow_hi) {
      float* acc = dw + (long)(kh * 3) * out_c;
      /* Column ow's three taps read x_row[ow - pad_left + 0..2]; ow_lo = pad_left starts at x_row[0]. */
      for (int co = 0; co < out_c; co += 8) {
        v128_t a0 = wasm_v128_load(acc + co), a1 = wasm_v128_load(acc + co + 4);
        v128_t b0 = wasm_v128_load(acc + out_c + co), b1 = wasm_v128_load(acc + out_c + co + 4);
        v128_t c0 = wasm_v128_load(acc + 2 * out_c + co), c1 = wasm_v128_load(acc + 2 * out_c + co + 4);
        v128_t x0 = wasm_f32x4_splat(x_row[0]), x1 = wasm_f32x4_splat(x_row[1]);
        for (int ow = ow_lo; ow < ow_hi; ow++) {
          const v128_t x2 = wasm_f32x4_splat(x_row[ow - ow_lo + 2]);
          const float* d = dy_row + (long)ow * out_c + co;
          const v128_t d0 = wasm_v128_load(d), d1 = wasm_v128_load(d + 4);
          a0 = MADD(x0, d0, a0), a1 = MADD(x0, d1, a1);
          b0 = MADD(x1, d0, b0), b1 = MADD(x1, d1, b1);
          c0 = MADD(x2, d0, c0), c1 = MADD(x2, d1, c1);
          x0 = x1, x1 = x2;
        }
        wasm_v128_store(acc + co, a0), wasm_v128_store(acc + co + 4, a1);
        wasm_v128_store(acc + out_c + co, b0), wasm_v128_store(acc + out_c + co + 4, b1);
        wasm_v128_store(acc + 2 * out_c + co, c0), wasm_v128_store(acc + 2 * out_c + co + 4, c1);
      }
    }
    for (int kw = 0; kw < g.k_w; kw++) {
      /* Output columns whose tap lands inside the input row (less those the three-tap loop above took). */
      const int shift = kw * g.dil_w - g.pad_left;
      int ow0 = 0, ow1 = g.out_w;
      while (ow0 < ow1 && ow0 * g.stride_w + shift < 0) ow0++;
      while (ow1 > ow0 && (ow1 - 1) * g.stride_w + shift >= g.in_w) ow1--;
      /* The columns outside [ow_lo, ow_hi), before it and after it (all of them when that range is empty). */
      accumulate_columns(x_row, dy_row, dw, &g, out_c, vec_c, kh, kw, shift, ow0, ow_lo < ow1 ? ow_lo : ow1);
      accumulate_columns(x_row, dy_row, dw, &g, out_c, vec_c, kh, kw, shift, ow_hi > ow0 ? ow_hi : ow0, ow1);
    }
  }
}

/*
 * dW[KH, KW, C, Cout] <- sum over positions of x(tap) * dy: the filter gradient computed directly, for layers with
 * few taps (first layers, C = 1). There the GEMM formulation is a poor shape (K = 9) that first needs col(x), dyᵀ
 * and an XNNPACK packing of col on every call: 5.7–6.4 ms in isolation on `cnn`'s first layer at B=64 for 12.5 M
 * multiply-adds (6.7 ms in a tf.profile of a whole training step); this kernel 1.8 ms in isolation. Here each
 * output row's dy (OW x Cout floats) stays in L1 while every tap accumulates into its 4-vector slices of dW.
 *
 * dy is [B, OH, OW, Cout]; or, with pooled non-null, the gradient of the 2x2 max pool that follows a ReLU of the
 * convolution's output (conv_direct with pooled): dy and pooled [B, OH / 2, OW / 2, Cout], codes at pooled's indices.
 * Each pair of output rows is then unpooled into scratch (2 x OW x Cout floats) by pool.c's unpool_2x2_region, in L1,
 * and the gradient in front of the pool is never written to memory; rows and columns no window covers have dy = 0.
 * Or, with bn_z non-null (and pooled null; bn_z is not read with pooled), dy is the gradient of training-mode batch norm (then a ReLU if relu) of
 * the convolution's output bn_z: each output row of batch norm's input gradient is computed into scratch (OW x Cout
 * floats) by batch_norm_dx_run (kernels.h) from dy, bn_z and bn_coef, and never written to memory either.
 */
EXPORT(filter_grad_direct) void filter_grad_direct(const float* x, const float* dy, const float* pooled, const unsigned char* codes,
                                                   const float* bn_z, const float* bn_coef, int relu, float* scratch, float* dw, int out_c,
                                                   const int* geometry) {
  const conv_geometry g = load_geometry(geometry);
  const int taps = g.k_h * g.k_w * g.in_c;
  __builtin_memset(dw, 0, (unsigned)(taps * out_c) * sizeof(float));
  const long dy_row = (long)g.out_w * out_c;
  if (!pooled) {
    for (int b = 0; b < g.batch; b++) {
      for (int oh = 0; oh < g.out_h; oh++) {
        const long at = (long)(b * g.out_h + oh) * dy_row;
        if (bn_z) batch_norm_dx_run(dy + at, bn_z + at, bn_coef, relu, scratch, g.out_w, out_c);
        filter_grad_row(x, bn_z ? scratch : dy + at, dw, &g, out_c, b, oh);
      }
    }
    return;
  }
  const int pool_h = g.out_h / 2, pool_w = g.out_w / 2;
  const long pooled_row = (long)pool_w * out_c;
  /* Columns no window covers (odd OW) stay 0. */
  __builtin_memset(scratch, 0, (unsigned)(2 * dy_row) * sizeof(float));
  for (int b = 0; b < g.batch; b++) {
    for (int ph = 0; ph < pool_h; ph++) {
      const long at = (long)(b * pool_h + ph) * pooled_row;
      unpool_2x2_region(dy + at, pooled + at, codes + at, pooled_row, scratch, dy_row, out_c, 1, pool_w);
      filter_grad_row(x, scratch, dw, &g, out_c, b, 2 * ph);
      filter_grad_row(x, scratch + dy_row, dw, &g, out_c, b, 2 * ph + 1);
    }
    /* A last row no window covers (odd OH) has dy = 0; it still meets its inputs, so a NaN or Inf among them makes dW
     * non-finite exactly as the unpooled kernels do. */
    for (int oh = 2 * pool_h; oh < g.out_h; oh++) {
      __builtin_memset(scratch, 0, (unsigned)dy_row * sizeof(float));
      filter_grad_row(x, scratch, dw, &g, out_c, b, oh);
    }
  }
}

/* dx[B, H, W, C] <- sum over taps of col[P, KH*KW*C]: the adjoint of im2col. dx is zeroed here. */
EXPORT(col2im) void col2im(const float* col, float* dx, const int* geometry) {
  const conv_geometry g = load_geometry(geometry);
  const int row_run = g.k_w * g.in_c;
  __builtin_memset(dx, 0, (unsigned)(g.batch * g.in_h * g.in_w * g.in_c) * sizeof(float));
  const float* o = col;
  for (int b = 0; b < g.batch; b++) {
    for (int oh = 0; oh < g.out_h; oh++) {
      const int ih0 = oh * g.stride_h - g.pad_top;
      for (int ow = 0; ow < g.out_w; ow++) {
        const int iw0 = ow * g.stride_w - g.pad_left;
        const int contiguous = g.dil_w == 1 && iw0 >= 0 && iw0 + g.k_w <= g.in_w;
        for (int kh = 0; kh < g.k_h; kh++) {
          const int ih = ih0 + kh * g.dil_h;
          if (ih < 0 || ih >= g.in_h) {
            o += row_run;
            continue;
          }
          float* row = dx + (long)(b * g.in_h + ih) * g.in_w * g.in_c;
          if (contiguous) {
            add_run(row + iw0 * g.in_c, o, row_run);
            o += row_run;
            continue;
          }
          for (int kw = 0; kw < g.k_w; kw++) {
            const int iw = iw0 + kw * g.dil_w;
            if (iw >= 0 && iw < g.in_w) add_run(row + iw * g.in_c, o, g.in_c);
            o += g.in_c;
          }
        }
      }
    }
  }
}

/*
 * MaxPoolGrad: each output gradient goes to the first maximum of its window in row-major order, found as the cpu
 * backend finds it: from -inf, replaced only by a strictly greater value (ties, common after ReLU, keep the first;
 * NaN is never taken; a window of -inf and NaN sends its gradient nowhere). Four channels per v128: running maxima and their flat indices
 * stay in registers. Pool geometry uses the conv_geometry layout with k_* as the window and dil_* unused.
 */
EXPORT(max_pool_grad) void max_pool_grad(const float* x, const float* dy, float* dx, const int* geometry) {
  const conv_geometry g = load_geometry(geometry);
  const int c = g.in_c;
  const int c4 = c & ~3;
  __builtin_memset(dx, 0, (unsigned)(g.batch * g.in_h * g.in_w * c) * sizeof(float));
  const v128_t lane = wasm_i32x4_make(0, 1, 2, 3);
  const float* grad = dy;
  for (int b = 0; b < g.batch; b++) {
    for (int oh = 0; oh < g.out_h; oh++) {
      const int h0 = oh * g.stride_h - g.pad_top;
      const int h_start = h0 < 0 ? 0 : h0;
      const int h_end = h0 + g.k_h > g.in_h ? g.in_h : h0 + g.k_h;
      for (int ow = 0; ow < g.out_w; ow++, grad += c) {
        const int w0 = ow * g.stride_w - g.pad_left;
        const int w_start = w0 < 0 ? 0 : w0;
        const int w_end = w0 + g.k_w > g.in_w ? g.in_w : w0 + g.k_w;
        for (int ch = 0; ch < c4; ch += 4) {
          v128_t best = wasm_f32x4_splat(-__builtin_inff());
          v128_t where = wasm_i32x4_splat(-1);
          for (int h = h_start; h < h_end; h++) {
            for (int w = w_start; w < w_end; w++) {
              const int at = ((b * g.in_h + h) * g.in_w + w) * c + ch;
              const v128_t v = wasm_v128_load(x + at);
              const v128_t take = wasm_f32x4_gt(v, best);
              best = wasm_v128_bitselect(v, best, take);
              where = wasm_v128_bitselect(wasm_i32x4_add(wasm_i32x4_splat(at), lane), where, take);
            }
          }
          const int i0 = wasm_i32x4_extract_lane(where, 0), i1 = wasm_i32x4_extract_lane(where, 1);
          const int i2 = wasm_i32x4_extract_lane(where, 2), i3 = wasm_i32x4_extract_lane(where, 3);
          if (i0 >= 0) dx[i0] += grad[ch];
          if (i1 >= 0) dx[i1] += grad[ch + 1];
          if (i2 >= 0) dx[i2] += grad[ch + 2];
          if (i3 >= 0) dx[i3] += grad[ch + 3];
        }
        for (int ch = c4; ch < c; ch++) {
          float best = -__builtin_inff();
          int where = -1;
          for (int h = h_start; h < h_end; h++) {
            for (int w = w_start; w < w_end; w++) {
              const int at = ((b * g.in_h + h) * g.in_w + w) * c + ch;
              if (x[at] > best) { best = x[at]; where = at; }
            }
          }
          if (where >= 0) dx[where] += grad[ch];
        }
      }
    }
  }
}

/* out[0..4) <- (lo, hi) / divisor, rounded once to float32. */
static inline void store_quotient(float* out, v128_t lo, v128_t hi, double divisor) {
  const v128_t d = wasm_f64x2_splat(divisor);
  wasm_v128_store(out, wasm_i32x4_shuffle(wasm_f32x4_demote_f64x2_zero(wasm_f64x2_div(lo, d)),
                                          wasm_f32x4_demote_f64x2_zero(wasm_f64x2_div(hi, d)), 0, 1, 4, 5));
}

/*
 * The term column_sums adds for x[i]: x[i]; with a mask, 0 where mask[i] is not > 0; with a centre m (the four
 * channels' values), (x[i] - m)^2. mask and centre may be 0 (absent): column_sums is inlined, so the tests fold away.
 */
ALWAYS_INLINE v128_t column_term(const float* x, const float* mask, const float* centre, v128_t m, long i) {
  const v128_t v = wasm_v128_load(x + i);
  if (centre) {
    const v128_t d = wasm_f32x4_sub(v, m);
    return wasm_f32x4_mul(d, d);
  }
  return mask ? wasm_v128_and(v, wasm_f32x4_gt(wasm_v128_load(mask + i), wasm_f32x4_splat(0))) : v;
}

/*
 * out[c] <- (sum over r of x[r, c]) / divisor. Float32 partial sums over 64 rows are folded into float64 totals,
 * which are divided before the one rounding to float32, so the error does not grow with the batch. Blocks of 16
 * channels: one 64-byte cache line per row per sweep and four independent adds per row. Sum in
 * `npx tsx bench/batch-norm-kernels.ts` (min): 8-channel blocks took 0.80 ms on [64,28,28,32] and 0.52 ms on
 * [64,14,14,64], these 0.43 ms and 0.32 ms.
 */
ALWAYS_INLINE void column_sums(const float* x, const float* mask, const float* centre, float* out, int rows, int c, double divisor) {
  int c0 = 0;
  for (; c0 + 16 <= c; c0 += 16) {
    v128_t t0 = wasm_f64x2_splat(0), t1 = t0, t2 = t0, t3 = t0, t4 = t0, t5 = t0, t6 = t0, t7 = t0;
    const v128_t m0 = centre ? wasm_v128_load(centre + c0) : t0, m1 = centre ? wasm_v128_load(centre + c0 + 4) : t0;
    const v128_t m2 = centre ? wasm_v128_load(centre + c0 + 8) : t0, m3 = centre ? wasm_v128_load(centre + c0 + 12) : t0;
    for (int r0 = 0; r0 < rows; r0 += 64) {
      const int r1 = r0 + 64 < rows ? r0 + 64 : rows;
      v128_t p0 = wasm_f32x4_splat(0), p1 = p0, p2 = p0, p3 = p0;
      for (int r = r0; r < r1; r++) {
        const long row = (long)r * c + c0;
        p0 = wasm_f32x4_add(p0, column_term(x, mask, centre, m0, row));
        p1 = wasm_f32x4_add(p1, column_term(x, mask, centre, m1, row + 4));
        p2 = wasm_f32x4_add(p2, column_term(x, mask, centre, m2, row + 8));
        p3 = wasm_f32x4_add(p3, column_term(x, mask, centre, m3, row + 12));
      }
      FOLD_F64(t0, t1, p0);
      FOLD_F64(t2, t3, p1);
      FOLD_F64(t4, t5, p2);
      FOLD_F64(t6, t7, p3);
    }
    store_quotient(out + c0, t0, t1, divisor);
    store_quotient(out + c0 + 4, t2, t3, divisor);
    store_quotient(out + c0 + 8, t4, t5, divisor);
    store_quotient(out + c0 + 12, t6, t7, divisor);
  }
  for (; c0 + 4 <= c; c0 += 4) {
    v128_t t0 = wasm_f64x2_splat(0), t1 = t0;
    const v128_t m0 = centre ? wasm_v128_load(centre + c0) : t0;
    for (int r0 = 0; r0 < rows; r0 += 64) {
      const int r1 = r0 + 64 < rows ? r0 + 64 : rows;
      v128_t p0 = wasm_f32x4_splat(0);
      for (int r = r0; r < r1; r++) p0 = wasm_f32x4_add(p0, column_term(x, mask, centre, m0, (long)r * c + c0));
      FOLD_F64(t0, t1, p0);
    }
    store_quotient(out + c0, t0, t1, divisor);
  }
  for (; c0 < c; c0++) {
    double total = 0;
    for (int r = 0; r < rows; r++) {
      const long i = (long)r * c + c0;
      if (centre) total += (double)((x[i] - centre[c0]) * (x[i] - centre[c0]));
      else if (!mask || mask[i] > 0) total += x[i];
    }
    out[c0] = (float)(total / divisor);
  }
}

/* out[C] <- column sums of x[rows, C] (the bias gradient). */
EXPORT(sum_rows) void sum_rows(const float* x, float* out, int rows, int c) { column_sums(x, 0, 0, out, rows, c, 1.0); }

/*
 * out[C] <- column sums of x[rows, C] over the elements where mask[rows, C] > 0: the bias gradient of a ReLU
 * followed by a 2x2 max pool, summed over the pooled gradient (mask = the pool's output) instead of the four times
 * larger gradient in front of the pool, whose other elements are zero (src/shared/kernels/conv-relu-pool.ts).
 */
EXPORT(masked_sum_rows) void masked_sum_rows(const float* x, const float* mask, float* out, int rows, int c) {
  column_sums(x, mask, 0, out, rows, c, 1.0);
}

/*
 * out[i] <- dy[i] where y[i] > 0, else 0: the ReLU gradient in one pass (tfjs runs Step, Cast and Multiply). y may be
 * the ReLU's output or its input: both are > 0 at the same places. A NaN there gives 0 here where tfjs's dy * step(x)
 * gives NaN; the forward pass is already NaN from that element on, so the step's loss and gradients are not finite.
 */
EXPORT(relu_grad) void relu_grad(const float* dy, const float* y, float* out, int n) {
  int i = 0;
  const v128_t zero = wasm_f32x4_splat(0);
  for (; i + 4 <= n; i += 4) {
    const v128_t keep = wasm_f32x4_gt(wasm_v128_load(y + i), zero);
    wasm_v128_store(out + i, wasm_v128_and(wasm_v128_load(dy + i), keep));
  }
  for (; i < n; i++) out[i] = y[i] > 0 ? dy[i] : 0.0f;
}

/* Transposes the 4x4 block at in (row stride in_stride) into out (row stride out_stride) in registers. */
static inline void transpose_4x4(const float* in, int in_stride, float* out, int out_stride) {
  store_transposed(wasm_v128_load(in), wasm_v128_load(in + in_stride), wasm_v128_load(in + 2 * in_stride),
                   wasm_v128_load(in + 3 * in_stride), out, out_stride);
}

/*
 * out[C, R] <- in[R, C], in 16x16 tiles so both the reads and the writes of a tile stay in cache; full tiles move
 * as 4x4 register blocks. tfjs-backend-wasm's Transpose took 112 ms on the 50176x288 column matrix of `cnn-large`'s
 * second convolution (14.4 M floats). The 4x4 blocks took `cnn`'s dy (64x11x11x64 as 7744x64) from 0.35 ms with
 * the scalar tiled loop to 0.14 ms, in isolation.
 */
EXPORT(transpose_2d) void transpose_2d(const float* in, float* out, int rows, int cols) {
  const int tile = 16;
  for (int r0 = 0; r0 < rows; r0 += tile) {
    const int r1 = r0 + tile < rows ? r0 + tile : rows;
    for (int c0 = 0; c0 < cols; c0 += tile) {
      const int c1 = c0 + tile < cols ? c0 + tile : cols;
      if (r1 - r0 == tile && c1 - c0 == tile) {
        for (int r = r0; r < r1; r += 4) {
          for (int c = c0; c < c1; c += 4) transpose_4x4(in + (long)r * cols + c, cols, out + (long)c * rows + r, rows);
        }
        continue;
      }
      for (int c = c0; c < c1; c++) {
        float* dst = out + (long)c * rows;
        for (int r = r0; r < r1; r++) dst[r] = in[(long)r * cols + c];
      }
    }
  }
}

/* out[C] <- column means of x[rows, C]: Mean over every axis but the last (batch norm's mean and variance). */
EXPORT(mean_rows) void mean_rows(const float* x, float* out, int rows, int c) { column_sums(x, 0, 0, out, rows, c, (double)rows); }

/*
 * out[C] <- column means of (x[rows, C] - mean)^2: the biased batch variance, as tfjs's moments computes it (mean of
 * the squared deviations, not E[x^2] - mean^2), summed like mean_rows.
 */
EXPORT(variance_rows) void variance_rows(const float* x, const float* mean, float* out, int rows, int c) {
  column_sums(x, 0, mean, out, rows, c, (double)rows);
}

/*
 * Channel-wise binary ops: out[R, C] <- x op v, where v holds C values along the last axis (broadcast over the rows)
 * or, with C = 1, one value for every element: the bias add of every conv and dense layer, and batch norm's arithmetic. The codes are native.ts's CHANNEL_OP; the *_FROM / *_INTO codes take v
 * as the left operand (the non-commutative Sub and RealDiv with the channel operand first).
 */
enum { CHANNEL_MUL = 0, CHANNEL_SUB = 1, CHANNEL_SUB_FROM = 2, CHANNEL_DIV = 3, CHANNEL_DIV_INTO = 4, CHANNEL_ADD = 5 };

ALWAYS_INLINE v128_t channel_apply(int op, v128_t x, v128_t v) {
  switch (op) {
    case CHANNEL_ADD: return wasm_f32x4_add(x, v);
    case CHANNEL_MUL: return wasm_f32x4_mul(x, v);
    case CHANNEL_SUB: return wasm_f32x4_sub(x, v);
    case CHANNEL_SUB_FROM: return wasm_f32x4_sub(v, x);
    case CHANNEL_DIV: return wasm_f32x4_div(x, v);
    default: return wasm_f32x4_div(v, x); /* CHANNEL_DIV_INTO */
  }
}

ALWAYS_INLINE float channel_apply_scalar(int op, float x, float v) {
  switch (op) {
    case CHANNEL_ADD: return x + v;
    case CHANNEL_MUL: return x * v;
    case CHANNEL_SUB: return x - v;
    case CHANNEL_SUB_FROM: return v - x;
    case CHANNEL_DIV: return x / v;
    default: return v / x; /* CHANNEL_DIV_INTO */
  }
}

/* One loop per op code: called with a constant op, so each switch above folds away. */
ALWAYS_INLINE void channel_loop(const float* x, const float* v, float* out, int rows, int c, int op) {
  if (c == 1) {
    const v128_t s = wasm_f32x4_splat(v[0]);
    int i = 0;
    for (; i + 4 <= rows; i += 4) wasm_v128_store(out + i, channel_apply(op, wasm_v128_load(x + i), s));
    for (; i < rows; i++) out[i] = channel_apply_scalar(op, x[i], v[0]);
    return;
  }
  const int vec_c = c & ~3;
  for (int r = 0; r < rows; r++) {
    const float* xr = x + (long)r * c;
    float* o = out + (long)r * c;
    int i = 0;
    for (; i < vec_c; i += 4) wasm_v128_store(o + i, channel_apply(op, wasm_v128_load(xr + i), wasm_v128_load(v + i)));
    for (; i < c; i++) o[i] = channel_apply_scalar(op, xr[i], v[i]);
  }
}

EXPORT(channel_op) void channel_op(const float* x, const float* v, float* out, int rows, int c, int op) {
  switch (op) {
    case CHANNEL_ADD: channel_loop(x, v, out, rows, c, CHANNEL_ADD); break;
    case CHANNEL_MUL: channel_loop(x, v, out, rows, c, CHANNEL_MUL); break;
    case CHANNEL_SUB: channel_loop(x, v, out, rows, c, CHANNEL_SUB); break;
    case CHANNEL_SUB_FROM: channel_loop(x, v, out, rows, c, CHANNEL_SUB_FROM); break;
    case CHANNEL_DIV: channel_loop(x, v, out, rows, c, CHANNEL_DIV); break;
    case CHANNEL_DIV_INTO: channel_loop(x, v, out, rows, c, CHANNEL_DIV_INTO); break;
    default: break;
  }
}
