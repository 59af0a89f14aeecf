/*
 * Max-pool gradient for the pools every zoo model uses: 2x2 windows, stride 2, no padding (src/shared/kernels/
 * max-pool-grad.ts routes them here; other pools take max_pool_grad in kernels.c). The windows tile the input without
 * overlap, so each dx element is written exactly once: the window's first maximum (row-major, the cpu backend's rule
 * for ties, which are common after ReLU, and for NaN and -inf) gets dy, the other three get 0, and rows or columns that no window covers (odd
 * sizes) are zeroed. No scatter, no zeroing pass over dx first.
 *
 * relu_mask = 1 also applies the gradient of a ReLU in front of the pool (x = relu(z), dz wanted;
 * src/shared/kernels/conv-relu-pool.ts): dy reaches the window's first maximum only where that maximum is > 0, exactly
 * what relu_grad would keep of this kernel's output, without the second pass over dx.
 */
#include "kernels.h"

/* f32x4.max propagates NaN, so a non-finite activation reaches the pooled output (and the loss, and the NaN guard). */
void max_pool_2x2_region(const float* z, float* pooled, int w, int c, int r0, int r1, int c0, int c1) {
  const long row = (long)w * c, pooled_row = (long)(w / 2) * c;
  for (int r = r0; r < r1; r += 2) {
    const float* top = z + r * row;
    float* out = pooled + (r / 2) * pooled_row;
    for (int col = c0; col < c1; col += 2) {
      const float* p = top + (long)col * c;
      float* q = out + (long)(col / 2) * c;
      for (int ch = 0; ch < c; ch += 4) {
        const v128_t upper = wasm_f32x4_max(wasm_v128_load(p + ch), wasm_v128_load(p + c + ch));
        const v128_t lower = wasm_f32x4_max(wasm_v128_load(p + row + ch), wasm_v128_load(p + row + c + ch));
        wasm_v128_store(q + ch, wasm_f32x4_max(upper, lower));
      }
    }
  }
}

EXPORT(max_pool_grad_2x2) void max_pool_grad_2x2(const float* x, const float* dy, float* dx, int channels, int relu_mask, const int* geometry) {
  const conv_geometry g = load_geometry(geometry);
  const int c = channels;
  const long row = (long)g.in_w * c;
  const v128_t minus_inf = wasm_f32x4_splat(-__builtin_inff());
  const v128_t zero = wasm_f32x4_splat(0);
  for (int b = 0; b < g.batch; b++) {
    const float* xb = x + (long)b * g.in_h * row;
    float* dxb = dx + (long)b * g.in_h * row;
    const float* grad = dy + (long)b * g.out_h * g.out_w * c;
    for (int oh = 0; oh < g.out_h; oh++) {
      const float* x0 = xb + (long)(2 * oh) * row;
      float* d0 = dxb + (long)(2 * oh) * row;
      for (int ow = 0; ow < g.out_w; ow++, grad += c) {
        const long at = (long)(2 * ow) * c;
        for (int ch = 0; ch < c; ch += 4) {
          const float* p = x0 + at + ch;
          const v128_t a = wasm_v128_load(p), bb = wasm_v128_load(p + c);
          const v128_t cc = wasm_v128_load(p + row), d = wasm_v128_load(p + row + c);
          /*
           * Running maximum in row-major order from -inf, replaced only by a strictly greater value, as the cpu
           * backend does: NaN is never taken, and a window of -inf and NaN sends dy nowhere.
           */
          const v128_t take_a = wasm_f32x4_gt(a, minus_inf);
          const v128_t best_a = wasm_v128_bitselect(a, minus_inf, take_a);
          const v128_t take_b = wasm_f32x4_gt(bb, best_a);
          const v128_t best_ab = wasm_v128_bitselect(bb, best_a, take_b);
          const v128_t take_c = wasm_f32x4_gt(cc, best_ab);
          const v128_t best_abc = wasm_v128_bitselect(cc, best_ab, take_c);
          const v128_t take_d = wasm_f32x4_gt(d, best_abc);
          const v128_t to_c = wasm_v128_andnot(take_c, take_d);
          const v128_t to_b = wasm_v128_andnot(wasm_v128_andnot(take_b, take_c), take_d);
          const v128_t to_a = wasm_v128_andnot(take_a, wasm_v128_or(wasm_v128_or(take_b, take_c), take_d));
          v128_t gv = wasm_v128_load(grad + ch);
          if (relu_mask) gv = wasm_v128_and(gv, wasm_f32x4_gt(wasm_v128_bitselect(d, best_abc, take_d), zero));
          float* q = d0 + at + ch;
          wasm_v128_store(q, wasm_v128_and(gv, to_a));
          wasm_v128_store(q + c, wasm_v128_and(gv, to_b));
          wasm_v128_store(q + row, wasm_v128_and(gv, to_c));
          wasm_v128_store(q + row + c, wasm_v128_and(gv, take_d));
        }
      }
      /* The column no window covers when the width is odd. */
      if (g.in_w > 2 * g.out_w) {
        __builtin_memset(d0 + (long)(2 * g.out_w) * c, 0, (unsigned)((g.in_w - 2 * g.out_w) * c) * sizeof(float));
        __builtin_memset(d0 + row + (long)(2 * g.out_w) * c, 0, (unsigned)((g.in_w - 2 * g.out_w) * c) * sizeof(float));
      }
    }
    /* The rows no window covers when the height is odd. */
    if (g.in_h > 2 * g.out_h) {
      __builtin_memset(dxb + (long)(2 * g.out_h) * row, 0, (unsigned)((g.in_h - 2 * g.out_h) * row) * sizeof(float));
    }
  }
}
