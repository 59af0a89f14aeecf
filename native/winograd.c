/*
 * Winograd F(4x4, 3x3) and F(5x5, 3x3) convolutions for 3x3, stride 1, undilated layers (issue #17, part 3): the
 * forward pass, the input gradient and the filter gradient, NHWC, any padding. Each 4x4 block of outputs ("tile")
 * reads a 6x6 block of the input; in the transformed domain the convolution is 36 independent GEMMs, one per
 * position xi of the 6x6 block, over channels (5x5 tiles: 7x7 blocks, 49 GEMMs; below, the 4x4 family):
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
 * its own (bench/conv-layers.ts measures the kernels of this file). Ms per pass, forward /
 * dx / dW, median of 15, Node 20, 2 vCPU Xeon:
 *   13x13x32->64 valid  2x2: 3.9 / 4.1 / 4.0   4x4: 2.5 / 2.6 / 2.4
 *   28x28x32->32 same   2x2: 12.4 / 12.6 / 12.1  4x4: 8.2 / 8.7 / 8.0
 *   14x14x32->64 same   2x2: 5.4 / 5.6 / 5.3   4x4: 4.4 / 4.5 / 4.3
 *   14x14x64->64 same   2x2: 10.5 / 10.9 / 10.5  4x4: 8.6 / 8.9 / 8.4
 * The price is rounding: 4x4 tiles' relative error against a float64 reference is about 2e-6 to 2e-5 (2x2: 2e-7 to
 * 4e-6), inside the 1e-4 the kernel tests require. WINO_TB = 32 was as fast as 64 and faster than 16.
 *
 * Why 5x5 tiles too: a GEMM does (T + 2)² multiply-adds per T² outputs, 2.25 per output for T = 4, 1.96 for T = 5,
 * but tiles overhang the output. 14x14 takes 16 4-tiles (576 positions per image) or 9 5-tiles (441); 28x28 takes
 * 1 764 either way, and a pool's 10x10 of cnn's 11x11 takes 324 or 196 (src/shared/kernels/winograd.ts winogradTile
 * picks per layer). 5-tiles' transforms cost more per tile (7-point rows), and 7x7 tiles (F(7x7, 3x3), 1.65 per
 * output) round too much: 5e-5 to 4e-4 relative error in a float32 model of the transforms, over the 1e-4 the tests
 * require (F(5x5, 3x3): 3e-6 to 1e-5 by the same measure). Both families are one template, winograd_family.h.
 *
 * A NaN or ±Inf in an input tile makes all 16 (or 25) outputs of its tile NaN (the transforms mix the tile; Inf - Inf
 * is NaN), a superset of the outputs a direct convolution makes non-finite.
 *
 * Channels go four to a v128: in_c and out_c must be multiples of 4 (src/shared/kernels/winograd.ts routes only
 * such layers here). Scratch is one caller-allocated buffer of winograd_scratch_floats(in_c, out_c) floats.
 */
#include "kernels.h"

/*
 * Consecutive positions' planes are PLANE floats apart: the matrix plus one cache line. The transforms touch all 36
 * planes of a tile, and planes a power of two apart (32 tiles x 32 channels is exactly 4 KiB) all map to the same L1
 * sets, and every transform then evicts the planes it just wrote. (Measured with 2x2 tiles on `cnn`'s second layer
 * at B=64: the padding took each pass from 5.0-7.0 ms to 3.9 ms, median of 15, Node 20, 2 vCPU Xeon.)
 */
#define PLANE(rows, cols) ((long)(rows) * (cols) + 16)

#define WINO_TB 32

#define ADD wasm_f32x4_add
#define SUB wasm_f32x4_sub
#define MUL wasm_f32x4_mul
#define K(v) wasm_f32x4_splat(v)

/* One row or column of a tile's block, four channels per value: a family uses the first N (or T, or 3). */
typedef struct {
  v128_t v[7];
} vec7;

/* F(4x4, 3x3): the interpolation points 0, ±1, ±2, ∞ (the matrices above). */
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

ALWAYS_INLINE vec7 f4_bt(vec7 d) {
  vec7 o;
  BT6(d.v[0], d.v[1], d.v[2], d.v[3], d.v[4], d.v[5], o.v[0], o.v[1], o.v[2], o.v[3], o.v[4], o.v[5]);
  return o;
}
ALWAYS_INLINE vec7 f4_bb(vec7 m) {
  vec7 o;
  BB6(m.v[0], m.v[1], m.v[2], m.v[3], m.v[4], m.v[5], o.v[0], o.v[1], o.v[2], o.v[3], o.v[4], o.v[5]);
  return o;
}
ALWAYS_INLINE vec7 f4_at(vec7 m) {
  vec7 o;
  AT6(m.v[0], m.v[1], m.v[2], m.v[3], m.v[4], m.v[5], o.v[0], o.v[1], o.v[2], o.v[3]);
  return o;
}
ALWAYS_INLINE vec7 f4_aa(vec7 y) {
  vec7 o;
  AA6(y.v[0], y.v[1], y.v[2], y.v[3], o.v[0], o.v[1], o.v[2], o.v[3], o.v[4], o.v[5]);
  return o;
}
ALWAYS_INLINE vec7 f4_gg(vec7 g) {
  vec7 o;
  GG6(g.v[0], g.v[1], g.v[2], o.v[0], o.v[1], o.v[2], o.v[3], o.v[4], o.v[5]);
  return o;
}
ALWAYS_INLINE vec7 f4_gt(vec7 m) {
  vec7 o;
  GT6(m.v[0], m.v[1], m.v[2], m.v[3], m.v[4], m.v[5], o.v[0], o.v[1], o.v[2]);
  return o;
}

/*
 * F(5x5, 3x3): the interpolation points ±1, ±2, ±1/2, ∞ (symmetric pairs, so each transform works on sums and
 * differences of pairs). Rows of Bᵀ scaled to small integers where that is exact, G scaled inversely:
 *
 *   Bᵀ = [ 1  1 -17/4 -17/4    1  1 0]   G = [ -2/9  -2/9  -2/9]   Aᵀ = [1  1  1  1    1     1   0]
 *        [-1  1  17/4 -17/4   -1  1 0]       [  2/9  -2/9   2/9]        [1 -1  2 -2  1/2  -1/2   0]
 *        [ 2  1   -10    -5    8  4 0]       [1/180  1/90  1/45]        [1  1  4  4  1/4   1/4   0]
 *        [-2  1    10    -5   -8  4 0]       [-1/180 1/90 -1/45]        [1 -1  8 -8  1/8  -1/8   0]
 *        [ 4  8    -5   -10    1  2 0]       [ 8/45  4/45  2/45]        [1  1 16 16 1/16  1/16  1]
 *        [-4  8     5   -10   -1  2 0]       [-8/45  4/45 -2/45]
 *        [-1  0  21/4     0 -21/4  0 1]       [    0     0     1]
 *
 * Relative error against float64 over 64 channels: median 3.4e-6, worst 1.1e-5 of 100 random tiles (F(4x4): 2.0e-6
 * and 9.4e-6 by the same measure), inside the kernel tests' 1e-4.
 */
ALWAYS_INLINE vec7 f5_bt(vec7 d) {
  vec7 o;
  const v128_t a = MADD(K(-4.25f), d.v[2], ADD(d.v[0], d.v[4])), b = MADD(K(-4.25f), d.v[3], ADD(d.v[1], d.v[5]));
  const v128_t c = MUL(K(2.0f), MADD(K(-5.0f), d.v[2], MADD(K(4.0f), d.v[4], d.v[0]))), e = MADD(K(-5.0f), d.v[3], MADD(K(4.0f), d.v[5], d.v[1]));
  const v128_t f = MADD(K(4.0f), d.v[0], MADD(K(-5.0f), d.v[2], d.v[4])), h = MUL(K(2.0f), MADD(K(4.0f), d.v[1], MADD(K(-5.0f), d.v[3], d.v[5])));
  o.v[0] = ADD(a, b), o.v[1] = SUB(b, a);
  o.v[2] = ADD(c, e), o.v[3] = SUB(e, c);
  o.v[4] = ADD(f, h), o.v[5] = SUB(h, f);
  o.v[6] = MADD(K(5.25f), SUB(d.v[2], d.v[4]), SUB(d.v[6], d.v[0]));
  return o;
}
ALWAYS_INLINE vec7 f5_bb(vec7 m) {
  vec7 o;
  const v128_t p01 = SUB(m.v[0], m.v[1]), s01 = ADD(m.v[0], m.v[1]), p23 = SUB(m.v[2], m.v[3]), s23 = ADD(m.v[2], m.v[3]);
  const v128_t p45 = SUB(m.v[4], m.v[5]), s45 = ADD(m.v[4], m.v[5]), m6 = m.v[6];
  o.v[0] = SUB(MADD(K(2.0f), p23, MADD(K(4.0f), p45, p01)), m6);
  o.v[1] = MADD(K(8.0f), s45, ADD(s01, s23));
  o.v[2] = MADD(K(-4.25f), p01, MADD(K(-10.0f), p23, MADD(K(-5.0f), p45, MUL(K(5.25f), m6))));
  o.v[3] = MADD(K(-4.25f), s01, MADD(K(-5.0f), s23, MUL(K(-10.0f), s45)));
  o.v[4] = MADD(K(8.0f), p23, MADD(K(-5.25f), m6, ADD(p01, p45)));
  o.v[5] = MADD(K(4.0f), s23, MADD(K(2.0f), s45, s01));
  o.v[6] = m6;
  return o;
}
ALWAYS_INLINE vec7 f5_at(vec7 m) {
  vec7 o;
  const v128_t p01 = SUB(m.v[0], m.v[1]), s01 = ADD(m.v[0], m.v[1]), p23 = SUB(m.v[2], m.v[3]), s23 = ADD(m.v[2], m.v[3]);
  const v128_t p45 = SUB(m.v[4], m.v[5]), s45 = ADD(m.v[4], m.v[5]);
  o.v[0] = ADD(ADD(s01, s23), s45);
  o.v[1] = MADD(K(2.0f), p23, MADD(K(0.5f), p45, p01));
  o.v[2] = MADD(K(4.0f), s23, MADD(K(0.25f), s45, s01));
  o.v[3] = MADD(K(8.0f), p23, MADD(K(0.125f), p45, p01));
  o.v[4] = ADD(MADD(K(16.0f), s23, MADD(K(0.0625f), s45, s01)), m.v[6]);
  return o;
}
ALWAYS_INLINE vec7 f5_aa(vec7 y) {
  vec7 o;
  const v128_t e1 = ADD(ADD(y.v[0], y.v[2]), y.v[4]), o1 = ADD(y.v[1], y.v[3]);
  const v128_t e2 = MADD(K(4.0f), y.v[2], MADD(K(16.0f), y.v[4], y.v[0])), o2 = MADD(K(2.0f), y.v[1], MUL(K(8.0f), y.v[3]));
  const v128_t e3 = MADD(K(0.25f), y.v[2], MADD(K(0.0625f), y.v[4], y.v[0])), o3 = MADD(K(0.5f), y.v[1], MUL(K(0.125f), y.v[3]));
  o.v[0] = ADD(e1, o1), o.v[1] = SUB(e1, o1);
  o.v[2] = ADD(e2, o2), o.v[3] = SUB(e2, o2);
  o.v[4] = ADD(e3, o3), o.v[5] = SUB(e3, o3);
  o.v[6] = y.v[4];
  return o;
}
ALWAYS_INLINE vec7 f5_gg(vec7 g) {
  vec7 o;
  const v128_t s02 = ADD(g.v[0], g.v[2]);
  o.v[0] = MUL(K(-2.0f / 9.0f), ADD(s02, g.v[1]));
  o.v[1] = MUL(K(2.0f / 9.0f), SUB(s02, g.v[1]));
  const v128_t e2 = MADD(K(1.0f / 180.0f), g.v[0], MUL(K(1.0f / 45.0f), g.v[2])), m2 = MUL(K(1.0f / 90.0f), g.v[1]);
  o.v[2] = ADD(m2, e2), o.v[3] = SUB(m2, e2);
  const v128_t e4 = MADD(K(8.0f / 45.0f), g.v[0], MUL(K(2.0f / 45.0f), g.v[2])), m4 = MUL(K(4.0f / 45.0f), g.v[1]);
  o.v[4] = ADD(m4, e4), o.v[5] = SUB(m4, e4);
  o.v[6] = g.v[2];
  return o;
}
ALWAYS_INLINE vec7 f5_gt(vec7 m) {
  vec7 o;
  const v128_t p01 = SUB(m.v[1], m.v[0]), s01 = ADD(m.v[0], m.v[1]), p23 = SUB(m.v[2], m.v[3]), s23 = ADD(m.v[2], m.v[3]);
  const v128_t p45 = SUB(m.v[4], m.v[5]), s45 = ADD(m.v[4], m.v[5]);
  o.v[0] = MADD(K(2.0f / 9.0f), p01, MADD(K(1.0f / 180.0f), p23, MUL(K(8.0f / 45.0f), p45)));
  o.v[1] = MADD(K(-2.0f / 9.0f), s01, MADD(K(1.0f / 90.0f), s23, MUL(K(4.0f / 45.0f), s45)));
  o.v[2] = ADD(MADD(K(2.0f / 9.0f), p01, MADD(K(1.0f / 45.0f), p23, MUL(K(2.0f / 45.0f), p45))), m.v[6]);
  return o;
}

typedef struct {
  int b, oh0, ow0;
} tile_origin;

/* Tile t (in (batch, tile row, tile column) order) covers outputs [oh0, oh0 + tile) x [ow0, ow0 + tile). */
ALWAYS_INLINE tile_origin tile_at(const conv_geometry* g, int t, int tile) {
  const int tw = (g->out_w + tile - 1) / tile, th = (g->out_h + tile - 1) / tile;
  const int j = t % tw, rest = t / tw;
  const tile_origin o = {rest / th, tile * (rest % th), tile * j};
  return o;
}

ALWAYS_INLINE int tile_count(const conv_geometry* g, int tile) {
  return g->batch * ((g->out_h + tile - 1) / tile) * ((g->out_w + tile - 1) / tile);
}

/* The offsets [lo, hi) of the n positions starting at `from` that lie in [0, size): lo = first_inside, hi =
 * end_inside, which is <= lo (possibly negative) when none does. */
ALWAYS_INLINE int first_inside(int from) { return from < 0 ? -from : 0; }
ALWAYS_INLINE int end_inside(int from, int n, int size) { return from + n > size ? size - from : n; }

/*
 * Where dy_tile reads a tile's T x T block of dy:
 * - dy itself;
 * - when the convolution is followed by a ReLU and a 2x2 max pool (pooled non-null), the pooled gradient, unpooled
 *   block by block into `block` (scratch) by pool.c's unpool_2x2_region;
 * - when it is followed by training-mode batch norm (bn_z non-null: the convolution's output, batch norm's input),
 *   then optionally a ReLU (bn_relu) or a ReLU and the pool (pooled non-null), the gradient of that chain: batch
 *   norm's dx = f (g - a - (x - mean) b) computed per block into `block` from g (dy, ReLU-masked, or unpooled) and
 *   bn_z, with bn_coef [mean | f | offset | a | b] (Cout floats each: batch_norm.c batch_norm_grad_params).
 * Either way the gradient in front of the pool or the batch norm is never written to memory.
 */
typedef struct {
  const float* dy;
  const float* pooled;
  const unsigned char* codes;
  float* block;
  const float* bn_z;
  const float* bn_coef;
  int bn_relu;
} dy_source;

/* The block of tile o as dy_tile reads it: its top-left, floats per row, and how many rows and columns exist. */
typedef struct {
  const float* base;
  long row;
  int r_hi, s_hi;
} dy_block;

/* The side of the even-aligned block of the pooled gradient's windows that a tile's rows or columns touch: 4 or 6. */
ALWAYS_INLINE int window_side(int tile) { return 2 * ((tile + 1) / 2); }

/*
 * The pooled gradient around tile o unpooled (pool.c unpool_2x2_region) into `region`, window_side(tile)² x Cout floats
 * of scratch: the even-aligned block of the windows the tile's rows and columns touch (a 5-tile may start at an odd
 * row or column), 0 where no window reaches. Returns where the tile's top-left lies in it; its rows are
 * window_side(tile) x Cout floats apart.
 */
ALWAYS_INLINE const float* unpooled_region(dy_source src, const conv_geometry* g, int out_c, tile_origin o, int tile, float* region) {
  const int side = window_side(tile), pool_h = g->out_h / 2, pool_w = g->out_w / 2;
  const int wr0 = o.oh0 / 2, wc0 = o.ow0 / 2;
  const int windows_h = end_inside(wr0, side / 2, pool_h), windows_w = end_inside(wc0, side / 2, pool_w);
  const long region_row = (long)side * out_c;
  /* unpool_2x2_region writes all four positions of every window: only a region the windows do not fill needs zeros. */
  if (windows_h < side / 2 || windows_w < side / 2) __builtin_memset(region, 0, (unsigned)(side * side * out_c) * sizeof(float));
  if (windows_h > 0 && windows_w > 0) {
    const long p_at = (((long)o.b * pool_h + wr0) * pool_w + wc0) * out_c;
    unpool_2x2_region(src.dy + p_at, src.pooled + p_at, src.codes + p_at, (long)pool_w * out_c, region, region_row, out_c, windows_h, windows_w);
  }
  return region + (o.oh0 - 2 * wr0) * region_row + (long)(o.ow0 - 2 * wc0) * out_c;
}

/*
 * Batch norm's dx over tile o's block (bn_z non-null) into `block` (tile x tile x Cout floats) by batch_norm_dx_run
 * (kernels.h), so the values are those batch_norm_train_grad and batch_norm_pool_grad would have written; only the
 * rows and columns inside the output (dy_tile reads 0 beyond them). With pooled, the gradient it takes is the
 * unpooled region after the block (unpooled_region).
 */
ALWAYS_INLINE dy_block batch_norm_block(dy_source src, const conv_geometry* g, int out_c, tile_origin o, int tile) {
  const long row = (long)g->out_w * out_c, block_row = (long)tile * out_c;
  const int r_hi = end_inside(o.oh0, tile, g->out_h), s_hi = end_inside(o.ow0, tile, g->out_w);
  const long at = ((long)o.b * g->out_h + o.oh0) * row + (long)o.ow0 * out_c;
  const float* gs = src.pooled ? unpooled_region(src, g, out_c, o, tile, src.block + tile * block_row) : src.dy + at;
  const long g_row = src.pooled ? (long)window_side(tile) * out_c : row;
  const float* xs = src.bn_z + at;
  for (int r = 0; r < r_hi; r++) batch_norm_dx_run(gs + r * g_row, xs + r * row, src.bn_coef, src.bn_relu, src.block + r * block_row, s_hi, out_c);
  const dy_block d = {src.block, block_row, r_hi, s_hi};
  return d;
}

ALWAYS_INLINE dy_block block_of(dy_source src, const conv_geometry* g, int out_c, tile_origin o, int tile) {
  if (src.bn_z) return batch_norm_block(src, g, out_c, o, tile);
  dy_block d;
  if (!src.pooled) {
    d.row = (long)g->out_w * out_c;
    d.base = src.dy + ((long)o.b * g->out_h + o.oh0) * d.row + (long)o.ow0 * out_c;
    d.r_hi = end_inside(o.oh0, tile, g->out_h), d.s_hi = end_inside(o.ow0, tile, g->out_w);
    return d;
  }
  /* The tile's windows, as winograd_conv pools them; positions no window covers get 0. */
  d.base = unpooled_region(src, g, out_c, o, tile, src.block), d.row = (long)window_side(tile) * out_c, d.r_hi = tile, d.s_hi = tile;
  return d;
}

#define WF f4
#define TILE 4
#include "winograd_family.h"
#undef TILE
#undef WF

#define WF f5
#define TILE 5
#include "winograd_family.h"
#undef TILE
#undef WF

/* Floats of scratch any of the kernels below needs for a layer, for either tile size: the larger family's. */
ALWAYS_INLINE long family_scratch_floats(int in_c, int out_c) {
  const long f4 = f4_scratch_floats(in_c, out_c), f5 = f5_scratch_floats(in_c, out_c);
  return f4 > f5 ? f4 : f5;
}

/* The scratch a caller allocates: the family's, then the forward pass's moments (4 x Cout floats: Cout doubles of
 * means, then of M2 sums). */
EXPORT(winograd_scratch_floats) int winograd_scratch_floats(int in_c, int out_c) {
  return (int)(family_scratch_floats(in_c, out_c) + 4L * out_c);
}

/*
 * The outputs a 2x2, stride-2 max pool reads: all but the last row and column of odd sides, which no window covers.
 * Convolutions followed by the pool compute only these (and their gradients see dy = 0 beyond them).
 */
ALWAYS_INLINE conv_geometry pooled_part(conv_geometry g) {
  g.out_h = 2 * (g.out_h / 2), g.out_w = 2 * (g.out_w / 2);
  return g;
}

/*
 * y[B, OH, OW, Cout] <- x conv w (w: [3, 3, Cin, Cout]), then the epilogue `flags` asks for (kernels.h); overwrites y.
 * tile is 4 or 5 (F(4x4, 3x3) or F(5x5, 3x3)). With mean non-null (and y written), also the output's mean and (biased)
 * variance per channel over all its positions, as moments_rows (batch_norm.c) would give them up to the order of the
 * additions: batch norm's moments without another pass over y.
 * With pooled non-null: pooled[B, OH / 2, OW / 2, Cout] and codes (bytes at pooled's indices) <- the 2x2, stride-2 max
 * pool of that output (pool.c), of which only the part some window reads is computed. 4-tiles start at multiples of
 * 4, so every window lies in one tile, which is staged in scratch and pooled there: the output never reaches memory
 * (y is unused). 5-tiles do not keep windows whole: y is then scratch for that part ([B, 2 (OH / 2), 2 (OW / 2), Cout]
 * floats), written, then pooled.
 */
EXPORT(winograd_conv) void winograd_conv(const float* x, const float* w, const float* bias, float* y, float* pooled, unsigned char* codes,
                                         float* mean, float* variance, float* scratch, int out_c, int flags, int tile, const int* geometry) {
  const conv_geometry g = load_geometry(geometry);
  const conv_geometry part = pooled ? pooled_part(g) : g;
  double* stats = mean && !pooled ? (double*)(scratch + family_scratch_floats(g.in_c, out_c)) : 0;
  if (stats) __builtin_memset(stats, 0, (unsigned)(2 * out_c) * sizeof(double));
  if (tile == 5) f5_conv(x, w, bias, y, 0, 0, scratch, stats, out_c, flags, &part);
  else f4_conv(x, w, bias, pooled ? 0 : y, pooled, codes, scratch, stats, out_c, flags, &part);
  /* The part's sides are even, so its rows pair within each image and the whole batch pools as one tall image. */
  if (pooled && tile == 5) {
    max_pool_2x2_region(y, (long)part.out_w * out_c, pooled, codes, (long)(part.out_w / 2) * out_c, out_c, g.batch * part.out_h / 2, part.out_w / 2);
  }
  if (stats) store_moments(stats, stats + out_c, (double)g.batch * g.out_h * g.out_w, mean, variance, out_c);
}

/*
 * The stock gradients multiply every input by the dy of each output it meets, 0 included, so a NaN or ±Inf input met
 * only by the output row or column that no pool window reads still makes dW non-finite (0 x NaN), and the NaN guard
 * stops that step. The cropped tiles (pooled_part) never read that input row (column): if it holds a non-finite value,
 * every entry of dw is made NaN, a superset of the entries the stock kernel makes non-finite.
 */
ALWAYS_INLINE void poison_uncovered(const float* x, const conv_geometry* full, const conv_geometry* part, float* dw, int n) {
  const int c = full->in_c;
  const long row = (long)full->in_w * c;
  /* The input row (column) that only the last output row (column) reads: 2 below it, 3x3 stride 1. */
  const int ih = full->out_h - 1 + 2 - full->pad_top, iw = full->out_w - 1 + 2 - full->pad_left;
  v128_t bad = wasm_f32x4_splat(0.0f);
  for (int b = 0; b < full->batch; b++) {
    const float* image = x + (long)b * full->in_h * row;
    if (part->out_h < full->out_h && ih >= 0 && ih < full->in_h) {
      for (long i = 0; i < row; i += 4) {
        const v128_t v = wasm_v128_load(image + ih * row + i);
        bad = wasm_f32x4_add(bad, wasm_f32x4_sub(v, v));
      }
    }
    if (part->out_w < full->out_w && iw >= 0 && iw < full->in_w) {
      for (int h = 0; h < full->in_h; h++) {
        for (int ci = 0; ci < c; ci += 4) {
          const v128_t v = wasm_v128_load(image + h * row + (long)iw * c + ci);
          bad = wasm_f32x4_add(bad, wasm_f32x4_sub(v, v));
        }
      }
    }
  }
  /* bad is 0 in every lane for finite inputs, NaN in a lane that met a non-finite one. */
  const float any = wasm_f32x4_extract_lane(bad, 0) + wasm_f32x4_extract_lane(bad, 1) + wasm_f32x4_extract_lane(bad, 2) + wasm_f32x4_extract_lane(bad, 3);
  if (any == 0.0f) return;
  for (int i = 0; i < n; i++) dw[i] += any;
}

/*
 * The gradients of that convolution, dx[B, H, W, Cin] (flags & WINO_GRAD_DX) and dw[3, 3, Cin, Cout] (flags &
 * WINO_GRAD_DW), in one sweep over the tiles: each tile's Ŷ = A dy Aᵀ, computed once, feeds both, and dy is read
 * once. dy comes through dy_source: dy [B, OH, OW, Cout]; or with pooled non-null the gradient of the 2x2 max pool
 * that follows a ReLU of the convolution's output (winograd_conv with pooled): dy and pooled [B, OH / 2, OW / 2,
 * Cout], codes at pooled's indices; or with bn_z non-null the gradient of batch norm (then a ReLU if flags &
 * WINO_GRAD_BN_RELU, or the ReLU and the pool with pooled non-null) over the convolution's output bn_z. Overwrites
 * what it computes; x is read only for dw, w only for dx. tile as winograd_conv's; either size reads a pooled dy
 * (unpooled_region).
 */
#define WINO_GRAD_DX 1
#define WINO_GRAD_DW 2
#define WINO_GRAD_BN_RELU 4
EXPORT(winograd_conv_grad) void winograd_conv_grad(const float* x, const float* dy, const float* pooled, const unsigned char* codes,
                                                   const float* bn_z, const float* bn_coef, const float* w, float* dx, float* dw,
                                                   float* scratch, int out_c, int flags, int tile, const int* geometry) {
  const conv_geometry full = load_geometry(geometry);
  /* Through the pool alone, dy is 0 where no window reads: the tiles cover only the windows' part (pooled_part). */
  const conv_geometry g = pooled && !bn_z ? pooled_part(full) : full;
  const dy_source src = {dy, pooled, codes, 0, bn_z, bn_coef, flags & WINO_GRAD_BN_RELU};
  const int want_dx = flags & WINO_GRAD_DX, want_dw = flags & WINO_GRAD_DW;
  if (!want_dx && !want_dw) return;
  if (tile == 5) f5_conv_grad(x, src, w, dx, dw, scratch, out_c, want_dx, want_dw, &g);
  else f4_conv_grad(x, src, w, dx, dw, scratch, out_c, want_dx, want_dw, &g);
  if (want_dw && (g.out_h < full.out_h || g.out_w < full.out_w)) poison_uncovered(x, &full, &g, dw, 9 * g.in_c * out_c);
}
