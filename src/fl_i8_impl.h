/* fl_i8_impl.h: the int8 inference kernels (fl_ops_i8, fl_kernels.h), written once per
 * instruction set in the sections below and instantiated by the fl_kern_<isa>_i8.c units, each
 * defining one of FL_I8_VNNI (AVX-512 VNNI + BW), FL_I8_AVX2 or FL_I8_GENERIC first.
 *
 * GEMM. Integer sums are exact, so the order of the terms is free and every variant gives the
 * same int32 bits. Each variant computes the sum its own way:
 *   avx512vnni  vpdpbusd needs one unsigned operand: it sums (a+128)*b over groups of 4 bytes
 *               (a+128 = a XOR 0x80, in [1, 255]) and subtracts bsum = 128 * sum_k b once. Those
 *               sums can pass 2^31; vpdpbusd and vpsubd wrap modulo 2^32, and the true result
 *               fits in int32, so the wrapped value is the exact one.
 *   avx2        no unsigned-by-signed dot of 4: vpsignb moves a's sign onto b, vpmaddubsw
 *               multiplies |a| (unsigned) by that and adds pairs into int16 (|pair| <= 2*127^2 =
 *               32258 < 32767: never saturates), vpmaddwd with ones adds pairs of those into int32.
 *   generic     plain C, sums in uint32 (wrap-around is defined there, and harmless as above).
 * Register tiles of MR rows x NV panels (16 int32 columns each) keep their sums in registers over
 * a block of I8_KCG k-groups; a single row (batch-1 steps) gets up to NV1 panels and streams the
 * packed weights once, in order, panel after panel. K beyond one block adds into c.
 *
 * Loop order (M > 1): per K block, per NV panels, every row tile: that slice of b (NV panels x
 * I8_KCG groups x 64 bytes = 64 KiB at NV 4) stays in L2 while the tiles of all rows read it,
 * and a's block is read once per slice (M x 1 KiB; far less traffic than b's).
 */
#include <float.h>
#include <math.h>
#include <string.h>
#include "fl_kernels.h"


#define FL_I8_CAT_(a, b) a##_##b##_i8
#define FL_I8_CAT(a, b) FL_I8_CAT_(a, b)
#define I8(name) FL_I8_CAT(name, I8SUF) /* I8(gemm) -> gemm_<isa>_i8 */
#define I8_INLINE static inline __attribute__((always_inline))

/* k-groups (of 4 k) per K block: 1024 values of k. */
#define I8_KCG 256

/* The 4 bytes of a at p as one int32 (unaligned, no aliasing trouble). */
I8_INLINE int32_t i8_load4(const int8_t *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* rint for |v| < 2^22 in the current rounding mode (round to nearest even by default, as the
 * reference's np.rint): adding 1.5 * 2^23 leaves no fraction bits, subtracting it is exact.
 * (Without -ffast-math's reassociation no compiler folds the pair.) That needs float arithmetic
 * in float's own width, as with SSE (FLT_EVAL_METHOD 0); elsewhere (x87) the libm call. */
I8_INLINE float i8_rint_small(float v)
{
#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD == 0
    const float magic = 12582912.0f;
    float t = v + magic;
    return t - magic;
#else
    return nearbyintf(v);
#endif
}

/* Scalar quantization of x[k0..K) with inv (tails of the vector variants and the generic one). */
I8_INLINE void i8_quantize_tail(fl_idx k0, fl_idx K, const float *x, float inv, int8_t *q)
{
    for (fl_idx k = k0; k < K; k++)
        q[k] = (int8_t)(int)i8_rint_small(x[k] * inv);
}

/* max over k of the bits of |x_k| (an unsigned compare of non-negative floats' bits orders them
 * as floats do, and NaN and inf are exactly the values >= 0x7f800000). */
I8_INLINE uint32_t i8_absmax_bits_tail(fl_idx k0, fl_idx K, const float *x, uint32_t mb)
{
    for (fl_idx k = k0; k < K; k++) {
        uint32_t u;
        memcpy(&u, x + k, 4);
        u &= 0x7fffffffu;
        mb = u > mb ? u : mb;
    }
    return mb;
}

/* The scalar part of quantize_row: from the max bits to inv (0 when the row quantizes to zeros,
 * with *scale set), following fastlstm.reference.quantize_rows. Returns 0 when q must be all 0. */
I8_INLINE int i8_row_scale(uint32_t mb, float *inv, float *scale)
{
    if (mb >= 0x7f800000u) { /* NaN or +-inf somewhere */
        *scale = NAN;
        return 0;
    }
    float m;
    memcpy(&m, &mb, 4);
    *inv = 127.0f / m;
    if (isinf(*inv)) { /* m = 0, or 127 / m overflows */
        *scale = 0.0f;
        return 0;
    }
    *scale = m / 127.0f;
    return 1;
}

/* =========================================================================================== */
#if defined(FL_I8_VNNI)
#define I8SUF avx512vnni
#define I8_MR 4
#define I8_NV 4
#define I8_NV1 8

/* a's rows of one tile, XOR 0x80 (a + 128 as unsigned bytes), 64-byte aligned, so the k loop
 * broadcasts each group straight from memory: converting once per tile costs one vpxord per 64
 * bytes, against one per group and row inside the loop (on the same ports as vpdpbusd). Bytes
 * past the tile's groups are converted zeros, never read. */
I8_INLINE void i8_prep_rows(const int mr, fl_idx kg, const int8_t *a, fl_idx lda,
                            uint8_t (*au)[I8_KCG * 4])
{
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    const fl_idx nb = kg * 4;
    for (int r = 0; r < mr; r++)
        for (fl_idx k = 0; k < nb; k += 64) {
            const fl_idx left = nb - k;
            const __mmask64 m = left >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << left) - 1);
            __m512i v = _mm512_maskz_loadu_epi8(m, a + r * lda + k);
            _mm512_store_si512((void *)(au[r] + k), _mm512_xor_si512(v, flip));
        }
}

/* One tile: mr rows x nv panels over kg groups. first: c = sum - bsum; else c += sum.
 * (The sums start from -bsum or c and are only stored at the end: with a load or a subtraction
 * after the loop instead, GCC 12 copied every accumulator at each vpdpbusd and spilled some,
 * a third more instructions in the loop; AVX2's tile did the same.) */
I8_INLINE void i8_tile(const int mr, const int nv, fl_idx kg, const int8_t *a, fl_idx lda,
                       const int8_t *b, fl_idx ps, const int32_t *bsum, int32_t *c, fl_idx ldc,
                       int first)
{
    __attribute__((aligned(64))) uint8_t au[4][I8_KCG * 4];
    i8_prep_rows(mr, kg, a, lda, au);
    /* the sums start from -bsum (first K block) or from c, and end in c */
    __m512i acc[4][I8_NV1];
#pragma GCC unroll 4
    for (int r = 0; r < mr; r++)
#pragma GCC unroll 8
        for (int v = 0; v < nv; v++)
            acc[r][v] = first ? _mm512_sub_epi32(_mm512_setzero_si512(),
                                                 _mm512_loadu_si512((const void *)(bsum + v * FL_I8_NR)))
                              : _mm512_loadu_si512((const void *)(c + r * ldc + v * FL_I8_NR));
    for (fl_idx g = 0; g < kg; g++) {
        /* the rows' broadcasts first, then each panel's 64 bytes once, as vpdpbusd's memory
         * operand where there is one row */
        __m512i av[4];
#pragma GCC unroll 4
        for (int r = 0; r < mr; r++) {
            int32_t w;
            memcpy(&w, au[r] + 4 * g, 4);
            av[r] = _mm512_set1_epi32(w);
        }
#pragma GCC unroll 8
        for (int v = 0; v < nv; v++) {
            const __m512i bv = _mm512_loadu_si512((const void *)(b + v * ps + g * 64));
#pragma GCC unroll 4
            for (int r = 0; r < mr; r++)
                acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], av[r], bv);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < mr; r++)
#pragma GCC unroll 8
        for (int v = 0; v < nv; v++)
            _mm512_storeu_si512((void *)(c + r * ldc + v * FL_I8_NR), acc[r][v]);
}

float I8(quantize_row)(fl_idx K, const float *x, int8_t *q)
{
    const fl_idx Kp = (K + FL_I8_KG - 1) / FL_I8_KG * FL_I8_KG;
    const __m512i absmask = _mm512_set1_epi32(0x7fffffff);
    __m512i mx = _mm512_setzero_si512();
    for (fl_idx k = 0; k < K; k += 16) {
        const __mmask16 m = K - k >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (K - k)) - 1);
        __m512i v = _mm512_maskz_loadu_epi32(m, x + k);
        mx = _mm512_max_epu32(mx, _mm512_and_si512(v, absmask));
    }
    uint32_t mb = (uint32_t)_mm512_reduce_max_epu32(mx);
    float inv, scale;
    if (!i8_row_scale(mb, &inv, &scale)) {
        memset(q, 0, (size_t)Kp);
        return scale;
    }
    const __m512 vinv = _mm512_set1_ps(inv);
    /* up to Kp: lanes past K load as 0 and store q = 0, the padding */
    for (fl_idx k = 0; k < Kp; k += 16) {
        const __mmask16 ml = K - k >= 16 ? (__mmask16)0xffff
                                         : (K > k ? (__mmask16)((1u << (K - k)) - 1) : 0);
        const __mmask16 ms = Kp - k >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (Kp - k)) - 1);
        __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(ml, x + k), vinv);
        /* vcvtps2dq rounds in the current mode (nearest even by default), |v| < 127.5 */
        _mm512_mask_cvtsepi32_storeu_epi8(q + k, ms, _mm512_cvtps_epi32(v));
    }
    return scale;
}

void I8(dequant_add)(fl_idx N, const int32_t *acc, float s_a, const float *s_w, const float *add,
                     float *out)
{
    const __m512 sa = _mm512_set1_ps(s_a);
    for (fl_idx n = 0; n < N; n += 16) {
        const __mmask16 m = N - n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (N - n)) - 1);
        __m512 s = _mm512_mul_ps(sa, _mm512_maskz_loadu_ps(m, s_w + n));
        __m512 d = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(m, acc + n)), s);
        if (add)
            d = _mm512_add_ps(_mm512_maskz_loadu_ps(m, add + n), d);
        _mm512_mask_storeu_ps(out + n, m, d);
    }
}

/* =========================================================================================== */
#elif defined(FL_I8_AVX2)
#define I8SUF avx2
/* 2 rows x 2 panels (2 ymm per panel): 8 sums, 4 b vectors, a, |a|, ones and a temporary fill
 * the 16 ymm registers, and |a| serves 4 vectors. Measured on Zen 3 (1 thread, M = 4..64):
 * 2x2 ~125 GOPS, 4x1 ~115, 3x1 ~95, 1x2 ~115. A single row takes 4 panels: 8 sums, every b
 * vector used once (a software prefetch of b measured no better). (-D overrides: experiments.) */
#ifndef I8_MR
#define I8_MR 2
#define I8_NV 2
#define I8_NV1 4
#endif

I8_INLINE void i8_tile(const int mr, const int nv, fl_idx kg, const int8_t *a, fl_idx lda,
                       const int8_t *b, fl_idx ps, const int32_t *bsum, int32_t *c, fl_idx ldc,
                       int first)
{
    (void)bsum;
    const __m256i ones = _mm256_set1_epi16(1);
    /* the sums start from 0 (first K block) or from c, and end in c */
    __m256i acc[4][8];
#pragma GCC unroll 4
    for (int r = 0; r < mr; r++)
#pragma GCC unroll 8
        for (int j = 0; j < 2 * nv; j++)
            acc[r][j] = first ? _mm256_setzero_si256()
                              : _mm256_loadu_si256((const __m256i *)(c + r * ldc + j * 8));
    for (fl_idx g = 0; g < kg; g++) {
        __m256i bv[8];
#pragma GCC unroll 8
        for (int j = 0; j < 2 * nv; j++)
            bv[j] = _mm256_loadu_si256((const __m256i *)(b + (j >> 1) * ps + g * 64 + (j & 1) * 32));
#pragma GCC unroll 4
        for (int r = 0; r < mr; r++) {
            const __m256i av = _mm256_set1_epi32(i8_load4(a + r * lda + 4 * g));
            const __m256i aa = _mm256_abs_epi8(av);
#pragma GCC unroll 8
            for (int j = 0; j < 2 * nv; j++) {
                __m256i t = _mm256_maddubs_epi16(aa, _mm256_sign_epi8(bv[j], av));
                acc[r][j] = _mm256_add_epi32(acc[r][j], _mm256_madd_epi16(t, ones));
            }
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < mr; r++)
#pragma GCC unroll 8
        for (int j = 0; j < 2 * nv; j++)
            _mm256_storeu_si256((__m256i *)(c + r * ldc + j * 8), acc[r][j]);
}

float I8(quantize_row)(fl_idx K, const float *x, int8_t *q)
{
    const fl_idx Kp = (K + FL_I8_KG - 1) / FL_I8_KG * FL_I8_KG;
    const __m256i absmask = _mm256_set1_epi32(0x7fffffff);
    __m256i mx = _mm256_setzero_si256();
    fl_idx k = 0;
    for (; k + 8 <= K; k += 8)
        mx = _mm256_max_epu32(mx, _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(x + k)), absmask));
    __m128i m4 = _mm_max_epu32(_mm256_castsi256_si128(mx), _mm256_extracti128_si256(mx, 1));
    m4 = _mm_max_epu32(m4, _mm_shuffle_epi32(m4, 0x4e));
    m4 = _mm_max_epu32(m4, _mm_shuffle_epi32(m4, 0xb1));
    uint32_t mb = i8_absmax_bits_tail(k, K, x, (uint32_t)_mm_cvtsi128_si32(m4));
    float inv, scale;
    if (!i8_row_scale(mb, &inv, &scale)) {
        memset(q, 0, (size_t)Kp);
        return scale;
    }
    const __m256 vinv = _mm256_set1_ps(inv);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (k = 0; k + 32 <= K; k += 32) {
        /* vcvtps2dq rounds in the current mode (nearest even by default), |v| < 127.5 */
        __m256i v0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + k), vinv));
        __m256i v1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + k + 8), vinv));
        __m256i v2 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + k + 16), vinv));
        __m256i v3 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + k + 24), vinv));
        /* packs work within 128-bit lanes: dwords come out as 0-3, 8-11, 16-19, 24-27, 4-7, ... */
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(v0, v1), _mm256_packs_epi32(v2, v3));
        _mm256_storeu_si256((__m256i *)(q + k), _mm256_permutevar8x32_epi32(p, order));
    }
    i8_quantize_tail(k, K, x, inv, q);
    for (k = K; k < Kp; k++)
        q[k] = 0;
    return scale;
}

void I8(dequant_add)(fl_idx N, const int32_t *acc, float s_a, const float *s_w, const float *add,
                     float *out)
{
    const __m256 sa = _mm256_set1_ps(s_a);
    fl_idx n = 0;
    for (; n + 8 <= N; n += 8) {
        __m256 s = _mm256_mul_ps(sa, _mm256_loadu_ps(s_w + n));
        __m256 d = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *)(acc + n))), s);
        if (add)
            d = _mm256_add_ps(_mm256_loadu_ps(add + n), d);
        _mm256_storeu_ps(out + n, d);
    }
    for (; n < N; n++) {
        float d = (float)acc[n] * (s_a * s_w[n]);
        out[n] = add ? add[n] + d : d;
    }
}

/* =========================================================================================== */
#else
#define I8SUF generic
#define I8_MR 2
#define I8_NV 2
#define I8_NV1 4

I8_INLINE void i8_tile(const int mr, const int nv, fl_idx kg, const int8_t *a, fl_idx lda,
                       const int8_t *b, fl_idx ps, const int32_t *bsum, int32_t *c, fl_idx ldc,
                       int first)
{
    (void)bsum;
    uint32_t acc[4][I8_NV1 * FL_I8_NR];
    memset(acc, 0, sizeof acc);
    for (fl_idx g = 0; g < kg; g++)
        for (int r = 0; r < mr; r++) {
            const int8_t *ar = a + r * lda + 4 * g;
            const int32_t a0 = ar[0], a1 = ar[1], a2 = ar[2], a3 = ar[3];
            for (int v = 0; v < nv; v++) {
                const int8_t *bp = b + v * ps + g * 64;
                uint32_t *s = acc[r] + v * FL_I8_NR;
                for (int l = 0; l < FL_I8_NR; l++)
                    s[l] += (uint32_t)(a0 * bp[4 * l] + a1 * bp[4 * l + 1] + a2 * bp[4 * l + 2] +
                                       a3 * bp[4 * l + 3]);
            }
        }
    for (int r = 0; r < mr; r++)
        for (int n = 0; n < nv * FL_I8_NR; n++) {
            int32_t *cp = c + r * ldc + n;
            uint32_t s = first ? acc[r][n] : acc[r][n] + (uint32_t)*cp;
            *cp = (int32_t)s; /* (GCC: modulo 2^32; the true sum fits) */
        }
}

float I8(quantize_row)(fl_idx K, const float *x, int8_t *q)
{
    const fl_idx Kp = (K + FL_I8_KG - 1) / FL_I8_KG * FL_I8_KG;
    float inv, scale;
    if (!i8_row_scale(i8_absmax_bits_tail(0, K, x, 0), &inv, &scale)) {
        memset(q, 0, (size_t)Kp);
        return scale;
    }
    i8_quantize_tail(0, K, x, inv, q);
    for (fl_idx k = K; k < Kp; k++)
        q[k] = 0;
    return scale;
}

void I8(dequant_add)(fl_idx N, const int32_t *acc, float s_a, const float *s_w, const float *add,
                     float *out)
{
    for (fl_idx n = 0; n < N; n++) {
        float d = (float)acc[n] * (s_a * s_w[n]);
        out[n] = add ? add[n] + d : d;
    }
}
#endif

/* =========================================================================================== */
/* Tiles and the GEMM driver, the same for every variant. */

typedef void (*i8_tile_fn)(fl_idx, const int8_t *, fl_idx, const int8_t *, fl_idx,
                           const int32_t *, int32_t *, fl_idx, int);

#define I8_TILE(R, N)                                                                              \
    static void I8(tile_##R##x##N)(fl_idx kg, const int8_t *a, fl_idx lda, const int8_t *b,       \
                                   fl_idx ps, const int32_t *bsum, int32_t *c, fl_idx ldc,         \
                                   int first)                                                      \
    {                                                                                              \
        i8_tile(R, N, kg, a, lda, b, ps, bsum, c, ldc, first);                                     \
    }
#define I8_TREF(R, N) I8(tile_##R##x##N)

/* single row: 1..I8_NV1 panels */
I8_TILE(1, 1) I8_TILE(1, 2) I8_TILE(1, 3) I8_TILE(1, 4)
#if I8_NV1 == 8
I8_TILE(1, 5) I8_TILE(1, 6) I8_TILE(1, 7) I8_TILE(1, 8)
static const i8_tile_fn I8(tiles1)[9] = {0, I8_TREF(1, 1), I8_TREF(1, 2), I8_TREF(1, 3),
                                          I8_TREF(1, 4), I8_TREF(1, 5), I8_TREF(1, 6),
                                          I8_TREF(1, 7), I8_TREF(1, 8)};
#else
static const i8_tile_fn I8(tiles1)[5] = {0, I8_TREF(1, 1), I8_TREF(1, 2), I8_TREF(1, 3),
                                          I8_TREF(1, 4)};
#endif

/* several rows: 1..4 rows x 1..4 panels (each variant uses up to I8_MR x I8_NV) */
I8_TILE(2, 1) I8_TILE(2, 2) I8_TILE(2, 3) I8_TILE(2, 4)
I8_TILE(3, 1) I8_TILE(3, 2) I8_TILE(3, 3) I8_TILE(3, 4)
I8_TILE(4, 1) I8_TILE(4, 2) I8_TILE(4, 3) I8_TILE(4, 4)
#if I8_MR > 4 || I8_NV > 4 || I8_NV1 > 8
#error "tiles are instantiated up to 4 x 4 (1 x 8 for a single row)"
#endif
static const i8_tile_fn I8(tiles)[5][5] = {
    {0},
    {0, I8_TREF(1, 1), I8_TREF(1, 2), I8_TREF(1, 3), I8_TREF(1, 4)},
    {0, I8_TREF(2, 1), I8_TREF(2, 2), I8_TREF(2, 3), I8_TREF(2, 4)},
    {0, I8_TREF(3, 1), I8_TREF(3, 2), I8_TREF(3, 3), I8_TREF(3, 4)},
    {0, I8_TREF(4, 1), I8_TREF(4, 2), I8_TREF(4, 3), I8_TREF(4, 4)},
};

void I8(gemm)(fl_idx M, fl_idx P, fl_idx K, const int8_t *a, fl_idx lda, const int8_t *b,
              const int32_t *bsum, int32_t *c, fl_idx ldc)
{
    const fl_idx KG = (K + FL_I8_KG - 1) / FL_I8_KG;
    const fl_idx ps = KG * 64; /* bytes per packed panel */
    fl_idx g0 = 0;
    do { /* (K = 0 still runs once: c = 0 - bsum = 0) */
        const fl_idx kg = KG - g0 < I8_KCG ? KG - g0 : I8_KCG;
        const int first = g0 == 0;
        const int8_t *ak = a + g0 * FL_I8_KG, *bk = b + g0 * 64;
        if (M == 1) {
            for (fl_idx p0 = 0; p0 < P; p0 += I8_NV1) {
                const int nv = (int)(P - p0 < I8_NV1 ? P - p0 : I8_NV1);
                I8(tiles1)[nv](kg, ak, lda, bk + p0 * ps, ps, bsum ? bsum + p0 * FL_I8_NR : NULL,
                               c + p0 * FL_I8_NR, ldc, first);
            }
        } else {
            for (fl_idx p0 = 0; p0 < P; p0 += I8_NV) {
                const int nv = (int)(P - p0 < I8_NV ? P - p0 : I8_NV);
                for (fl_idx m0 = 0; m0 < M; m0 += I8_MR) {
                    const int mr = (int)(M - m0 < I8_MR ? M - m0 : I8_MR);
                    I8(tiles)[mr][nv](kg, ak + m0 * lda, lda, bk + p0 * ps, ps,
                                      bsum ? bsum + p0 * FL_I8_NR : NULL,
                                      c + m0 * ldc + p0 * FL_I8_NR, ldc, first);
                }
            }
        }
        g0 += kg;
    } while (g0 < KG);
}

const fl_ops_i8 I8(ops) = {I8(gemm), I8(quantize_row), I8(dequant_add)};
