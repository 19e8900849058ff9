# The backward pass: BPTT step by step, last first, then the weight gradients of each chunk,
# on one thread or a team; lstm_backward and lstm_weight_gradients are the C-level entries
# (fastlstm/_kernels.pxd).

cdef void backward_step(const fl_isa_ops *ops, Py_ssize_t b0, Py_ssize_t b1, Py_ssize_t u0,
                        Py_ssize_t u1, Py_ssize_t H, Py_ssize_t Hp, const floating *act,
                        const floating *c_prev, const floating *tc, const floating *dy,
                        Py_ssize_t dys_b, floating *dh, floating *dc,
                        floating *dg) noexcept nogil:
    """Gate gradients of one step for rows [b0, b1), unit blocks [u0, u1): dh += dy first.
    The padding units' gate gradients are set to 0: their pre-activations are x @ 0, which is
    NaN where x holds an inf, and the products over all 4*Hp gates (dh, dx) would spread it."""
    cdef Py_ssize_t NR = panel(dh), G4 = 4 * Hp, b, j, j1, q
    j1 = u1 * NR if u1 * NR < H else H
    for b in range(b0, b1):
        if dy != NULL:
            for j in range(u0 * NR, j1):
                dh[b * Hp + j] += dy[b * dys_b + j]
        gates_bwd(ops, u1 - u0, act + b * G4 + 4 * u0 * NR, c_prev + b * Hp + u0 * NR,
                  tc + b * Hp + u0 * NR, dh + b * Hp + u0 * NR, dc + b * Hp + u0 * NR,
                  dg + b * G4 + 4 * u0 * NR)
        if j1 < u1 * NR:  # the last block, with padding lanes [H % NR, NR) in each gate panel
            for q in range(4):
                for j in range(j1 % NR, NR):
                    dg[b * G4 + 4 * (u1 - 1) * NR + q * NR + j] = 0


cdef bint projected_backward_step(
        const fl_isa_ops *ops, Py_ssize_t b0, Py_ssize_t b1, Py_ssize_t u0, Py_ssize_t u1,
        Py_ssize_t p0, Py_ssize_t p1, int team, fl_barrier_state *bar, Py_ssize_t H,
        Py_ssize_t P, const floating *act, const floating *c_prev, const floating *tc,
        const floating *dy, Py_ssize_t dys_b, const floating *w_hr_t, const floating *w_hh_t,
        floating *dr, floating *dr_keep, floating *dh, floating *dc,
        floating *dg, fl_stop_state *stop, int tid, int *agreements) noexcept nogil:
    """One step of BPTT through a projection, for rows [b0, b1), unit blocks [u0, u1) and
    projection panels [p0, p1): dr += dy (a copy kept for dW_hr), dh = dr @ W_hr, the gate
    gradients, then dr = dgates @ W_hh for the step before. team, bar: the size of the unit
    split's team and its barrier, where its threads wait for each other before each product that
    reads what the others wrote (team 1 for the batch split: no one to wait for). True when the
    team agreed to stop (stop, tid, agreements: see `agree`)."""
    cdef Py_ssize_t NR = panel(dr), Hp = round_up(H, NR)
    cdef Py_ssize_t Pp = round_up(P, NR), G4 = 4 * Hp, b, j
    cdef Py_ssize_t j1 = p1 * NR if p1 * NR < P else P
    for b in range(b0, b1):
        if dy != NULL:
            for j in range(p0 * NR, j1):
                dr[b * Pp + j] += dy[b * dys_b + j]
        for j in range(p0 * NR, p1 * NR):
            dr_keep[b * Pp + j] = dr[b * Pp + j]
    fl_barrier(bar, team)  # all of dr is in
    gemm(ops, b1 - b0, u1 - u0, P, dr + b0 * Pp, Pp, 1, w_hr_t + u0 * P * NR, NR, 1, P * NR,
         dh + b0 * Hp + u0 * NR, Hp, 0, <floating *>NULL)
    backward_step(ops, b0, b1, u0, u1, H, Hp, act, c_prev, tc, <floating *>NULL, 0, dh, dc, dg)
    # all gate gradients of the step are in (a unit split's team may agree to stop here)
    if team > 1 and agree(stop, bar, tid, team, agreements):
        return True
    gemm(ops, b1 - b0, p1 - p0, G4, dg + b0 * G4, G4, 1, w_hh_t + p0 * G4 * NR, NR, 1, G4 * NR,
         dr + b0 * Pp + p0 * NR, Pp, 0, <floating *>NULL)
    return False


cdef bint weight_gradients(const fl_isa_ops *ops, int tid, int nthr, Py_ssize_t row0,
                           Py_ssize_t R, bint first, Py_ssize_t I, Py_ssize_t H, Py_ssize_t Kr,
                           const floating *dgates, const floating *xpad,
                           const floating *h_state, const floating *w_ih_t, floating *dx,
                           floating *dw_ih, floating *dw_hh, floating *db,
                           floating *rows, floating *panels,
                           fl_barrier_state *bar, fl_stop_state *stop,
                           int *agreements) noexcept nogil:
    """This thread's share of what R rows (t, b) of gate gradients, global rows [row0, row0+R),
    give: their rows of dx, and their terms of dW_ih, dW_hh and db, added to the sums so far
    (started when `first`). Each output tile belongs to one thread and takes the rows in one
    fixed order, so the sums do not depend on the thread count. `rows`: BIG_BLOCK * FL_KC values
    of this thread's; `panels`: FL_KC * (Ip + Krp) values shared by the team, which every thread
    of the team must call this with, and bar (it meets them at barriers) and stop, agreements
    (the team's so far; it may stop at one: then true for every thread, the sums unfinished).
    h_state rows hold Kr values (H, or proj_size), padded to a panel, as do dW_hh's rows."""
    cdef Py_ssize_t NR = panel(rows), Hp = round_up(H, NR)
    cdef Py_ssize_t Krp = round_up(Kr, NR)
    cdef Py_ssize_t Ip = round_up(I, NR), G4 = 4 * Hp, nblk = Hp // NR
    cdef Py_ssize_t nrb, w, lo, hi, m0, m, k0, kc, k, r, g, j0, q, nxp = Ip // NR
    cdef Py_ssize_t np_lo, np_hi
    cdef const floating *src
    cdef floating *dst
    cdef Py_ssize_t kb
    nrb = (R + BIG_BLOCK - 1) // BIG_BLOCK
    lo = share(nrb, tid, nthr)
    hi = share(nrb, tid + 1, nthr)
    for w in range(lo, hi):  # dx = dgates @ W_ih, by blocks of rows
        if stopping(stop, tid):
            break
        m0 = w * BIG_BLOCK
        m = R - m0 if R - m0 < BIG_BLOCK else BIG_BLOCK
        gemm(ops, m, Ip // NR, G4, dgates + m0 * G4, G4, 1, w_ih_t, NR, 1, G4 * NR,
             dx + (row0 + m0) * Ip, Ip, 0, <floating *>NULL)
    nrb = (Hp + BIG_BLOCK - 1) // BIG_BLOCK  # row blocks per gate
    lo = share(4 * nrb, tid, nthr)
    hi = share(4 * nrb, tid + 1, nthr)
    np_lo = share(nxp + Krp // NR, tid, nthr)
    np_hi = share(nxp + Krp // NR, tid + 1, nthr)
    k0 = 0
    while True:  # dW_ih, dW_hh += dgates^T @ (x, h_prev), one K block of rows at a time
        kc = R - k0 if R - k0 < FL_KC else FL_KC  # R == 0: one empty block, which writes zeros
        # The block's rows of x and h_prev, packed by column panels (FL_KC x NR each) by the
        # team together: read in place, a GEMM's rows are Ip apart, each in its own 4 KiB page
        # at I >= 1024, where the hardware prefetchers do not follow.
        for q in range(np_lo, np_hi):
            if q < nxp:
                src = xpad + (row0 + k0) * Ip + q * NR
                kb = Ip
            else:
                src = h_state + (row0 + k0) * Krp + (q - nxp) * NR
                kb = Krp
            dst = panels + q * FL_KC * NR
            for k in range(kc):
                if k + 16 < kc:  # (the same stride: see the copy of dgates below)
                    fl_prefetch(src + (k + 16) * kb)
                for r in range(NR):
                    dst[k * NR + r] = src[k * kb + r]
        fl_barrier(bar, nthr)  # every panel is in
        for w in range(lo, hi):  # by blocks of rows of the weight gradients
            if stopping(stop, tid):
                break
            g = w // nrb  # gate
            j0 = (w % nrb) * BIG_BLOCK  # first hidden unit of the block
            m = Hp - j0 if Hp - j0 < BIG_BLOCK else BIG_BLOCK
            # the block's gate-gradient columns as contiguous rows, in PyTorch's gate-major row
            # order: the GEMM then reads A row-wise and writes rows g*Hp + j straight into place
            for q in range(m // NR):  # unit block j0/NR + q: its panel of gate g
                src = dgates + k0 * G4 + (j0 // NR + q) * 4 * NR + g * NR
                dst = rows + q * NR * kc
                # A line of src at a time, each read once, asked for 16 rows ahead: the rows
                # are G4 values apart, a page or more, where the hardware prefetchers do not
                # follow. Read by columns of 16 lines, all in one L1 set (their distance is a
                # multiple of 4 KiB), this copy missed L1 on every value: 5% of c's fwd+bwd.
                for k in range(kc):
                    if k + 16 < kc:
                        fl_prefetch(src + (k + 16) * G4)
                    for r in range(NR):
                        dst[r * kc + k] = src[k * G4 + r]
            gemm(ops, m, nxp, kc, rows, kc, 1, panels, NR, 1, FL_KC * NR,
                 dw_ih + (g * Hp + j0) * Ip, Ip, not first or k0 > 0, <floating *>NULL)
            gemm(ops, m, Krp // NR, kc, rows, kc, 1, panels + nxp * FL_KC * NR, NR, 1,
                 FL_KC * NR, dw_hh + (g * Hp + j0) * Krp, Krp, not first or k0 > 0,
                 <floating *>NULL)
        if agree(stop, bar, tid, nthr, agreements):  # (and the panels are free for the next block)
            return True
        k0 = k0 + kc
        if k0 >= R:
            break
    if db != NULL:
        lo = share(4 * nblk, tid, nthr)
        hi = share(4 * nblk, tid + 1, nthr)
        colsum(ops, R, hi - lo, dgates + lo * NR, G4, db + lo * NR, not first)
    return False


cdef void projection_gradient(const fl_isa_ops *ops, int tid, int nthr, Py_ssize_t R,
                              Py_ssize_t H, Py_ssize_t P, const floating *dr,
                              const floating *h_full, floating *dw_hr,
                              floating *rows, fl_stop_state *stop) noexcept nogil:
    """This thread's share of dW_hr = dr^T @ h over R rows (t, b): the gradients of the projected
    states (R x Pp) and the cell's h (R x Hp). Work items are blocks of output rows by blocks of
    columns, each summing the rows in one fixed order. `rows`: BIG_BLOCK * FL_KC values."""
    cdef Py_ssize_t NR = panel(rows), Hp = round_up(H, NR)
    cdef Py_ssize_t Pp = round_up(P, NR)
    cdef Py_ssize_t nrb = (Pp + BIG_BLOCK - 1) // BIG_BLOCK, ncb = (Hp + BIG_BLOCK - 1) // BIG_BLOCK
    cdef Py_ssize_t w, lo, hi, j0, m, c0, nc, k0, kc, q, k
    lo = share(nrb * ncb, tid, nthr)
    hi = share(nrb * ncb, tid + 1, nthr)
    for w in range(lo, hi):
        if stopping(stop, tid):
            break
        j0 = (w // ncb) * BIG_BLOCK  # first row of dW_hr (output feature)
        m = Pp - j0 if Pp - j0 < BIG_BLOCK else BIG_BLOCK
        c0 = (w % ncb) * BIG_BLOCK  # first column (hidden unit)
        nc = Hp - c0 if Hp - c0 < BIG_BLOCK else BIG_BLOCK
        k0 = 0
        while True:  # one K block at a time; R == 0 writes zeros
            kc = R - k0 if R - k0 < FL_KC else FL_KC
            for q in range(m):  # the block's columns of dr as contiguous rows
                for k in range(kc):
                    rows[q * kc + k] = dr[(k0 + k) * Pp + j0 + q]
            gemm(ops, m, nc // NR, kc, rows, kc, 1, h_full + k0 * Hp + c0, Hp, 1, NR,
                 dw_hr + j0 * Hp + c0, Hp, k0 > 0, <floating *>NULL)
            k0 = k0 + kc
            if k0 >= R:
                break


cdef void backward_thread(
        const fl_isa_ops *ops, Py_ssize_t T, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H,
        const floating *gates, const floating *c_state, const floating *tc_state,
        const floating *h_state, const floating *xpad,
        const floating *w_ih_t, const floating *w_hh_t,
        const floating *dy, Py_ssize_t dys_t, Py_ssize_t dys_b,
        floating *dh, floating *dc,
        floating *dgates, Py_ssize_t chunk,
        floating *dx, floating *dw_ih, floating *dw_hh, floating *db, floating *scratch,
        Py_ssize_t P, const floating *w_hr_t, const floating *h_full, floating *dr_steps,
        floating *dh_full, floating *dw_hr,
        bint by_batch, int nthr, int tid, int n, fl_barrier_state *bar,
        fl_stop_state *stop) noexcept nogil:
    """Thread tid's share of lstm_backward, in a team of n (<= nthr, the team planned, which
    sized scratch) that all call this with the same bar and stop (n = 1: all of it, no OpenMP
    region needed)."""
    cdef Py_ssize_t NR = panel(dh), Hp = round_up(H, NR), nblk = Hp // NR
    cdef Py_ssize_t G4 = 4 * Hp, S = B * Hp
    cdef Py_ssize_t Kr = P if P > 0 else H, Pp = round_up(P, NR), npblk = Pp // NR
    cdef floating *panels = scratch + nthr * BIG_BLOCK * FL_KC  # shared by the team
    cdef floating *rows = scratch + tid * BIG_BLOCK * FL_KC  # this thread's
    cdef bint defer = dw_ih == NULL
    cdef Py_ssize_t lo = share(B if by_batch else nblk, tid, n)
    cdef Py_ssize_t hi = share(B if by_batch else nblk, tid + 1, n)
    # this thread's rows, unit blocks and projection panels
    cdef Py_ssize_t b0 = lo, b1 = hi, u0 = 0, u1 = nblk, p0 = 0, p1 = npblk
    cdef Py_ssize_t t, t0, t1 = T
    cdef const floating *dy_t
    cdef floating *dg_t
    cdef int k = 0  # the team's agreements so far
    cdef bint stopped = False
    cdef unsigned int fpmode = fl_flush_denormals()
    if not by_batch:
        b0, b1, u0, u1, p0, p1 = 0, B, lo, hi, share(npblk, tid, n), share(npblk, tid + 1, n)
    while t1 > 0:  # chunks of steps, last first; dgates holds one chunk
        t0 = t1 - chunk if t1 > chunk else 0
        t = t1 - 1
        while t >= t0:
            dy_t = NULL
            if dy != NULL:
                dy_t = dy + t * dys_t
            dg_t = dgates + (t - t0) * B * G4
            if P > 0:
                if projected_backward_step(ops, b0, b1, u0, u1, p0, p1, 1 if by_batch else n,
                                           bar, H, P, gates + t * B * G4, c_state + t * S,
                                           tc_state + t * S, dy_t, dys_b, w_hr_t, w_hh_t, dh,
                                           dr_steps + t * B * Pp, dh_full, dc, dg_t, stop, tid,
                                           &k):
                    stopped = True
                    break
            elif by_batch:
                backward_step(ops, lo, hi, 0, nblk, H, Hp, gates + t * B * G4, c_state + t * S,
                              tc_state + t * S, dy_t, dys_b, dh, dc, dg_t)
                # dh = dgates_t @ W_hh for this thread's rows
                gemm(ops, hi - lo, nblk, G4, dg_t + lo * G4, G4, 1, w_hh_t, NR, 1, G4 * NR,
                     dh + lo * Hp, Hp, 0, <floating *>NULL)
            else:
                backward_step(ops, 0, B, lo, hi, H, Hp, gates + t * B * G4, c_state + t * S,
                              tc_state + t * S, dy_t, dys_b, dh, dc, dg_t)
                if agree(stop, bar, tid, n, &k):  # all gate gradients of step t are in
                    stopped = True
                    break
                gemm(ops, B, hi - lo, G4, dg_t, G4, 1, w_hh_t + lo * G4 * NR, NR, 1, G4 * NR,
                     dh + lo * NR, Hp, 0, <floating *>NULL)
            t = t - 1
            if (by_batch or n == 1) and stopping(stop, tid):  # (see forward_thread)
                break
        if stopped:
            break
        if not defer:
            fl_barrier(bar, n)
            if weight_gradients(ops, tid, n, t0 * B, (t1 - t0) * B, t1 == T, I, H, Kr, dgates,
                                xpad, h_state, w_ih_t, dx, dw_ih, dw_hh, db, rows, panels, bar,
                                stop, &k):
                stopped = True
                break
            fl_barrier(bar, n)  # the next chunk overwrites dgates (and scratch)
        t1 = t0
    if T == 0 and not defer:  # no chunk ran: the weight gradients are zero
        weight_gradients(ops, tid, n, 0, 0, True, I, H, Kr, dgates, xpad, h_state, w_ih_t, dx,
                         dw_ih, dw_hh, db, rows, panels, bar, stop, &k)
    if P > 0 and not stopped:
        fl_barrier(bar, n)  # every step's dr is in
        projection_gradient(ops, tid, n, T * B, H, P, dr_steps, h_full, dw_hr, rows, stop)
    fl_restore_fpmode(fpmode)


cdef int lstm_backward(
        Py_ssize_t T, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H,
        const floating *gates, const floating *c_state, const floating *tc_state,
        const floating *h_state, const floating *xpad,
        const floating *w_ih_t, const floating *w_hh_t,
        const floating *dy, Py_ssize_t dys_t, Py_ssize_t dys_b,
        floating *dh, floating *dc,
        floating *dgates, Py_ssize_t chunk,
        floating *dx, floating *dw_ih, floating *dw_hh, floating *db, floating *scratch,
        Py_ssize_t P, const floating *w_hr_t, const floating *h_full, floating *dr_steps,
        floating *dh_full, floating *dw_hr,
        int num_threads) noexcept nogil:
    """run_backward, uninterruptible (the cimport API; see run_backward)."""
    cdef fl_stop_state stop
    fl_stop_init(&stop, 0)
    return run_backward(T, B, I, H, gates, c_state, tc_state, h_state, xpad, w_ih_t, w_hh_t, dy,
                        dys_t, dys_b, dh, dc, dgates, chunk, dx, dw_ih, dw_hh, db, scratch, P,
                        w_hr_t, h_full, dr_steps, dh_full, dw_hr, num_threads, &stop)


cdef int run_backward(
        Py_ssize_t T, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H,
        const floating *gates, const floating *c_state, const floating *tc_state,
        const floating *h_state, const floating *xpad,
        const floating *w_ih_t, const floating *w_hh_t,
        const floating *dy, Py_ssize_t dys_t, Py_ssize_t dys_b,
        floating *dh, floating *dc,
        floating *dgates, Py_ssize_t chunk,
        floating *dx, floating *dw_ih, floating *dw_hh, floating *db, floating *scratch,
        Py_ssize_t P, const floating *w_hr_t, const floating *h_full, floating *dr_steps,
        floating *dh_full, floating *dw_hr,
        int num_threads, fl_stop_state *stop) noexcept nogil:
    """Backpropagation through time over the buffers a training forward filled.

    With a projection (P > 0): h_state holds the projected states r (Pp wide), dh (B x Pp)
    carries the gradient of r, dy is P wide, dh_full (B x Hp) is scratch for the cell's dh =
    dr @ W_hr, dr_steps (T*B x Pp) keeps every step's dr, and dw_hr (Pp x Hp) receives dW_hr =
    sum dr^T h_full once all steps ran. The unit split then meets twice per step: before dh
    (all of dr is in) and before dr = dgates @ W_hh (all gate gradients are in).

    dh and dc (B x Hp) hold the gradients of h_n and c_n on entry and those of h0 and c0 on exit.
    dy (NULL when absent) is the gradient of the output, laid out like y. Steps run backwards in
    chunks of `chunk` steps, whose gate gradients (chunk*B x G4) fill `dgates` and are folded
    into the weight gradients before the next chunk: memory stays bounded for long sequences.
    Writes dx (T*B x Ip, time-major), dw_ih (4 x Hp x Ip) and dw_hh (4 x Hp x Hp), rows in
    PyTorch's gate-major order (padded), and db (G4, if not NULL) in the interleaved order.
    Weight gradients sum over (t, b) in one fixed order, so they too are bitwise independent of
    the thread count. scratch holds BIG_BLOCK * FL_KC values for each thread of
    plan_team(B, H, P, ...), then FL_KC * (Ip + Kp) values (Kp: Hp, or Pp with a projection) the
    team shares. Returns the number of threads that ran.
    With dw_ih NULL the weight gradients (and dx) are left to `lstm_weight_gradients`: dgates
    must then hold all T steps (chunk >= T), which a ragged batch gathers from its segments.
    A call whose stop watches SIGINT may stop early, as run_forward.
    """
    cdef const fl_isa_ops *ops = fl_current()
    cdef bint by_batch
    cdef int nthr = plan_team(B, H, P, panel(dh), sizeof(floating), num_threads, &by_batch)
    cdef int ran[1]  # see lstm_forward
    cdef int tid = 0, n = 0
    cdef fl_barrier_state bar
    nthr = fl_team_size(&bar, nthr, 2 * lstm_flops(T * B, I, H, P) / FLOPS_PER_NS)
    fl_barrier_init(&bar, nthr)
    if nthr == 1:  # no region (see lstm_forward)
        backward_thread(ops, T, B, I, H, gates, c_state, tc_state, h_state, xpad, w_ih_t, w_hh_t,
                        dy, dys_t, dys_b, dh, dc, dgates, chunk, dx, dw_ih, dw_hh, db, scratch, P,
                        w_hr_t, h_full, dr_steps, dh_full, dw_hr, by_batch, 1, 0, 1, &bar, stop)
        fl_team_ended(&bar)
        return 1
    with parallel(num_threads=nthr):
        tid = omp_get_thread_num()
        n = omp_get_num_threads()
        fl_team_started(&bar, tid)
        if tid == 0:
            ran[0] = n
        backward_thread(ops, T, B, I, H, gates, c_state, tc_state, h_state, xpad, w_ih_t, w_hh_t,
                        dy, dys_t, dys_b, dh, dc, dgates, chunk, dx, dw_ih, dw_hh, db, scratch, P,
                        w_hr_t, h_full, dr_steps, dh_full, dw_hr, by_batch, nthr, tid, n, &bar,
                        stop)
    fl_team_ended(&bar)
    return ran[0]


cdef inline int grad_team(Py_ssize_t R, Py_ssize_t H, Py_ssize_t NR,
                          int num_threads) noexcept nogil:
    """Threads for lstm_weight_gradients: no more than it has work items (row blocks of dx,
    unit panels of the weight gradients)."""
    cdef Py_ssize_t items = (R + BIG_BLOCK - 1) // BIG_BLOCK + 4 * ((H + NR - 1) // NR)
    cdef int n = resolve_threads(num_threads)
    return <int>items if items < n else n


cdef int lstm_weight_gradients(
        Py_ssize_t R, Py_ssize_t I, Py_ssize_t H, const floating *dgates, const floating *xpad,
        const floating *h_prev, const floating *w_ih_t, floating *dx, floating *dw_ih,
        floating *dw_hh, floating *db, floating *scratch, int num_threads) noexcept nogil:
    """run_weight_gradients, uninterruptible (the cimport API; see run_weight_gradients)."""
    cdef fl_stop_state stop
    fl_stop_init(&stop, 0)
    return run_weight_gradients(R, I, H, dgates, xpad, h_prev, w_ih_t, dx, dw_ih, dw_hh, db,
                                scratch, num_threads, &stop)


cdef int run_weight_gradients(
        Py_ssize_t R, Py_ssize_t I, Py_ssize_t H, const floating *dgates, const floating *xpad,
        const floating *h_prev, const floating *w_ih_t, floating *dx, floating *dw_ih,
        floating *dw_hh, floating *db, floating *scratch, int num_threads,
        fl_stop_state *stop) noexcept nogil:
    """dx = dgates @ W_ih and the weight gradients over R rows in any order of (step, row): the
    gate gradients (R x G4), the inputs (R x Ip) and the previous h (R x Hp) of the same rows.
    A ragged batch's steps come as its segments' rows, one after another (a packed sequence).
    Bitwise independent of the thread count, as lstm_backward's. scratch: BIG_BLOCK * FL_KC
    values per thread of grad_team(R, H, NR, num_threads), then FL_KC * (Ip + Hp) shared.
    Returns the number of threads that ran."""
    cdef const fl_isa_ops *ops = fl_current()
    cdef int nthr = grad_team(R, H, panel(dx), num_threads)
    cdef int ran[1]  # see lstm_forward
    cdef int tid = 0, n = 0, k = 0
    cdef unsigned int fpmode = 0
    cdef fl_barrier_state bar
    nthr = fl_team_size(&bar, nthr, lstm_flops(R, I, H, 0) / FLOPS_PER_NS)
    fl_barrier_init(&bar, nthr)
    if nthr == 1:  # no region (see lstm_forward)
        fpmode = fl_flush_denormals()
        weight_gradients(ops, 0, 1, 0, R, True, I, H, H, dgates, xpad, h_prev, w_ih_t, dx, dw_ih,
                         dw_hh, db, scratch, scratch + BIG_BLOCK * FL_KC, &bar, stop, &k)
        fl_restore_fpmode(fpmode)
        fl_team_ended(&bar)
        return 1
    with parallel(num_threads=nthr):
        fpmode = fl_flush_denormals()
        tid = omp_get_thread_num()
        n = omp_get_num_threads()
        k = 0  # (assigned in the region: each thread's own)
        fl_team_started(&bar, tid)
        if tid == 0:
            ran[0] = n
        weight_gradients(ops, tid, n, 0, R, True, I, H, H, dgates, xpad, h_prev, w_ih_t, dx,
                         dw_ih, dw_hh, db, scratch + tid * BIG_BLOCK * FL_KC,
                         scratch + nthr * BIG_BLOCK * FL_KC, &bar, stop, &k)
        fl_restore_fpmode(fpmode)
    fl_team_ended(&bar)
    return ran[0]
