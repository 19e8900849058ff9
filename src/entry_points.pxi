# Python entry points of the general path (fastlstm/_direction.py, fastlstm/_packing.py):
# forward, backward and weight gradients on prepared 1-D buffers, and the weight packing.
# fastlstm/model.py validates and allocates; these only check that the buffers are the sizes
# the kernels will touch, so a bug upstream raises instead of corrupting.

cdef inline floating *ptr(floating[::1] a) noexcept:
    return &a[0] if a is not None and a.shape[0] > 0 else NULL


cdef inline const floating *cptr(const floating[::1] a) noexcept:
    return &a[0] if a is not None and a.shape[0] > 0 else NULL


cdef inline int need(str name, const floating[::1] a, Py_ssize_t n) except -1:
    if a is not None and a.shape[0] < n:
        raise ValueError(f"internal: buffer {name} holds {a.shape[0]} values, needs {n}")
    return 0


def forward(const floating[::1] x, Py_ssize_t xs_t, Py_ssize_t xs_b,
            Py_ssize_t T, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H,
            const floating[::1] w_ih, const floating[::1] w_hh, Py_ssize_t wgroup,
            const floating[::1] bias, floating[::1] gates, Py_ssize_t chunk,
            floating[::1] h_state, floating[::1] c_state, floating[::1] tc_state,
            floating[::1] y, Py_ssize_t ys_t, Py_ssize_t ys_b, int num_threads=0,
            Py_ssize_t P=0, const floating[::1] w_hr=None, floating[::1] h_full=None):
    """Run lstm_forward on 1-D views of prepared buffers; returns the team size. P > 0: with
    the projection w_hr (packed (Pp/NR, H, NR)); h_state then holds Pp-wide states."""
    cdef Py_ssize_t NR = 16 if floating is float else 8
    cdef Py_ssize_t Hp = round_up(H, NR), Pp = round_up(P, NR)
    cdef Py_ssize_t Kr = P if P > 0 else H, Krp = Pp if P > 0 else Hp
    cdef bint train = tc_state is not None
    cdef int ran
    if chunk < 1:
        raise ValueError("internal: chunk must be >= 1")
    if wgroup not in (1, 2, 4):
        raise ValueError(f"internal: weight group must be 1, 2 or 4, got {wgroup}")
    if P > 0 and (w_hr is None or h_full is None):
        raise ValueError("internal: a projection needs w_hr and h_full")
    need("x", x, (T - 1) * xs_t + (B - 1) * xs_b + I if T and B else 0)
    need("w_ih", w_ih, 4 * Hp * I)
    need("w_hh", w_hh, 4 * Hp * Kr)
    need("bias", bias, 4 * Hp)
    need("gates", gates, min(chunk, T) * B * 4 * Hp)
    need("h_state", h_state, ((T + 1) if train else 2) * B * Krp)
    need("c_state", c_state, ((T + 1) if train else 1) * B * Hp)
    need("tc_state", tc_state, T * B * Hp)
    need("y", y, (T - 1) * ys_t + (B - 1) * ys_b + Kr if T and B else 0)
    need("w_hr", w_hr, Pp * H)
    need("h_full", h_full, (T if train else 1) * B * Hp if P > 0 else 0)
    cdef const floating *cx = cptr(x)
    cdef const floating *cw_ih = cptr(w_ih)
    cdef const floating *cw_hh = cptr(w_hh)
    cdef const floating *cbias = cptr(bias)
    cdef const floating *cw_hr = cptr(w_hr)
    cdef floating *p[6]
    p[:] = [ptr(gates), ptr(h_state), ptr(c_state), ptr(tc_state), ptr(y), ptr(h_full)]
    cdef fl_stop_state stop
    cdef int watching = watch_sigint(lstm_flops(T * B, I, H, P) / FLOPS_PER_NS)
    fl_stop_init(&stop, watching)
    with nogil:
        ran = run_forward(T, B, I, H, cx, xs_t, xs_b, cw_ih, cw_hh, wgroup, cbias, p[0], chunk,
                          p[1], p[2], p[3], p[4], ys_t, ys_b, P, cw_hr, p[5], num_threads, &stop)
        if watching:
            fl_unwatch_sigint()
    if fl_stop_requested(&stop):
        reraise()
    return ran


def backward(Py_ssize_t T, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H,
             const floating[::1] gates, const floating[::1] c_state, const floating[::1] tc_state,
             const floating[::1] h_state, const floating[::1] xpad,
             const floating[::1] w_ih_t, const floating[::1] w_hh_t,
             const floating[::1] dy, Py_ssize_t dys_t, Py_ssize_t dys_b,
             floating[::1] dh, floating[::1] dc, floating[::1] dgates, Py_ssize_t chunk,
             floating[::1] dx, floating[::1] dw_ih, floating[::1] dw_hh, floating[::1] db,
             int num_threads=0, Py_ssize_t P=0, const floating[::1] w_hr_t=None,
             const floating[::1] h_full=None, floating[::1] dr_steps=None,
             floating[::1] dh_full=None, floating[::1] dw_hr=None):
    """Run lstm_backward on 1-D views of prepared buffers; returns the team size. dw_ih None:
    weight gradients deferred (see lstm_backward). P > 0: with the projection (w_hr_t packed
    (Hp/NR, P, NR); h_state, dh, dy and dw_hh's rows Pp wide)."""
    cdef Py_ssize_t NR = 16 if floating is float else 8
    cdef Py_ssize_t Hp = round_up(H, NR), Ip = round_up(I, NR)
    cdef Py_ssize_t Pp = round_up(P, NR)
    cdef Py_ssize_t Kr = P if P > 0 else H, Krp = Pp if P > 0 else Hp
    cdef Py_ssize_t G4 = 4 * Hp
    cdef int ran
    if P > 0 and (w_hr_t is None or h_full is None or dh_full is None or dw_hr is None
                  or dw_ih is None or (T * B > 0 and dr_steps is None)):
        raise ValueError("internal: a projection needs every projection buffer, and no deferral")
    need("gates", gates, T * B * G4)
    need("c_state", c_state, (T + 1) * B * Hp)
    need("tc_state", tc_state, T * B * Hp)
    need("h_state", h_state, (T + 1) * B * Krp)
    need("xpad", xpad, T * B * Ip)
    need("w_ih_t", w_ih_t, G4 * Ip)
    need("w_hh_t", w_hh_t, G4 * Krp)
    need("dy", dy, (T - 1) * dys_t + (B - 1) * dys_b + Kr if T and B else 0)
    need("dh", dh, B * Krp)
    need("dc", dc, B * Hp)
    need("w_hr_t", w_hr_t, Hp * P)
    need("h_full", h_full, T * B * Hp if P > 0 else 0)
    need("dr_steps", dr_steps, T * B * Pp)
    need("dh_full", dh_full, B * Hp if P > 0 else 0)
    need("dw_hr", dw_hr, Pp * Hp)
    if chunk < 1:
        raise ValueError("internal: chunk must be >= 1")
    need("dgates", dgates, (min(chunk, T) if dw_ih is not None else T) * B * G4)
    need("dx", dx, T * B * Ip)
    need("dw_ih", dw_ih, G4 * Ip)
    need("dw_hh", dw_hh, G4 * Krp)
    need("db", db, G4)
    # per-thread rows for the weight-gradient GEMMs, as many threads as lstm_backward will start
    cdef bint by_batch
    cdef int team = plan_team(B, H, P, NR, sizeof(floating), num_threads, &by_batch)
    cdef floating[::1] scratch = np.empty(team * BIG_BLOCK * FL_KC + FL_KC * (Ip + Krp),
                                          np.float32 if floating is float else np.float64)
    cdef const floating *q[10]
    q[:] = [cptr(gates), cptr(c_state), cptr(tc_state), cptr(h_state), cptr(xpad), cptr(w_ih_t),
            cptr(w_hh_t), cptr(dy), cptr(w_hr_t), cptr(h_full)]
    cdef floating *p[11]
    p[:] = [ptr(dh), ptr(dc), ptr(dgates), ptr(dx), ptr(dw_ih), ptr(dw_hh), ptr(db), ptr(scratch),
            ptr(dr_steps), ptr(dh_full), ptr(dw_hr)]
    cdef fl_stop_state stop
    cdef int watching = watch_sigint(2 * lstm_flops(T * B, I, H, P) / FLOPS_PER_NS)
    fl_stop_init(&stop, watching)
    with nogil:
        ran = run_backward(T, B, I, H, q[0], q[1], q[2], q[3], q[4], q[5], q[6], q[7], dys_t,
                           dys_b, p[0], p[1], p[2], chunk, p[3], p[4], p[5], p[6], p[7],
                           P, q[8], q[9], p[8], p[9], p[10], num_threads, &stop)
        if watching:
            fl_unwatch_sigint()
    if fl_stop_requested(&stop):
        reraise()
    return ran


def weight_gradients_packed(Py_ssize_t R, Py_ssize_t I, Py_ssize_t H,
                            const floating[::1] dgates, const floating[::1] xpad,
                            const floating[::1] h_prev, const floating[::1] w_ih_t,
                            floating[::1] dx, floating[::1] dw_ih, floating[::1] dw_hh,
                            floating[::1] db, int num_threads=0):
    """Run lstm_weight_gradients on 1-D views; returns the team size."""
    cdef Py_ssize_t NR = 16 if floating is float else 8
    cdef Py_ssize_t Hp = round_up(H, NR), Ip = round_up(I, NR)
    cdef Py_ssize_t G4 = 4 * Hp
    cdef int ran
    need("dgates", dgates, R * G4)
    need("xpad", xpad, R * Ip)
    need("h_prev", h_prev, R * Hp)
    need("w_ih_t", w_ih_t, G4 * Ip)
    need("dx", dx, R * Ip)
    need("dw_ih", dw_ih, G4 * Ip)
    need("dw_hh", dw_hh, G4 * Hp)
    need("db", db, G4)
    if dw_ih is None or dw_hh is None or dx is None:
        raise ValueError("internal: dx, dw_ih and dw_hh are required")
    cdef int team = grad_team(R, H, NR, num_threads)
    cdef floating[::1] scratch = np.empty(team * BIG_BLOCK * FL_KC + FL_KC * (Ip + Hp),
                                          np.float32 if floating is float else np.float64)
    cdef const floating *q[4]
    q[:] = [cptr(dgates), cptr(xpad), cptr(h_prev), cptr(w_ih_t)]
    cdef floating *p[5]
    p[:] = [ptr(dx), ptr(dw_ih), ptr(dw_hh), ptr(db), ptr(scratch)]
    cdef fl_stop_state stop
    cdef int watching = watch_sigint(lstm_flops(R, I, H, 0) / FLOPS_PER_NS)
    fl_stop_init(&stop, watching)
    with nogil:
        ran = run_weight_gradients(R, I, H, q[0], q[1], q[2], q[3], p[0], p[1], p[2], p[3],
                                   p[4], num_threads, &stop)
        if watching:
            fl_unwatch_sigint()
    if fl_stop_requested(&stop):
        reraise()
    return ran



def pack_slabs(const floating[:, ::1] rows, floating[:, :, ::1] out):
    """out[u, k, j] = rows[u*W + j, k] with W = out.shape[2]: the transpose of each block of W rows
    of `rows` (W/NR panels: a forward slab of weight_group panels, or one panel) into a K x W
    slab, K = out.shape[1]."""
    cdef Py_ssize_t nblk = out.shape[0], K = out.shape[1], W = out.shape[2], u, j, k
    if rows.shape[0] < nblk * W or rows.shape[1] < K:
        raise ValueError(f"internal: pack_slabs needs rows of shape >= ({nblk * W}, {K}), got "
                         f"({rows.shape[0]}, {rows.shape[1]})")
    with nogil:
        for u in range(nblk):  # a slab (K x W) stays in cache while its W rows are read once
            for j in range(W):
                for k in range(K):
                    out[u, k, j] = rows[u * W + j, k]


def repack_gate_rows(const floating[:, ::1] w, const Py_ssize_t[::1] order,
                     floating[:, :, ::1] fwd, floating[:, :, ::1] bwd):
    """Both packed layouts of one weight straight from PyTorch's (4H, K) rows, in place (a
    training step repacks every time: no staging copy, one pass). Interleaved row r holds
    w[order[r]] (order[r] < 0: a padding row, zeros):
    fwd[u, k, j] = row u*W + j, column k (W = fwd.shape[2]; `_packing.pack`'s forward slabs);
    bwd[p, r, i] = row r, column p*NR + i (NR = bwd.shape[2]; zeros past K; the backward's
    column panels). Tiles of W rows x NR columns keep both writes in cache lines."""
    cdef Py_ssize_t K = w.shape[1], W = fwd.shape[2], nblk = fwd.shape[0]
    cdef Py_ssize_t NR = bwd.shape[2], npan = bwd.shape[0], R = bwd.shape[1]
    cdef Py_ssize_t u, p, j, i, r, k, s
    cdef Py_ssize_t full = K // NR  # panels with NR real columns: the tile kernel's
    cdef floating v
    cdef floating zero_panel[16]  # a padding row's source
    cdef const floating *rows[64]  # a tile's source rows: W <= 4 panels (weight_group <= 4)
    cdef const fl_isa_ops *ops = fl_current()
    if (R != nblk * W or order.shape[0] != R or fwd.shape[1] != K or npan * NR < K
            or (K and npan != (K + NR - 1) // NR) or NR != panel(&v) or W > 64 or W % NR):
        raise ValueError(f"internal: repack_gate_rows got w {tuple(w.shape)[:2]}, order "
                         f"({order.shape[0]},), fwd {tuple(fwd.shape)[:3]}, bwd "
                         f"{tuple(bwd.shape)[:3]}")
    with nogil:
        # One tile (slab u's W rows x column panel p) at a time: its backward part is W*NR
        # consecutive values and its forward part NR slab rows of W, so both writes fill whole
        # lines inside a few KB that stay in L1. (Row by row, each source row scattered its
        # values over the whole K x W slab one line apart, and every store missed once the slab
        # outgrew L1: H = 512 float32 took 10.7 ms warm, tiles in C 1.6 ms; docs/torch.md.)
        for i in range(NR):
            zero_panel[i] = 0
        for u in range(nblk):
            for p in range(full):
                for j in range(W):
                    s = order[u * W + j]
                    rows[j] = &w[s, p * NR] if s >= 0 else zero_panel
                if floating is float:
                    ops.f32.repack_tile(W, rows, &bwd[p, u * W, 0], &fwd[u, p * NR, 0])
                else:
                    ops.f64.repack_tile(W, rows, &bwd[p, u * W, 0], &fwd[u, p * NR, 0])
            for p in range(full, npan):  # the last, partly padded panel
                for j in range(W):
                    r = u * W + j
                    s = order[r]
                    for i in range(NR):
                        k = p * NR + i
                        v = w[s, k] if (s >= 0 and k < K) else 0
                        bwd[p, r, i] = v
                        if k < K:
                            fwd[u, k, j] = v
