/* fl_omp.h: the only place that touches OpenMP, so the library still builds (serially) without it. */
#ifndef FL_OMP_H
#define FL_OMP_H
#ifdef _OPENMP
#include <omp.h>
#define FL_OPENMP 1
/* An orphaned barrier: binds to the parallel region of whichever Cython block calls it. A team
 * of one skips it: libgomp's barrier still makes a futex wake system call for a lone thread,
 * three of them per small call (1.3 us of a 3.3 us one-step call measured on a Zen VM). Every
 * thread of a team sees the same team size, so all of them wait or none does. */
static inline void fl_barrier(void)
{
    if (omp_get_num_threads() > 1) {
#pragma omp barrier
    }
}
#else
#define FL_OPENMP 0
static inline int omp_get_max_threads(void) { return 1; }
static inline int omp_get_num_threads(void) { return 1; }
static inline int omp_get_thread_num(void) { return 0; }
static inline void fl_barrier(void) {}
#endif

/* Denormals flushed inside the kernels' threads only (they can make arithmetic many times
 * slower), and each thread's floating-point mode restored before it leaves the parallel region:
 * the user's process keeps subnormals everywhere. FTZ (bit 15) and DAZ (bit 6) of MXCSR. */
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
static inline unsigned int fl_flush_denormals(void)
{
    unsigned int old = _mm_getcsr();
    _mm_setcsr(old | 0x8040u);
    return old;
}
static inline void fl_restore_fpmode(unsigned int old) { _mm_setcsr(old); }
static inline unsigned int fl_fpmode_flags(void) { return _mm_getcsr() & 0x8040u; }
#else
static inline unsigned int fl_flush_denormals(void) { return 0; }
static inline void fl_restore_fpmode(unsigned int old) { (void)old; }
static inline unsigned int fl_fpmode_flags(void) { return 0; }
#endif
#endif
