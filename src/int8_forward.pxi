# The int8 inference forward (issue 19): the scheme of fastlstm.reference (the comment block above
# quantize_rows) over T steps, one layer and direction, on the int8 kernels of the active ISA
# (ops.i8) and the float32 cell (ops.f32.gates_fwd). Same work splits as the float forward: the
# batch split (each thread owns rows, no barrier in a step) and the unit split (each thread owns
# unit blocks for every row, one barrier per step). In the unit split every thread quantizes the
# whole h_{t-1} itself after the barrier: a row's max and its int8 values are then the same bits
# in every thread without a second barrier, for H values of work against its H*4H/n of GEMM.
#
# Layouts. Columns of the packed W_ih and W_hh (fl_i8_pack, N = 4*Hp) are in the float kernels'
# gate order: unit block u's 64 columns are its i, f, g, o panels of 16 units, so the int32 sums
# dequantize straight into gates_fwd's input. Their scales and the bias follow that order (zero on
# padding units, whose gates are then 0: c and h stay 0 there). With a projection W_hr is packed
# with N = Pp output columns. States are float32 rows: h (Kr = P or H values, padded to Krp), c (Hp).

cdef enum:
    I8_ROWS = 32  # rows of the input projection per work item: quantized, multiplied, dequantized


cdef inline Py_ssize_t kpad4(Py_ssize_t K) noexcept nogil:
    """Row length of quantized int8 rows: K rounded up to the 4 k values one int32 lane sums."""
    return (K + 3) // 4 * 4


cdef void i8_input_projection(const fl_isa_ops *ops, Py_ssize_t tn, Py_ssize_t B, Py_ssize_t I,
                              Py_ssize_t G4, const float *x, Py_ssize_t xs_t, Py_ssize_t xs_b,
                              const int8_t *w_ih, const int32_t *bsum_ih, const float *s_ih,
                              const float *bias, float *gates, int8_t *q, int32_t *acc,
                              fl_barrier_state *bar, fl_stop_state *stop, int tid) noexcept nogil:
    """gates[r] = fl(deq(x_r . W_ih) + bias) for the tn*B rows r = (t, b) of a chunk, by items of
    I8_ROWS rows taken from the team's counter (reset before the next call)."""
    cdef Py_ssize_t Iq = kpad4(I), M = tn * B, nitems = (M + I8_ROWS - 1) // I8_ROWS
    cdef Py_ssize_t w, r0, m, r
    cdef float s[I8_ROWS]
    w = fl_next_item(bar)
    while w < nitems and not stopping(stop, tid):
        r0 = w * I8_ROWS
        m = M - r0 if M - r0 < I8_ROWS else I8_ROWS
        for r in range(m):
            s[r] = ops.i8.quantize_row(I, x + ((r0 + r) // B) * xs_t + ((r0 + r) % B) * xs_b,
                                       q + r * Iq)
        ops.i8.gemm(m, G4 // FL_I8_NR, I, q, Iq, w_ih, bsum_ih, acc, G4)
        for r in range(m):
            ops.i8.dequant_add(G4, acc + r * G4, s[r], s_ih, bias, gates + (r0 + r) * G4)
        w = fl_next_item(bar)


cdef void i8_quantize_rows(const fl_isa_ops *ops, Py_ssize_t b0, Py_ssize_t b1, Py_ssize_t K,
                           const float *a, Py_ssize_t lda, int8_t *q, float *s) noexcept nogil:
    """Rows [b0, b1) of a (K values each, lda apart) into q (kpad4(K) apart) and their scales."""
    cdef Py_ssize_t b, Kq = kpad4(K)
    for b in range(b0, b1):
        s[b] = ops.i8.quantize_row(K, a + b * lda, q + b * Kq)


cdef void i8_recurrent_step(const fl_isa_ops *ops, Py_ssize_t b0, Py_ssize_t b1, Py_ssize_t u0,
                            Py_ssize_t u1, Py_ssize_t H, Py_ssize_t Hp, Py_ssize_t Kr,
                            const int8_t *w_hh, const int32_t *bsum_hh, const float *s_hh,
                            float *g, const int8_t *qh, const float *sh, int32_t *acc,
                            float *h_next, const float *c_prev, float *c_next,
                            float *y, Py_ssize_t ys_b) noexcept nogil:
    """One step for rows [b0, b1) and unit blocks [u0, u1): g += deq(q(h_{t-1}) . W_hh), then
    the float32 cell; h to h_next (Hp apart) and, unless y is NULL, to the user's rows of y."""
    cdef Py_ssize_t G4 = 4 * Hp, Kq = kpad4(Kr), c0 = 4 * u0 * FL_I8_NR
    cdef Py_ssize_t nc = 4 * (u1 - u0) * FL_I8_NR, b, j, j1
    if nc <= 0:
        return
    ops.i8.gemm(b1 - b0, nc // FL_I8_NR, Kr, qh + b0 * Kq, Kq, w_hh + c0 * Kq, bsum_hh + c0,
                acc + b0 * G4 + c0, G4)
    j1 = u1 * FL_I8_NR if u1 * FL_I8_NR < H else H
    for b in range(b0, b1):
        ops.i8.dequant_add(nc, acc + b * G4 + c0, sh[b], s_hh + c0, g + b * G4 + c0,
                           g + b * G4 + c0)
        ops.f32.gates_fwd(u1 - u0, g + b * G4 + c0, c_prev + b * Hp + u0 * FL_I8_NR,
                          c_next + b * Hp + u0 * FL_I8_NR, h_next + b * Hp + u0 * FL_I8_NR, NULL)
        if y != NULL:
            for j in range(u0 * FL_I8_NR, j1):
                y[b * ys_b + j] = h_next[b * Hp + j]


cdef void i8_project_step(const fl_isa_ops *ops, Py_ssize_t b0, Py_ssize_t b1, Py_ssize_t p0,
                          Py_ssize_t p1, Py_ssize_t H, Py_ssize_t P, const int8_t *w_hr,
                          const int32_t *bsum_hr, const float *s_hr, const int8_t *qr,
                          const float *sr, int32_t *acc, float *r_out, float *y,
                          Py_ssize_t ys_b) noexcept nogil:
    """The projection of one step, rows [b0, b1) and output panels [p0, p1): h = deq(q(r) . W_hr)
    (the recurrent state, Pp apart) and the user's rows of y."""
    cdef Py_ssize_t Pp = round_up(P, FL_I8_NR), Hq = kpad4(H), c0 = p0 * FL_I8_NR
    cdef Py_ssize_t nc = (p1 - p0) * FL_I8_NR, b, j, j1
    if nc <= 0:
        return
    ops.i8.gemm(b1 - b0, p1 - p0, H, qr + b0 * Hq, Hq, w_hr + c0 * Hq, bsum_hr + c0,
                acc + b0 * Pp + c0, Pp)
    j1 = p1 * FL_I8_NR if p1 * FL_I8_NR < P else P
    for b in range(b0, b1):
        ops.i8.dequant_add(nc, acc + b * Pp + c0, sr[b], s_hr + c0, NULL, r_out + b * Pp + c0)
        for j in range(c0, j1):
            y[b * ys_b + j] = r_out[b * Pp + j]


cdef void i8_forward_thread(
        const fl_isa_ops *ops, Py_ssize_t T, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H,
        Py_ssize_t P, const float *x, Py_ssize_t xs_t, Py_ssize_t xs_b,
        const int8_t *w_ih, const int32_t *bsum_ih, const float *s_ih, const float *bias,
        const int8_t *w_hh, const int32_t *bsum_hh, const float *s_hh,
        const int8_t *w_hr, const int32_t *bsum_hr, const float *s_hr,
        float *gates, Py_ssize_t chunk, float *h_state, float *c_state, float *h_full,
        float *y, Py_ssize_t ys_t, Py_ssize_t ys_b,
        int8_t *q, int32_t *acc, float *s,
        bint by_batch, int tid, int n, fl_barrier_state *bar, fl_stop_state *stop) noexcept nogil:
    """Thread tid's share of the int8 forward, in a team of n (n = 1: all of it); q, acc and s
    are this thread's scratch (i8_scratch_sizes)."""
    cdef Py_ssize_t Hp = round_up(H, FL_I8_NR), nblk = Hp // FL_I8_NR, G4 = 4 * Hp
    cdef Py_ssize_t Kr = P if P > 0 else H, Krp = round_up(Kr, FL_I8_NR)
    cdef Py_ssize_t Pp = round_up(P, FL_I8_NR), npblk = Pp // FL_I8_NR
    cdef Py_ssize_t lo = share(B if by_batch else nblk, tid, n)
    cdef Py_ssize_t hi = share(B if by_batch else nblk, tid + 1, n)
    cdef Py_ssize_t plo = share(npblk, tid, n), phi = share(npblk, tid + 1, n)
    cdef Py_ssize_t qb0 = lo if by_batch else 0, qb1 = hi if by_batch else B
    cdef Py_ssize_t t0 = 0, tn, t, hs, hd
    cdef float *hcell
    cdef float *ycell
    cdef int k = 0
    cdef bint stopped = False
    # (subnormals are kept: quantize_row matches the reference bitwise only then)
    while t0 < T:
        tn = T - t0 if T - t0 < chunk else chunk
        i8_input_projection(ops, tn, B, I, G4, x + t0 * xs_t, xs_t, xs_b, w_ih, bsum_ih, s_ih,
                            bias, gates, q, acc, bar, stop, tid)
        if agree(stop, bar, tid, n, &k):
            break
        if tid == 0:
            fl_reset_items(bar)
        for t in range(t0, t0 + tn):
            hs = t % 2
            hd = (t + 1) % 2
            hcell = h_full if P > 0 else h_state + hd * B * Krp
            ycell = NULL if P > 0 else y + t * ys_t
            i8_quantize_rows(ops, qb0, qb1, Kr, h_state + hs * B * Krp, Krp, q, s)
            if by_batch:
                i8_recurrent_step(ops, lo, hi, 0, nblk, H, Hp, Kr, w_hh, bsum_hh, s_hh,
                                  gates + (t - t0) * B * G4, q, s, acc, hcell, c_state, c_state,
                                  ycell, ys_b)
                if P > 0:
                    i8_quantize_rows(ops, lo, hi, H, hcell, Hp, q, s)
                    i8_project_step(ops, lo, hi, 0, npblk, H, P, w_hr, bsum_hr, s_hr, q, s, acc,
                                    h_state + hd * B * Krp, y + t * ys_t, ys_b)
            else:
                i8_recurrent_step(ops, 0, B, lo, hi, H, Hp, Kr, w_hh, bsum_hh, s_hh,
                                  gates + (t - t0) * B * G4, q, s, acc, hcell, c_state, c_state,
                                  ycell, ys_b)
                if P > 0:
                    fl_barrier(bar, n)  # the cell's h is whole before anyone quantizes it
                    i8_quantize_rows(ops, 0, B, H, hcell, Hp, q, s)
                    i8_project_step(ops, 0, B, plo, phi, H, P, w_hr, bsum_hr, s_hr, q, s, acc,
                                    h_state + hd * B * Krp, y + t * ys_t, ys_b)
                # h_t is whole, and every thread is done reading h_{t-1}, before the next step
                if agree(stop, bar, tid, n, &k):
                    stopped = True
                    break
            if by_batch and stopping(stop, tid):
                break
        if stopped:
            break
        fl_barrier(bar, n)  # the next chunk overwrites gates
        t0 = t0 + tn


cdef inline void i8_scratch_sizes(Py_ssize_t rows, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H,
                                  Py_ssize_t P, Py_ssize_t *qlen, Py_ssize_t *alen) noexcept nogil:
    """One thread's scratch: int8 rows (an input item's, of at most `rows`, or every row of a
    step, which the unit split quantizes whole) and their int32 sums, each rounded to a cache
    line. Sized to the call: a large block would come from mmap, page faults and all, every call."""
    cdef Py_ssize_t Hp = round_up(H, FL_I8_NR), Kr = P if P > 0 else H
    cdef Py_ssize_t item = min(rows, <Py_ssize_t>I8_ROWS)
    qlen[0] = round_up(max(item * kpad4(I), B * max(kpad4(Kr), kpad4(H))), 64)
    alen[0] = round_up(max(item * 4 * Hp, B * max(4 * Hp, round_up(P, FL_I8_NR))), 16)


cdef int run_forward_int8(
        Py_ssize_t T, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H, Py_ssize_t P,
        const float *x, Py_ssize_t xs_t, Py_ssize_t xs_b,
        const int8_t *w_ih, const int32_t *bsum_ih, const float *s_ih, const float *bias,
        const int8_t *w_hh, const int32_t *bsum_hh, const float *s_hh,
        const int8_t *w_hr, const int32_t *bsum_hr, const float *s_hr,
        float *gates, Py_ssize_t chunk, float *h_state, float *c_state, float *h_full,
        float *y, Py_ssize_t ys_t, Py_ssize_t ys_b, int num_threads,
        fl_stop_state *stop) noexcept nogil:
    """The int8 forward over T steps; returns the number of threads that ran. Slot 0 of h_state
    (2 slots of B x Krp) and c_state (B x Hp) hold h0 and c0 (padding zero); the final h ends in
    slot T % 2. A call whose stop watches SIGINT may stop early (its outputs then incomplete).
    Returns -1, having done nothing, when its threads' scratch cannot be allocated."""
    cdef const fl_isa_ops *ops = fl_current()
    cdef bint by_batch
    cdef int nthr = plan_team(B, H, P, FL_I8_NR, 1, num_threads, &by_batch)
    cdef int ran[1]
    cdef int tid = 0, n = 0
    cdef fl_barrier_state bar
    cdef Py_ssize_t qlen, alen, slen = round_up(B, 16)
    cdef char *scratch
    if T == 0 or B == 0:
        return 1
    nthr = fl_team_size(&bar, nthr, lstm_flops(T * B, I, H, P) / (4 * FLOPS_PER_NS))
    i8_scratch_sizes(min(chunk, T) * B, B, I, H, P, &qlen, &alen)
    cdef Py_ssize_t per = qlen + 4 * alen + 4 * slen
    scratch = <char *>malloc(nthr * per)
    if scratch == NULL:
        fl_team_ended(&bar)
        return -1
    fl_barrier_init(&bar, nthr)
    if nthr == 1:
        i8_forward_thread(ops, T, B, I, H, P, x, xs_t, xs_b, w_ih, bsum_ih, s_ih, bias, w_hh,
                          bsum_hh, s_hh, w_hr, bsum_hr, s_hr, gates, chunk, h_state, c_state,
                          h_full, y, ys_t, ys_b, <int8_t *>scratch,
                          <int32_t *>(scratch + qlen), <float *>(scratch + qlen + 4 * alen),
                          by_batch, 0, 1, &bar, stop)
        fl_team_ended(&bar)
        free(scratch)
        return 1
    with parallel(num_threads=nthr):
        tid = omp_get_thread_num()
        n = omp_get_num_threads()
        fl_team_started(&bar, tid)
        if tid == 0:
            ran[0] = n
        i8_forward_thread(ops, T, B, I, H, P, x, xs_t, xs_b, w_ih, bsum_ih, s_ih, bias, w_hh,
                          bsum_hh, s_hh, w_hr, bsum_hr, s_hr, gates, chunk, h_state, c_state,
                          h_full, y, ys_t, ys_b, <int8_t *>(scratch + tid * per),
                          <int32_t *>(scratch + tid * per + qlen),
                          <float *>(scratch + tid * per + qlen + 4 * alen),
                          by_batch, tid, n, &bar, stop)
    fl_team_ended(&bar)
    free(scratch)
    return ran[0]


def forward_int8(const float[::1] x, Py_ssize_t xs_t, Py_ssize_t xs_b,
                 Py_ssize_t T, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H, Py_ssize_t P,
                 const int8_t[::1] w_ih, const int32_t[::1] bsum_ih, const float[::1] s_ih,
                 const float[::1] bias, const int8_t[::1] w_hh, const int32_t[::1] bsum_hh,
                 const float[::1] s_hh, const int8_t[::1] w_hr, const int32_t[::1] bsum_hr,
                 const float[::1] s_hr, float[::1] gates, Py_ssize_t chunk,
                 float[::1] h_state, float[::1] c_state, float[::1] h_full,
                 float[::1] y, Py_ssize_t ys_t, Py_ssize_t ys_b, int num_threads=0):
    """Run run_forward_int8 on 1-D views of prepared buffers (int8_pack's packs, in the gate
    order above); returns the team size. P > 0: with the projection (w_hr, bsum_hr, s_hr, and
    h_full of B x Hp); h_state then holds 2 slots of B x Pp."""
    cdef Py_ssize_t NR = FL_I8_NR, Hp = round_up(H, NR), Pp = round_up(P, NR)
    cdef Py_ssize_t Kr = P if P > 0 else H, Krp = round_up(Kr, NR)
    cdef int ran
    if chunk < 1:
        raise ValueError("internal: chunk must be >= 1")
    if max(I, Kr, H) > FL_I8_MAX_K:
        raise ValueError(f"internal: int8 sums over more than {FL_I8_MAX_K} values can overflow")
    if P > 0 and (w_hr is None or bsum_hr is None or s_hr is None or h_full is None):
        raise ValueError("internal: a projection needs w_hr, bsum_hr, s_hr and h_full")
    need("x", x, (T - 1) * xs_t + (B - 1) * xs_b + I if T and B else 0)
    need_i8("w_ih", w_ih, 4 * Hp * kpad4(I))
    need_i32("bsum_ih", bsum_ih, 4 * Hp)
    need("s_ih", s_ih, 4 * Hp)
    need("bias", bias, 4 * Hp)
    need_i8("w_hh", w_hh, 4 * Hp * kpad4(Kr))
    need_i32("bsum_hh", bsum_hh, 4 * Hp)
    need("s_hh", s_hh, 4 * Hp)
    need_i8("w_hr", w_hr, Pp * kpad4(H))
    need_i32("bsum_hr", bsum_hr, Pp)
    need("s_hr", s_hr, Pp)
    need("gates", gates, min(chunk, T) * B * 4 * Hp)
    need("h_state", h_state, 2 * B * Krp)
    need("c_state", c_state, B * Hp)
    need("h_full", h_full, B * Hp if P > 0 else 0)
    need("y", y, (T - 1) * ys_t + (B - 1) * ys_b + Kr if T and B else 0)
    cdef const float *cx = cptr(x)
    cdef const int8_t *wq[3]
    cdef const int32_t *bs[3]
    cdef const float *sc[4]
    wq[:] = [i8ptr(w_ih), i8ptr(w_hh), i8ptr(w_hr)]
    bs[:] = [i32ptr(bsum_ih), i32ptr(bsum_hh), i32ptr(bsum_hr)]
    sc[:] = [cptr(s_ih), cptr(s_hh), cptr(s_hr), cptr(bias)]
    cdef float *p[5]
    p[:] = [ptr(gates), ptr(h_state), ptr(c_state), ptr(h_full), ptr(y)]
    cdef fl_stop_state stop
    cdef int watching = watch_sigint(lstm_flops(T * B, I, H, P) / (4 * FLOPS_PER_NS))
    fl_stop_init(&stop, watching)
    with nogil:
        ran = run_forward_int8(T, B, I, H, P, cx, xs_t, xs_b, wq[0], bs[0], sc[0], sc[3], wq[1],
                               bs[1], sc[1], wq[2], bs[2], sc[2], p[0], chunk, p[1], p[2], p[3],
                               p[4], ys_t, ys_b, num_threads, &stop)
        if watching:
            fl_unwatch_sigint()
    if ran < 0:
        raise MemoryError("the int8 forward could not allocate its threads' scratch")
    if fl_stop_requested(&stop):
        reraise()
    return ran




cdef inline const int8_t *i8ptr(const int8_t[::1] a) noexcept:
    return NULL if a is None else &a[0] if a.shape[0] else NULL


cdef inline const int32_t *i32ptr(const int32_t[::1] a) noexcept:
    return NULL if a is None else &a[0] if a.shape[0] else NULL


cdef inline int need_i8(str name, const int8_t[::1] a, Py_ssize_t n) except -1:
    if n and (a is None or a.shape[0] < n):
        raise ValueError(f"internal: {name} holds {0 if a is None else a.shape[0]} values, "
                         f"the kernels use {n}")
    return 0


cdef inline int need_i32(str name, const int32_t[::1] a, Py_ssize_t n) except -1:
    if n and (a is None or a.shape[0] < n):
        raise ValueError(f"internal: {name} holds {0 if a is None else a.shape[0]} values, "
                         f"the kernels use {n}")
    return 0
