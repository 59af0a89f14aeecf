/*
 * Batch normalisation over the last axis of x[R, C] with per-channel parameters: the forward pass (FusedBatchNorm)
 * and its gradient. src/shared/kernels/batch-norm.ts and batch-norm-grad.ts route tfjs's calls here and give the
 * measurements.
 */
#include "kernels.h"

/* f = scale / sqrt(variance + epsilon) for channels [c0, c0 + 4), computed in float64 and rounded once (scale 1 where
 * its pointer is 0). */
ALWAYS_INLINE v128_t batch_norm_factor(const float* variance, const float* scale, int c0, double epsilon) {
  const v128_t v = wasm_v128_load(variance + c0);
  const v128_t s = scale ? wasm_v128_load(scale + c0) : wasm_f32x4_splat(1.0f);
  const v128_t e = wasm_f64x2_splat(epsilon);
  const v128_t lo = wasm_f64x2_div(wasm_f64x2_promote_low_f32x4(s),
                                   wasm_f64x2_sqrt(wasm_f64x2_add(wasm_f64x2_promote_low_f32x4(v), e)));
  const v128_t hi = wasm_f64x2_div(wasm_f64x2_promote_low_f32x4(wasm_i32x4_shuffle(s, s, 2, 3, 0, 1)),
                                   wasm_f64x2_sqrt(wasm_f64x2_add(wasm_f64x2_promote_low_f32x4(wasm_i32x4_shuffle(v, v, 2, 3, 0, 1)), e)));
  return wasm_i32x4_shuffle(wasm_f32x4_demote_f64x2_zero(lo), wasm_f32x4_demote_f64x2_zero(hi), 0, 1, 4, 5);
}

/*
 * out[R, C] <- (x - mean) * f + offset with f per channel (batch_norm_factor): FusedBatchNorm with [C] parameters
 * (offset 0 and scale 1 where their pointer is 0). The stock kernel takes a square root and a division per element;
 * here f is computed once, for 4 channels at a time per block of 64 rows (which stays in L1 while its channels are
 * swept).
 */
EXPORT(batch_norm) void batch_norm(const float* x, const float* mean, const float* variance, const float* offset,
                                   const float* scale, double epsilon, int relu, float* out, int rows, int c) {
  /* relu = 1 applies RELU (kernels.h: NaN stays NaN, for the non-finite guard downstream) as it writes. */
  const v128_t zero = wasm_f32x4_splat(0.0f);
  const v128_t floor = relu ? zero : wasm_f32x4_splat(-__builtin_inff());
  const int vec_c = c & ~3;
  for (int r0 = 0; r0 < rows; r0 += 64) {
    const int r1 = r0 + 64 < rows ? r0 + 64 : rows;
    for (int c0 = 0; c0 < vec_c; c0 += 4) {
      const v128_t f = batch_norm_factor(variance, scale, c0, epsilon);
      const v128_t m = wasm_v128_load(mean + c0);
      const v128_t o = offset ? wasm_v128_load(offset + c0) : wasm_f32x4_splat(0.0f);
      for (int r = r0; r < r1; r++) {
        const long at = (long)r * c + c0;
        wasm_v128_store(out + at, wasm_f32x4_pmax(wasm_f32x4_add(wasm_f32x4_mul(wasm_f32x4_sub(wasm_v128_load(x + at), m), f), o), floor));
      }
    }
    for (int c0 = vec_c; c0 < c; c0++) {
      const float f = (float)((scale ? (double)scale[c0] : 1.0) / __builtin_sqrt((double)variance[c0] + epsilon));
      const float o = offset ? offset[c0] : 0.0f;
      for (int r = r0; r < r1; r++) {
        const float v = (x[(long)r * c + c0] - mean[c0]) * f + o;
        out[(long)r * c + c0] = relu && v < 0.0f ? 0.0f : v;
      }
    }
  }
}

/*
 * The batch's mean and (biased) variance per channel of x[R, C], C a multiple of 4, in one pass over memory: each
 * block of 64 rows (in L1 after its first channels are read) gives its own mean and sum of squared deviations from
 * it in two sweeps, and the blocks are combined in float64 by Chan et al.'s pairwise update (kernels.h chan_update).
 * stats is scratch for 4C floats (C running means then C M2 sums, as doubles).
 */
EXPORT(moments_rows) void moments_rows(const float* x, float* mean, float* variance, float* stats, int rows, int c) {
  double* run_mean = (double*)stats;
  double* run_m2 = run_mean + c;
  __builtin_memset(stats, 0, (unsigned)(2 * c) * sizeof(double));
  for (int r0 = 0; r0 < rows; r0 += 64) {
    const int n = rows - r0 < 64 ? rows - r0 : 64;
    fold_moments(x + (long)r0 * c, (long)n * c, 1, n, c, run_mean, run_m2, r0);
  }
  store_moments(run_mean, run_m2, rows, mean, variance, c);
}

/*
 * The same normalisation and ReLU of x[B, H, W, C] (C a multiple of 4), pooled 2x2 at stride 2 with codes as it is
 * computed (kernels.h pool_window): pooled and codes [B, H/2, W/2, C] (codes one byte each), and the normalised output
 * itself is never written. offset and scale must be given (batch_norm's may be 0). factors is scratch for C floats
 * (each channel's scale / sqrt(variance + epsilon), computed once, with batch_norm's arithmetic). `geometry` is the
 * pool's (in_* x's sizes, out_* the pooled ones).
 */
EXPORT(batch_norm_relu_pool) void batch_norm_relu_pool(const float* x, const float* mean, const float* variance, const float* offset,
                                                       const float* scale, double epsilon, float* factors, float* pooled,
                                                       unsigned char* codes, const int* geometry) {
  const conv_geometry g = load_geometry(geometry);
  const int c = g.in_c;
  for (int c0 = 0; c0 < c; c0 += 4) wasm_v128_store(factors + c0, batch_norm_factor(variance, scale, c0, epsilon));
  const long row = (long)g.in_w * c;
  long at = 0;
  for (int b = 0; b < g.batch; b++) {
    for (int oh = 0; oh < g.out_h; oh++) {
      const float* top = x + ((long)b * g.in_h + 2 * oh) * row;
      for (int ow = 0; ow < g.out_w; ow++, at += c) {
        const float* p = top + 2L * ow * c;
        for (int c0 = 0; c0 < c; c0 += 4) {
          const v128_t m = wasm_v128_load(mean + c0), f = wasm_v128_load(factors + c0), o = wasm_v128_load(offset + c0);
#define NORMALISED(q) RELU(wasm_f32x4_add(wasm_f32x4_mul(wasm_f32x4_sub(wasm_v128_load(q), m), f), o))
          pool_window(NORMALISED(p + c0), NORMALISED(p + c + c0), NORMALISED(p + row + c0), NORMALISED(p + row + c + c0), pooled + at + c0, codes + at + c0);
#undef NORMALISED
        }
      }
    }
  }
}

/*
 * The first pass of both gradients, for one block of n rows (n <= 64: its float32 partials stay short): adds to the
 * float64 totals s1 = sum over rows of g and s2 = sum over rows of g (x - mean), per channel, with g = dy, or with
 * relu the ReLU-masked dy (kernels.h relu_masked; f and o as batch_norm's).
 */
ALWAYS_INLINE void block_sums(const float* x, const float* dy, const float* mean, const float* variance, const float* scale,
                              const float* offset, double epsilon, int relu, double* s1, double* s2, int n, int c) {
  const int vec_c = c & ~3;
  for (int c0 = 0; c0 < vec_c; c0 += 4) {
    const v128_t m = wasm_v128_load(mean + c0);
    const v128_t f = batch_norm_factor(variance, scale, c0, epsilon);
    const v128_t o = offset ? wasm_v128_load(offset + c0) : wasm_f32x4_splat(0.0f);
    v128_t p1 = wasm_f32x4_splat(0.0f), p2 = wasm_f32x4_splat(0.0f);
    for (int r = 0; r < n; r++) {
      const long at = (long)r * c + c0;
      const v128_t centred = wasm_f32x4_sub(wasm_v128_load(x + at), m);
      const v128_t g = relu_masked(wasm_v128_load(dy + at), centred, f, o, relu);
      p1 = wasm_f32x4_add(p1, g);
      p2 = MADD(g, centred, p2);
    }
    v128_t lo1 = wasm_v128_load(s1 + c0), hi1 = wasm_v128_load(s1 + c0 + 2);
    v128_t lo2 = wasm_v128_load(s2 + c0), hi2 = wasm_v128_load(s2 + c0 + 2);
    FOLD_F64(lo1, hi1, p1);
    FOLD_F64(lo2, hi2, p2);
    wasm_v128_store(s1 + c0, lo1), wasm_v128_store(s1 + c0 + 2, hi1);
    wasm_v128_store(s2 + c0, lo2), wasm_v128_store(s2 + c0 + 2, hi2);
  }
  for (int c0 = vec_c; c0 < c; c0++) {
    const float f = relu ? (float)((scale ? (double)scale[c0] : 1.0) / __builtin_sqrt((double)variance[c0] + epsilon)) : 1.0f;
    const float o = offset ? offset[c0] : 0.0f;
    float p1 = 0.0f, p2 = 0.0f;
    for (int r = 0; r < n; r++) {
      const long at = (long)r * c + c0;
      const float centred = x[at] - mean[c0];
      const float g = relu && !(centred * f + o > 0.0f) ? 0.0f : dy[at];
      p1 += g;
      p2 += g * centred;
    }
    s1[c0] += p1;
    s2[c0] += p2;
  }
}

/* The first pass over all rows, in blocks of 64: the float64 totals S1 then S2 (C doubles each) into sums. */
ALWAYS_INLINE void gradient_sums(const float* x, const float* dy, const float* mean, const float* variance, const float* scale,
                                 const float* offset, double epsilon, int relu, double* sums, int rows, int c) {
  __builtin_memset(sums, 0, (unsigned)(2 * c) * sizeof(double));
  for (int r0 = 0; r0 < rows; r0 += 64) {
    const long at = (long)r0 * c;
    block_sums(x + at, dy + at, mean, variance, scale, offset, epsilon, relu, sums, sums + c, rows - r0 < 64 ? rows - r0 : 64, c);
  }
}

/*
 * The gradient of out = (x - mean) * scale / sqrt(variance + epsilon) + offset, per channel c with r = 1/sqrt(v + e):
 *   dOffset = S1, dScale = r S2, dMean = -scale r S1, dVariance = -scale r^3 S2 / 2, dx = scale r dy,
 * where S1 = sum over rows of dy and S2 = sum over rows of dy (x - mean). Two passes over memory instead of tfjs-core's
 * dozen kernels (each a pass). The sums fold float32 partials over 64 rows into float64 totals, which live in dx
 * (2C doubles, so dx must hold at least 4C floats: rows >= 4) until the second pass overwrites it. scale may be 0
 * (1 for every channel). Overwrites dx, d_mean, d_variance, d_scale, d_offset (C floats each).
 */
EXPORT(batch_norm_grad) void batch_norm_grad(const float* x, const float* dy, const float* mean, const float* variance,
                                             const float* scale, double epsilon, float* dx, float* d_mean, float* d_variance,
                                             float* d_scale, float* d_offset, int rows, int c) {
  /* The totals live in dx (2C doubles: rows >= 4) until the second pass overwrites it. */
  gradient_sums(x, dy, mean, variance, scale, 0, epsilon, 0, (double*)dx, rows, c);
  const double* s1 = (const double*)dx;
  const double* s2 = s1 + c;
  const int vec_c = c & ~3;
  for (int i = 0; i < c; i++) {
    const double r = 1.0 / __builtin_sqrt((double)variance[i] + epsilon), sc = scale ? (double)scale[i] : 1.0;
    d_offset[i] = (float)s1[i];
    d_scale[i] = (float)(r * s2[i]);
    d_mean[i] = (float)(-sc * r * s1[i]);
    d_variance[i] = (float)(-0.5 * sc * r * r * r * s2[i]);
  }
  for (int r0 = 0; r0 < rows; r0 += 64) {
    const int r1 = r0 + 64 < rows ? r0 + 64 : rows;
    for (int c0 = 0; c0 < vec_c; c0 += 4) {
      const v128_t f = batch_norm_factor(variance, scale, c0, epsilon);
      for (int r = r0; r < r1; r++) {
        const long at = (long)r * c + c0;
        wasm_v128_store(dx + at, wasm_f32x4_mul(wasm_v128_load(dy + at), f));
      }
    }
    for (int c0 = vec_c; c0 < c; c0++) {
      const float f = (float)((scale ? (double)scale[c0] : 1.0) / __builtin_sqrt((double)variance[c0] + epsilon));
      for (int r = r0; r < r1; r++) dx[(long)r * c + c0] = dy[(long)r * c + c0] * f;
    }
  }
}

/* dOffset = S1 and dScale = r S2 per channel, from the first pass's totals. */
ALWAYS_INLINE void train_grad_params(const double* s1, const double* s2, const float* variance, double epsilon, float* d_scale,
                                     float* d_offset, int c) {
  for (int i = 0; i < c; i++) {
    const double r = 1.0 / __builtin_sqrt((double)variance[i] + epsilon);
    d_offset[i] = (float)s1[i];
    d_scale[i] = (float)(r * s2[i]);
  }
}

/* a = S1/R and b = r^2 S2/R = r dScale/R (R = inv_rows's reciprocal) for four channels, as float32 products. */
ALWAYS_INLINE void dx_coefficients(const float* d_offset, const float* d_scale, const float* variance, int c0, double epsilon, double inv_rows,
                                   v128_t* a, v128_t* b) {
  const v128_t r_only = batch_norm_factor(variance, 0, c0, epsilon), inv = wasm_f32x4_splat((float)inv_rows);
  *a = wasm_f32x4_mul(wasm_v128_load(d_offset + c0), inv);
  *b = wasm_f32x4_mul(wasm_f32x4_mul(wasm_v128_load(d_scale + c0), r_only), inv);
}

/*
 * The second pass for one block of n rows: dx = f (g - a - (x - mean) b) per channel (kernels.h batch_norm_dx4; a and
 * b from dx_coefficients, all rows of the batch) and g as block_sums's.
 */
ALWAYS_INLINE void block_dx(const float* x, const float* dy, const float* mean, const float* variance, const float* scale,
                            const float* offset, double epsilon, int relu, const float* d_scale, const float* d_offset,
                            double inv_rows, float* dx, int n, int c) {
  const int vec_c = c & ~3;
  for (int c0 = 0; c0 < vec_c; c0 += 4) {
    const v128_t f = batch_norm_factor(variance, scale, c0, epsilon);
    const v128_t o = offset ? wasm_v128_load(offset + c0) : wasm_f32x4_splat(0.0f);
    const v128_t m = wasm_v128_load(mean + c0);
    v128_t a, b;
    dx_coefficients(d_offset, d_scale, variance, c0, epsilon, inv_rows, &a, &b);
    for (int r = 0; r < n; r++) {
      const long at = (long)r * c + c0;
      wasm_v128_store(dx + at, batch_norm_dx4(wasm_v128_load(dy + at), wasm_f32x4_sub(wasm_v128_load(x + at), m), f, o, a, b, relu));
    }
  }
  for (int c0 = vec_c; c0 < c; c0++) {
    const double r = 1.0 / __builtin_sqrt((double)variance[c0] + epsilon);
    const float f = (float)((scale ? (double)scale[c0] : 1.0) / __builtin_sqrt((double)variance[c0] + epsilon));
    const float o = offset ? offset[c0] : 0.0f;
    const float a = (float)(d_offset[c0] * inv_rows), b = (float)(d_scale[c0] * r * inv_rows);
    for (int r = 0; r < n; r++) {
      const long at = (long)r * c + c0;
      const float centred = x[at] - mean[c0];
      const float g = relu && !(centred * f + o > 0.0f) ? 0.0f : dy[at];
      dx[at] = (g - a - centred * b) * f;
    }
  }
}

/*
 * The gradient of training-mode batch norm, where mean and variance are the batch's own (computed from x), optionally
 * followed by a ReLU (relu = 1): with g = dy where the output y = (x - mean) f + offset is > 0 (or g = dy),
 * f = scale r, r = 1/sqrt(variance + epsilon), S1 = sum over rows of g and S2 = sum over rows of g (x - mean), per
 * channel,
 *   dOffset = S1, dScale = r S2, dx = f (g - S1/R - (x - mean) r^2 S2/R).
 * dx includes the paths through the batch mean and variance that tfjs-core differentiates op by op (Mean, Sub,
 * Square, their gradients and the adds that join them: about a dozen passes). Two passes here, each reading x and dy
 * only: the ReLU's mask is recomputed from x with batch_norm's own arithmetic (bit for bit the forward's y > 0)
 * instead of read from y. The first pass keeps its float64 sums in dx (rows >= 4, as batch_norm_grad), the second
 * reads them back through d_offset and d_scale. scale and offset may be 0 (1 and 0 for every channel). Overwrites dx,
 * d_scale and d_offset.
 */
EXPORT(batch_norm_train_grad) void batch_norm_train_grad(const float* x, const float* dy, const float* mean, const float* variance,
                                                         const float* scale, const float* offset, double epsilon, int relu,
                                                         float* dx, float* d_scale, float* d_offset, int rows, int c) {
  gradient_sums(x, dy, mean, variance, scale, offset, epsilon, relu, (double*)dx, rows, c);
  train_grad_params((const double*)dx, (const double*)dx + c, variance, epsilon, d_scale, d_offset, c);
  for (int r0 = 0; r0 < rows; r0 += 64) {
    const long at = (long)r0 * c;
    block_dx(x + at, dy + at, mean, variance, scale, offset, epsilon, relu, d_scale, d_offset, 1.0 / rows, dx + at, rows - r0 < 64 ? rows - r0 : 64, c);
  }
}

/*
 * The first pass of batch_norm_pool_grad: the float64 totals S1 then S2 (C doubles each) into sums, from the pooled
 * gradient unpooled one pair of image rows at a time into scratch (2 x W x C floats).
 */
ALWAYS_INLINE void pool_grad_sums(const float* x, const float* dy, const float* pooled, const unsigned char* codes, const float* mean,
                                  const float* variance, const float* scale, const float* offset, double epsilon, float* scratch,
                                  double* sums, const conv_geometry* g) {
  const int c = g->in_c;
  const long row = (long)g->in_w * c, pooled_row = (long)g->out_w * c;
  double* s1 = sums;
  double* s2 = s1 + c;
  __builtin_memset(sums, 0, (unsigned)(2 * c) * sizeof(double));
  __builtin_memset(scratch, 0, (unsigned)(2 * row) * sizeof(float));
  for (int b = 0; b < g->batch; b++) {
    for (int p = 0; p < g->out_h; p++) {
      const long at = (long)(b * g->out_h + p) * pooled_row;
      const float* xs = x + (long)(b * g->in_h + 2 * p) * row;
      unpool_2x2_region(dy + at, pooled + at, codes + at, pooled_row, scratch, row, c, 1, g->out_w);
      for (int r0 = 0; r0 < 2 * g->in_w; r0 += 64) {
        block_sums(xs + (long)r0 * c, scratch + (long)r0 * c, mean, variance, scale, offset, epsilon, 0, s1, s2, 2 * g->in_w - r0 < 64 ? 2 * g->in_w - r0 : 64, c);
      }
    }
  }
}

/*
 * The same gradient when the ReLU is followed by a 2x2, stride-2 max pool (batch_norm_relu_pool's): dy is the pooled
 * gradient, pooled and codes the forward's ([B, H/2, W/2, C], codes one byte each), x [B, H, W, C] with C a multiple
 * of 4, `geometry` the pool's. Each pair of image rows of g is unpooled into scratch (2 x W x C floats) by pool.c's
 * unpool_2x2_region while its block of x is read (where pooled > 0, which is also the ReLU's mask), so the gradient in
 * front of the pool is never written to memory; rows and columns no window covers have g = 0. Overwrites dx, d_scale
 * and d_offset.
 */
EXPORT(batch_norm_pool_grad) void batch_norm_pool_grad(const float* x, const float* dy, const float* pooled, const unsigned char* codes,
                                                       const float* mean, const float* variance, const float* scale, const float* offset,
                                                       double epsilon, float* scratch, float* dx, float* d_scale, float* d_offset,
                                                       const int* geometry) {
  const conv_geometry g = load_geometry(geometry);
  const int c = g.in_c;
  const long row = (long)g.in_w * c, pooled_row = (long)g.out_w * c;
  const double inv_rows = 1.0 / ((double)g.batch * g.in_h * g.in_w);
  pool_grad_sums(x, dy, pooled, codes, mean, variance, scale, offset, epsilon, scratch, (double*)dx, &g);
  const double* s1 = (const double*)dx;
  const double* s2 = s1 + c;
  train_grad_params(s1, s2, variance, epsilon, d_scale, d_offset, c);
  for (int b = 0; b < g.batch; b++) {
    for (int p = 0; p < g.out_h; p++) {
      const long at = (long)(b * g.out_h + p) * pooled_row, image_at = (long)(b * g.in_h + 2 * p) * row;
      unpool_2x2_region(dy + at, pooled + at, codes + at, pooled_row, scratch, row, c, 1, g.out_w);
      block_dx(x + image_at, scratch, mean, variance, scale, offset, epsilon, 0, d_scale, d_offset, inv_rows, dx + image_at, 2 * g.in_w, c);
    }
    for (int ih = 2 * g.out_h; ih < g.in_h; ih++) {
      const long image_at = (long)(b * g.in_h + ih) * row;
      __builtin_memset(scratch, 0, (unsigned)row * sizeof(float));
      block_dx(x + image_at, scratch, mean, variance, scale, offset, epsilon, 0, d_scale, d_offset, inv_rows, dx + image_at, g.in_w, c);
    }
  }
}

/*
 * The first pass of batch_norm_train_grad (pooled null) or batch_norm_pool_grad (pooled non-null; relu is then
 * implied) over x [B, H, W, C] (C a multiple of 4; `geometry` the pool's, whose in_* sizes are x's), for a kernel that
 * computes dx itself, block by block (winograd.c's batch_norm_block) or row by row (kernels.c filter_grad_direct):
 * d_scale and d_offset, and coef [mean | f | offset | a | b] (C floats each) with block_dx's f, a and b, so that
 * dx = f (g - a - (x - mean) b) there is what the second pass would have written. scratch: 4C floats (the float64 totals), then with pooled 2 x W x C floats.
 */
EXPORT(batch_norm_grad_params) void batch_norm_grad_params(const float* x, const float* dy, const float* pooled, const unsigned char* codes,
                                                           const float* mean, const float* variance, const float* scale,
                                                           const float* offset, double epsilon, int relu, float* scratch,
                                                           float* d_scale, float* d_offset, float* coef, const int* geometry) {
  const conv_geometry g = load_geometry(geometry);
  const int c = g.in_c, rows = g.batch * g.in_h * g.in_w;
  double* sums = (double*)scratch;
  if (pooled) pool_grad_sums(x, dy, pooled, codes, mean, variance, scale, offset, epsilon, scratch + 4 * c, sums, &g);
  else gradient_sums(x, dy, mean, variance, scale, offset, epsilon, relu, sums, rows, c);
  train_grad_params(sums, sums + c, variance, epsilon, d_scale, d_offset, c);
  for (int c0 = 0; c0 < c; c0 += 4) {
    v128_t a, b;
    dx_coefficients(d_offset, d_scale, variance, c0, epsilon, 1.0 / rows, &a, &b);
    wasm_v128_store(coef + c0, wasm_v128_load(mean + c0));
    wasm_v128_store(coef + c + c0, batch_norm_factor(variance, scale, c0, epsilon));
    wasm_v128_store(coef + 2 * c + c0, wasm_v128_load(offset + c0));
    wasm_v128_store(coef + 3 * c + c0, a);
    wasm_v128_store(coef + 4 * c + c0, b);
  }
}
