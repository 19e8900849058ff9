/* fl_kernels.h: the C kernels, on raw pointers and sizes, and their runtime CPU dispatch.
 *
 * Layout words used below (see fl_kernels_impl.h for the full story):
 *   panel   NR consecutive values of a row: 16 floats or 8 doubles (64 bytes).
 *   block   one block of NR hidden units; its 4*NR gate values are the i, f, g, o panels, in order.
 *   packed  a K x (P*NR) matrix stored in groups of gp panels, each group K rows of gp*NR values:
 *           element (k, n), in panel p = n/NR, at b[(p/gp)*bgs + (p%gp)*NR + k*ldb + n%NR]. The
 *           forward weights use gp = the weight_group of the ISA active when they were packed
 *           (the panels of one register tile, so its tile reads one contiguous stream; callers
 *           pass the pack's gp), ldb = gp*NR, bgs = K*gp*NR; a plain row-major
 *           matrix is gp = 1, bgs = NR, ldb = its row length.
 *
 * Every function is a pure computation with no failure mode and no allocation (callers own all
 * memory), safe to call from many threads at once on disjoint outputs.
 */
#ifndef FL_KERNELS_H
#define FL_KERNELS_H

#include <stddef.h>
#include <stdint.h>

typedef ptrdiff_t fl_idx;

#define FL_DECLARE_OPS(T, SUF)                                                                      \
    typedef struct {                                                                                \
        /* c[m, n] = start + sum_k a[m*rsa + k*csa] * b(k, n) for m < M and the first P panels of  \
         * columns, summed in increasing k; start = c[m, n] if accumulate, else init[n] (or 0 when  \
         * init is NULL). c[m, n] lives at c[m*ldc + n]; b(k, n) is "packed" above. */             \
        void (*gemm)(fl_idx M, fl_idx P, fl_idx K, const T *a, fl_idx rsa, fl_idx csa,            \
                     const T *b, fl_idx ldb, fl_idx gp, fl_idx bgs, T *c, fl_idx ldc,              \
                     int accumulate, const T *init);                                                \
        /* One row, nblk unit blocks: g holds the pre-activations (i, f, g, o panels per block);   \
         * writes c = f*c_prev + i*g and h = o*tanh(c). When tc is not NULL (training) also writes \
         * tanh(c) to tc and the activated gates back into g. */                                    \
        void (*gates_fwd)(fl_idx nblk, T *g, const T *c_prev, T *c, T *h, T *tc);                 \
        /* One row, nblk unit blocks, backward of gates_fwd: act = activated gates, dh = gradient  \
         * of h; dc holds the gradient of c from the later step on entry and that of c_prev on    \
         * exit; writes the pre-activation gradients to dg (same layout as act). */                \
        void (*gates_bwd)(fl_idx nblk, const T *act, const T *c_prev, const T *tc, const T *dh,   \
                          T *dc, T *dg);                                                            \
        /* dst[n] (+)= sum over r < rows of src[r*ld + n], for n in the first npanels panels,     \
         * summed in increasing r, onto dst[n] when accumulate, else onto 0. */                     \
        void (*colsum)(fl_idx rows, fl_idx npanels, const T *src, fl_idx ld, T *dst,              \
                       int accumulate);                                                             \
        /* One tile of a weight repack: W source rows (rows[j] -> NR values each; W a multiple \
         * of NR) copied to bwd[j*NR + i] and, transposed, to fwd[i*W + j]: the backward's and \
         * the forward's packed layouts (fastlstm/_packing.py). A copy: same bytes in every ISA. */ \
        void (*repack_tile)(fl_idx W, const T *const *rows, T *bwd, T *fwd);                      \
        /* Machine probes for the benchmark's "% of peak" (their results are checksums):          \
         * iters rounds of FL_PROBE_CHAINS multiply-adds on whole panels, and n values         \
         * (a multiple of 8 panels) read reps times as fast as the vector units can take them. */ \
        T (*probe_fma)(fl_idx iters);                                                               \
        T (*probe_read)(const T *a, fl_idx n, fl_idx reps);                                         \
        /* Panels a GEMM register tile spans when it has 2+ rows: the group size gp that lets   \
         * each tile read its weights as one contiguous stream (packing hint only: gemm is     \
         * correct, bitwise, for any gp). */                                                    \
        int weight_group;                                                                           \
    } fl_ops_##SUF;

FL_DECLARE_OPS(float, f32)
FL_DECLARE_OPS(double, f64)


/* ---------------------------------------------------------------------------------------------
 * int8 inference kernels (issue 19; the scheme is fastlstm/reference.py's, see the comment block
 * above quantize_rows there). Instantiated by fl_kern_<isa>_i8.c from fl_i8_impl.h.
 *
 * Packed int8 weights: W (N, K) (row n = output column n) as P = ceil(N/16) panels of 16 columns;
 * panel p holds all KG = round_up(K, 4)/4 groups of 4 values of k, one after another, each group
 * 64 bytes: element (k, n) at b[(p*KG + k/4)*64 + (n%16)*4 + k%4]. Zero past N and past K. */
#define FL_I8_NR 16 /* int8 GEMM: output columns per packed panel (one zmm of int32) */
#define FL_I8_KG 4  /* k values per group: the 4 bytes one int32 lane of vpdpbusd sums */
/* Largest K whose sums fit in int32: 127^2 * K < 2^31 (fastlstm.reference.INT8_MAX_K). */
#define FL_I8_MAX_K 133144
typedef struct {
    /* c[m*ldc + n] = sum_{k<K} a[m*lda + k] * b(k, n), exact in int32, for m < M and n < P*FL_I8_NR.
     * a: int8 rows with values in [-127, 127] and zeros from K up to round_up(K, FL_I8_KG) (lda >= that;
     *    since b is zero there, any padding value gives the same result).
     * b: packed by fl_i8_pack below: panel p, k-group g at b + (p*KG + g)*64 bytes (KG = round_up(K,4)/4),
     *    byte (n % 16)*4 + (k % 4) within the 64.
     * bsum: per column n, 128 * sum_k b(k, n) (int32), written by fl_i8_pack; the VNNI variant
     *    computes sum (a+128)*b with vpdpbusd and subtracts it; others ignore it (may be NULL there).
     * Exact while 127^2 * K < 2^31 (K <= FL_I8_MAX_K; callers refuse larger K). Any M, P >= 0. */
    void (*gemm)(fl_idx M, fl_idx P, fl_idx K, const int8_t *a, fl_idx lda, const int8_t *b,
                 const int32_t *bsum, int32_t *c, fl_idx ldc);
    /* One row of K floats -> q[0..round_up(K,4)) int8 (zeros past K) and its scale, exactly as
     * fastlstm.reference.quantize_rows (max|x| with NaN propagating, inv = 127/m, scale = m/127,
     * rint half-even of x*inv, scale 0 / q 0 for a zero or tiny row, scale NaN / q 0 for a row
     * with NaN or inf). Bitwise only with subnormals kept (no FTZ/DAZ in MXCSR) and the default
     * rounding mode, as the reference runs. */
    float (*quantize_row)(fl_idx K, const float *x, int8_t *q);
    /* out[n] = add[n] + (float)acc[n] * (s_a * s_w[n]) for n < N: the scale product first, then one
     * multiply, then one add (three roundings, no FMA) -- the reference's dequantize-and-add order.
     * add may be NULL: out[n] = (float)acc[n] * (s_a * s_w[n]). out may be add (in place).
     * Bitwise the reference only with subnormals kept, as quantize_row (a tiny row's scale is
     * subnormal): callers must not run these two under the float loop's FTZ/DAZ. */
    void (*dequant_add)(fl_idx N, const int32_t *acc, float s_a, const float *s_w, const float *add,
                        float *out);
} fl_ops_i8;

/* Packs W (N rows of K int8, row-major: rows are the output columns) into b
 * (P*round_up(K,4)*16 bytes, P = ceil(N/16)) and writes bsum (P*16 int32), zero past N and K. */
void fl_i8_pack(fl_idx N, fl_idx K, const int8_t *w, int8_t *b, int32_t *bsum);
/* The int8 kernels by variant name ("avx512vnni", "avx2", "generic"), or NULL for an unknown
 * name or one this CPU (or build) cannot run: for tests, which run every variant. */
const fl_ops_i8 *fl_i8_variant(const char *name);

/* All kernels of one instruction set. The int8 kernels are those of the best int8 variant the
 * float variant's CPU runs: "avx512" has "avx512vnni" where the CPU has AVX-512 VNNI and BW, else
 * "avx2" (as the "avx2" variant); "generic" has "generic". */
typedef struct {
    const char *name;
    fl_ops_f32 f32;
    fl_ops_f64 f64;
    fl_ops_i8 i8;
    const char *i8_name;
} fl_isa_ops;

/* GEMM sums run in blocks of FL_KC values of k (see fl_kernels_impl.h); callers that split K
 * themselves cut at the same places to get the same bits. */
#define FL_KC 256

/* Panel multiply-adds per round of probe_fma, in FL_PROBE_LIVE (fl_simd.h) independent chains:
 * more than FMA latency x FMA units on current x86 cores. */
#define FL_PROBE_CHAINS 12

#define FL_PANEL_F32 16
#define FL_PANEL_F64 8

/* Asks for the cache line at p, to be read (GCC and Clang; a no-op elsewhere): for the copies in
 * the Cython layer that walk memory a row at a time, rows 4 KiB or more apart, where the
 * hardware prefetchers do not follow. */
#if defined(__GNUC__)
#define fl_prefetch(p) __builtin_prefetch((p), 0, 3)
#else
#define fl_prefetch(p) ((void)(p))
#endif

/* The variant in use; chosen at first use from FASTLSTM_ISA or the best the CPU supports. */
const fl_isa_ops *fl_current(void);
/* Selects a variant by name ("avx512", "avx2", "generic"; NULL or "" = best supported).
 * Returns 0, or -1 for an unknown name, or -2 when this CPU (or build) cannot run it. */
int fl_select(const char *name);
/* 1 when this CPU and build can run the named variant. */
int fl_supported(const char *name);
/* Name of the best variant this CPU supports. */
const char *fl_best(void);

#endif
