/* The avx2 int8 instantiation of fl_i8_impl.h (fl_dispatch.c calls it only where the CPU has it). */
#if defined(__x86_64__) && defined(__GNUC__) /* elsewhere only the generic variant exists */
#define FL_I8_AVX2 1
#pragma GCC target("avx2")
#include <immintrin.h>
#include "fl_i8_impl.h"
#endif
