/* fl_omp.h: the only place that touches OpenMP, so the library still builds (serially) without it. */
#ifndef FL_OMP_H
#define FL_OMP_H
#ifdef _OPENMP
#include <omp.h>
#define FL_OPENMP 1
/* An orphaned barrier for a team of `team` threads: binds to the parallel region of whichever
 * Cython block calls it. team 1 skips it: the kernels then run with no region of their own (they
 * may be inside a caller's, whose barrier is not theirs), and libgomp's barrier would make a
 * futex system call even for a lone thread. Every thread of a team passes the same size. */
static inline void fl_barrier(int team)
{
    if (team > 1) {
#pragma omp barrier
    }
}
#else
#define FL_OPENMP 0
static inline int omp_get_max_threads(void) { return 1; }
static inline int omp_get_num_threads(void) { return 1; }
static inline int omp_get_thread_num(void) { return 0; }
static inline void fl_barrier(int team) { (void)team; }
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
