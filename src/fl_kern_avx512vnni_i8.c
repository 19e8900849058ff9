/* The avx512vnni int8 instantiation of fl_i8_impl.h (fl_dispatch.c calls it only where the CPU
 * has AVX-512 F, BW and VNNI). */
#if defined(__x86_64__) && defined(__GNUC__) /* elsewhere only the generic variant exists */
#define FL_I8_VNNI 1
#pragma GCC target("avx512f,avx512bw,avx512vnni,avx2")
#include <immintrin.h>
#include "fl_i8_impl.h"
#endif
