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

/* All kernels of one instruction set. */
typedef struct {
    const char *name;
    fl_ops_f32 f32;
    fl_ops_f64 f64;
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
