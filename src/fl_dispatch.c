/* fl_dispatch.c: picks the kernel variant for this CPU, once, at run time (no native -march).
 *
 * FASTLSTM_ISA=avx512|avx2|generic forces a variant (it must be supported); otherwise the best
 * supported one is used. fl_select() switches later, e.g. so the tests run every variant.
 */
#include <stdlib.h>
#include <string.h>
#include "fl_kernels.h"

#define FL_EXTERN_OPS(isa)                                                                          \
    extern const fl_ops_f32 ops_##isa##_f32;                                                        \
    extern const fl_ops_f64 ops_##isa##_f64;

FL_EXTERN_OPS(generic)
extern const fl_ops_i8 ops_generic_i8;
static const fl_isa_ops *fl_variants[3];
static int fl_nvariants = 0;

#if defined(__x86_64__) && defined(__GNUC__)
#define FL_X86 1
FL_EXTERN_OPS(avx2)
FL_EXTERN_OPS(avx512)
extern const fl_ops_i8 ops_avx2_i8;
extern const fl_ops_i8 ops_avx512vnni_i8;
static fl_isa_ops fl_avx512, fl_avx2;
#endif
static fl_isa_ops fl_generic;

/* The variant in use. Written only by fl_select (and on first use); readers take a snapshot at the
 * start of a call, so a switch never mixes variants inside one call. */
static const fl_isa_ops *volatile fl_active = NULL;

static int fl_cpu_has(const char *name)
{
    if (strcmp(name, "generic") == 0)
        return 1;
#ifdef FL_X86
    __builtin_cpu_init();
    /* __builtin_cpu_supports also checks that the OS saves the wide registers (XGETBV). */
    if (strcmp(name, "avx2") == 0)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (strcmp(name, "avx512") == 0)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") &&
               __builtin_cpu_supports("fma");
    if (strcmp(name, "avx512vnni") == 0) /* the int8 kernels only */
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx2");
#endif
    return 0;
}

static void fl_init_table(void)
{
    if (fl_nvariants)
        return;
    fl_generic.name = "generic";
    fl_generic.f32 = ops_generic_f32;
    fl_generic.f64 = ops_generic_f64;
    fl_generic.i8 = ops_generic_i8;
    fl_generic.i8_name = "generic";
#ifdef FL_X86
    fl_avx512.name = "avx512";
    fl_avx512.f32 = ops_avx512_f32;
    fl_avx512.f64 = ops_avx512_f64;
    /* AVX-512 without VNNI (Skylake-X) still has AVX2's int8 kernels */
    const int vnni = fl_cpu_has("avx512vnni");
    fl_avx512.i8 = vnni ? ops_avx512vnni_i8 : ops_avx2_i8;
    fl_avx512.i8_name = vnni ? "avx512vnni" : "avx2";
    fl_avx2.name = "avx2";
    fl_avx2.f32 = ops_avx2_f32;
    fl_avx2.f64 = ops_avx2_f64;
    fl_avx2.i8 = ops_avx2_i8;
    fl_avx2.i8_name = "avx2";
    fl_variants[fl_nvariants++] = &fl_avx512; /* best first */
    fl_variants[fl_nvariants++] = &fl_avx2;
#endif
    fl_variants[fl_nvariants++] = &fl_generic;
}

static const fl_isa_ops *fl_find(const char *name)
{
    fl_init_table();
    for (int i = 0; i < fl_nvariants; i++)
        if (strcmp(fl_variants[i]->name, name) == 0)
            return fl_variants[i];
    return NULL;
}

int fl_supported(const char *name)
{
    return fl_find(name) != NULL && fl_cpu_has(name);
}

const char *fl_best(void)
{
    fl_init_table();
    for (int i = 0; i < fl_nvariants; i++)
        if (fl_cpu_has(fl_variants[i]->name))
            return fl_variants[i]->name;
    return "generic";
}

int fl_select(const char *name)
{
    if (name == NULL || name[0] == '\0')
        name = fl_best();
    const fl_isa_ops *v = fl_find(name);
    if (v == NULL && strcmp(name, "avx512") && strcmp(name, "avx2"))
        return -1;
    if (v == NULL || !fl_cpu_has(name))
        return -2;
    fl_active = v;
    return 0;
}

const fl_isa_ops *fl_current(void)
{
    const fl_isa_ops *v = fl_active;
    if (v == NULL) {
        /* First use. The Python module validates FASTLSTM_ISA at import (with a clear error), so
         * an unusable value only reaches here from C callers: fall back to the best variant. */
        if (fl_select(getenv("FASTLSTM_ISA")) != 0)
            fl_select(NULL);
        v = fl_active;
    }
    return v;
}

const fl_ops_i8 *fl_i8_variant(const char *name)
{
    if (name == NULL)
        return NULL;
    if (strcmp(name, "generic") == 0)
        return &ops_generic_i8;
#ifdef FL_X86
    if (strcmp(name, "avx2") == 0 && fl_cpu_has("avx2"))
        return &ops_avx2_i8;
    if (strcmp(name, "avx512vnni") == 0 && fl_cpu_has("avx512vnni"))
        return &ops_avx512vnni_i8;
#endif
    return NULL;
}
