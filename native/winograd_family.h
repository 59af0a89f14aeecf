/*
 * One family of Winograd F(T x T, 3x3) convolutions, included by winograd.c once per tile size with:
 *   WF    the family's prefix (f4, f5): every function here is WF_<name>;
 *   TILE  T, the outputs per tile side; N = T + 2, the inputs per tile side (AREA = N x N transformed positions);
 *   the family's 1-D transforms on vec7 (first N, T or 3 lanes used), WF_<t> for t in
 *     bt  Bᵀ (N -> N, the input's)        bb  B, its adjoint (N -> N, dx's scatter)
 *     at  Aᵀ (N -> T, the output's)       aa  A, its adjoint (T -> N, dy's)
 *     gg  G (3 -> N, the filter's)        gt  Gᵀ, its adjoint (N -> 3, dW's)
 * Each 2-D transform is a pass over rows then a pass over columns, staged in the block's own planes. The loops over a
 * row's N values are unrolled, so vec7 lives in registers (kernels.h: no stack frames).
 */
#define WF_CAT2(a, b) a##_##b
#define WF_CAT(a, b) WF_CAT2(a, b)
#define WFN(name) WF_CAT(WF, name)
#define N (TILE + 2)
#define AREA (N * N)
#define UNROLL _Pragma("clang loop unroll(full)")

/* Position (r, s) of the N x N block whose position 0 is at p, planes `plane` floats apart. */
#define AT(p, plane, r, s) ((p) + (long)((r) * N + (s)) * (plane))

/* Row r of the block at p: its first `in` values through the transform t, stored back as its first `out`. */
ALWAYS_INLINE void WFN(row_pass)(float* p, long plane, int r, int in, int out, vec7 (*t)(vec7)) {
  vec7 v;
  UNROLL for (int s = 0; s < N; s++) if (s < in) v.v[s] = wasm_v128_load(AT(p, plane, r, s));
  const vec7 w = t(v);
  UNROLL for (int s = 0; s < N; s++) if (s < out) wasm_v128_store(AT(p, plane, r, s), w.v[s]);
}

/* Column s likewise. */
ALWAYS_INLINE void WFN(column_pass)(float* p, long plane, int s, int in, int out, vec7 (*t)(vec7)) {
  vec7 v;
  UNROLL for (int r = 0; r < N; r++) if (r < in) v.v[r] = wasm_v128_load(AT(p, plane, r, s));
  const vec7 w = t(v);
  UNROLL for (int r = 0; r < N; r++) if (r < out) wasm_v128_store(AT(p, plane, r, s), w.v[r]);
}

/* V = Bᵀ d B for one tile: d is the N x N input block at (oh0 - pad_top, ow0 - pad_left), zero outside x. */
ALWAYS_INLINE void WFN(input_tile)(const float* x, const conv_geometry* g, tile_origin o, float* out, long plane) {
  const int ih0 = o.oh0 - g->pad_top, iw0 = o.ow0 - g->pad_left, ch = g->in_c;
  const long row = (long)g->in_w * ch;
  const float* base = x + ((long)o.b * g->in_h + ih0) * row + (long)iw0 * ch;
  const int r_lo = first_inside(ih0), r_hi = end_inside(ih0, N, g->in_h);
  const int s_lo = first_inside(iw0), s_hi = end_inside(iw0, N, g->in_w);
  const int inside = r_lo == 0 && r_hi == N && s_lo == 0 && s_hi == N;
  const v128_t zero = wasm_f32x4_splat(0.0f);
  for (int c = 0; c < ch; c += 4) {
    float* p = out + c;
    for (int r = 0; r < N; r++) {
      const float* src = base + r * row + c;
      vec7 d;
      if (inside) {
        UNROLL for (int s = 0; s < N; s++) d.v[s] = wasm_v128_load(src + s * ch);
      } else if (r < r_lo || r >= r_hi) {
        UNROLL for (int s = 0; s < N; s++) d.v[s] = zero;
      } else {
        UNROLL for (int s = 0; s < N; s++) d.v[s] = s >= s_lo && s < s_hi ? wasm_v128_load(src + s * ch) : zero;
      }
      const vec7 w = WFN(bt)(d);
      UNROLL for (int s = 0; s < N; s++) wasm_v128_store(AT(p, plane, r, s), w.v[s]);
    }
    for (int s = 0; s < N; s++) WFN(column_pass)(p, plane, s, N, N, WFN(bt));
  }
}

/* Ŷ = A dy Aᵀ for one tile: dy's T x T block at (oh0, ow0) (dy_source), zero beyond the output. Layout as input_tile's. */
ALWAYS_INLINE void WFN(dy_tile)(dy_source src, const conv_geometry* g, int out_c, tile_origin o, float* out, long plane) {
  const dy_block d = block_of(src, g, out_c, o, TILE);
  const v128_t zero = wasm_f32x4_splat(0.0f);
  for (int c = 0; c < out_c; c += 4) {
    float* p = out + c;
    for (int r = 0; r < TILE; r++) {
      vec7 y;
      const float* src_row = d.base + r * d.row + c;
      UNROLL for (int s = 0; s < TILE; s++) y.v[s] = r < d.r_hi && s < d.s_hi ? wasm_v128_load(src_row + s * out_c) : zero;
      const vec7 q = WFN(aa)(y);
      UNROLL for (int s = 0; s < N; s++) wasm_v128_store(AT(p, plane, r, s), q.v[s]);
    }
    for (int s = 0; s < N; s++) WFN(column_pass)(p, plane, s, TILE, N, WFN(aa));
  }
}

/*
 * Y = Aᵀ M A for one tile, plus bias[c] when bias is non-null, then RELU (kernels.h) when relu: its first r_hi rows and
 * s_hi columns (those that exist) to dst, the tile's top-left, rows `row` floats apart. M's block is overwritten (it
 * stages the row pass).
 */
ALWAYS_INLINE void WFN(output_tile)(float* m, long plane, float* dst, long row, int r_hi, int s_hi, int out_c, const float* bias, int relu) {
  const v128_t zero = wasm_f32x4_splat(0.0f);
  for (int c = 0; c < out_c; c += 4) {
    float* p = m + c;
    for (int r = 0; r < N; r++) WFN(row_pass)(p, plane, r, N, TILE, WFN(at));
    const v128_t b = bias ? wasm_v128_load(bias + c) : zero;
    for (int s = 0; s < s_hi; s++) {
      vec7 z;
      UNROLL for (int r = 0; r < N; r++) z.v[r] = wasm_v128_load(AT(p, plane, r, s));
      const vec7 y = WFN(at)(z);
      float* q = dst + (long)s * out_c + c;
      UNROLL for (int r = 0; r < TILE; r++) {
        if (r < r_hi) {
          const v128_t v = ADD(y.v[r], b);
          wasm_v128_store(q + r * row, relu ? RELU(v) : v);
        }
      }
    }
  }
}

/* dx += B M Bᵀ for one tile, over the N x N input block that lies inside x. M's block is overwritten. */
ALWAYS_INLINE void WFN(scatter_tile)(float* m, long plane, float* dx, const conv_geometry* g, tile_origin o) {
  const int ih0 = o.oh0 - g->pad_top, iw0 = o.ow0 - g->pad_left, ch = g->in_c;
  const long row = (long)g->in_w * ch;
  float* base = dx + ((long)o.b * g->in_h + ih0) * row + (long)iw0 * ch;
  const int r_lo = first_inside(ih0), r_hi = end_inside(ih0, N, g->in_h);
  const int s_lo = first_inside(iw0), s_hi = end_inside(iw0, N, g->in_w);
  for (int c = 0; c < ch; c += 4) {
    float* p = m + c;
    for (int r = 0; r < N; r++) WFN(row_pass)(p, plane, r, N, N, WFN(bb));
    for (int s = s_lo; s < s_hi; s++) {
      vec7 w;
      UNROLL for (int r = 0; r < N; r++) w.v[r] = wasm_v128_load(AT(p, plane, r, s));
      const vec7 d = WFN(bb)(w);
      float* dst = base + (long)s * ch + c;
      UNROLL for (int r = 0; r < N; r++) {
        if (r >= r_lo && r < r_hi) {
          float* q = dst + r * row;
          wasm_v128_store(q, ADD(wasm_v128_load(q), d.v[r]));
        }
      }
    }
  }
}

/* U = G g Gᵀ for every (ci, co) of a [3, 3, Cin, Cout] filter: u[xi][ci][co]. */
ALWAYS_INLINE void WFN(filter_transform)(const float* w, float* u, int in_c, int out_c) {
  const long plane = PLANE(in_c, out_c), taps = (long)in_c * out_c;
  for (long i = 0; i < taps; i += 4) {
    const float* src = w + i;
    float* p = u + i;
    for (int kh = 0; kh < 3; kh++) {
      vec7 gv;
      UNROLL for (int kw = 0; kw < 3; kw++) gv.v[kw] = wasm_v128_load(src + (kh * 3 + kw) * taps);
      const vec7 h = WFN(gg)(gv);
      UNROLL for (int s = 0; s < N; s++) wasm_v128_store(AT(p, plane, kh, s), h.v[s]);
    }
    for (int s = 0; s < N; s++) WFN(column_pass)(p, plane, s, 3, N, WFN(gg));
  }
}

/* dW = Gᵀ dU G for every (ci, co): du[xi][ci][co] -> dw[3][3][Cin][Cout]. dU is overwritten. */
ALWAYS_INLINE void WFN(filter_gradient_inverse)(float* du, float* dw, int in_c, int out_c) {
  const long plane = PLANE(in_c, out_c), taps = (long)in_c * out_c;
  for (long i = 0; i < taps; i += 4) {
    float* p = du + i;
    for (int r = 0; r < N; r++) WFN(row_pass)(p, plane, r, N, 3, WFN(gt));
    for (int s = 0; s < 3; s++) {
      vec7 e;
      UNROLL for (int r = 0; r < N; r++) e.v[r] = wasm_v128_load(AT(p, plane, r, s));
      const vec7 gv = WFN(gt)(e);
      UNROLL for (int kh = 0; kh < 3; kh++) wasm_v128_store(dw + i + (long)(kh * 3 + s) * taps, gv.v[kh]);
    }
  }
}

/* Scratch: two filter-sized areas and three tile-block areas (the gradient's V, Ŷ and M; the forward pass keeps the
 * filter's transform and one staged output tile in the filter-sized areas, V in the first block area and M [TB, Cout]
 * from the second on), then dy_source's block: T x T values of dy, then batch_norm_block's window_side(T)² of the
 * pooled gradient. */
ALWAYS_INLINE long WFN(tile_areas)(int in_c, int out_c) {
  return AREA * (2 * PLANE(in_c, out_c) + 2 * PLANE(WINO_TB, in_c) + PLANE(WINO_TB, out_c));
}

ALWAYS_INLINE long WFN(scratch_floats)(int in_c, int out_c) {
  return WFN(tile_areas)(in_c, out_c) + (long)(TILE * TILE + window_side(TILE) * window_side(TILE)) * out_c;
}

/*
 * winograd_conv (winograd.c) with this family's tiles; with pooled, T must be even (every window in one tile). With
 * stats non-null (and y written), each tile's outputs, still in cache, fold into the running float64 means and M2
 * sums (stats: Cout doubles each) by fold_moments (kernels.h).
 */
ALWAYS_INLINE void WFN(conv)(const float* x, const float* w, const float* bias, float* y, float* pooled, unsigned char* codes, float* scratch,
                             double* stats, int out_c, int flags, const conv_geometry* gp) {
  const conv_geometry g = *gp;
  const int in_c = g.in_c, tiles = tile_count(&g, TILE);
  float* u = scratch;
  /* The forward pass needs one filter transform; the second filter-sized area holds one tile's output (T x T x Cout)
   * before it is pooled. */
  float* staged = u + AREA * PLANE(in_c, out_c);
  float* v = u + 2 * AREA * PLANE(in_c, out_c);
  float* m = v + AREA * PLANE(WINO_TB, in_c);
  const float* b = flags & EPILOGUE_BIAS ? bias : 0;
  const int relu = flags & EPILOGUE_RELU, pool_h = g.out_h / 2, pool_w = g.out_w / 2;
  double seen = 0;
  WFN(filter_transform)(w, u, in_c, out_c);
  for (int t0 = 0; t0 < tiles; t0 += WINO_TB) {
    const int nt = tiles - t0 < WINO_TB ? tiles - t0 : WINO_TB;
    for (int t = 0; t < nt; t++) WFN(input_tile)(x, &g, tile_at(&g, t0 + t, TILE), v + (long)t * in_c, PLANE(nt, in_c));
    for (int xi = 0; xi < AREA; xi++) {
      gemm_nn(v + xi * PLANE(nt, in_c), u + xi * PLANE(in_c, out_c), m + xi * PLANE(nt, out_c), nt, in_c, out_c, 0);
    }
    for (int t = 0; t < nt; t++) {
      const tile_origin o = tile_at(&g, t0 + t, TILE);
      const int r_hi = end_inside(o.oh0, TILE, g.out_h), s_hi = end_inside(o.ow0, TILE, g.out_w);
      if (!pooled) {
        const long row = (long)g.out_w * out_c;
        float* dst = y + ((long)o.b * g.out_h + o.oh0) * row + (long)o.ow0 * out_c;
        WFN(output_tile)(m + (long)t * out_c, PLANE(nt, out_c), dst, row, r_hi, s_hi, out_c, b, relu);
        if (stats) {
          fold_moments(dst, row, r_hi, s_hi, out_c, stats, stats + out_c, seen);
          seen += r_hi * s_hi;
        }
        continue;
      }
      /* The tile's windows: g is the pool's part (even sides) and tiles start at even rows and columns. */
      const int windows_h = r_hi / 2, windows_w = s_hi / 2;
      WFN(output_tile)(m + (long)t * out_c, PLANE(nt, out_c), staged, (long)TILE * out_c, r_hi, s_hi, out_c, b, relu);
      const long at = (((long)o.b * pool_h + o.oh0 / 2) * pool_w + o.ow0 / 2) * out_c;
      max_pool_2x2_region(staged, (long)TILE * out_c, pooled + at, codes + at, (long)pool_w * out_c, out_c, windows_h, windows_w);
    }
  }
}

/* winograd_conv_grad (winograd.c) with this family's tiles. */
ALWAYS_INLINE void WFN(conv_grad)(const float* x, dy_source src, const float* w, float* dx, float* dw, float* scratch, int out_c,
                                  int want_dx, int want_dw, const conv_geometry* gp) {
  const conv_geometry g = *gp;
  const int in_c = g.in_c, tiles = tile_count(&g, TILE);
  /*
   * dx needs the filter's transform transposed, [xi][Cout][Cin]: the transform of the filter transposed per tap
   * (9 small transposes instead of AREA), staged in dU's area before dU is written.
   */
  float* du = scratch;
  float* ut = du + AREA * PLANE(in_c, out_c);
  float* v = ut + AREA * PLANE(in_c, out_c);
  float* yh = v + AREA * PLANE(WINO_TB, in_c);
  float* m = yh + AREA * PLANE(WINO_TB, out_c);
  src.block = scratch + WFN(tile_areas)(in_c, out_c);
  if (want_dx) {
    for (int tap = 0; tap < 9; tap++) transpose_2d(w + (long)tap * in_c * out_c, du + (long)tap * in_c * out_c, in_c, out_c);
    WFN(filter_transform)(du, ut, out_c, in_c);
    __builtin_memset(dx, 0, (unsigned)(g.batch * g.in_h * g.in_w * in_c) * sizeof(float));
  }
  for (int t0 = 0; t0 < tiles; t0 += WINO_TB) {
    const int nt = tiles - t0 < WINO_TB ? tiles - t0 : WINO_TB;
    for (int t = 0; t < nt; t++) {
      const tile_origin o = tile_at(&g, t0 + t, TILE);
      WFN(dy_tile)(src, &g, out_c, o, yh + (long)t * out_c, PLANE(nt, out_c));
      if (want_dw) WFN(input_tile)(x, &g, o, v + (long)t * in_c, PLANE(nt, in_c));
    }
    if (want_dx) {
      for (int xi = 0; xi < AREA; xi++) {
        gemm_nn(yh + xi * PLANE(nt, out_c), ut + xi * PLANE(in_c, out_c), m + xi * PLANE(nt, in_c), nt, out_c, in_c, 0);
      }
      for (int t = 0; t < nt; t++) WFN(scatter_tile)(m + (long)t * in_c, PLANE(nt, in_c), dx, &g, tile_at(&g, t0 + t, TILE));
    }
    if (want_dw) {
      for (int xi = 0; xi < AREA; xi++) {
        gemm_tn(v + xi * PLANE(nt, in_c), yh + xi * PLANE(nt, out_c), du + xi * PLANE(in_c, out_c), in_c, nt, out_c, t0 > 0);
      }
    }
  }
  /* No tiles (an output with no positions): dW is 0, as a sum over no positions. */
  if (want_dw && tiles > 0) WFN(filter_gradient_inverse)(du, dw, in_c, out_c);
  if (want_dw && tiles == 0) __builtin_memset(dw, 0, (unsigned)(9 * in_c * out_c) * sizeof(float));
}

#undef AT
#undef UNROLL
#undef AREA
#undef N
#undef WFN
#undef WF_CAT
#undef WF_CAT2
