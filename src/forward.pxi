# The forward pass: each chunk's input projection, then the recurrence step by step, on one
# thread or a team; lstm_forward is the C-level entry (fastlstm/_kernels.pxd).

cdef void input_projection(const fl_isa_ops *ops, Py_ssize_t tn,
                           Py_ssize_t B, Py_ssize_t I, Py_ssize_t Hp, const floating *x,
                           Py_ssize_t xs_t, Py_ssize_t xs_b, const floating *w_ih,
                           Py_ssize_t wgroup, const floating *bias, floating *gates,
                           fl_barrier_state *bar, fl_stop_state *stop, int tid) noexcept nogil:
    """gates[t, b] = bias + x[t, b] @ W_ih^T for tn steps: the tiles this thread takes from the
    team's counter (fl_next_item; reset before the next call), until the team stops."""
    cdef Py_ssize_t NR = panel(gates), nblk = Hp // NR, G4 = 4 * Hp
    cdef Py_ssize_t ngroups, M, rsa, ldc, a_group, c_group
    if xs_t == B * xs_b or tn == 1:  # rows (t, b) evenly strided: one group of tn*B rows
        ngroups, M, rsa, ldc, a_group, c_group = 1, tn * B, xs_b, G4, 0, 0
    else:  # batch-first input: one group of tn rows per sequence
        ngroups, M, rsa, ldc, a_group, c_group = B, tn, xs_t, B * G4, xs_b, G4
    cdef Py_ssize_t nrb = (M + ROW_BLOCK - 1) // ROW_BLOCK
    cdef Py_ssize_t items = ngroups * nblk * nrb, w, grp, u, m0, m, idx, rg, rin, rem
    # Taken in order, not in fixed shares: a team's thread that wakes late (a VM's vCPU can take
    # milliseconds) finds the others into its items instead of making them wait at the barrier.
    w = fl_next_item(bar)
    while w < items and not stopping(stop, tid):
        # Items go by groups of ROW_GROUP row blocks, and by unit block inside a group: the
        # group's rows of x stay in L2 while every unit block's weights pass over them (a long
        # x streamed from L3 once per unit block cost 15% at B=16, I=256).
        grp = w // (nblk * nrb)
        idx = w % (nblk * nrb)
        rg = idx // (ROW_GROUP * nblk)
        rin = nrb - rg * ROW_GROUP if nrb - rg * ROW_GROUP < ROW_GROUP else ROW_GROUP
        rem = idx - rg * ROW_GROUP * nblk
        u = rem // rin
        m0 = (rg * ROW_GROUP + rem % rin) * ROW_BLOCK
        m = M - m0 if M - m0 < ROW_BLOCK else ROW_BLOCK
        gemm(ops, m, 4, I, x + grp * a_group + m0 * rsa, rsa, 1, w_ih + 4 * u * I * NR,
             wgroup * NR, wgroup, wgroup * I * NR, gates + grp * c_group + m0 * ldc + 4 * u * NR,
             ldc, 0, bias + 4 * u * NR if bias != NULL else <const floating *>NULL)
        w = fl_next_item(bar)


cdef void recurrent_step(const fl_isa_ops *ops, Py_ssize_t b0, Py_ssize_t b1, Py_ssize_t u0,
                         Py_ssize_t u1, Py_ssize_t H, Py_ssize_t Hp, Py_ssize_t Kr,
                         const floating *w_hh, Py_ssize_t wgroup, floating *g,
                         const floating *h_prev, floating *h_next, const floating *c_prev,
                         floating *c_next, floating *tc, floating *y,
                         Py_ssize_t ys_b) noexcept nogil:
    """One time step for rows [b0, b1) and unit blocks [u0, u1): gates += h_prev @ W_hh^T, then
    the fused cell; h goes to h_next and, unless y is NULL, to the user's output rows y. h_prev
    rows hold Kr values (H, or proj_size with a projection), padded to a panel."""
    cdef Py_ssize_t NR = panel(g), G4 = 4 * Hp, Krp = round_up(Kr, NR), b, j, j1
    gemm(ops, b1 - b0, 4 * (u1 - u0), Kr, h_prev + b0 * Krp, Krp, 1, w_hh + 4 * u0 * Kr * NR,
         wgroup * NR, wgroup, wgroup * Kr * NR, g + b0 * G4 + 4 * u0 * NR, G4, 1,
         <floating *>NULL)
    j1 = u1 * NR if u1 * NR < H else H
    for b in range(b0, b1):
        gates_fwd(ops, u1 - u0, g + b * G4 + 4 * u0 * NR, c_prev + b * Hp + u0 * NR,
                  c_next + b * Hp + u0 * NR, h_next + b * Hp + u0 * NR,
                  tc + b * Hp + u0 * NR if tc != NULL else <floating *>NULL)
        if y != NULL:
            for j in range(u0 * NR, j1):
                y[b * ys_b + j] = h_next[b * Hp + j]


cdef void project_step(const fl_isa_ops *ops, Py_ssize_t b0, Py_ssize_t b1, Py_ssize_t p0,
                       Py_ssize_t p1, Py_ssize_t H, Py_ssize_t P, const floating *w_hr,
                       const floating *h, floating *r, floating *y,
                       Py_ssize_t ys_b) noexcept nogil:
    """The projection of one step for rows [b0, b1) and output panels [p0, p1): r = h @ W_hr^T
    (the recurrent state and the output), copied to the user's output rows y."""
    cdef Py_ssize_t NR = panel(r), Hp = round_up(H, NR)
    cdef Py_ssize_t Pp = round_up(P, NR), b, j, j1
    gemm(ops, b1 - b0, p1 - p0, H, h + b0 * Hp, Hp, 1, w_hr + p0 * H * NR, NR, 1, H * NR,
         r + b0 * Pp + p0 * NR, Pp, 0, <floating *>NULL)
    j1 = p1 * NR if p1 * NR < P else P
    for b in range(b0, b1):
        for j in range(p0 * NR, j1):
            y[b * ys_b + j] = r[b * Pp + j]


cdef void forward_thread(
        const fl_isa_ops *ops, Py_ssize_t T, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H,
        const floating *x, Py_ssize_t xs_t, Py_ssize_t xs_b,
        const floating *w_ih, const floating *w_hh, Py_ssize_t wgroup, const floating *bias,
        floating *gates, Py_ssize_t chunk,
        floating *h_state, floating *c_state, floating *tc_state,
        floating *y, Py_ssize_t ys_t, Py_ssize_t ys_b,
        Py_ssize_t P, const floating *w_hr, floating *h_full,
        bint by_batch, int tid, int n, fl_barrier_state *bar, fl_stop_state *stop) noexcept nogil:
    """Thread tid's share of lstm_forward, in a team of n that all call this with the same bar
    and stop (n = 1: all of it, no OpenMP region needed)."""
    cdef Py_ssize_t NR = panel(gates), Hp = round_up(H, NR), nblk = Hp // NR
    cdef Py_ssize_t G4 = 4 * Hp, S = B * Hp
    cdef Py_ssize_t Kr = P if P > 0 else H, Sr = B * round_up(Kr, NR)
    cdef Py_ssize_t npblk = (P + NR - 1) // NR
    cdef bint train = tc_state != NULL
    cdef Py_ssize_t lo = share(B if by_batch else nblk, tid, n)
    cdef Py_ssize_t hi = share(B if by_batch else nblk, tid + 1, n)
    cdef Py_ssize_t plo = share(npblk, tid, n), phi = share(npblk, tid + 1, n)
    cdef Py_ssize_t t0 = 0, tn, t, hs, hd, cs, cd
    cdef floating *tc
    cdef floating *hcell
    cdef floating *ycell
    cdef int k = 0  # the team's agreements so far
    cdef bint stopped = False
    cdef unsigned int fpmode = fl_flush_denormals()
    while t0 < T:
        tn = T - t0 if T - t0 < chunk else chunk
        input_projection(ops, tn, B, I, Hp, x + t0 * xs_t, xs_t, xs_b, w_ih, wgroup, bias,
                         gates, bar, stop, tid)
        # (every item is taken: the counter is free until the next chunk)
        if agree(stop, bar, tid, n, &k):
            break
        if tid == 0:
            fl_reset_items(bar)
        for t in range(t0, t0 + tn):
            hs = t if train else t % 2
            hd = t + 1 if train else (t + 1) % 2
            cs = t if train else 0
            cd = t + 1 if train else 0
            tc = NULL
            if train:
                tc = tc_state + t * S
            hcell = h_state + hd * Sr  # where the cell writes h
            ycell = y + t * ys_t
            if P > 0:
                hcell = h_full + (t * S if train else 0)
                ycell = NULL
            if by_batch:
                recurrent_step(ops, lo, hi, 0, nblk, H, Hp, Kr, w_hh, wgroup,
                               gates + (t - t0) * B * G4, h_state + hs * Sr, hcell,
                               c_state + cs * S, c_state + cd * S, tc, ycell, ys_b)
                if P > 0:
                    project_step(ops, lo, hi, 0, npblk, H, P, w_hr, hcell, h_state + hd * Sr,
                                 y + t * ys_t, ys_b)
            else:
                recurrent_step(ops, 0, B, lo, hi, H, Hp, Kr, w_hh, wgroup,
                               gates + (t - t0) * B * G4, h_state + hs * Sr, hcell,
                               c_state + cs * S, c_state + cd * S, tc, ycell, ys_b)
                if P > 0:
                    fl_barrier(bar, n)  # the cell's h_t is complete before the projection
                    project_step(ops, 0, B, plo, phi, H, P, w_hr, hcell, h_state + hd * Sr,
                                 y + t * ys_t, ys_b)
                # h_t (r_t) is complete before anyone reads it
                if agree(stop, bar, tid, n, &k):
                    stopped = True
                    break
            if by_batch and stopping(stop, tid):  # (this thread's rows; the team agrees next)
                break
        if stopped:
            break
        fl_barrier(bar, n)  # the next chunk overwrites gates
        t0 = t0 + tn
    fl_restore_fpmode(fpmode)


cdef int lstm_forward(
        Py_ssize_t T, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H,
        const floating *x, Py_ssize_t xs_t, Py_ssize_t xs_b,
        const floating *w_ih, const floating *w_hh, Py_ssize_t wgroup, const floating *bias,
        floating *gates, Py_ssize_t chunk,
        floating *h_state, floating *c_state, floating *tc_state,
        floating *y, Py_ssize_t ys_t, Py_ssize_t ys_b,
        Py_ssize_t P, const floating *w_hr, floating *h_full,
        int num_threads) noexcept nogil:
    """run_forward, uninterruptible (the cimport API; see run_forward)."""
    cdef fl_stop_state stop
    fl_stop_init(&stop, 0)
    return run_forward(T, B, I, H, x, xs_t, xs_b, w_ih, w_hh, wgroup, bias, gates, chunk, h_state,
                       c_state, tc_state, y, ys_t, ys_b, P, w_hr, h_full, num_threads, &stop)


cdef int run_forward(
        Py_ssize_t T, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H,
        const floating *x, Py_ssize_t xs_t, Py_ssize_t xs_b,
        const floating *w_ih, const floating *w_hh, Py_ssize_t wgroup, const floating *bias,
        floating *gates, Py_ssize_t chunk,
        floating *h_state, floating *c_state, floating *tc_state,
        floating *y, Py_ssize_t ys_t, Py_ssize_t ys_b,
        Py_ssize_t P, const floating *w_hr, floating *h_full,
        int num_threads, fl_stop_state *stop) noexcept nogil:
    """LSTM forward over T steps; returns the number of threads that ran.

    With a projection (P > 0), h_state holds r = h @ W_hr^T (B x Pp per slot: the recurrent
    state and the output) and the cell's h goes to h_full (B x Hp; one slot per step when
    training, for the weight gradient of W_hr). Unit split: a second barrier per step, between
    the cell (by unit blocks) and the projection (by output panels).

    x[t, b, :] is at x + t*xs_t + b*xs_b (rows of I); y[t, b, :] likewise with ys_t, ys_b (rows of
    H). w_ih and w_hh are packed in slabs of wgroup panels (1, 2 or 4: the pack's weight_group;
    any other value computes nothing and returns 0; module notes). gates holds
    `chunk` steps (all T when training). tc_state is NULL for inference, which then uses 2 h
    slots and 1 c slot; when training every slot is kept (see the module notes). Slot 0 of
    h_state and c_state must hold h0 and c0 (padding zero). The final state ends in slot T
    (training) or h slot T % 2 and c slot 0 (inference). A call whose stop watches SIGINT may stop
    early (fl_stop_requested(stop)), its outputs then incomplete.
    """
    cdef const fl_isa_ops *ops = fl_current()
    cdef bint by_batch
    cdef int nthr = plan_team(B, H, P, panel(gates), sizeof(floating), num_threads, &by_batch)
    cdef int ran[1]  # written through a pointer: plain assignments in a parallel block are private
    cdef int tid = 0, n = 0  # (set before the region: GCC cannot see OpenMP initialize them)
    cdef fl_barrier_state bar  # the team's, shared: only its address enters the region
    if wgroup != 1 and wgroup != 2 and wgroup != 4:  # not a layout the GEMM can read
        return 0
    if T == 0 or B == 0:
        return 1
    # (a sleeping team starts only once the work pays for its wake-up)
    nthr = fl_team_size(&bar, nthr, lstm_flops(T * B, I, H, P) / FLOPS_PER_NS)
    fl_barrier_init(&bar, nthr)
    if nthr == 1:  # no region: libgomp's costs ~0.5 us even for one thread
        forward_thread(ops, T, B, I, H, x, xs_t, xs_b, w_ih, w_hh, wgroup, bias, gates, chunk,
                       h_state, c_state, tc_state, y, ys_t, ys_b, P, w_hr, h_full, by_batch, 0, 1,
                       &bar, stop)
        fl_team_ended(&bar)
        return 1
    with parallel(num_threads=nthr):
        tid = omp_get_thread_num()
        n = omp_get_num_threads()
        fl_team_started(&bar, tid)
        if tid == 0:
            ran[0] = n
        forward_thread(ops, T, B, I, H, x, xs_t, xs_b, w_ih, w_hh, wgroup, bias, gates, chunk,
                       h_state, c_state, tc_state, y, ys_t, ys_b, P, w_hr, h_full, by_batch, tid,
                       n, &bar, stop)
    fl_team_ended(&bar)
    return ran[0]
