/* fl_omp.h: the only place that touches OpenMP, so the library still builds (serially) without it. */
#ifndef FL_OMP_H
#define FL_OMP_H
#ifdef _OPENMP
#include <omp.h>
#define FL_OPENMP 1
/* An orphaned barrier: binds to the parallel region of whichever Cython block calls it. */
static inline void fl_barrier(void)
{
#pragma omp barrier
}
#else
#define FL_OPENMP 0
static inline int omp_get_max_threads(void) { return 1; }
static inline int omp_get_num_threads(void) { return 1; }
static inline int omp_get_thread_num(void) { return 0; }
static inline void fl_barrier(void) {}
#endif
#endif
