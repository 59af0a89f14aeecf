/*
 * What the translation units of the mnist-ddp kernels module share (scripts/build-wasm.sh links every .c file of native/ into one
 * WebAssembly module).
 *
 * The module imports tfjs-backend-wasm's linear memory and works in place on tensor buffers (pointers are the
 * tensors' byte offsets). It therefore owns no memory of its own: no static data, no stack frames (every function
 * works on scalars and v128 values; a local array or an address-taken local only where inlining and full unrolling
 * turn it into registers), and no libc — memcpy/memset lower to bulk-memory instructions. scripts/build-wasm.sh
 * checks the linked module for data segments and for a stack pointer before embedding it. Scratch space, where a
 * kernel needs it, is a tensor its caller allocated.
 *
 * `long` is 32 bits on wasm32, as int is: the `(long)` casts on offsets give no extra range. None is needed: a wasm32
 * memory holds at most 4 GiB, 2^30 floats, so every element offset fits in an int.
 */
#ifndef MNIST_DDP_KERNELS_H
#define MNIST_DDP_KERNELS_H
#include <wasm_simd128.h>

/* For helpers that take a pointer to a caller's local (the geometry): inlined, the local stays in registers. */
#define ALWAYS_INLINE static inline __attribute__((always_inline))

#define EXPORT(name) __attribute__((export_name(#name))) __attribute__((visibility("default")))

typedef struct {
  int batch, in_h, in_w, in_c, out_h, out_w, k_h, k_w, stride_h, stride_w, dil_h, dil_w, pad_top, pad_left;
} conv_geometry;

/* Geometry arrives as 14 int32 in memory (one pointer) so that signatures stay short. */
static inline conv_geometry load_geometry(const int* g) {
  conv_geometry c = {g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7], g[8], g[9], g[10], g[11], g[12], g[13]};
  return c;
}

/* c + a * b, four lanes: one f32x4.relaxed_madd (a fused multiply-add) in the relaxed-SIMD build, else mul + add. */
#ifdef __wasm_relaxed_simd__
#define MADD(a, b, c) __builtin_wasm_relaxed_madd_f32x4((a), (b), (c))
#else
#define MADD(a, b, c) wasm_f32x4_add(wasm_f32x4_mul((a), (b)), (c))
#endif

/*
 * ReLU, v < 0 ? 0 : v: NaN stays NaN, as in tfjs's Math.max(0, v) (only -0 differs: it stays -0, which compares equal
 * to 0). f32x4.pmax is one maxps on x86; f32x4.max, NaN-propagating and ordering -0 below +0 in every lane, is a
 * sequence of several instructions in V8.
 */
#define RELU(v) wasm_f32x4_pmax((v), wasm_f32x4_const_splat(0.0f))

/* A convolution's epilogue, applied as each output is written (winograd_conv, conv_direct): + bias[Cout], then ReLU. */
#define EPILOGUE_BIAS 1
#define EPILOGUE_RELU 2

/* (lo, hi) += the four lanes of p, widened to float64. */
#define FOLD_F64(lo, hi, p)                                                   \
  do {                                                                        \
    lo = wasm_f64x2_add(lo, wasm_f64x2_promote_low_f32x4(p));                 \
    hi = wasm_f64x2_add(hi, wasm_f64x2_promote_low_f32x4(wasm_i32x4_shuffle(p, p, 2, 3, 0, 1))); \
  } while (0)

/*
 * Chan's pairwise update of four channels' running (mean, M2), float64 in run_mean[0..3] and run_m2[0..3], by a block
 * of n_b values per channel with (mean, M2) in float32, after n_a values:
 *   n = n_a + n_b, d = mean_b - mean_a, mean = mean_a + d n_b / n, M2 = M2_a + M2_b + d^2 n_a n_b / n,
 * which, unlike E[x^2] - mean^2, does not cancel when the mean is large against the spread. w_b = n_b / n and
 * w_ab = n_a n_b / n, both splat as float64x2.
 */
ALWAYS_INLINE void chan_update(double* run_mean, double* run_m2, v128_t block_mean, v128_t block_m2, v128_t w_b, v128_t w_ab) {
  const v128_t ma = wasm_v128_load(run_mean), d = wasm_f64x2_sub(wasm_f64x2_promote_low_f32x4(block_mean), ma);
  wasm_v128_store(run_mean, wasm_f64x2_add(ma, wasm_f64x2_mul(d, w_b)));
  const v128_t m2 = wasm_f64x2_add(wasm_v128_load(run_m2), wasm_f64x2_promote_low_f32x4(block_m2));
  wasm_v128_store(run_m2, wasm_f64x2_add(m2, wasm_f64x2_mul(wasm_f64x2_mul(d, d), w_ab)));
}
ALWAYS_INLINE void chan_update4(double* run_mean, double* run_m2, v128_t block_mean, v128_t block_m2, v128_t w_b, v128_t w_ab) {
  chan_update(run_mean, run_m2, block_mean, block_m2, w_b, w_ab);
  chan_update(run_mean + 2, run_m2 + 2, wasm_i32x4_shuffle(block_mean, block_mean, 2, 3, 0, 1), wasm_i32x4_shuffle(block_m2, block_m2, 2, 3, 0, 1), w_b, w_ab);
}

/*
 * Folds the values of rows x cols positions (position (r, s) at base + r * row + s * c, C channels in fours; in cache)
 * into the running float64 means and M2 sums after `seen` positions: the block's own mean and M2 in two sweeps, then
 * Chan's update. moments_rows (batch_norm.c) folds blocks of 64 rows this way, the convolutions their outputs as they
 * write them (winograd.c per tile, conv_direct.c per row).
 */
ALWAYS_INLINE void fold_moments(const float* base, long row, int rows, int cols, int c, double* run_mean, double* run_m2, double seen) {
  const double n_b = (double)rows * cols, n = seen + n_b;
  const v128_t inv_b = wasm_f32x4_splat((float)(1.0 / n_b));
  const v128_t w_b = wasm_f64x2_splat(n_b / n), w_ab = wasm_f64x2_splat(seen * n_b / n);
  for (int c0 = 0; c0 < c; c0 += 4) {
    v128_t sum = wasm_f32x4_splat(0.0f);
    for (int r = 0; r < rows; r++) {
      for (int s = 0; s < cols; s++) sum = wasm_f32x4_add(sum, wasm_v128_load(base + r * row + (long)s * c + c0));
    }
    const v128_t mean = wasm_f32x4_mul(sum, inv_b);
    v128_t m2 = wasm_f32x4_splat(0.0f);
    for (int r = 0; r < rows; r++) {
      for (int s = 0; s < cols; s++) {
        const v128_t d = wasm_f32x4_sub(wasm_v128_load(base + r * row + (long)s * c + c0), mean);
        m2 = MADD(d, d, m2);
      }
    }
    chan_update4(run_mean + c0, run_m2 + c0, mean, m2, w_b, w_ab);
  }
}

/* mean[i] and variance[i] (biased: M2 / positions) from the running float64 sums, for C channels. */
ALWAYS_INLINE void store_moments(const double* run_mean, const double* run_m2, double positions, float* mean, float* variance, int c) {
  for (int i = 0; i < c; i++) {
    mean[i] = (float)run_mean[i];
    variance[i] = (float)(run_m2[i] / positions);
  }
}

/* g where the batch-norm output centred f + o is > 0 (with relu; NaN compares false), else g itself. */
ALWAYS_INLINE v128_t relu_masked(v128_t g, v128_t centred, v128_t f, v128_t o, int relu) {
  return relu ? wasm_v128_and(g, wasm_f32x4_gt(wasm_f32x4_add(wasm_f32x4_mul(centred, f), o), wasm_f32x4_splat(0.0f))) : g;
}

/*
 * Batch norm's input gradient for four channels of one position: f (g' - a - centred b), g' = relu_masked(g), centred
 * = z - mean. batch_norm.c's second gradient pass and batch_norm_dx_run both compute it here, so they agree bit for bit.
 */
ALWAYS_INLINE v128_t batch_norm_dx4(v128_t g, v128_t centred, v128_t f, v128_t o, v128_t a, v128_t b, int relu) {
  const v128_t masked = relu_masked(g, centred, f, o, relu);
  return wasm_f32x4_mul(wasm_f32x4_sub(wasm_f32x4_sub(masked, a), wasm_f32x4_mul(centred, b)), f);
}

/*
 * batch_norm_dx4 for n positions of C channels (in fours), each `c` floats apart in g, z and out, with coef = [mean |
 * f | offset | a | b] (C floats each: batch_norm.c batch_norm_grad_params).
 */
ALWAYS_INLINE void batch_norm_dx_run(const float* g, const float* z, const float* coef, int relu, float* out, int n, int c) {
  const float *mean = coef, *f = mean + c, *offset = f + c, *a = offset + c, *b = a + c;
  for (int s = 0; s < n; s++) {
    const long at = (long)s * c;
    for (int c0 = 0; c0 < c; c0 += 4) {
      const v128_t centred = wasm_f32x4_sub(wasm_v128_load(z + at + c0), wasm_v128_load(mean + c0));
      wasm_v128_store(out + at + c0, batch_norm_dx4(wasm_v128_load(g + at + c0), centred, wasm_v128_load(f + c0), wasm_v128_load(offset + c0),
                                                    wasm_v128_load(a + c0), wasm_v128_load(b + c0), relu));
    }
  }
}

/* C[M, N] (+)= A[M, K] · B[K, N], all row-major and contiguous (gemm.c). accumulate = 0 overwrites C. */
void gemm_nn(const float* a, const float* b, float* c, int m, int k, int n, int accumulate);
/* C[M, N] (+)= Aᵀ · B with A stored as [K, M] row-major, B as [K, N] (gemm.c). accumulate = 0 overwrites C. */
void gemm_tn(const float* a, const float* b, float* c, int m, int k, int n, int accumulate);

/*
 * One 2x2 window of four channels (a b / c d): the pooled value, the first maximum as the cpu backend pools
 * (pmax(r, v) = r < v ? v : r is the running maximum that only a strictly greater value replaces, one maxps on x86:
 * NaN is never taken, a window of NaN and -inf pools to -inf), and its code, the first position equal to it
 * (0 a, 1 b, 2 c, 3 d), one byte per channel (pool.c).
 */
ALWAYS_INLINE void pool_window(v128_t a, v128_t b, v128_t c, v128_t d, float* pooled, unsigned char* code) {
  const v128_t m = wasm_f32x4_pmax(wasm_f32x4_pmax(wasm_f32x4_pmax(wasm_f32x4_pmax(wasm_f32x4_const_splat(-__builtin_inff()), a), b), c), d);
  wasm_v128_store(pooled, m);
  const v128_t index = wasm_v128_bitselect(wasm_i32x4_const_splat(0),
                                           wasm_v128_bitselect(wasm_i32x4_const_splat(1),
                                                               wasm_v128_bitselect(wasm_i32x4_const_splat(2), wasm_i32x4_const_splat(3), wasm_f32x4_eq(c, m)),
                                                               wasm_f32x4_eq(b, m)),
                                           wasm_f32x4_eq(a, m));
  const v128_t bytes = wasm_u8x16_narrow_i16x8(wasm_u16x8_narrow_i32x4(index, index), wasm_u16x8_narrow_i32x4(index, index));
  wasm_v128_store32_lane(code, bytes, 0);
}

/*
 * The 2x2, stride-2 max pool of a block of an activation (C a multiple of 4), with each output's first-maximum code
 * (pool.c): z is the block's top-left, z_row floats per row; windows_h x windows_w windows go to pooled and codes,
 * whose rows are out_row elements apart. The convolutions call it on each block they compute, while it is in L1.
 */
void max_pool_2x2_region(const float* z, long z_row, float* pooled, unsigned char* codes, long out_row, int c, int windows_h, int windows_w);

/*
 * The inverse of max_pool_2x2_region for the gradient through a ReLU and the pool (pool.c): for windows_h x windows_w
 * windows, each window's four positions of dz get dy where its code names the position and pooled > 0 (the window's
 * maximum is a ReLU output that is not 0), else 0. dy, pooled and codes start at the block's first window, their rows
 * out_row elements apart; dz is the block's top-left, dz_row floats per row.
 */
void unpool_2x2_region(const float* dy, const float* pooled, const unsigned char* codes, long out_row, float* dz, long dz_row, int c,
                       int windows_h, int windows_w);

/* out[C, R] <- in[R, C] (kernels.c). */
void transpose_2d(const float* in, float* out, int rows, int cols);

#endif
