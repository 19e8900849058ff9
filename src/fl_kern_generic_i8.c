/* The generic int8 instantiation of fl_i8_impl.h, and the weight packing every variant reads. */
#define FL_I8_GENERIC 1
#include "fl_i8_impl.h"

void fl_i8_pack(fl_idx N, fl_idx K, const int8_t *w, int8_t *b, int32_t *bsum)
{
    const fl_idx KG = (K + FL_I8_KG - 1) / FL_I8_KG, P = (N + FL_I8_NR - 1) / FL_I8_NR;
    memset(b, 0, (size_t)(P * KG * 64));
    for (fl_idx n = 0; n < P * FL_I8_NR; n++) {
        /* 128 * sum_k w: up to 128 * 127 * K, past 2^31 near FL_I8_MAX_K; kept modulo 2^32, which
         * is all the VNNI kernel's modulo-2^32 sums need */
        uint32_t s = 0;
        if (n < N) {
            int8_t *bp = b + (n / FL_I8_NR) * KG * 64 + (n % FL_I8_NR) * FL_I8_KG;
            const int8_t *wr = w + n * K;
            for (fl_idx k = 0; k < K; k++) {
                bp[(k / FL_I8_KG) * 64 + k % FL_I8_KG] = wr[k];
                s += (uint32_t)(int32_t)wr[k];
            }
        }
        bsum[n] = (int32_t)(s * 128u); /* (GCC: modulo 2^32) */
    }
}
