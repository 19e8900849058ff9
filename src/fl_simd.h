/* fl_simd.h: the vector layer, one "panel vector" V per (instruction set, dtype).
 *
 * A panel is NR consecutive values of one 64-byte row: 16 floats or 8 doubles. Every kernel in
 * fl_kernels_impl.h is written once against the small set of operations below and compiled once per
 * (ISA, dtype), each in its own translation unit (fl_kern_<isa>_<dtype>.c) that defines FL_ISA_AVX512,
 * FL_ISA_AVX2 or FL_ISA_GENERIC and FL_DOUBLE 0/1 first, so no two instantiations share a name.
 *
 * Rounding is deliberate: the library is built with -ffp-contract=off, so a fused multiply-add
 * happens only where v_fma is written (AVX2/AVX-512); the portable variant multiplies then adds.
 *
 * NaN: x86 min/max return their second operand when either is NaN, so every clamp passes the
 * constant first and the data second, and a NaN input stays NaN (it must reach the output).
 */

#if FL_DOUBLE
typedef double T;
#define NR 8
#define FL_TSUF f64
#else
typedef float T;
#define NR 16
#define FL_TSUF f32
#endif

#define FL_CAT3_(a, b, c) a##_##b##_##c
#define FL_CAT3(a, b, c) FL_CAT3_(a, b, c)
/* FL(name) -> name_<isa>_<dtype>: every instantiation gets its own symbols. */
#define FL(name) FL_CAT3(name, FL_ISASUF, FL_TSUF)

#define FL_INLINE static inline __attribute__((always_inline))
/* Ask for the cache line at p, to be written (GCC and Clang; a no-op elsewhere). */
#if defined(__GNUC__)
#define FL_PREFETCH(p) __builtin_prefetch((p), 1, 3)
#else
#define FL_PREFETCH(p) ((void)(p))
#endif
#define FL_PREFETCH_READ(p) fl_prefetch(p) /* fl_kernels.h */

/* ------------------------------------------------------------------------------------------ */
#if defined(FL_ISA_AVX512)
#define FL_ISASUF avx512
/* Register tile of the GEMM microkernel: MR rows x NV panels of accumulators. */
#define FL_MR 4
#define FL_NV 4 /* also the forward weights' slab width (weight_group, fl_kernels.h) */
#define FL_NV1 8 /* panels when a single row is computed (batch 1): enough independent FMA chains */
#define FL_PROBE_LIVE 12 /* probe_fma's accumulators: 12 of the 32 vector registers */
#define FL_B_AHEAD 0 /* no software prefetch of the GEMM's packed B (see AVX2) */
#if FL_DOUBLE
typedef __m512d V;
#define PS(op) _mm512_##op##_pd
#else
typedef __m512 V;
#define PS(op) _mm512_##op##_ps
#endif
FL_INLINE V v_load(const T *p) { return PS(loadu)(p); }
FL_INLINE void v_store(T *p, V a) { PS(storeu)(p, a); }
FL_INLINE V v_set1(T a) { return PS(set1)(a); }
FL_INLINE V v_zero(void) { return PS(setzero)(); }
FL_INLINE V v_add(V a, V b) { return PS(add)(a, b); }
FL_INLINE V v_sub(V a, V b) { return PS(sub)(a, b); }
FL_INLINE V v_mul(V a, V b) { return PS(mul)(a, b); }
FL_INLINE V v_div(V a, V b) { return PS(div)(a, b); }
FL_INLINE V v_fma(V a, V b, V c) { return PS(fmadd)(a, b, c); }
FL_INLINE V v_max(V k, V a) { return PS(max)(k, a); }
FL_INLINE V v_min(V k, V a) { return PS(min)(k, a); }
FL_INLINE V v_round(V a) { return PS(roundscale)(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
FL_INLINE V v_ldexp(V p, V n) { return PS(scalef)(p, n); }
/* (a < b) ? x : y, lane by lane */
#if FL_DOUBLE
FL_INLINE V v_select_lt(V a, V b, V x, V y) { return _mm512_mask_blend_pd(_mm512_cmp_pd_mask(a, b, _CMP_LT_OQ), y, x); }
#else
FL_INLINE V v_select_lt(V a, V b, V x, V y) { return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_LT_OQ), y, x); }
#endif
#undef PS

/* ------------------------------------------------------------------------------------------ */
#elif defined(FL_ISA_AVX2)
#define FL_ISASUF avx2
#define FL_MR 3
/* Weights packed in slabs of this width (weight_group): a 3x2 tile then streams one slab. With
 * slabs of 4 it read half of each 256-byte row, and the GEMM ran 3-7% slower (B from L2/L3). */
#define FL_NV 2
#define FL_NV1 4
#define FL_PROBE_LIVE 6 /* 12 of the 16 ymm registers */
/* GEMM tiles of 2+ rows prefetch their B panels this many k rows ahead. Without it the first
 * FMA after the B loads held 18% of the 3x2 tile's samples (c forward): its 32 KB B block does
 * not stay in L1 beside A and C. Measured on an AVX2-only Zen VM, interleaved rounds, 1 thread:
 * forward c -4.5 to -10% (float64 -11%), d -6%; fwd+bwd -1 to -3%. AVX-512 keeps its 4x4
 * tile's loads as they were: no machine here to measure it on. */
#define FL_B_AHEAD 8
#if FL_DOUBLE
typedef __m256d H;
#define PS(op) _mm256_##op##_pd
#define HALF 4
#else
typedef __m256 H;
#define PS(op) _mm256_##op##_ps
#define HALF 8
#endif
/* A panel is two 256-bit halves. */
typedef struct { H a, b; } V;
#define FL_V2(name, expr_a, expr_b) FL_INLINE V name { V r; r.a = expr_a; r.b = expr_b; return r; }
FL_V2(v_load(const T *p), PS(loadu)(p), PS(loadu)(p + HALF))
FL_INLINE void v_store(T *p, V x) { PS(storeu)(p, x.a); PS(storeu)(p + HALF, x.b); }
FL_V2(v_set1(T s), PS(set1)(s), PS(set1)(s))
FL_V2(v_zero(void), PS(setzero)(), PS(setzero)())
FL_V2(v_add(V x, V y), PS(add)(x.a, y.a), PS(add)(x.b, y.b))
FL_V2(v_sub(V x, V y), PS(sub)(x.a, y.a), PS(sub)(x.b, y.b))
FL_V2(v_mul(V x, V y), PS(mul)(x.a, y.a), PS(mul)(x.b, y.b))
FL_V2(v_div(V x, V y), PS(div)(x.a, y.a), PS(div)(x.b, y.b))
FL_V2(v_fma(V x, V y, V z), PS(fmadd)(x.a, y.a, z.a), PS(fmadd)(x.b, y.b, z.b))
FL_V2(v_max(V k, V x), PS(max)(k.a, x.a), PS(max)(k.b, x.b))
FL_V2(v_min(V k, V x), PS(min)(k.a, x.a), PS(min)(k.b, x.b))
FL_V2(v_round(V x), PS(round)(x.a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC),
      PS(round)(x.b, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC))
FL_V2(v_select_lt(V x, V y, V s, V t), PS(blendv)(t.a, s.a, PS(cmp)(x.a, y.a, _CMP_LT_OQ)),
      PS(blendv)(t.b, s.b, PS(cmp)(x.b, y.b, _CMP_LT_OQ)))
/* p * 2^n for integral n inside the normal exponent range (the caller clamps). */
#if FL_DOUBLE
FL_INLINE H fl_pow2_half(H n)
{
    /* n + 1.5*2^52 holds n in its low mantissa bits; subtracting the magic's bits leaves n as int64 */
    const H magic = _mm256_set1_pd(6755399441055744.0);
    __m256i k = _mm256_sub_epi64(_mm256_castpd_si256(_mm256_add_pd(n, magic)), _mm256_castpd_si256(magic));
    return _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_add_epi64(k, _mm256_set1_epi64x(1023)), 52));
}
#else
FL_INLINE H fl_pow2_half(H n)
{
    __m256i k = _mm256_cvtps_epi32(n);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k, _mm256_set1_epi32(127)), 23));
}
#endif
FL_V2(v_ldexp(V p, V n), PS(mul)(p.a, fl_pow2_half(n.a)), PS(mul)(p.b, fl_pow2_half(n.b)))
#undef FL_V2
#undef PS
#undef HALF

/* ------------------------------------------------------------------------------------------ */
#else /* portable C: plain loops over the panel; the compiler vectorizes them for the baseline ISA */
#define FL_ISASUF generic
#define FL_MR 2
#define FL_NV 2
#define FL_NV1 4
#define FL_PROBE_LIVE 3 /* 12 of the 16 SSE registers, a panel being 4 */
#define FL_B_AHEAD 0
typedef struct { T v[NR]; } V;
#define FL_VLOOP(body) V r; for (int l = 0; l < NR; l++) { body; } return r;
FL_INLINE V v_load(const T *p) { FL_VLOOP(r.v[l] = p[l]) }
FL_INLINE void v_store(T *p, V x) { for (int l = 0; l < NR; l++) p[l] = x.v[l]; }
FL_INLINE V v_set1(T s) { FL_VLOOP(r.v[l] = s) }
FL_INLINE V v_zero(void) { FL_VLOOP(r.v[l] = 0) }
FL_INLINE V v_add(V x, V y) { FL_VLOOP(r.v[l] = x.v[l] + y.v[l]) }
FL_INLINE V v_sub(V x, V y) { FL_VLOOP(r.v[l] = x.v[l] - y.v[l]) }
FL_INLINE V v_mul(V x, V y) { FL_VLOOP(r.v[l] = x.v[l] * y.v[l]) }
FL_INLINE V v_div(V x, V y) { FL_VLOOP(r.v[l] = x.v[l] / y.v[l]) }
/* No fused multiply-add: the product is rounded, then the sum (-ffp-contract=off keeps it so). */
FL_INLINE V v_fma(V x, V y, V z) { FL_VLOOP(r.v[l] = x.v[l] * y.v[l] + z.v[l]) }
/* Same NaN rule as x86: the second operand (the data) wins when either is NaN. */
FL_INLINE V v_max(V k, V x) { FL_VLOOP(r.v[l] = k.v[l] > x.v[l] ? k.v[l] : x.v[l]) }
FL_INLINE V v_min(V k, V x) { FL_VLOOP(r.v[l] = k.v[l] < x.v[l] ? k.v[l] : x.v[l]) }
#if FL_DOUBLE
FL_INLINE V v_round(V x) { FL_VLOOP(r.v[l] = nearbyint(x.v[l])) }
FL_INLINE V v_ldexp(V p, V n) { FL_VLOOP(r.v[l] = ldexp(p.v[l], (int)n.v[l])) }
#else
FL_INLINE V v_round(V x) { FL_VLOOP(r.v[l] = nearbyintf(x.v[l])) }
FL_INLINE V v_ldexp(V p, V n) { FL_VLOOP(r.v[l] = ldexpf(p.v[l], (int)n.v[l])) }
#endif
FL_INLINE V v_select_lt(V a, V b, V x, V y) { FL_VLOOP(r.v[l] = a.v[l] < b.v[l] ? x.v[l] : y.v[l]) }
#undef FL_VLOOP
#endif
