/* fl_kernels_impl.h: the kernel bodies, written once against fl_simd.h and instantiated per
 * (instruction set, dtype) by the fl_kern_<isa>_<dtype>.c units.
 *
 * Determinism: every output element is one fixed chain of operations. The GEMM sums each block of
 * FL_KC values of k in increasing order into one accumulator, then adds the block sums to the
 * element in increasing order (register tiles only choose *which* elements run side by side, never
 * how one is summed), and padded panels mean every lane goes through the same vector instruction.
 * So a value does not depend on M, on the tile it fell in, or on which thread ran it.
 */
#include <math.h>
#include <string.h>
#include "fl_kernels.h"
#include "fl_simd.h"

/* K is cut into blocks of FL_KC (fl_kernels.h) so a tile's slice of packed weights stays in
 * L1/L2. Each block is summed on its own and then added to c, in increasing k: a fixed order. */

/* ---------------------------------------------------------------------------------------------
 * Point math on whole panels: exp, sigmoid, tanh. Errors are measured in tests/test_kernels.py. */

#if FL_DOUBLE
#define FL_EXP_LO (-708.3)
#define FL_EXP_HI 709.0
#define FL_LN2_HI 6.93147180369123816490e-01 /* few mantissa bits: n*LN2_HI is exact */
#define FL_LN2_LO 1.90821492927058770002e-10
#else
#define FL_EXP_LO (-87.3f)
#define FL_EXP_HI 88.3f
#define FL_LN2_HI 0.693359375f
#define FL_LN2_LO (-2.12194440e-4f)
#endif

/* exp(x), clamped so 2^n stays a normal number: exp(x) = 2^n * exp(r), |r| <= ln2/2. */
FL_INLINE V fl_exp(V x)
{
    x = v_min(v_set1(FL_EXP_HI), v_max(v_set1(FL_EXP_LO), x));
    V n = v_round(v_mul(x, v_set1((T)1.44269504088896341)));
    V r = v_fma(n, v_set1(-FL_LN2_HI), x);
    r = v_fma(n, v_set1(-FL_LN2_LO), r);
#if FL_DOUBLE
    /* Taylor series to r^13: truncation below 1e-17 for |r| <= 0.35 */
    V p = v_set1(1.0 / 6227020800.0);
    p = v_fma(p, r, v_set1(1.0 / 479001600.0));
    p = v_fma(p, r, v_set1(1.0 / 39916800.0));
    p = v_fma(p, r, v_set1(1.0 / 3628800.0));
    p = v_fma(p, r, v_set1(1.0 / 362880.0));
    p = v_fma(p, r, v_set1(1.0 / 40320.0));
    p = v_fma(p, r, v_set1(1.0 / 5040.0));
    p = v_fma(p, r, v_set1(1.0 / 720.0));
    p = v_fma(p, r, v_set1(1.0 / 120.0));
    p = v_fma(p, r, v_set1(1.0 / 24.0));
    p = v_fma(p, r, v_set1(1.0 / 6.0));
    p = v_fma(p, r, v_set1(0.5));
    p = v_fma(p, r, v_set1(1.0));
    p = v_fma(p, r, v_set1(1.0));
#else
    /* Cephes expf minimax polynomial */
    V p = v_set1(1.9875691500e-4f);
    p = v_fma(p, r, v_set1(1.3981999507e-3f));
    p = v_fma(p, r, v_set1(8.3334519073e-3f));
    p = v_fma(p, r, v_set1(4.1665795894e-2f));
    p = v_fma(p, r, v_set1(1.6666665459e-1f));
    p = v_fma(p, r, v_set1(5.0000001201e-1f));
    p = v_fma(p, v_mul(r, r), v_add(r, v_set1(1.0f)));
#endif
    return v_ldexp(p, n);
}

FL_INLINE V fl_sigmoid(V x)
{
    const V one = v_set1(1);
    return v_div(one, v_add(one, fl_exp(v_sub(v_zero(), x))));
}

/* tanh: an odd polynomial (float) or rational function (double) near 0, where 1 - 2/(e^2x + 1)
 * would lose relative accuracy; that formula, with the sign restored, elsewhere (Cephes). */
FL_INLINE V fl_tanh(V x)
{
    const V one = v_set1(1), zero = v_zero();
    V ax = v_max(x, v_sub(zero, x)); /* |x|; NaN stays NaN */
    V z = v_mul(x, x);
#if FL_DOUBLE
    V p = v_fma(v_set1(-9.64399179425052238628e-1), z, v_set1(-9.92877231001918586564e1));
    p = v_fma(p, z, v_set1(-1.61468768441708447952e3));
    V q = v_add(z, v_set1(1.12811678491632931402e2));
    q = v_fma(q, z, v_set1(2.23548839060100448583e3));
    q = v_fma(q, z, v_set1(4.84406305325125486048e3));
    V small = v_fma(v_mul(x, z), v_div(p, q), x);
#else
    V p = v_fma(v_set1(-5.70498872745e-3f), z, v_set1(2.06390887954e-2f));
    p = v_fma(p, z, v_set1(-5.37397155531e-2f));
    p = v_fma(p, z, v_set1(1.33314422036e-1f));
    p = v_fma(p, z, v_set1(-3.33332819422e-1f));
    V small = v_fma(v_mul(x, z), p, x);
#endif
    V e = fl_exp(v_add(ax, ax));
    V big = v_sub(one, v_div(v_set1(2), v_add(e, one)));
    big = v_select_lt(x, zero, v_sub(zero, big), big);
    return v_select_lt(ax, v_set1((T)0.625), small, big);
}

/* ---------------------------------------------------------------------------------------------
 * GEMM over packed panels: one register tile of mr rows x nv panels, summed over kc values of k. */

FL_INLINE void fl_tile(const int mr, const int nv, fl_idx kc, const T *a, fl_idx rsa, fl_idx csa,
                       const T *const *b, fl_idx ldb, T *c, fl_idx ldc, int accumulate,
                       const T *init)
{
    const T *bp[8]; /* panel v's row k is bp[v] + k*ldb */
#pragma GCC unroll 8
    for (int v = 0; v < nv; v++)
        bp[v] = b[v];
    V acc[4][8];
#pragma GCC unroll 4
    for (int r = 0; r < mr; r++)
#pragma GCC unroll 8
        for (int v = 0; v < nv; v++) {
            acc[r][v] = v_zero();
            /* c is read only after the k loop, far too late for out-of-order execution to hide
             * a miss (the tile's c often sits in L3 or memory: gates, weight gradients) */
            if (accumulate)
                FL_PREFETCH(c + r * ldc + v * NR);
        }
    for (fl_idx k = 0; k < kc; k++) {
        V bv[8];
#pragma GCC unroll 8
        for (int v = 0; v < nv; v++) {
            /* one panel row is one cache line; a single row's tiles stream B anyway and the
             * hardware prefetcher keeps up with them (batch 1 measured no better with it) */
            if (FL_B_AHEAD && mr > 1)
                FL_PREFETCH_READ(bp[v] + (k + FL_B_AHEAD) * ldb);
            bv[v] = v_load(bp[v] + k * ldb);
        }
#pragma GCC unroll 4
        for (int r = 0; r < mr; r++) {
            V av = v_set1(a[r * rsa + k * csa]);
#pragma GCC unroll 8
            for (int v = 0; v < nv; v++)
                acc[r][v] = v_fma(av, bv[v], acc[r][v]);
        }
    }
    /* The block's partial sum joins the running value once: a long sum is then a short chain of
     * block sums, far more accurate in float32 than one chain of K terms, in the same fixed order. */
#pragma GCC unroll 4
    for (int r = 0; r < mr; r++)
#pragma GCC unroll 8
        for (int v = 0; v < nv; v++) {
            V base = accumulate ? v_load(c + r * ldc + v * NR)
                                : (init ? v_load(init + v * NR) : v_zero());
            v_store(c + r * ldc + v * NR, v_add(base, acc[r][v]));
        }
}

typedef void (*fl_tile_fn)(fl_idx, const T *, fl_idx, fl_idx, const T *const *, fl_idx, T *,
                           fl_idx, int, const T *);

/* One function per tile shape, so each has its loops fully unrolled and its tile in registers. */
#define FL_TILE(R, N)                                                                               \
    static void FL(tile_##R##x##N)(fl_idx kc, const T *a, fl_idx rsa, fl_idx csa,                 \
                                   const T *const *b, fl_idx ldb, T *c, fl_idx ldc, int acc,       \
                                   const T *init)                                                   \
    {                                                                                               \
        fl_tile(R, N, kc, a, rsa, csa, b, ldb, c, ldc, acc, init);                                  \
    }
#define FL_TILE_ROW(R) FL_TILE(R, 1) FL_TILE(R, 2) FL_TILE(R, 3) FL_TILE(R, 4)
FL_TILE_ROW(1) FL_TILE_ROW(2) FL_TILE_ROW(3) FL_TILE_ROW(4)
FL_TILE(1, 5) FL_TILE(1, 6) FL_TILE(1, 7) FL_TILE(1, 8)

#define FL_TILE_REF(R, N) FL(tile_##R##x##N)
static const fl_tile_fn FL(tiles)[5][9] = {
    {0},
    {0, FL_TILE_REF(1, 1), FL_TILE_REF(1, 2), FL_TILE_REF(1, 3), FL_TILE_REF(1, 4),
     FL_TILE_REF(1, 5), FL_TILE_REF(1, 6), FL_TILE_REF(1, 7), FL_TILE_REF(1, 8)},
    {0, FL_TILE_REF(2, 1), FL_TILE_REF(2, 2), FL_TILE_REF(2, 3), FL_TILE_REF(2, 4)},
    {0, FL_TILE_REF(3, 1), FL_TILE_REF(3, 2), FL_TILE_REF(3, 3), FL_TILE_REF(3, 4)},
    {0, FL_TILE_REF(4, 1), FL_TILE_REF(4, 2), FL_TILE_REF(4, 3), FL_TILE_REF(4, 4)},
};

void FL(gemm)(fl_idx M, fl_idx P, fl_idx K, const T *a, fl_idx rsa, fl_idx csa, const T *b,
              fl_idx ldb, fl_idx gp, fl_idx bgs, T *c, fl_idx ldc, int accumulate, const T *init)
{
    /* A single row has no row reuse: give it more panels, for enough independent FMA chains. */
    const fl_idx nv_max = (M == 1) ? FL_NV1 : FL_NV;
    fl_idx k0 = 0;
    do {
        const fl_idx kc = (K - k0 < FL_KC) ? K - k0 : FL_KC;
        const int acc = (k0 == 0) ? accumulate : 1;
        const T *ini = (k0 == 0) ? init : NULL;
        for (fl_idx p0 = 0; p0 < P; p0 += nv_max) {
            const int nv = (int)((P - p0 < nv_max) ? P - p0 : nv_max);
            const T *bp[8];
            for (int v = 0; v < nv; v++)
                bp[v] = b + ((p0 + v) / gp) * bgs + ((p0 + v) % gp) * NR + k0 * ldb;
            for (fl_idx m0 = 0; m0 < M; m0 += FL_MR) {
                const int mr = (int)((M - m0 < FL_MR) ? M - m0 : FL_MR);
                FL(tiles)[mr][nv](kc, a + m0 * rsa + k0 * csa, rsa, csa, bp, ldb,
                                  c + m0 * ldc + p0 * NR, ldc, acc, ini ? ini + p0 * NR : NULL);
            }
        }
        k0 += kc;
    } while (k0 < K);
}

/* ---------------------------------------------------------------------------------------------
 * The fused cell: activations, cell update and output of one row, one unit block at a time. */

void FL(gates_fwd)(fl_idx nblk, T *g, const T *c_prev, T *c, T *h, T *tc)
{
    for (fl_idx u = 0; u < nblk; u++, g += 4 * NR, c_prev += NR, c += NR, h += NR) {
        V i = fl_sigmoid(v_load(g));
        V f = fl_sigmoid(v_load(g + NR));
        V gg = fl_tanh(v_load(g + 2 * NR));
        V o = fl_sigmoid(v_load(g + 3 * NR));
        V cn = v_add(v_mul(f, v_load(c_prev)), v_mul(i, gg));
        V t = fl_tanh(cn);
        v_store(c, cn);
        v_store(h, v_mul(o, t));
        if (tc) {
            v_store(g, i);
            v_store(g + NR, f);
            v_store(g + 2 * NR, gg);
            v_store(g + 3 * NR, o);
            v_store(tc, t);
            tc += NR;
        }
    }
}

void FL(gates_bwd)(fl_idx nblk, const T *act, const T *c_prev, const T *tc, const T *dh, T *dc,
                   T *dg)
{
    const V one = v_set1(1);
    for (fl_idx u = 0; u < nblk; u++, act += 4 * NR, dg += 4 * NR, c_prev += NR, tc += NR,
                dh += NR, dc += NR) {
        V i = v_load(act), f = v_load(act + NR), g = v_load(act + 2 * NR), o = v_load(act + 3 * NR);
        V t = v_load(tc), d = v_load(dh);
        /* dc_total = dc_next + dh * o * (1 - tanh(c)^2) */
        V dct = v_add(v_load(dc), v_mul(v_mul(d, o), v_sub(one, v_mul(t, t))));
        v_store(dg, v_mul(v_mul(dct, g), v_mul(i, v_sub(one, i))));
        v_store(dg + NR, v_mul(v_mul(dct, v_load(c_prev)), v_mul(f, v_sub(one, f))));
        v_store(dg + 2 * NR, v_mul(v_mul(dct, i), v_sub(one, v_mul(g, g))));
        v_store(dg + 3 * NR, v_mul(v_mul(d, t), v_mul(o, v_sub(one, o))));
        v_store(dc, v_mul(dct, f));
    }
}

void FL(colsum)(fl_idx rows, fl_idx npanels, const T *src, fl_idx ld, T *dst, int accumulate)
{
    /* Row by row into dst, which stays in L1: src is read once, in order. Panel by panel, each
     * pass walked every row ld apart, and at ld a multiple of 4 KiB those lines share one L1
     * set: every pass read src again from L2 or L3. Each sum still adds rows in increasing r. */
    if (!accumulate)
        for (fl_idx p = 0; p < npanels; p++)
            v_store(dst + p * NR, v_zero());
    for (fl_idx r = 0; r < rows; r++)
        for (fl_idx p = 0; p < npanels; p++)
            v_store(dst + p * NR, v_add(v_load(dst + p * NR), v_load(src + r * ld + p * NR)));
}

/* ---------------------------------------------------------------------------------------------
 * Repacking weights (fastlstm.torch repacks on every training step): one tile of W rows x one
 * panel of NR columns, copied into both packed layouts. A copy, so every variant writes the same
 * bytes; the vector ones only move them faster (8x8 or 4x4 register transposes). */

#if defined(FL_ISA_AVX2) || defined(FL_ISA_AVX512)
#define FL_TB (32 / (int)sizeof(T)) /* a transposed block: one ymm of values per side */
#if FL_DOUBLE
typedef __m256d Y;
FL_INLINE void fl_transpose_block(Y r[4])
{
    Y t0 = _mm256_unpacklo_pd(r[0], r[1]), t1 = _mm256_unpackhi_pd(r[0], r[1]);
    Y t2 = _mm256_unpacklo_pd(r[2], r[3]), t3 = _mm256_unpackhi_pd(r[2], r[3]);
    r[0] = _mm256_permute2f128_pd(t0, t2, 0x20);
    r[1] = _mm256_permute2f128_pd(t1, t3, 0x20);
    r[2] = _mm256_permute2f128_pd(t0, t2, 0x31);
    r[3] = _mm256_permute2f128_pd(t1, t3, 0x31);
}
#define FL_YLOAD _mm256_loadu_pd
#define FL_YSTORE _mm256_storeu_pd
#else
typedef __m256 Y;
FL_INLINE void fl_transpose_block(Y r[8])
{
    Y t[8], u[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 2; i++) {
        u[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
        u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
        r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
    }
}
#define FL_YLOAD _mm256_loadu_ps
#define FL_YSTORE _mm256_storeu_ps
#endif
#endif

void FL(repack_tile)(fl_idx W, const T *const *rows, T *bwd, T *fwd)
{
#if defined(FL_ISA_AVX2) || defined(FL_ISA_AVX512)
    if (W % FL_TB == 0) {
        for (fl_idx j0 = 0; j0 < W; j0 += FL_TB)
            for (int i0 = 0; i0 < NR; i0 += FL_TB) {
                Y r[FL_TB];
                for (int j = 0; j < FL_TB; j++) {
                    r[j] = FL_YLOAD(rows[j0 + j] + i0);
                    FL_YSTORE(bwd + (j0 + j) * NR + i0, r[j]);
                }
                fl_transpose_block(r);
                for (int i = 0; i < FL_TB; i++)
                    FL_YSTORE(fwd + (i0 + i) * W + j0, r[i]);
            }
        return;
    }
#endif
    for (fl_idx j = 0; j < W; j++)
        for (int i = 0; i < NR; i++) {
            const T v = rows[j][i];
            bwd[j * NR + i] = v;
            fwd[i * W + j] = v;
        }
}

/* ---------------------------------------------------------------------------------------------
 * Probes: the multiply-add rate and read bandwidth this machine gives these vector types. */

FL_INLINE T fl_lanes_sum(V v)
{
    T lanes[NR], s = 0;
    v_store(lanes, v);
    for (int l = 0; l < NR; l++)
        s += lanes[l];
    return s;
}

T FL(probe_fma)(fl_idx iters)
{
    /* FL_PROBE_CHAINS panel FMAs per iteration (the count the caller's rate assumes), run as
     * FL_PROBE_LIVE chains that fit in the registers: spilled accumulators would time the stack. */
    V acc[FL_PROBE_LIVE];
    const V m = v_set1((T)0.999999), a = v_set1((T)1e-7);
    /* Every lane starts from its own value: with equal lanes the compiler proves the two halves
     * of an AVX2 panel equal and computes one, and the rate would count twice the work done. */
    T start[NR];
#pragma GCC unroll 12
    for (int j = 0; j < FL_PROBE_LIVE; j++) {
        for (int l = 0; l < NR; l++)
            start[l] = (T)(j * NR + l);
        acc[j] = v_load(start);
    }
    for (fl_idx i = 0; i < iters; i++)
#pragma GCC unroll 12
        for (int rep = 0; rep < FL_PROBE_CHAINS / FL_PROBE_LIVE; rep++)
#pragma GCC unroll 12
            for (int j = 0; j < FL_PROBE_LIVE; j++)
                acc[j] = v_fma(acc[j], m, a);
    T s = 0;
    for (int j = 0; j < FL_PROBE_LIVE; j++)
        s += fl_lanes_sum(acc[j]);
    return s;
}

T FL(probe_read)(const T *a, fl_idx n, fl_idx reps)
{
    V acc[8];
    const V one = v_set1(1);
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++)
        acc[j] = v_zero();
    for (fl_idx r = 0; r < reps; r++)
        for (fl_idx i = 0; i + 8 * NR <= n; i += 8 * NR)
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++)
                acc[j] = v_fma(one, v_load(a + i + j * NR), acc[j]);
    T s = 0;
    for (int j = 0; j < 8; j++)
        s += fl_lanes_sum(acc[j]);
    return s;
}

/* The table fl_dispatch.c points at. */
#define FL_OPS_INIT \
    {FL(gemm), FL(gates_fwd), FL(gates_bwd), FL(colsum), FL(repack_tile), FL(probe_fma),     \
     FL(probe_read), FL_NV}
#if FL_DOUBLE
const fl_ops_f64 FL(ops) = FL_OPS_INIT;
#else
const fl_ops_f32 FL(ops) = FL_OPS_INIT;
#endif
