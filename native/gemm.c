/*
 * f32 GEMM, register-blocked without packing (issue #17, part 2): C[M, N] (+)= A · B with A either [M, K] (nn) or
 * stored transposed as [K, M] (tn), B [K, N], all row-major and contiguous. Built with -mrelaxed-simd, each
 * multiply-add is one f32x4.relaxed_madd (a fused multiply-add on x86 with FMA and on ARM); built without it, a mul
 * and an add. The blocking: a 4-row by 8-column tile of C lives in 8 v128 accumulators; per k, two loads of B's row
 * slice and four splats of A. K is cut into blocks of GEMM_KC so that B's [GEMM_KC, 8] panel stays in L1 while
 * every 4-row tile of A passes over it. bench/gemm-fma.ts measures it against XNNPACK's GEMM per layer.
 */
#include "kernels.h"

/* 128 x 8 floats: a 4 KiB panel of B, which stays in L1 while the tiles of its rows of C are swept. */
#define GEMM_KC 128

/*
 * One 4x8 tile of C over k steps. A's four values for step p are at a + p + {0, 1, 2, 3} * lda (nn: consecutive p are
 * adjacent) or in one v128 at a + p * lda (tn: the four rows are adjacent in memory).
 */
static inline void tile_4x8(const float* a, int lda, int transposed, const float* b, int ldb, float* c, int ldc, int k, int first) {
  v128_t c00, c01, c10, c11, c20, c21, c30, c31;
  if (first) {
    c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = wasm_f32x4_splat(0.0f);
  } else {
    c00 = wasm_v128_load(c), c01 = wasm_v128_load(c + 4);
    c10 = wasm_v128_load(c + ldc), c11 = wasm_v128_load(c + ldc + 4);
    c20 = wasm_v128_load(c + 2 * ldc), c21 = wasm_v128_load(c + 2 * ldc + 4);
    c30 = wasm_v128_load(c + 3 * ldc), c31 = wasm_v128_load(c + 3 * ldc + 4);
  }
  for (int p = 0; p < k; p++) {
    const v128_t b0 = wasm_v128_load(b + (long)p * ldb), b1 = wasm_v128_load(b + (long)p * ldb + 4);
    v128_t a0, a1, a2, a3;
    if (transposed) {
      const v128_t col = wasm_v128_load(a + (long)p * lda);
      a0 = wasm_i32x4_shuffle(col, col, 0, 0, 0, 0), a1 = wasm_i32x4_shuffle(col, col, 1, 1, 1, 1);
      a2 = wasm_i32x4_shuffle(col, col, 2, 2, 2, 2), a3 = wasm_i32x4_shuffle(col, col, 3, 3, 3, 3);
    } else {
      a0 = wasm_f32x4_splat(a[p]), a1 = wasm_f32x4_splat(a[lda + p]);
      a2 = wasm_f32x4_splat(a[2 * lda + p]), a3 = wasm_f32x4_splat(a[3 * lda + p]);
    }
    c00 = MADD(a0, b0, c00), c01 = MADD(a0, b1, c01);
    c10 = MADD(a1, b0, c10), c11 = MADD(a1, b1, c11);
    c20 = MADD(a2, b0, c20), c21 = MADD(a2, b1, c21);
    c30 = MADD(a3, b0, c30), c31 = MADD(a3, b1, c31);
  }
  wasm_v128_store(c, c00), wasm_v128_store(c + 4, c01);
  wasm_v128_store(c + ldc, c10), wasm_v128_store(c + ldc + 4, c11);
  wasm_v128_store(c + 2 * ldc, c20), wasm_v128_store(c + 2 * ldc + 4, c21);
  wasm_v128_store(c + 3 * ldc, c30), wasm_v128_store(c + 3 * ldc + 4, c31);
}

/* Any tile at the edges (fewer than 4 rows or 8 columns): four columns at a time, then scalars. */
static inline void tile_edge(const float* a, int lda, int transposed, const float* b, int ldb, float* c, int ldc, int rows, int cols, int k, int first) {
  /* Element (r, p) of the logical A. */
  const long r_step = transposed ? 1 : lda, p_step = transposed ? lda : 1;
  for (int r = 0; r < rows; r++) {
    const float* ar = a + r * r_step;
    float* cr = c + (long)r * ldc;
    int j = 0;
    for (; j + 4 <= cols; j += 4) {
      v128_t acc = first ? wasm_f32x4_splat(0.0f) : wasm_v128_load(cr + j);
      for (int p = 0; p < k; p++) acc = MADD(wasm_f32x4_splat(ar[p * p_step]), wasm_v128_load(b + (long)p * ldb + j), acc);
      wasm_v128_store(cr + j, acc);
    }
    for (; j < cols; j++) {
      float acc = first ? 0.0f : cr[j];
      for (int p = 0; p < k; p++) acc += ar[p * p_step] * b[(long)p * ldb + j];
      cr[j] = acc;
    }
  }
}

/*
 * The last columns of a 4-row tile that tile_edge would run as scalar loops (fewer than 4 in the nn form; fewer than 8
 * in the tn form, where each of tile_edge's rows reads its values of A one by one), vectorised over what is
 * contiguous: a dense layer's 10-class head leaves 2 such columns on every row (`cnn`'s head: 64 x 1600 x 10
 * forward, 1600 x 64 x 10 for its weight gradient).
 * - tn: the tile's four rows are adjacent in A (one v128 per step p), times one splat of B per column;
 * - nn: each row runs along K in A, so four steps of K at a time: four rows' slices times one gathered column
 *   slice of B, summed across lanes at the end. This order of additions differs from tile_edge's, which the rows
 *   past the last full tile (M mod 4) take: a row's value may differ in its last bits with its place in the batch.
 */
static inline void tile_4_tail(const float* a, int lda, int transposed, const float* b, int ldb, float* c, int ldc, int cols, int k, int first) {
  for (int j = 0; j < cols; j++) {
    float* cj = c + j;
    if (transposed) {
      v128_t acc = first ? wasm_f32x4_splat(0.0f) : wasm_f32x4_make(cj[0], cj[ldc], cj[2 * ldc], cj[3 * ldc]);
      for (int p = 0; p < k; p++) acc = MADD(wasm_v128_load(a + (long)p * lda), wasm_f32x4_splat(b[(long)p * ldb + j]), acc);
      cj[0] = wasm_f32x4_extract_lane(acc, 0), cj[ldc] = wasm_f32x4_extract_lane(acc, 1);
      cj[2 * ldc] = wasm_f32x4_extract_lane(acc, 2), cj[3 * ldc] = wasm_f32x4_extract_lane(acc, 3);
      continue;
    }
    v128_t r0 = wasm_f32x4_splat(0.0f), r1 = r0, r2 = r0, r3 = r0;
    int p = 0;
    for (; p + 4 <= k; p += 4) {
      const float* bp = b + (long)p * ldb + j;
      const v128_t bv = wasm_f32x4_make(bp[0], bp[ldb], bp[2 * ldb], bp[3 * ldb]);
      r0 = MADD(wasm_v128_load(a + p), bv, r0), r1 = MADD(wasm_v128_load(a + lda + p), bv, r1);
      r2 = MADD(wasm_v128_load(a + 2 * lda + p), bv, r2), r3 = MADD(wasm_v128_load(a + 3 * lda + p), bv, r3);
    }
    /* Lane sums of r0..r3 as one vector: a 4x4 transpose, then adds. */
    const v128_t t0 = wasm_i32x4_shuffle(r0, r1, 0, 4, 1, 5), t1 = wasm_i32x4_shuffle(r0, r1, 2, 6, 3, 7);
    const v128_t t2 = wasm_i32x4_shuffle(r2, r3, 0, 4, 1, 5), t3 = wasm_i32x4_shuffle(r2, r3, 2, 6, 3, 7);
    const v128_t sums = wasm_f32x4_add(wasm_f32x4_add(wasm_i64x2_shuffle(t0, t2, 0, 2), wasm_i64x2_shuffle(t0, t2, 1, 3)),
                                       wasm_f32x4_add(wasm_i64x2_shuffle(t1, t3, 0, 2), wasm_i64x2_shuffle(t1, t3, 1, 3)));
    float s0 = wasm_f32x4_extract_lane(sums, 0), s1 = wasm_f32x4_extract_lane(sums, 1);
    float s2 = wasm_f32x4_extract_lane(sums, 2), s3 = wasm_f32x4_extract_lane(sums, 3);
    for (; p < k; p++) {
      const float bj = b[(long)p * ldb + j];
      s0 += a[p] * bj, s1 += a[lda + p] * bj, s2 += a[2 * lda + p] * bj, s3 += a[3 * lda + p] * bj;
    }
    if (!first) s0 += cj[0], s1 += cj[ldc], s2 += cj[2 * ldc], s3 += cj[3 * ldc];
    cj[0] = s0, cj[ldc] = s1, cj[2 * ldc] = s2, cj[3 * ldc] = s3;
  }
}

static inline void gemm_run(const float* a, int transposed, const float* b, float* c, int m, int k, int n, int accumulate) {
  if (k == 0) {
    if (!accumulate) __builtin_memset(c, 0, (unsigned)(m * n) * sizeof(float));
    return;
  }
  /* nn: A is [M, K], row i at a + i * k. tn: A is [K, M], column i at a + i. */
  const int lda = transposed ? m : k;
  for (int k0 = 0; k0 < k; k0 += GEMM_KC) {
    const int kc = k - k0 < GEMM_KC ? k - k0 : GEMM_KC;
    const int first = k0 == 0 && !accumulate;
    const float* ak = transposed ? a + (long)k0 * m : a + k0;
    if (transposed) {
      /*
       * tn: A's [kc, 4] column block is kc cache lines a row apart; it stays in L1 while B's panels pass over it
       * (bench/RESULTS.md, 2026-12-05 04:40: fc1's dW 1.29 → 1.02 ms; the Winograd filter gradients within noise).
       */
      int i0 = 0;
      for (; i0 + 4 <= m; i0 += 4) {
        int j0 = 0;
        for (; j0 + 8 <= n; j0 += 8) tile_4x8(ak + i0, lda, 1, b + (long)k0 * n + j0, n, c + (long)i0 * n + j0, n, kc, first);
        if (j0 < n) tile_4_tail(ak + i0, lda, 1, b + (long)k0 * n + j0, n, c + (long)i0 * n + j0, n, n - j0, kc, first);
      }
      if (i0 < m) tile_edge(ak + i0, lda, 1, b + (long)k0 * n, n, c + (long)i0 * n, n, m - i0, n, kc, first);
      continue;
    }
    /* nn: B's [kc, 8] panel stays in L1 while every 4-row tile of A passes over it. */
    for (int j0 = 0; j0 < n; j0 += 8) {
      const int cols = n - j0 < 8 ? n - j0 : 8;
      const float* bp = b + (long)k0 * n + j0;
      int i0 = 0;
      if (cols == 8) {
        for (; i0 + 4 <= m; i0 += 4) tile_4x8(ak + (long)i0 * lda, lda, 0, bp, n, c + (long)i0 * n + j0, n, kc, first);
      } else if (cols < 4) {
        for (; i0 + 4 <= m; i0 += 4) tile_4_tail(ak + (long)i0 * lda, lda, 0, bp, n, c + (long)i0 * n + j0, n, cols, kc, first);
      }
      if (i0 < m) tile_edge(ak + (long)i0 * lda, lda, 0, bp, n, c + (long)i0 * n + j0, n, m - i0, cols, kc, first);
    }
  }
}

void gemm_nn(const float* a, const float* b, float* c, int m, int k, int n, int accumulate) {
  gemm_run(a, 0, b, c, m, k, n, accumulate);
}

void gemm_tn(const float* a, const float* b, float* c, int m, int k, int n, int accumulate) {
  gemm_run(a, 1, b, c, m, k, n, accumulate);
}

/* C[M, N] <- A[M, K] · B[K, N], or Aᵀ · B with A stored as [K, M] when a_transposed: src/shared/kernels/gemm.ts. */
EXPORT(gemm_f32) void gemm_f32(const float* a, const float* b, float* c, int m, int k, int n, int a_transposed) {
  gemm_run(a, a_transposed, b, c, m, k, n, 0);
}

/*
 * C[M, N] += bias[N] on every row (when bias is non-null), then ReLU (v < 0 ? 0 : v) when relu: a dense layer's
 * epilogue, in place on the GEMM's fresh output.
 */
EXPORT(bias_relu_rows) void bias_relu_rows(float* c, const float* bias, int m, int n, int relu) {
  for (int i = 0; i < m; i++) {
    float* row = c + (long)i * n;
    int j = 0;
    for (; j + 4 <= n; j += 4) {
      v128_t v = wasm_v128_load(row + j);
      if (bias) v = wasm_f32x4_add(v, wasm_v128_load(bias + j));
      wasm_v128_store(row + j, relu ? RELU(v) : v);
    }
    for (; j < n; j++) {
      const float v = bias ? row[j] + bias[j] : row[j];
      row[j] = relu && v < 0 ? 0.0f : v;
    }
  }
}
