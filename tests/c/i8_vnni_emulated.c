/* i8_vnni_emulated.c: the avx512vnni int8 kernels (fl_i8_impl.h's FL_I8_VNNI section) on any
 * CPU, with the few AVX-512 intrinsics they use written here in plain C, checked against exact
 * int64 sums and the generic variant (which tests/test_int8_kernels.py checks against NumPy).
 * tests/test_int8_vnni_emulated.py builds and runs it, under AddressSanitizer where gcc has it,
 * so an access past a buffer (the emulated masked loads and stores touch only their lanes, as
 * the hardware's do) is a report. Exit status 0 when every check passed.
 *
 * What this checks is the kernels' logic: tiling, K blocks and tails, the a+128 / bsum
 * correction and its wrap-around, masks, the packing of quantized bytes, the order of the
 * dequantization's roundings. What it cannot check is that the real instructions behave as
 * emulated here (the emulation follows Intel's pseudocode) nor their speed: that needs a CPU
 * with AVX-512 VNNI, where tests/test_int8_kernels.py runs the real variant.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the emulated types and intrinsics ------------------------------------------------------ */
typedef struct { int32_t i[16]; } emu_m512i;
typedef struct { float f[16]; } emu_m512;
#define __m512i emu_m512i
#define __m512 emu_m512
typedef uint16_t __mmask16;
typedef uint64_t __mmask64;

static int emu_failures = 0;
#define EMU_ASSERT(cond, what)                                                                  \
    do {                                                                                        \
        if (!(cond)) {                                                                          \
            fprintf(stderr, "emulation: %s\n", what);                                           \
            emu_failures++;                                                                     \
        }                                                                                       \
    } while (0)

static inline __m512i _mm512_setzero_si512(void)
{
    __m512i r;
    memset(&r, 0, sizeof r);
    return r;
}
static inline __m512i _mm512_set1_epi32(int32_t v)
{
    __m512i r;
    for (int l = 0; l < 16; l++)
        r.i[l] = v;
    return r;
}
static inline __m512i _mm512_set1_epi8(char v)
{
    __m512i r;
    memset(&r, (unsigned char)v, sizeof r);
    return r;
}
static inline __m512 _mm512_set1_ps(float v)
{
    __m512 r;
    for (int l = 0; l < 16; l++)
        r.f[l] = v;
    return r;
}
static inline __m512i _mm512_loadu_si512(const void *p)
{
    __m512i r;
    memcpy(&r, p, 64);
    return r;
}
static inline void _mm512_storeu_si512(void *p, __m512i v) { memcpy(p, &v, 64); }
static inline void _mm512_store_si512(void *p, __m512i v)
{
    EMU_ASSERT(((uintptr_t)p & 63) == 0, "_mm512_store_si512 to an address not 64-byte aligned");
    memcpy(p, &v, 64);
}
static inline __m512i _mm512_maskz_loadu_epi8(__mmask64 m, const void *p)
{
    __m512i r;
    unsigned char *rb = (unsigned char *)&r;
    for (int l = 0; l < 64; l++)
        rb[l] = (m >> l) & 1 ? ((const unsigned char *)p)[l] : 0;
    return r;
}
static inline __m512i _mm512_maskz_loadu_epi32(__mmask16 m, const void *p)
{
    __m512i r;
    for (int l = 0; l < 16; l++) {
        r.i[l] = 0;
        if ((m >> l) & 1)
            memcpy(&r.i[l], (const char *)p + 4 * l, 4);
    }
    return r;
}
static inline __m512 _mm512_maskz_loadu_ps(__mmask16 m, const float *p)
{
    __m512 r;
    for (int l = 0; l < 16; l++)
        r.f[l] = (m >> l) & 1 ? p[l] : 0.0f;
    return r;
}
static inline void _mm512_mask_storeu_ps(float *p, __mmask16 m, __m512 v)
{
    for (int l = 0; l < 16; l++)
        if ((m >> l) & 1)
            p[l] = v.f[l];
}
static inline __m512i _mm512_xor_si512(__m512i a, __m512i b)
{
    for (int l = 0; l < 16; l++)
        a.i[l] ^= b.i[l];
    return a;
}
static inline __m512i _mm512_and_si512(__m512i a, __m512i b)
{
    for (int l = 0; l < 16; l++)
        a.i[l] &= b.i[l];
    return a;
}
static inline __m512i _mm512_sub_epi32(__m512i a, __m512i b)
{
    for (int l = 0; l < 16; l++)
        a.i[l] = (int32_t)((uint32_t)a.i[l] - (uint32_t)b.i[l]);
    return a;
}
static inline __m512i _mm512_max_epu32(__m512i a, __m512i b)
{
    for (int l = 0; l < 16; l++)
        a.i[l] = (uint32_t)a.i[l] > (uint32_t)b.i[l] ? a.i[l] : b.i[l];
    return a;
}
static inline uint32_t _mm512_reduce_max_epu32(__m512i a)
{
    uint32_t m = 0;
    for (int l = 0; l < 16; l++)
        m = (uint32_t)a.i[l] > m ? (uint32_t)a.i[l] : m;
    return m;
}
/* VPDPBUSD: per int32 lane, acc + sum of 4 (unsigned byte of a) * (signed byte of b), wrapping */
static inline __m512i _mm512_dpbusd_epi32(__m512i acc, __m512i a, __m512i b)
{
    const unsigned char *ab = (const unsigned char *)&a;
    const signed char *bb = (const signed char *)&b;
    for (int l = 0; l < 16; l++) {
        uint32_t s = (uint32_t)acc.i[l];
        for (int j = 0; j < 4; j++)
            s += (uint32_t)((int32_t)ab[4 * l + j] * (int32_t)bb[4 * l + j]);
        acc.i[l] = (int32_t)s;
    }
    return acc;
}
static inline __m512 _mm512_mul_ps(__m512 a, __m512 b)
{
    for (int l = 0; l < 16; l++)
        a.f[l] = a.f[l] * b.f[l];
    return a;
}
static inline __m512 _mm512_add_ps(__m512 a, __m512 b)
{
    for (int l = 0; l < 16; l++)
        a.f[l] = a.f[l] + b.f[l];
    return a;
}
static inline __m512 _mm512_cvtepi32_ps(__m512i a)
{
    __m512 r;
    for (int l = 0; l < 16; l++)
        r.f[l] = (float)a.i[l];
    return r;
}
/* VCVTPS2DQ: the current rounding mode; NaN and out of range give 0x80000000 */
static inline __m512i _mm512_cvtps_epi32(__m512 a)
{
    __m512i r;
    for (int l = 0; l < 16; l++) {
        float v = nearbyintf(a.f[l]);
        r.i[l] = (v == v && v >= -2147483648.0f && v < 2147483648.0f) ? (int32_t)v : INT32_MIN;
    }
    return r;
}
/* VPMOVSDB to memory under a mask: int32 saturated to int8, only the mask's bytes written */
static inline void _mm512_mask_cvtsepi32_storeu_epi8(void *p, __mmask16 m, __m512i a)
{
    for (int l = 0; l < 16; l++)
        if ((m >> l) & 1)
            ((int8_t *)p)[l] = (int8_t)(a.i[l] > 127 ? 127 : a.i[l] < -128 ? -128 : a.i[l]);
}

/* ---- the kernels, instantiated on the emulation ------------------------------------------- */
#define FL_I8_VNNI 1
#include "fl_i8_impl.h"

extern const fl_ops_i8 ops_generic_i8; /* (fl_kern_generic_i8.c, compiled beside this file) */

/* ---- checks ------------------------------------------------------------------------------- */
static int failures = 0;
#define CHECK(cond, ...)                                                                        \
    do {                                                                                        \
        if (!(cond)) {                                                                          \
            fprintf(stderr, __VA_ARGS__);                                                       \
            fputc('\n', stderr);                                                                \
            if (++failures > 20)                                                                \
                exit(1);                                                                        \
        }                                                                                       \
    } while (0)

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}

enum { FILL_RANDOM, FILL_PLUS, FILL_MINUS, FILL_ALT, FILL_ALT3 };

static int8_t fill_value(int how, fl_idx i, int flip)
{
    int v;
    switch (how) {
    case FILL_PLUS: v = 127; break;
    case FILL_MINUS: v = -127; break;
    case FILL_ALT: v = (i % 2) ? -127 : 127; break;
    case FILL_ALT3: v = (i % 3) ? 127 : -127; break;
    default: v = (int)(rnd() % 255) - 127;
    }
    return (int8_t)(flip ? -v : v);
}

/* One GEMM: exact int64 sums, the generic variant and the emulated VNNI one must agree. */
static void check_gemm(fl_idx M, fl_idx N, fl_idx K, fl_idx extra_lda, int how_a, int how_w,
                       int flip_w)
{
    const fl_idx Kp = (K + 3) / 4 * 4, P = (N + 15) / 16, lda = Kp + extra_lda;
    /* exact sizes (malloc(0) may be NULL: 1 then), so ASan sees any access past them */
#define ALLOC(n, T) (T *)malloc((n) > 0 ? (size_t)(n) * sizeof(T) : 1)
    int8_t *a = ALLOC(M * lda, int8_t);
    int8_t *w = ALLOC(N * K, int8_t);
    int8_t *b = ALLOC(P * Kp * 16, int8_t);
    int32_t *bsum = ALLOC(P * 16, int32_t);
    int32_t *c = ALLOC(M * P * 16, int32_t);
    int32_t *cg = ALLOC(M * P * 16, int32_t);
    for (fl_idx m = 0; m < M; m++)
        for (fl_idx k = 0; k < lda; k++) /* padding past K: random, must not matter */
            a[m * lda + k] = k < K ? fill_value(how_a, k, 0) : (int8_t)(rnd() % 255 - 127);
    for (fl_idx n = 0; n < N; n++)
        for (fl_idx k = 0; k < K; k++)
            w[n * K + k] = fill_value(how_w, k, flip_w);
    fl_i8_pack(N, K, w, b, bsum);
    I8(gemm)(M, P, K, a, lda, b, bsum, c, P * 16);
    ops_generic_i8.gemm(M, P, K, a, lda, b, bsum, cg, P * 16);
    for (fl_idx m = 0; m < M; m++)
        for (fl_idx n = 0; n < P * 16; n++) {
            int64_t s = 0;
            if (n < N)
                for (fl_idx k = 0; k < K; k++)
                    s += (int64_t)a[m * lda + k] * w[n * K + k];
            CHECK(c[m * P * 16 + n] == s && cg[m * P * 16 + n] == s,
                  "gemm M=%td N=%td K=%td lda=%td fill=%d/%d: c[%td, %td] = %d (generic %d), "
                  "exact %lld", M, N, K, lda, how_a, how_w, m, n, c[m * P * 16 + n],
                  cg[m * P * 16 + n], (long long)s);
        }
    free(a), free(w), free(b), free(bsum), free(c), free(cg);
}

static float bits_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static uint32_t float_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static void check_quantize_row(fl_idx K, const float *x, const char *what)
{
    const fl_idx Kp = (K + 3) / 4 * 4;
    int8_t *q = ALLOC(Kp, int8_t), *qg = ALLOC(Kp, int8_t);
    memset(q, 0x55, (size_t)Kp); /* padding must be written */
    memset(qg, 0x66, (size_t)Kp);
    float s = I8(quantize_row)(K, x, q), sg = ops_generic_i8.quantize_row(K, x, qg);
    CHECK(float_bits(s) == float_bits(sg), "quantize %s K=%td: scale %a, generic %a", what, K,
          (double)s, (double)sg);
    for (fl_idx k = 0; k < Kp; k++)
        CHECK(q[k] == qg[k] && (k < K || q[k] == 0), "quantize %s K=%td: q[%td] = %d, generic %d",
              what, K, k, q[k], qg[k]);
    free(q), free(qg);
}

static void check_quantize(void)
{
    for (fl_idx K = 0; K <= 70; K++) {
        float *x = ALLOC(K, float);
        for (int kind = 0; kind < 9; kind++) {
            for (fl_idx k = 0; k < K; k++) {
                float u = (float)((int)(rnd() % 2000001) - 1000000) / 1000.0f;
                switch (kind) {
                case 0: x[k] = u; break;
                case 1: x[k] = u * 1e-38f; break;                        /* subnormals */
                case 2: x[k] = (float)((int)(rnd() % 1017) - 508) / 4.0f; /* .5 points, max 127 */
                case 3: x[k] = 0.0f; break;
                case 4: x[k] = -0.0f; break;
                default: x[k] = u;
                }
            }
            if (K && kind == 2)
                x[rnd() % K] = (rnd() & 1) ? 127.0f : -127.0f;
            if (K && kind == 5)
                x[rnd() % K] = NAN;
            if (K && kind == 6)
                x[K - 1] = (rnd() & 1) ? INFINITY : -INFINITY;
            if (K && kind == 7)
                for (fl_idx k = 0; k < K; k++) /* max near 127 / FLT_MAX */
                    x[k] = bits_float(0x02fc0000u + rnd() % 0x80000u) * ((k & 1) ? -1.0f : 1.0f);
            if (K && kind == 8)
                x[K / 2] = bits_float(0x7f800001u + rnd() % 0x3fffff); /* a NaN payload */
            char what[32];
            snprintf(what, sizeof what, "kind %d", kind);
            check_quantize_row(K, x, what);
        }
        free(x);
    }
}

static void check_dequant(void)
{
    for (fl_idx N = 0; N <= 70; N++) {
        int32_t *acc = ALLOC(N, int32_t);
        float *sw = ALLOC(N, float), *add = ALLOC(N, float);
        float *o = ALLOC(N, float), *og = ALLOC(N, float);
        for (int round = 0; round < 4; round++) {
            for (fl_idx n = 0; n < N; n++) {
                acc[n] = (int32_t)rnd() >> (round * 3);
                sw[n] = (float)(rnd() % 100000 + 1) * 1e-7f;
                add[n] = (float)((int)(rnd() % 20001) - 10000) * 1e-3f;
            }
            float sa = round == 3 ? 0.0f : (float)(rnd() % 1000 + 1) * 1e-4f;
            for (int with_add = 0; with_add < 2; with_add++) {
                I8(dequant_add)(N, acc, sa, sw, with_add ? add : NULL, o);
                ops_generic_i8.dequant_add(N, acc, sa, sw, with_add ? add : NULL, og);
                for (fl_idx n = 0; n < N; n++)
                    CHECK(float_bits(o[n]) == float_bits(og[n]),
                          "dequant_add N=%td add=%d: out[%td] = %a, generic %a", N, with_add, n,
                          (double)o[n], (double)og[n]);
            }
        }
        free(acc), free(sw), free(add), free(o), free(og);
    }
}

int main(void)
{
    static const fl_idx Ms[] = {1, 2, 3, 4, 5, 7, 8, 9, 16, 17};
    static const fl_idx Ns[] = {1, 15, 16, 17, 33, 64, 65, 130, 144};
    static const fl_idx Ks[] = {0, 1, 2, 3, 4, 5, 63, 64, 65, 255, 1023, 1024, 1025, 2051};
    for (size_t i = 0; i < sizeof Ms / sizeof *Ms; i++)
        for (size_t j = 0; j < sizeof Ns / sizeof *Ns; j++)
            for (size_t k = 0; k < sizeof Ks / sizeof *Ks; k++)
                if (Ms[i] * Ns[j] * Ks[k] <= 2000000)
                    check_gemm(Ms[i], Ns[j], Ks[k], (i + j + k) % 3 ? 0 : 17, FILL_RANDOM,
                               FILL_RANDOM, 0);
    /* extremes: every product +-127^2, and alternating signs, past several K blocks */
    for (int how = FILL_PLUS; how <= FILL_ALT3; how++)
        for (int flip = 0; flip < 2; flip++) {
            check_gemm(17, 33, 4096, 0, how, how == FILL_ALT3 ? FILL_ALT : how, flip);
            check_gemm(3, 16, 4097, 5, how, FILL_PLUS, flip);
        }
    /* K = FL_I8_MAX_K: |sum| = 127^2 K just under 2^31; (a+128)*b sums and bsum wrap */
    for (int how = FILL_PLUS; how <= FILL_ALT; how++)
        for (int flip = 0; flip < 2; flip++)
            check_gemm(how == FILL_PLUS ? 2 : 1, flip ? 17 : 16, FL_I8_MAX_K, 0, how, how, flip);
    check_gemm(5, 20, FL_I8_MAX_K - 1, 0, FILL_RANDOM, FILL_RANDOM, 0);
    check_quantize();
    check_dequant();
    if (failures || emu_failures) {
        fprintf(stderr, "%d checks failed, %d emulation asserts\n", failures, emu_failures);
        return 1;
    }
    printf("i8_vnni_emulated: all checks passed\n");
    return 0;
}
