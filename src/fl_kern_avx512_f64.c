/* The avx512 f64 instantiation of fl_kernels_impl.h (fl_dispatch.c calls it only where the CPU has it). */
#if defined(__x86_64__) && defined(__GNUC__) /* elsewhere only the generic variant exists */
#define FL_ISA_AVX512 1
#define FL_DOUBLE 1
#pragma GCC target("avx512f,avx2,fma")
#include <immintrin.h>
#include "fl_kernels_impl.h"
#endif
