/*
 * 2x2 max pools at stride 2 without padding, the pools every zoo model uses. Their windows tile the input without
 * overlap, so each element of a gradient in front of the pool is written exactly once, with no scatter and no zeroing
 * pass first: the window's first maximum gets dy, the other three get 0, and rows or columns that no window covers
 * (odd sizes) are zeroed. "First maximum" is the cpu backend's rule: a running maximum in row-major order from -inf,
 * replaced only by a strictly greater value. It decides ties, which are common after ReLU, and never takes NaN, so a
 * window of -inf and NaN sends dy nowhere.
 *
 * - max_pool_grad_2x2: the gradient from the pool's input x (src/shared/kernels/max-pool-grad.ts).
 * - max_pool_2x2_region / max_pool_2x2_codes: the pool's output and, per output element, a one-byte code of where its
 *   window's first maximum is (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right). The convolutions of
 *   src/shared/kernels/conv-relu-pool.ts call the region form on each block of their output while it is in L1, so the
 *   activation in front of the pool is never written to memory.
 * - unpool_2x2_region / max_pool_grad_2x2_codes: the gradient in front of a ReLU and the pool, from the codes and the
 *   pooled output. The gradients of src/shared/kernels/conv-relu-pool.ts and batch-norm-train.ts call the region form
 *   on each block of dy they read (winograd.c, kernels.c's filter_grad_direct, batch_norm.c's batch_norm_pool_grad),
 *   so that gradient is never written to memory either.
 */
#include "kernels.h"

/*
 * The first-maximum mask per position of four windows (four lanes), from the pool's input. pool_window (kernels.h)
 * finds the same position from the pooled value by equality; this form needs no pooled value.
 */
typedef struct {
  v128_t to_a, to_b, to_c, to_d;
} window_choice;

ALWAYS_INLINE window_choice first_maximum(v128_t a, v128_t b, v128_t c, v128_t d) {
  const v128_t minus_inf = wasm_f32x4_splat(-__builtin_inff());
  const v128_t take_a = wasm_f32x4_gt(a, minus_inf);
  const v128_t best_a = wasm_v128_bitselect(a, minus_inf, take_a);
  const v128_t take_b = wasm_f32x4_gt(b, best_a);
  const v128_t best_ab = wasm_v128_bitselect(b, best_a, take_b);
  const v128_t take_c = wasm_f32x4_gt(c, best_ab);
  const v128_t best_abc = wasm_v128_bitselect(c, best_ab, take_c);
  const v128_t take_d = wasm_f32x4_gt(d, best_abc);
  window_choice w;
  w.to_d = take_d;
  w.to_c = wasm_v128_andnot(take_c, take_d);
  w.to_b = wasm_v128_andnot(wasm_v128_andnot(take_b, take_c), take_d);
  w.to_a = wasm_v128_andnot(take_a, wasm_v128_or(wasm_v128_or(take_b, take_c), take_d));
  return w;
}

/* Stores dy's four lanes to the window positions the masks choose, 0 elsewhere. */
ALWAYS_INLINE void scatter_window(float* q, long c, long row, v128_t gv, v128_t to_a, v128_t to_b, v128_t to_c, v128_t to_d) {
  wasm_v128_store(q, wasm_v128_and(gv, to_a));
  wasm_v128_store(q + c, wasm_v128_and(gv, to_b));
  wasm_v128_store(q + row, wasm_v128_and(gv, to_c));
  wasm_v128_store(q + row + c, wasm_v128_and(gv, to_d));
}

/* Zeroes what no window covers in one image's gradient dx[H, W, C]: the last column and row of odd sizes. */
ALWAYS_INLINE void zero_uncovered(float* dxb, const conv_geometry* g, int c) {
  const long row = (long)g->in_w * c;
  if (g->in_w > 2 * g->out_w) {
    const unsigned tail = (unsigned)((g->in_w - 2 * g->out_w) * c) * sizeof(float);
    for (int r = 0; r < 2 * g->out_h; r++) __builtin_memset(dxb + r * row + (long)(2 * g->out_w) * c, 0, tail);
  }
  if (g->in_h > 2 * g->out_h) __builtin_memset(dxb + (long)(2 * g->out_h) * row, 0, (unsigned)((g->in_h - 2 * g->out_h) * row) * sizeof(float));
}

EXPORT(max_pool_grad_2x2) void max_pool_grad_2x2(const float* x, const float* dy, float* dx, int channels, const int* geometry) {
  const conv_geometry g = load_geometry(geometry);
  const int c = channels;
  const long row = (long)g.in_w * c;
  for (int b = 0; b < g.batch; b++) {
    const float* xb = x + (long)b * g.in_h * row;
    float* dxb = dx + (long)b * g.in_h * row;
    const float* grad = dy + (long)b * g.out_h * g.out_w * c;
    for (int oh = 0; oh < g.out_h; oh++) {
      for (int ow = 0; ow < g.out_w; ow++, grad += c) {
        const long at = (long)(2 * oh) * row + (long)(2 * ow) * c;
        for (int ch = 0; ch < c; ch += 4) {
          const float* p = xb + at + ch;
          const window_choice w = first_maximum(wasm_v128_load(p), wasm_v128_load(p + c), wasm_v128_load(p + row), wasm_v128_load(p + row + c));
          scatter_window(dxb + at + ch, c, row, wasm_v128_load(grad + ch), w.to_a, w.to_b, w.to_c, w.to_d);
        }
      }
    }
    zero_uncovered(dxb, &g, c);
  }
}

/*
 * z is the block's top-left, z_row floats per row; `windows_h` x `windows_w` windows (pool_window says how each is
 * pooled and coded); pooled's and codes' rows are `out_row` elements apart (codes: one byte per element, at pooled's
 * index).
 */
void max_pool_2x2_region(const float* z, long z_row, float* pooled, unsigned char* codes, long out_row, int c, int windows_h, int windows_w) {
  for (int i = 0; i < windows_h; i++) {
    for (int j = 0; j < windows_w; j++) {
      const float* p = z + 2L * i * z_row + 2L * j * c;
      const long at = i * out_row + (long)j * c;
      for (int ch = 0; ch < c; ch += 4) {
        pool_window(wasm_v128_load(p + ch), wasm_v128_load(p + c + ch), wasm_v128_load(p + z_row + ch), wasm_v128_load(p + z_row + c + ch),
                    pooled + at + ch, codes + at + ch);
      }
    }
  }
}

/* pooled[B, H/2, W/2, C] and codes (bytes at pooled's indices) from z[B, H, W, C]: the whole-tensor form. */
EXPORT(max_pool_2x2_codes) void max_pool_2x2_codes(const float* z, float* pooled, unsigned char* codes, int channels, const int* geometry) {
  const conv_geometry g = load_geometry(geometry);
  const long image = (long)g.in_h * g.in_w * channels, pooled_image = (long)g.out_h * g.out_w * channels;
  for (int b = 0; b < g.batch; b++) {
    max_pool_2x2_region(z + b * image, (long)g.in_w * channels, pooled + b * pooled_image, codes + b * pooled_image,
                        (long)g.out_w * channels, channels, g.out_h, g.out_w);
  }
}

void unpool_2x2_region(const float* dy, const float* pooled, const unsigned char* codes, long out_row, float* dz, long dz_row, int c,
                       int windows_h, int windows_w) {
  const v128_t zero = wasm_f32x4_splat(0), one = wasm_i32x4_splat(1), two = wasm_i32x4_splat(2), three = wasm_i32x4_splat(3);
  for (int i = 0; i < windows_h; i++) {
    for (int j = 0; j < windows_w; j++) {
      const long at = i * out_row + (long)j * c;
      float* q = dz + 2L * i * dz_row + 2L * j * c;
      for (int ch = 0; ch < c; ch += 4) {
        const v128_t gv = wasm_v128_and(wasm_v128_load(dy + at + ch), wasm_f32x4_gt(wasm_v128_load(pooled + at + ch), zero));
        const v128_t code = wasm_u32x4_extend_low_u16x8(wasm_u16x8_extend_low_u8x16(wasm_v128_load32_zero(codes + at + ch)));
        scatter_window(q + ch, c, dz_row, gv, wasm_i32x4_eq(code, zero), wasm_i32x4_eq(code, one), wasm_i32x4_eq(code, two), wasm_i32x4_eq(code, three));
      }
    }
  }
}

/* dz[B, H, W, C] <- the gradient in front of relu and the pool, from dy[B, H/2, W/2, C] (unpool_2x2_region). */
EXPORT(max_pool_grad_2x2_codes) void max_pool_grad_2x2_codes(const float* dy, const float* pooled, const unsigned char* codes, float* dz, int channels, const int* geometry) {
  const conv_geometry g = load_geometry(geometry);
  const long image = (long)g.in_h * g.in_w * channels, pooled_image = (long)g.out_h * g.out_w * channels;
  for (int b = 0; b < g.batch; b++) {
    unpool_2x2_region(dy + b * pooled_image, pooled + b * pooled_image, codes + b * pooled_image, (long)g.out_w * channels,
                      dz + b * image, (long)g.in_w * channels, channels, g.out_h, g.out_w);
    zero_uncovered(dz + b * image, &g, channels);
  }
}
