/* The generic f64 instantiation of fl_kernels_impl.h. */
#define FL_ISA_GENERIC 1
#define FL_DOUBLE 1
#include "fl_kernels_impl.h"
