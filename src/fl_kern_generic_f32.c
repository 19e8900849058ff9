/* The generic f32 instantiation of fl_kernels_impl.h. */
#define FL_ISA_GENERIC 1
#define FL_DOUBLE 0
#include "fl_kernels_impl.h"
