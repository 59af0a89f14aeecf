/*
 * Winograd F(4x4, 3x3) convolutions for 3x3, stride 1, undilated layers (issue #17, part 3): the forward pass, the
 * input gradient and the filter gradient, NHWC, any padding. Each 4x4 block of outputs ("tile") reads a 6x6 block of
 * the input; in the transformed domain the convolution is 36 independent GEMMs, one per position xi of the 6x6
 * block, over channels:
 *
 *   forward  Y   = Aᵀ [ U ⊙ V ] A        M[xi] = V[xi] · U[xi]      ([tiles, Cin] · [Cin, Cout])
 *   dx       dX += B [ U ⊙ Ŷ ] Bᵀ         M[xi] = Ŷ[xi] · U[xi]ᵀ     ([tiles, Cout] · [Cout, Cin])
 *   dW       dW  = Gᵀ [ Σ V ⊙ Ŷ ] G       dU[xi] = V[xi]ᵀ · Ŷ[xi]    ([Cin, tiles] · [tiles, Cout])
 *
 * with V = Bᵀ d B (6x6 input tile d), U = G g Gᵀ (3x3 filter g), Ŷ = A dy Aᵀ (a 4x4 block of dy, zero beyond the
 * output). dx and dW are the adjoints of the forward map in d and in g, so all three use the same matrices, those of
 * the interpolation points 0, ±1, ±2, ∞ (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016):
 *
 *   Bᵀ = [4  0 -5  0 1 0]   G = [ 1/4     0    0 ]   Aᵀ = [1 1  1 1  1 0]
 *        [0 -4 -4  1 1 0]       [-1/6 -1/6 -1/6 ]        [0 1 -1 2 -2 0]
 *        [0  4 -4 -1 1 0]       [-1/6  1/6 -1/6 ]        [0 1  1 4  4 0]
 *        [0 -2 -1  2 1 0]       [1/24 1/12  1/6 ]        [0 1 -1 8 -8 1]
 *        [0  2 -1 -2 1 0]       [1/24 -1/12 1/6 ]
 *        [0  4  0 -5 0 1]       [   0    0    1 ]
 *
 * A GEMM's multiply-adds per output fall from 9 to 36/16 = 2.25 (4x fewer), less the waste of tiles that overhang
 * the output (11x11 is covered by 3x3 tiles of 4: 4 x 121/144 = 3.4x). Tiles are processed WINO_TB at a time so
 * the transformed blocks stay in L2 between the transform, the 36 GEMMs and the inverse transform. Each 2-D
 * transform is a pass over rows then a pass over columns, staged in the block's own planes (no local arrays: see
 * kernels.h).
 *
 * Why 4x4 tiles and not 2x2 (F(2x2, 3x3): 16 GEMMs, 2.25x fewer multiply-adds): both were built and measured on the
 * layers of `cnn` and `cnn-large` at B=64, with a development harness that called each build's kernels on memory of
 * its own (not kept, nor is the 2x2 code; bench/conv-layers.ts measures the kept kernels). Ms per pass, forward /
 * dx / dW, median of 15, Node 20, 2 vCPU Xeon:
 *   13x13x32->64 valid  2x2: 3.9 / 4.1 / 4.0   4x4: 2.5 / 2.6 / 2.4
 *   28x28x32->32 same   2x2: 12.4 / 12.6 / 12.1  4x4: 8.2 / 8.7 / 8.0
 *   14x14x32->64 same   2x2: 5.4 / 5.6 / 5.3   4x4: 4.4 / 4.5 / 4.3
 *   14x14x64->64 same   2x2: 10.5 / 10.9 / 10.5  4x4: 8.6 / 8.9 / 8.4
 * The price is rounding: 4x4 tiles' relative error against a float64 reference is about 2e-6 to 2e-5 (2x2: 2e-7 to
 * 4e-6), inside the 1e-4 the kernel tests require. WINO_TB = 32 was as fast as 64 and faster than 16.
 *
 * A NaN or ±Inf in an input tile makes all 16 outputs of its tile NaN (the transforms mix the tile; Inf - Inf is NaN),
 * a superset of the outputs a direct convolution makes non-finite.
 *
 * Channels go four to a v128: in_c and out_c must be multiples of 4 (src/shared/kernels/winograd.ts routes only
 * such layers here). Scratch is one caller-allocated buffer of winograd_scratch_floats(in_c, out_c) floats.
 */
#include "kernels.h"

/*
 * Consecutive positions' planes are PLANE floats apart: the matrix plus one cache line. The transforms touch all 36
 * planes of a tile, and planes a power of two apart (32 tiles x 32 channels is exactly 4 KiB) all map to the same L1
 * sets, and every transform then evicts the planes it just wrote. (Measured on the 2x2-tile version of this file,
 * which was not kept: on `cnn`'s second layer at B=64 the padding took each pass from 5.0-7.0 ms to 3.9 ms, median
 * of 15, Node 20, 2 vCPU Xeon.)
 */
#define PLANE(rows, cols) ((long)(rows) * (cols) + 16)

#define WINO_TB 32
#define TILE 4
#define AREA 36

#define ADD wasm_f32x4_add
#define SUB wasm_f32x4_sub
#define MUL wasm_f32x4_mul
#define K(v) wasm_f32x4_splat(v)

/* Bᵀ · (d0..d5) */
#define BT6(d0, d1, d2, d3, d4, d5, o0, o1, o2, o3, o4, o5)                          \
  o0 = MADD(K(4.0f), d0, MADD(K(-5.0f), d2, d4));                                      \
  o1 = MADD(K(-4.0f), ADD(d1, d2), ADD(d3, d4));                                       \
  o2 = MADD(K(4.0f), SUB(d1, d2), SUB(d4, d3));                                        \
  o3 = MADD(K(2.0f), SUB(d3, d1), SUB(d4, d2));                                        \
  o4 = MADD(K(-2.0f), SUB(d3, d1), SUB(d4, d2));                                       \
  o5 = MADD(K(4.0f), d1, MADD(K(-5.0f), d3, d5))
/* B · (m0..m5), the adjoint of Bᵀ */
#define BB6(m0, m1, m2, m3, m4, m5, o0, o1, o2, o3, o4, o5)                                               \
  o0 = MUL(K(4.0f), m0);                                                                                  \
  o1 = MADD(K(4.0f), ADD(SUB(m2, m1), m5), MUL(K(2.0f), SUB(m4, m3)));                                    \
  o2 = SUB(MADD(K(-5.0f), m0, MUL(K(-4.0f), ADD(m1, m2))), ADD(m3, m4));                                  \
  o3 = MADD(K(2.0f), SUB(m3, m4), MADD(K(-5.0f), m5, SUB(m1, m2)));                                       \
  o4 = ADD(ADD(ADD(m0, m1), ADD(m2, m3)), m4);                                                            \
  o5 = (m5)
/* Aᵀ · (m0..m5) */
#define AT6(m0, m1, m2, m3, m4, m5, o0, o1, o2, o3)                                   \
  o0 = ADD(ADD(ADD(m0, m1), ADD(m2, m3)), m4);                                        \
  o1 = MADD(K(2.0f), SUB(m3, m4), SUB(m1, m2));                                       \
  o2 = MADD(K(4.0f), ADD(m3, m4), ADD(m1, m2));                                       \
  o3 = ADD(MADD(K(8.0f), SUB(m3, m4), SUB(m1, m2)), m5)
/* A · (y0..y3), the adjoint of Aᵀ */
#define AA6(y0, y1, y2, y3, o0, o1, o2, o3, o4, o5)                                   \
  o0 = (y0);                                                                          \
  o1 = ADD(ADD(y0, y1), ADD(y2, y3));                                                 \
  o2 = SUB(ADD(y0, y2), ADD(y1, y3));                                                 \
  o3 = MADD(K(8.0f), y3, MADD(K(4.0f), y2, MADD(K(2.0f), y1, y0)));                   \
  o4 = MADD(K(-8.0f), y3, MADD(K(4.0f), y2, MADD(K(-2.0f), y1, y0)));                 \
  o5 = (y3)
/* G · (g0, g1, g2) */
#define GG6(g0, g1, g2, o0, o1, o2, o3, o4, o5)                                                     \
  o0 = MUL(K(0.25f), g0);                                                                           \
  o1 = MUL(K(-1.0f / 6.0f), ADD(ADD(g0, g1), g2));                                                  \
  o2 = MUL(K(-1.0f / 6.0f), ADD(SUB(g0, g1), g2));                                                  \
  o3 = MADD(K(1.0f / 24.0f), g0, MADD(K(1.0f / 12.0f), g1, MUL(K(1.0f / 6.0f), g2)));               \
  o4 = MADD(K(1.0f / 24.0f), g0, MADD(K(-1.0f / 12.0f), g1, MUL(K(1.0f / 6.0f), g2)));              \
  o5 = (g2)
/* Gᵀ · (m0..m5), the adjoint of G */
#define GT6(m0, m1, m2, m3, m4, m5, o0, o1, o2)                                                          \
  o0 = MADD(K(0.25f), m0, MADD(K(-1.0f / 6.0f), ADD(m1, m2), MUL(K(1.0f / 24.0f), ADD(m3, m4))));       \
  o1 = MADD(K(1.0f / 6.0f), SUB(m2, m1), MUL(K(1.0f / 12.0f), SUB(m3, m4)));                            \
  o2 = MADD(K(1.0f / 6.0f), SUB(ADD(m3, m4), ADD(m1, m2)), m5)

/* Load / store position (r, s) of the 6x6 block whose position 0 is at p, planes `plane` floats apart. */
#define AT(p, plane, r, s) ((p) + (long)((r) * 6 + (s)) * (plane))
#define LD6ROW(p, plane, r, v0, v1, v2, v3, v4, v5)                                                                  \
  v0 = wasm_v128_load(AT(p, plane, r, 0)), v1 = wasm_v128_load(AT(p, plane, r, 1)), v2 = wasm_v128_load(AT(p, plane, r, 2)); \
  v3 = wasm_v128_load(AT(p, plane, r, 3)), v4 = wasm_v128_load(AT(p, plane, r, 4)), v5 = wasm_v128_load(AT(p, plane, r, 5))
#define ST6ROW(p, plane, r, v0, v1, v2, v3, v4, v5)                                                                  \
  wasm_v128_store(AT(p, plane, r, 0), v0), wasm_v128_store(AT(p, plane, r, 1), v1), wasm_v128_store(AT(p, plane, r, 2), v2); \
  wasm_v128_store(AT(p, plane, r, 3), v3), wasm_v128_store(AT(p, plane, r, 4), v4), wasm_v128_store(AT(p, plane, r, 5), v5)
#define LD6COL(p, plane, s, v0, v1, v2, v3, v4, v5)                                                                  \
  v0 = wasm_v128_load(AT(p, plane, 0, s)), v1 = wasm_v128_load(AT(p, plane, 1, s)), v2 = wasm_v128_load(AT(p, plane, 2, s)); \
  v3 = wasm_v128_load(AT(p, plane, 3, s)), v4 = wasm_v128_load(AT(p, plane, 4, s)), v5 = wasm_v128_load(AT(p, plane, 5, s))
#define ST6COL(p, plane, s, v0, v1, v2, v3, v4, v5)                                                                  \
  wasm_v128_store(AT(p, plane, 0, s), v0), wasm_v128_store(AT(p, plane, 1, s), v1), wasm_v128_store(AT(p, plane, 2, s), v2); \
  wasm_v128_store(AT(p, plane, 3, s), v3), wasm_v128_store(AT(p, plane, 4, s), v4), wasm_v128_store(AT(p, plane, 5, s), v5)

/* The gradients' scratch: their two filter-sized and two tile-block areas, then one 4x4 block of dy (dy_source's block). */
#define TILE_AREAS(in_c, out_c) (AREA * (2 * PLANE(in_c, out_c) + PLANE(WINO_TB, in_c) + PLANE(WINO_TB, out_c)))

EXPORT(winograd_scratch_floats) int winograd_scratch_floats(int in_c, int out_c) {
  return TILE_AREAS(in_c, out_c) + TILE * TILE * out_c;
}

typedef struct {
  int b, oh0, ow0;
} tile_origin;

/* Tile t (in (batch, tile row, tile column) order) covers outputs [oh0, oh0 + 4) x [ow0, ow0 + 4). */
ALWAYS_INLINE tile_origin tile_at(const conv_geometry* g, int t) {
  const int tw = (g->out_w + TILE - 1) / TILE, th = (g->out_h + TILE - 1) / TILE;
  const int j = t % tw, rest = t / tw;
  const tile_origin o = {rest / th, TILE * (rest % th), TILE * j};
  return o;
}

ALWAYS_INLINE int tile_count(const conv_geometry* g) {
  return g->batch * ((g->out_h + TILE - 1) / TILE) * ((g->out_w + TILE - 1) / TILE);
}

/* How many of n positions starting at `from` lie in [0, size): the run [lo, hi) of offsets that do. */
ALWAYS_INLINE int first_inside(int from) { return from < 0 ? -from : 0; }
ALWAYS_INLINE int end_inside(int from, int n, int size) { return from + n > size ? size - from : n; }

/*
 * V = Bᵀ d B for one tile: d is the 6x6 input block at (oh0 - pad_top, ow0 - pad_left), zero outside x. Position
 * xi of channel c goes to out[xi * plane + c].
 */
ALWAYS_INLINE void input_tile(const float* x, const conv_geometry* g, tile_origin o, float* out, long plane) {
  const int ih0 = o.oh0 - g->pad_top, iw0 = o.ow0 - g->pad_left, ch = g->in_c;
  const long row = (long)g->in_w * ch;
  const float* base = x + ((long)o.b * g->in_h + ih0) * row + (long)iw0 * ch;
  const int r_lo = first_inside(ih0), r_hi = end_inside(ih0, 6, g->in_h);
  const int s_lo = first_inside(iw0), s_hi = end_inside(iw0, 6, g->in_w);
  const int inside = r_lo == 0 && r_hi == 6 && s_lo == 0 && s_hi == 6;
  const v128_t zero = wasm_f32x4_splat(0.0f);
  for (int c = 0; c < ch; c += 4) {
    float* p = out + c;
    for (int r = 0; r < 6; r++) {
      v128_t d0, d1, d2, d3, d4, d5;
      const float* src = base + r * row + c;
      if (inside) {
        d0 = wasm_v128_load(src), d1 = wasm_v128_load(src + ch), d2 = wasm_v128_load(src + 2 * ch);
        d3 = wasm_v128_load(src + 3 * ch), d4 = wasm_v128_load(src + 4 * ch), d5 = wasm_v128_load(src + 5 * ch);
      } else if (r < r_lo || r >= r_hi) {
        d0 = d1 = d2 = d3 = d4 = d5 = zero;
      } else {
#define LDX(s) ((s) >= s_lo && (s) < s_hi ? wasm_v128_load(src + (s) * ch) : zero)
        d0 = LDX(0), d1 = LDX(1), d2 = LDX(2), d3 = LDX(3), d4 = LDX(4), d5 = LDX(5);
#undef LDX
      }
      v128_t w0, w1, w2, w3, w4, w5;
      BT6(d0, d1, d2, d3, d4, d5, w0, w1, w2, w3, w4, w5);
      ST6ROW(p, plane, r, w0, w1, w2, w3, w4, w5);
    }
    for (int s = 0; s < 6; s++) {
      v128_t w0, w1, w2, w3, w4, w5, v0, v1, v2, v3, v4, v5;
      LD6COL(p, plane, s, w0, w1, w2, w3, w4, w5);
      BT6(w0, w1, w2, w3, w4, w5, v0, v1, v2, v3, v4, v5);
      ST6COL(p, plane, s, v0, v1, v2, v3, v4, v5);
    }
  }
}

/*
 * Where dy_tile reads a tile's 4x4 block of dy: dy itself, or, when the convolution is followed by a ReLU and a 2x2
 * max pool (pooled non-null), the pooled gradient, unpooled block by block into `block` (16 x Cout floats of scratch)
 * by pool.c's unpool_2x2_region, so that the gradient in front of the pool is never written to memory.
 */
typedef struct {
  const float* dy;
  const float* pooled;
  const unsigned char* codes;
  float* block;
} dy_source;

/* The block of tile o as dy_tile reads it: its top-left, floats per row, and how many rows and columns exist. */
typedef struct {
  const float* base;
  long row;
  int r_hi, s_hi;
} dy_block;

ALWAYS_INLINE dy_block block_of(dy_source src, const conv_geometry* g, int out_c, tile_origin o) {
  dy_block d;
  if (!src.pooled) {
    d.row = (long)g->out_w * out_c;
    d.base = src.dy + ((long)o.b * g->out_h + o.oh0) * d.row + (long)o.ow0 * out_c;
    d.r_hi = end_inside(o.oh0, TILE, g->out_h), d.s_hi = end_inside(o.ow0, TILE, g->out_w);
    return d;
  }
  /* The tile's windows, as winograd_conv pools them; positions no window covers get 0. */
  const int pool_h = g->out_h / 2, pool_w = g->out_w / 2;
  const int windows_h = end_inside(o.oh0 / 2, TILE / 2, pool_h), windows_w = end_inside(o.ow0 / 2, TILE / 2, pool_w);
  d.row = (long)TILE * out_c, d.base = src.block, d.r_hi = TILE, d.s_hi = TILE;
  if (windows_h < TILE / 2 || windows_w < TILE / 2) __builtin_memset(src.block, 0, (unsigned)(TILE * TILE * out_c) * sizeof(float));
  if (windows_h > 0 && windows_w > 0) {
    const long at = (((long)o.b * pool_h + o.oh0 / 2) * pool_w + o.ow0 / 2) * out_c;
    unpool_2x2_region(src.dy + at, src.pooled + at, src.codes + at, (long)pool_w * out_c, src.block, d.row, out_c, windows_h, windows_w);
  }
  return d;
}

/* Ŷ = A dy Aᵀ for one tile: dy's 4x4 block at (oh0, ow0), zero beyond the output. Layout as input_tile's. */
ALWAYS_INLINE void dy_tile(dy_source src, const conv_geometry* g, int out_c, tile_origin o, float* out, long plane) {
  const dy_block d = block_of(src, g, out_c, o);
  const v128_t zero = wasm_f32x4_splat(0.0f);
  for (int c = 0; c < out_c; c += 4) {
    float* p = out + c;
    for (int r = 0; r < TILE; r++) {
      v128_t y0 = zero, y1 = zero, y2 = zero, y3 = zero;
      if (r < d.r_hi) {
        const float* src_row = d.base + r * d.row + c;
        y0 = wasm_v128_load(src_row);
        if (d.s_hi > 1) y1 = wasm_v128_load(src_row + out_c);
        if (d.s_hi > 2) y2 = wasm_v128_load(src_row + 2 * out_c);
        if (d.s_hi > 3) y3 = wasm_v128_load(src_row + 3 * out_c);
      }
      v128_t q0, q1, q2, q3, q4, q5;
      AA6(y0, y1, y2, y3, q0, q1, q2, q3, q4, q5);
      ST6ROW(p, plane, r, q0, q1, q2, q3, q4, q5);
    }
    for (int s = 0; s < 6; s++) {
      const v128_t q0 = wasm_v128_load(AT(p, plane, 0, s)), q1 = wasm_v128_load(AT(p, plane, 1, s));
      const v128_t q2 = wasm_v128_load(AT(p, plane, 2, s)), q3 = wasm_v128_load(AT(p, plane, 3, s));
      v128_t v0, v1, v2, v3, v4, v5;
      AA6(q0, q1, q2, q3, v0, v1, v2, v3, v4, v5);
      ST6COL(p, plane, s, v0, v1, v2, v3, v4, v5);
    }
  }
}

/*
 * Y = Aᵀ M A for one tile, plus bias[c] when bias is non-null, then RELU (kernels.h) when relu: its first r_hi rows and s_hi
 * columns (those that exist) to dst, the tile's top-left, rows `row` floats apart. M's block is overwritten (it
 * stages the row pass).
 */
ALWAYS_INLINE void output_tile(float* m, long plane, float* dst, long row, int r_hi, int s_hi, int out_c, const float* bias, int relu) {
  const v128_t zero = wasm_f32x4_splat(0.0f);
  for (int c = 0; c < out_c; c += 4) {
    float* p = m + c;
    for (int r = 0; r < 6; r++) {
      v128_t m0, m1, m2, m3, m4, m5, z0, z1, z2, z3;
      LD6ROW(p, plane, r, m0, m1, m2, m3, m4, m5);
      AT6(m0, m1, m2, m3, m4, m5, z0, z1, z2, z3);
      wasm_v128_store(AT(p, plane, r, 0), z0), wasm_v128_store(AT(p, plane, r, 1), z1);
      wasm_v128_store(AT(p, plane, r, 2), z2), wasm_v128_store(AT(p, plane, r, 3), z3);
    }
    const v128_t b = bias ? wasm_v128_load(bias + c) : zero;
    for (int s = 0; s < s_hi; s++) {
      v128_t z0, z1, z2, z3, z4, z5, y0, y1, y2, y3;
      LD6COL(p, plane, s, z0, z1, z2, z3, z4, z5);
      AT6(z0, z1, z2, z3, z4, z5, y0, y1, y2, y3);
      y0 = ADD(y0, b), y1 = ADD(y1, b), y2 = ADD(y2, b), y3 = ADD(y3, b);
      if (relu) {
        y0 = RELU(y0), y1 = RELU(y1), y2 = RELU(y2), y3 = RELU(y3);
      }
      float* q = dst + (long)s * out_c + c;
      wasm_v128_store(q, y0);
      if (r_hi > 1) wasm_v128_store(q + row, y1);
      if (r_hi > 2) wasm_v128_store(q + 2 * row, y2);
      if (r_hi > 3) wasm_v128_store(q + 3 * row, y3);
    }
  }
}

/* dx += B M Bᵀ for one tile, over the 6x6 input block that lies inside x. M's block is overwritten. */
ALWAYS_INLINE void scatter_tile(float* m, long plane, float* dx, const conv_geometry* g, tile_origin o) {
  const int ih0 = o.oh0 - g->pad_top, iw0 = o.ow0 - g->pad_left, ch = g->in_c;
  const long row = (long)g->in_w * ch;
  float* base = dx + ((long)o.b * g->in_h + ih0) * row + (long)iw0 * ch;
  const int r_lo = first_inside(ih0), r_hi = end_inside(ih0, 6, g->in_h);
  const int s_lo = first_inside(iw0), s_hi = end_inside(iw0, 6, g->in_w);
  for (int c = 0; c < ch; c += 4) {
    float* p = m + c;
    for (int r = 0; r < 6; r++) {
      v128_t m0, m1, m2, m3, m4, m5, w0, w1, w2, w3, w4, w5;
      LD6ROW(p, plane, r, m0, m1, m2, m3, m4, m5);
      BB6(m0, m1, m2, m3, m4, m5, w0, w1, w2, w3, w4, w5);
      ST6ROW(p, plane, r, w0, w1, w2, w3, w4, w5);
    }
    for (int s = s_lo; s < s_hi; s++) {
      v128_t w0, w1, w2, w3, w4, w5, d0, d1, d2, d3, d4, d5;
      LD6COL(p, plane, s, w0, w1, w2, w3, w4, w5);
      BB6(w0, w1, w2, w3, w4, w5, d0, d1, d2, d3, d4, d5);
      float* dst = base + (long)s * ch + c;
#define ACC(r, v)                                                                    \
  if ((r) >= r_lo && (r) < r_hi) {                                                   \
    float* q = dst + (r) * row;                                                      \
    wasm_v128_store(q, ADD(wasm_v128_load(q), v));                                   \
  }
      ACC(0, d0) ACC(1, d1) ACC(2, d2) ACC(3, d3) ACC(4, d4) ACC(5, d5)
#undef ACC
    }
  }
}

/* U = G g Gᵀ for every (ci, co) of a [3, 3, Cin, Cout] filter: u[xi][ci][co]. */
ALWAYS_INLINE void filter_transform(const float* w, float* u, int in_c, int out_c) {
  const long plane = PLANE(in_c, out_c), taps = (long)in_c * out_c;
  for (long i = 0; i < taps; i += 4) {
    const float* src = w + i;
    float* p = u + i;
    for (int kh = 0; kh < 3; kh++) {
      const v128_t g0 = wasm_v128_load(src + (kh * 3) * taps), g1 = wasm_v128_load(src + (kh * 3 + 1) * taps);
      const v128_t g2 = wasm_v128_load(src + (kh * 3 + 2) * taps);
      v128_t h0, h1, h2, h3, h4, h5;
      GG6(g0, g1, g2, h0, h1, h2, h3, h4, h5);
      ST6ROW(p, plane, kh, h0, h1, h2, h3, h4, h5);
    }
    for (int s = 0; s < 6; s++) {
      const v128_t h0 = wasm_v128_load(AT(p, plane, 0, s)), h1 = wasm_v128_load(AT(p, plane, 1, s));
      const v128_t h2 = wasm_v128_load(AT(p, plane, 2, s));
      v128_t u0, u1, u2, u3, u4, u5;
      GG6(h0, h1, h2, u0, u1, u2, u3, u4, u5);
      ST6COL(p, plane, s, u0, u1, u2, u3, u4, u5);
    }
  }
}

/* dW = Gᵀ dU G for every (ci, co): du[xi][ci][co] -> dw[3][3][Cin][Cout]. dU is overwritten. */
ALWAYS_INLINE void filter_gradient_inverse(float* du, float* dw, int in_c, int out_c) {
  const long plane = PLANE(in_c, out_c), taps = (long)in_c * out_c;
  for (long i = 0; i < taps; i += 4) {
    float* p = du + i;
    for (int r = 0; r < 6; r++) {
      v128_t m0, m1, m2, m3, m4, m5, e0, e1, e2;
      LD6ROW(p, plane, r, m0, m1, m2, m3, m4, m5);
      GT6(m0, m1, m2, m3, m4, m5, e0, e1, e2);
      wasm_v128_store(AT(p, plane, r, 0), e0), wasm_v128_store(AT(p, plane, r, 1), e1), wasm_v128_store(AT(p, plane, r, 2), e2);
    }
    for (int s = 0; s < 3; s++) {
      v128_t e0, e1, e2, e3, e4, e5, g0, g1, g2;
      LD6COL(p, plane, s, e0, e1, e2, e3, e4, e5);
      GT6(e0, e1, e2, e3, e4, e5, g0, g1, g2);
      float* q = dw + i + (long)s * taps;
      wasm_v128_store(q, g0), wasm_v128_store(q + 3 * taps, g1), wasm_v128_store(q + 6 * taps, g2);
    }
  }
}

/*
 * y[B, OH, OW, Cout] <- x conv w (w: [3, 3, Cin, Cout]), then the epilogue `flags` asks for (kernels.h); overwrites y.
 * With pooled non-null instead (y is then unused): pooled[B, OH / 2, OW / 2, Cout] and codes (bytes at pooled's
 * indices) <- the 2x2, stride-2 max pool of that output (pool.c), each tile staged in scratch and pooled there, so
 * the output itself never reaches memory. Tiles start at multiples of 4, so every window lies in one tile.
 */
EXPORT(winograd_conv) void winograd_conv(const float* x, const float* w, const float* bias, float* y, float* pooled, unsigned char* codes, float* scratch, int out_c, int flags, const int* geometry) {
  const conv_geometry g = load_geometry(geometry);
  const int in_c = g.in_c, tiles = tile_count(&g);
  float* u = scratch;
  /* The forward pass needs one filter transform; the second, dx's transpose, holds a pooled tile (16 x Cout floats). */
  float* staged = u + AREA * PLANE(in_c, out_c);
  float* v = u + 2 * AREA * PLANE(in_c, out_c);
  float* m = v + AREA * PLANE(WINO_TB, in_c);
  const float* b = flags & EPILOGUE_BIAS ? bias : 0;
  const int relu = flags & EPILOGUE_RELU, pool_h = g.out_h / 2, pool_w = g.out_w / 2;
  filter_transform(w, u, in_c, out_c);
  for (int t0 = 0; t0 < tiles; t0 += WINO_TB) {
    const int nt = tiles - t0 < WINO_TB ? tiles - t0 : WINO_TB;
    for (int t = 0; t < nt; t++) input_tile(x, &g, tile_at(&g, t0 + t), v + (long)t * in_c, PLANE(nt, in_c));
    for (int xi = 0; xi < AREA; xi++) {
      gemm_nn(v + xi * PLANE(nt, in_c), u + xi * PLANE(in_c, out_c), m + xi * PLANE(nt, out_c), nt, in_c, out_c, 0);
    }
    for (int t = 0; t < nt; t++) {
      const tile_origin o = tile_at(&g, t0 + t);
      const int r_hi = end_inside(o.oh0, TILE, g.out_h), s_hi = end_inside(o.ow0, TILE, g.out_w);
      if (!pooled) {
        const long row = (long)g.out_w * out_c;
        output_tile(m + (long)t * out_c, PLANE(nt, out_c), y + ((long)o.b * g.out_h + o.oh0) * row + (long)o.ow0 * out_c, row, r_hi, s_hi, out_c, b, relu);
        continue;
      }
      /* The tile's windows: those of its rows and columns below 2 * pool_h and 2 * pool_w. */
      const int windows_h = end_inside(o.oh0 / 2, TILE / 2, pool_h), windows_w = end_inside(o.ow0 / 2, TILE / 2, pool_w);
      if (windows_h <= 0 || windows_w <= 0) continue;
      output_tile(m + (long)t * out_c, PLANE(nt, out_c), staged, (long)TILE * out_c, r_hi, s_hi, out_c, b, relu);
      const long at = (((long)o.b * pool_h + o.oh0 / 2) * pool_w + o.ow0 / 2) * out_c;
      max_pool_2x2_region(staged, (long)TILE * out_c, pooled + at, codes + at, (long)pool_w * out_c, out_c, windows_h, windows_w);
    }
  }
}

/*
 * The gradients take dy[B, OH, OW, Cout], or with pooled non-null the gradient of the 2x2 max pool that follows a ReLU
 * of the convolution's output (winograd_conv with pooled): dy and pooled [B, OH / 2, OW / 2, Cout], codes at pooled's
 * indices (dy_source).
 */

/* dx[B, H, W, Cin] <- the input gradient of that convolution; overwrites dx. */
EXPORT(winograd_conv_dx) void winograd_conv_dx(const float* dy, const float* pooled, const unsigned char* codes, const float* w, float* dx,
                                               float* scratch, int out_c, const int* geometry) {
  const conv_geometry g = load_geometry(geometry);
  const int in_c = g.in_c, tiles = tile_count(&g);
  float* u = scratch;
  float* ut = u + AREA * PLANE(in_c, out_c);
  float* yh = ut + AREA * PLANE(in_c, out_c);
  float* m = yh + AREA * PLANE(WINO_TB, out_c);
  const dy_source src = {dy, pooled, codes, scratch + TILE_AREAS(in_c, out_c)};
  filter_transform(w, u, in_c, out_c);
  for (int xi = 0; xi < AREA; xi++) transpose_2d(u + xi * PLANE(in_c, out_c), ut + xi * PLANE(in_c, out_c), in_c, out_c);
  __builtin_memset(dx, 0, (unsigned)(g.batch * g.in_h * g.in_w * in_c) * sizeof(float));
  for (int t0 = 0; t0 < tiles; t0 += WINO_TB) {
    const int nt = tiles - t0 < WINO_TB ? tiles - t0 : WINO_TB;
    for (int t = 0; t < nt; t++) dy_tile(src, &g, out_c, tile_at(&g, t0 + t), yh + (long)t * out_c, PLANE(nt, out_c));
    for (int xi = 0; xi < AREA; xi++) {
      gemm_nn(yh + xi * PLANE(nt, out_c), ut + xi * PLANE(in_c, out_c), m + xi * PLANE(nt, in_c), nt, out_c, in_c, 0);
    }
    for (int t = 0; t < nt; t++) scatter_tile(m + (long)t * in_c, PLANE(nt, in_c), dx, &g, tile_at(&g, t0 + t));
  }
}

/* dw[3, 3, Cin, Cout] <- the filter gradient of that convolution, from x and dy; overwrites dw. */
EXPORT(winograd_conv_dw) void winograd_conv_dw(const float* x, const float* dy, const float* pooled, const unsigned char* codes, float* dw,
                                               float* scratch, int out_c, const int* geometry) {
  const conv_geometry g = load_geometry(geometry);
  const int in_c = g.in_c, tiles = tile_count(&g);
  float* du = scratch;
  float* v = du + 2 * AREA * PLANE(in_c, out_c);
  float* yh = v + AREA * PLANE(WINO_TB, in_c);
  const dy_source src = {dy, pooled, codes, scratch + TILE_AREAS(in_c, out_c)};
  for (int t0 = 0; t0 < tiles; t0 += WINO_TB) {
    const int nt = tiles - t0 < WINO_TB ? tiles - t0 : WINO_TB;
    for (int t = 0; t < nt; t++) {
      const tile_origin o = tile_at(&g, t0 + t);
      input_tile(x, &g, o, v + (long)t * in_c, PLANE(nt, in_c));
      dy_tile(src, &g, out_c, o, yh + (long)t * out_c, PLANE(nt, out_c));
    }
    for (int xi = 0; xi < AREA; xi++) {
      gemm_tn(v + xi * PLANE(nt, in_c), yh + xi * PLANE(nt, out_c), du + xi * PLANE(in_c, out_c), in_c, nt, out_c, t0 > 0);
    }
  }
  filter_gradient_inverse(du, dw, in_c, out_c);
}
