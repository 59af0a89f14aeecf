/*
 * Winograd F(2x2, 3x3) convolutions for 3x3, stride 1, undilated layers (issue #17, part 3): the forward pass, the
 * input gradient and the filter gradient, NHWC, any padding. Each 2x2 block of outputs ("tile") reads a 4x4 block of
 * the input; in the transformed domain the convolution is 16 independent GEMMs, one per position xi of the 4x4
 * block, over channels:
 *
 *   forward  Y   = Aᵀ [ U ⊙ V ] A        M[xi] = V[xi] · U[xi]      ([tiles, Cin] · [Cin, Cout])
 *   dx       dX += B [ U ⊙ Ŷ ] Bᵀ         M[xi] = Ŷ[xi] · U[xi]ᵀ     ([tiles, Cout] · [Cout, Cin])
 *   dW       dW  = Gᵀ [ Σ V ⊙ Ŷ ] G       dU[xi] = V[xi]ᵀ · Ŷ[xi]    ([Cin, tiles] · [tiles, Cout])
 *
 * with V = Bᵀ d B (input tile d), U = G g Gᵀ (filter g), Ŷ = A dy Aᵀ (a 2x2 block of dy, zero beyond the output).
 * dx and dW are the adjoints of the forward map in d and in g, so all three share the same three matrices:
 *
 *   Bᵀ = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]   G = [1 0 0; ½ ½ ½; ½ -½ ½; 0 0 1]   Aᵀ = [1 1 1 0; 0 1 -1 -1]
 *
 * A GEMM's multiply-adds per output fall from 9 to 4 (2.25x fewer), less the waste of tiles that overhang the output
 * (an 11x11 output is covered by 6x6 tiles: 2.25 x 121/144 = 1.89x). Tiles are processed WINO_TB at a time so the
 * transformed blocks stay in L2 between the transform, the 16 GEMMs and the inverse transform.
 *
 * Channels go four to a v128: in_c and out_c must be multiples of 4 (src/shared/kernels/winograd.ts routes only
 * such layers here). Scratch is one caller-allocated buffer of winograd_scratch_floats(in_c, out_c) floats.
 */
#include "kernels.h"

#define WINO_TB 64

#define ADD wasm_f32x4_add
#define SUB wasm_f32x4_sub
#define HALF(v) wasm_f32x4_mul((v), wasm_f32x4_splat(0.5f))

/* Bᵀ · (a0..a3) */
#define BT(a0, a1, a2, a3, o0, o1, o2, o3) \
  o0 = SUB(a0, a2), o1 = ADD(a1, a2), o2 = SUB(a2, a1), o3 = SUB(a1, a3)
/* B · (a0..a3), the adjoint of Bᵀ */
#define BB(a0, a1, a2, a3, o0, o1, o2, o3) \
  o0 = (a0), o1 = ADD(SUB(a1, a2), a3), o2 = SUB(ADD(a1, a2), a0), o3 = wasm_f32x4_neg(a3)
/* Aᵀ · (a0..a3) */
#define AT(a0, a1, a2, a3, o0, o1) o0 = ADD(ADD(a0, a1), a2), o1 = SUB(SUB(a1, a2), a3)
/* A · (a0, a1), the adjoint of Aᵀ */
#define AA(a0, a1, o0, o1, o2, o3) o0 = (a0), o1 = ADD(a0, a1), o2 = SUB(a0, a1), o3 = wasm_f32x4_neg(a1)
/* G · (a0, a1, a2) */
#define GG(a0, a1, a2, o0, o1, o2, o3) \
  o0 = (a0), o1 = HALF(ADD(ADD(a0, a1), a2)), o2 = HALF(ADD(SUB(a0, a1), a2)), o3 = (a2)
/* Gᵀ · (a0..a3), the adjoint of G */
#define GT(a0, a1, a2, a3, o0, o1, o2) \
  o0 = ADD(a0, HALF(ADD(a1, a2))), o1 = HALF(SUB(a1, a2)), o2 = ADD(HALF(ADD(a1, a2)), a3)

EXPORT(winograd_scratch_floats) int winograd_scratch_floats(int in_c, int out_c) {
  return 16 * (in_c * out_c + WINO_TB * (in_c + out_c));
}

typedef struct {
  int b, oh0, ow0;
} tile_origin;

/* Tile t (in (batch, tile row, tile column) order) covers outputs [oh0, oh0 + 2) x [ow0, ow0 + 2). */
ALWAYS_INLINE tile_origin tile_at(const conv_geometry* g, int t) {
  const int tw = (g->out_w + 1) / 2, th = (g->out_h + 1) / 2;
  const int j = t % tw, rest = t / tw;
  const tile_origin o = {rest / th, 2 * (rest % th), 2 * j};
  return o;
}

/*
 * V = Bᵀ d B for one tile: d is the 4x4 input block at (oh0 - pad_top, ow0 - pad_left), zero outside x. Position xi
 * of channel c goes to out[xi * plane + c].
 */
ALWAYS_INLINE void input_tile(const float* x, const conv_geometry* g, tile_origin o, float* out, long plane) {
  const int ih0 = o.oh0 - g->pad_top, iw0 = o.ow0 - g->pad_left, ch = g->in_c;
  const long row = (long)g->in_w * ch;
  const float* base = x + ((long)o.b * g->in_h + ih0) * row + (long)iw0 * ch;
  const int row0 = ih0 >= 0 && ih0 < g->in_h, row1 = ih0 + 1 >= 0 && ih0 + 1 < g->in_h;
  const int row2 = ih0 + 2 >= 0 && ih0 + 2 < g->in_h, row3 = ih0 + 3 >= 0 && ih0 + 3 < g->in_h;
  const int col0 = iw0 >= 0 && iw0 < g->in_w, col1 = iw0 + 1 >= 0 && iw0 + 1 < g->in_w;
  const int col2 = iw0 + 2 >= 0 && iw0 + 2 < g->in_w, col3 = iw0 + 3 >= 0 && iw0 + 3 < g->in_w;
  const v128_t zero = wasm_f32x4_splat(0.0f);
#define LD(r, s) ((row##r && col##s) ? wasm_v128_load(base + r * row + s * ch + c) : zero)
  for (int c = 0; c < ch; c += 4) {
    v128_t w00, w01, w02, w03, w10, w11, w12, w13, w20, w21, w22, w23, w30, w31, w32, w33;
    BT(LD(0, 0), LD(0, 1), LD(0, 2), LD(0, 3), w00, w01, w02, w03);
    BT(LD(1, 0), LD(1, 1), LD(1, 2), LD(1, 3), w10, w11, w12, w13);
    BT(LD(2, 0), LD(2, 1), LD(2, 2), LD(2, 3), w20, w21, w22, w23);
    BT(LD(3, 0), LD(3, 1), LD(3, 2), LD(3, 3), w30, w31, w32, w33);
    v128_t v00, v01, v02, v03, v10, v11, v12, v13, v20, v21, v22, v23, v30, v31, v32, v33;
    BT(w00, w10, w20, w30, v00, v10, v20, v30);
    BT(w01, w11, w21, w31, v01, v11, v21, v31);
    BT(w02, w12, w22, w32, v02, v12, v22, v32);
    BT(w03, w13, w23, w33, v03, v13, v23, v33);
    float* p = out + c;
    wasm_v128_store(p, v00), wasm_v128_store(p + plane, v01), wasm_v128_store(p + 2 * plane, v02), wasm_v128_store(p + 3 * plane, v03);
    wasm_v128_store(p + 4 * plane, v10), wasm_v128_store(p + 5 * plane, v11), wasm_v128_store(p + 6 * plane, v12), wasm_v128_store(p + 7 * plane, v13);
    wasm_v128_store(p + 8 * plane, v20), wasm_v128_store(p + 9 * plane, v21), wasm_v128_store(p + 10 * plane, v22), wasm_v128_store(p + 11 * plane, v23);
    wasm_v128_store(p + 12 * plane, v30), wasm_v128_store(p + 13 * plane, v31), wasm_v128_store(p + 14 * plane, v32), wasm_v128_store(p + 15 * plane, v33);
  }
#undef LD
}

/* Ŷ = A dy Aᵀ for one tile: dy's 2x2 block at (oh0, ow0), zero beyond the output. Layout as input_tile's. */
ALWAYS_INLINE void dy_tile(const float* dy, const conv_geometry* g, int out_c, tile_origin o, float* out, long plane) {
  const long row = (long)g->out_w * out_c;
  const float* base = dy + ((long)o.b * g->out_h + o.oh0) * row + (long)o.ow0 * out_c;
  const int r1 = o.oh0 + 1 < g->out_h, c1 = o.ow0 + 1 < g->out_w;
  const v128_t zero = wasm_f32x4_splat(0.0f);
  for (int c = 0; c < out_c; c += 4) {
    const v128_t y00 = wasm_v128_load(base + c);
    const v128_t y01 = c1 ? wasm_v128_load(base + out_c + c) : zero;
    const v128_t y10 = r1 ? wasm_v128_load(base + row + c) : zero;
    const v128_t y11 = r1 && c1 ? wasm_v128_load(base + row + out_c + c) : zero;
    v128_t q00, q01, q02, q03, q10, q11, q12, q13;
    AA(y00, y01, q00, q01, q02, q03);
    AA(y10, y11, q10, q11, q12, q13);
    v128_t v00, v01, v02, v03, v10, v11, v12, v13, v20, v21, v22, v23, v30, v31, v32, v33;
    AA(q00, q10, v00, v10, v20, v30);
    AA(q01, q11, v01, v11, v21, v31);
    AA(q02, q12, v02, v12, v22, v32);
    AA(q03, q13, v03, v13, v23, v33);
    float* p = out + c;
    wasm_v128_store(p, v00), wasm_v128_store(p + plane, v01), wasm_v128_store(p + 2 * plane, v02), wasm_v128_store(p + 3 * plane, v03);
    wasm_v128_store(p + 4 * plane, v10), wasm_v128_store(p + 5 * plane, v11), wasm_v128_store(p + 6 * plane, v12), wasm_v128_store(p + 7 * plane, v13);
    wasm_v128_store(p + 8 * plane, v20), wasm_v128_store(p + 9 * plane, v21), wasm_v128_store(p + 10 * plane, v22), wasm_v128_store(p + 11 * plane, v23);
    wasm_v128_store(p + 12 * plane, v30), wasm_v128_store(p + 13 * plane, v31), wasm_v128_store(p + 14 * plane, v32), wasm_v128_store(p + 15 * plane, v33);
  }
}

#define LOAD16(p, plane)                                                                                           \
  const v128_t m00 = wasm_v128_load(p), m01 = wasm_v128_load(p + plane), m02 = wasm_v128_load(p + 2 * plane);     \
  const v128_t m03 = wasm_v128_load(p + 3 * plane), m10 = wasm_v128_load(p + 4 * plane);                         \
  const v128_t m11 = wasm_v128_load(p + 5 * plane), m12 = wasm_v128_load(p + 6 * plane);                         \
  const v128_t m13 = wasm_v128_load(p + 7 * plane), m20 = wasm_v128_load(p + 8 * plane);                         \
  const v128_t m21 = wasm_v128_load(p + 9 * plane), m22 = wasm_v128_load(p + 10 * plane);                        \
  const v128_t m23 = wasm_v128_load(p + 11 * plane), m30 = wasm_v128_load(p + 12 * plane);                       \
  const v128_t m31 = wasm_v128_load(p + 13 * plane), m32 = wasm_v128_load(p + 14 * plane);                       \
  const v128_t m33 = wasm_v128_load(p + 15 * plane)

/*
 * Y = Aᵀ M A for one tile, plus bias[c] when bias is non-null, then max(0, ·) when relu: written to the outputs that
 * exist.
 */
ALWAYS_INLINE void output_tile(const float* m, long plane, float* y, const conv_geometry* g, int out_c, tile_origin o,
                               const float* bias, int relu) {
  const long row = (long)g->out_w * out_c;
  float* base = y + ((long)o.b * g->out_h + o.oh0) * row + (long)o.ow0 * out_c;
  const int r1 = o.oh0 + 1 < g->out_h, c1 = o.ow0 + 1 < g->out_w;
  const v128_t zero = wasm_f32x4_splat(0.0f);
  for (int c = 0; c < out_c; c += 4) {
    const float* p = m + c;
    LOAD16(p, plane);
    v128_t z00, z01, z10, z11, z20, z21, z30, z31;
    AT(m00, m01, m02, m03, z00, z01);
    AT(m10, m11, m12, m13, z10, z11);
    AT(m20, m21, m22, m23, z20, z21);
    AT(m30, m31, m32, m33, z30, z31);
    v128_t y00, y01, y10, y11;
    AT(z00, z10, z20, z30, y00, y10);
    AT(z01, z11, z21, z31, y01, y11);
    if (bias) {
      const v128_t b = wasm_v128_load(bias + c);
      y00 = ADD(y00, b), y01 = ADD(y01, b), y10 = ADD(y10, b), y11 = ADD(y11, b);
    }
    if (relu) {
      y00 = wasm_f32x4_max(y00, zero), y01 = wasm_f32x4_max(y01, zero);
      y10 = wasm_f32x4_max(y10, zero), y11 = wasm_f32x4_max(y11, zero);
    }
    wasm_v128_store(base + c, y00);
    if (c1) wasm_v128_store(base + out_c + c, y01);
    if (r1) wasm_v128_store(base + row + c, y10);
    if (r1 && c1) wasm_v128_store(base + row + out_c + c, y11);
  }
}

/* dx += B M Bᵀ for one tile, over the 4x4 input block that lies inside x. */
ALWAYS_INLINE void scatter_tile(const float* m, long plane, float* dx, const conv_geometry* g, tile_origin o) {
  const int ih0 = o.oh0 - g->pad_top, iw0 = o.ow0 - g->pad_left, ch = g->in_c;
  const long row = (long)g->in_w * ch;
  float* base = dx + ((long)o.b * g->in_h + ih0) * row + (long)iw0 * ch;
  const int row0 = ih0 >= 0 && ih0 < g->in_h, row1 = ih0 + 1 >= 0 && ih0 + 1 < g->in_h;
  const int row2 = ih0 + 2 >= 0 && ih0 + 2 < g->in_h, row3 = ih0 + 3 >= 0 && ih0 + 3 < g->in_h;
  const int col0 = iw0 >= 0 && iw0 < g->in_w, col1 = iw0 + 1 >= 0 && iw0 + 1 < g->in_w;
  const int col2 = iw0 + 2 >= 0 && iw0 + 2 < g->in_w, col3 = iw0 + 3 >= 0 && iw0 + 3 < g->in_w;
#define ACC(r, s, v)                                                  \
  if (row##r && col##s) {                                                 \
    float* q = base + r * row + s * ch + c;                           \
    wasm_v128_store(q, wasm_f32x4_add(wasm_v128_load(q), v));         \
  }
  for (int c = 0; c < ch; c += 4) {
    const float* p = m + c;
    LOAD16(p, plane);
    v128_t w00, w01, w02, w03, w10, w11, w12, w13, w20, w21, w22, w23, w30, w31, w32, w33;
    BB(m00, m01, m02, m03, w00, w01, w02, w03);
    BB(m10, m11, m12, m13, w10, w11, w12, w13);
    BB(m20, m21, m22, m23, w20, w21, w22, w23);
    BB(m30, m31, m32, m33, w30, w31, w32, w33);
    v128_t d00, d01, d02, d03, d10, d11, d12, d13, d20, d21, d22, d23, d30, d31, d32, d33;
    BB(w00, w10, w20, w30, d00, d10, d20, d30);
    BB(w01, w11, w21, w31, d01, d11, d21, d31);
    BB(w02, w12, w22, w32, d02, d12, d22, d32);
    BB(w03, w13, w23, w33, d03, d13, d23, d33);
    ACC(0, 0, d00) ACC(0, 1, d01) ACC(0, 2, d02) ACC(0, 3, d03)
    ACC(1, 0, d10) ACC(1, 1, d11) ACC(1, 2, d12) ACC(1, 3, d13)
    ACC(2, 0, d20) ACC(2, 1, d21) ACC(2, 2, d22) ACC(2, 3, d23)
    ACC(3, 0, d30) ACC(3, 1, d31) ACC(3, 2, d32) ACC(3, 3, d33)
  }
#undef ACC
}

/*
 * U = G g Gᵀ for every (ci, co) of a [3, 3, Cin, Cout] filter: u[xi][ci][co], or u[xi][co][ci] when transposed
 * (the dx GEMM's right operand).
 */
ALWAYS_INLINE void filter_transform(const float* w, float* u, int in_c, int out_c, int transposed) {
  const long tap = (long)in_c * out_c, plane = tap;
  for (int ci = 0; ci < in_c; ci++) {
    for (int co = 0; co < out_c; co += 4) {
      const float* p = w + (long)ci * out_c + co;
#define WL(kh, kw) wasm_v128_load(p + (kh * 3 + kw) * tap)
      v128_t h00, h01, h02, h03, h10, h11, h12, h13, h20, h21, h22, h23;
      GG(WL(0, 0), WL(0, 1), WL(0, 2), h00, h01, h02, h03);
      GG(WL(1, 0), WL(1, 1), WL(1, 2), h10, h11, h12, h13);
      GG(WL(2, 0), WL(2, 1), WL(2, 2), h20, h21, h22, h23);
#undef WL
      v128_t u00, u01, u02, u03, u10, u11, u12, u13, u20, u21, u22, u23, u30, u31, u32, u33;
      GG(h00, h10, h20, u00, u10, u20, u30);
      GG(h01, h11, h21, u01, u11, u21, u31);
      GG(h02, h12, h22, u02, u12, u22, u32);
      GG(h03, h13, h23, u03, u13, u23, u33);
#define ST(xi, v)                                                                    \
  if (transposed) {                                                                  \
    float* q = u + xi * plane + (long)co * in_c + ci;                                \
    q[0] = wasm_f32x4_extract_lane(v, 0), q[in_c] = wasm_f32x4_extract_lane(v, 1);   \
    q[2 * in_c] = wasm_f32x4_extract_lane(v, 2), q[3 * in_c] = wasm_f32x4_extract_lane(v, 3); \
  } else {                                                                           \
    wasm_v128_store(u + xi * plane + (long)ci * out_c + co, v);                      \
  }
      ST(0, u00) ST(1, u01) ST(2, u02) ST(3, u03) ST(4, u10) ST(5, u11) ST(6, u12) ST(7, u13)
      ST(8, u20) ST(9, u21) ST(10, u22) ST(11, u23) ST(12, u30) ST(13, u31) ST(14, u32) ST(15, u33)
#undef ST
    }
  }
}

/* dW = Gᵀ dU G for every (ci, co): du[xi][ci][co] -> dw[3][3][Cin][Cout]. */
ALWAYS_INLINE void filter_gradient_inverse(const float* du, float* dw, int in_c, int out_c) {
  const long plane = (long)in_c * out_c;
  for (long i = 0; i < plane; i += 4) {
    const float* p = du + i;
    LOAD16(p, plane);
    v128_t e00, e01, e02, e10, e11, e12, e20, e21, e22, e30, e31, e32;
    GT(m00, m01, m02, m03, e00, e01, e02);
    GT(m10, m11, m12, m13, e10, e11, e12);
    GT(m20, m21, m22, m23, e20, e21, e22);
    GT(m30, m31, m32, m33, e30, e31, e32);
    v128_t g00, g01, g02, g10, g11, g12, g20, g21, g22;
    GT(e00, e10, e20, e30, g00, g10, g20);
    GT(e01, e11, e21, e31, g01, g11, g21);
    GT(e02, e12, e22, e32, g02, g12, g22);
    float* q = dw + i;
    wasm_v128_store(q, g00), wasm_v128_store(q + plane, g01), wasm_v128_store(q + 2 * plane, g02);
    wasm_v128_store(q + 3 * plane, g10), wasm_v128_store(q + 4 * plane, g11), wasm_v128_store(q + 5 * plane, g12);
    wasm_v128_store(q + 6 * plane, g20), wasm_v128_store(q + 7 * plane, g21), wasm_v128_store(q + 8 * plane, g22);
  }
}

ALWAYS_INLINE int tile_count(const conv_geometry* g) {
  return g->batch * ((g->out_h + 1) / 2) * ((g->out_w + 1) / 2);
}

/*
 * y[B, OH, OW, Cout] <- x conv w (w: [3, 3, Cin, Cout]), + bias[Cout] if flags & WINO_BIAS, then ReLU if
 * flags & WINO_RELU (tfjs's FusedConv2D); overwrites y.
 */
#define WINO_BIAS 1
#define WINO_RELU 2
EXPORT(winograd_conv) void winograd_conv(const float* x, const float* w, const float* bias, float* y, float* scratch, int out_c, int flags, const int* geometry) {
  const conv_geometry g = load_geometry(geometry);
  const int in_c = g.in_c, tiles = tile_count(&g);
  float* u = scratch;
  float* v = u + 16L * in_c * out_c;
  float* m = v + 16L * WINO_TB * in_c;
  filter_transform(w, u, in_c, out_c, 0);
  for (int t0 = 0; t0 < tiles; t0 += WINO_TB) {
    const int nt = tiles - t0 < WINO_TB ? tiles - t0 : WINO_TB;
    for (int t = 0; t < nt; t++) input_tile(x, &g, tile_at(&g, t0 + t), v + (long)t * in_c, (long)nt * in_c);
    for (int xi = 0; xi < 16; xi++) {
      gemm_nn(v + (long)xi * nt * in_c, u + (long)xi * in_c * out_c, m + (long)xi * nt * out_c, nt, in_c, out_c, 0);
    }
    for (int t = 0; t < nt; t++) {
      output_tile(m + (long)t * out_c, (long)nt * out_c, y, &g, out_c, tile_at(&g, t0 + t), flags & WINO_BIAS ? bias : 0, flags & WINO_RELU);
    }
  }
}

/* dx[B, H, W, Cin] <- the input gradient of that convolution, from dy[B, OH, OW, Cout]; overwrites dx. */
EXPORT(winograd_conv_dx) void winograd_conv_dx(const float* dy, const float* w, float* dx, float* scratch, int out_c, const int* geometry) {
  const conv_geometry g = load_geometry(geometry);
  const int in_c = g.in_c, tiles = tile_count(&g);
  float* ut = scratch;
  float* yh = ut + 16L * in_c * out_c;
  float* m = yh + 16L * WINO_TB * out_c;
  filter_transform(w, ut, in_c, out_c, 1);
  __builtin_memset(dx, 0, (unsigned)(g.batch * g.in_h * g.in_w * in_c) * sizeof(float));
  for (int t0 = 0; t0 < tiles; t0 += WINO_TB) {
    const int nt = tiles - t0 < WINO_TB ? tiles - t0 : WINO_TB;
    for (int t = 0; t < nt; t++) dy_tile(dy, &g, out_c, tile_at(&g, t0 + t), yh + (long)t * out_c, (long)nt * out_c);
    for (int xi = 0; xi < 16; xi++) {
      gemm_nn(yh + (long)xi * nt * out_c, ut + (long)xi * in_c * out_c, m + (long)xi * nt * in_c, nt, out_c, in_c, 0);
    }
    for (int t = 0; t < nt; t++) scatter_tile(m + (long)t * in_c, (long)nt * in_c, dx, &g, tile_at(&g, t0 + t));
  }
}

/* dw[3, 3, Cin, Cout] <- the filter gradient of that convolution, from x and dy; overwrites dw. */
EXPORT(winograd_conv_dw) void winograd_conv_dw(const float* x, const float* dy, float* dw, float* scratch, int out_c, const int* geometry) {
  const conv_geometry g = load_geometry(geometry);
  const int in_c = g.in_c, tiles = tile_count(&g);
  float* du = scratch;
  float* v = du + 16L * in_c * out_c;
  float* yh = v + 16L * WINO_TB * in_c;
  for (int t0 = 0; t0 < tiles; t0 += WINO_TB) {
    const int nt = tiles - t0 < WINO_TB ? tiles - t0 : WINO_TB;
    for (int t = 0; t < nt; t++) {
      const tile_origin o = tile_at(&g, t0 + t);
      input_tile(x, &g, o, v + (long)t * in_c, (long)nt * in_c);
      dy_tile(dy, &g, out_c, o, yh + (long)t * out_c, (long)nt * out_c);
    }
    for (int xi = 0; xi < 16; xi++) {
      gemm_tn(v + (long)xi * nt * in_c, yh + (long)xi * nt * out_c, du + (long)xi * in_c * out_c, in_c, nt, out_c, t0 > 0);
    }
  }
  filter_gradient_inverse(du, dw, in_c, out_c);
}
