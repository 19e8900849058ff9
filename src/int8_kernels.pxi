# The int8 inference kernels (issue 19; fl_ops_i8 in fl_kernels.h, bodies in fl_i8_impl.h) for
# Python: weight packing, the exact int32 GEMM, row quantization and dequantization, each on the
# active int8 variant (isa=None) or a named one (the tests run every variant this CPU has). The
# scheme they reproduce bitwise is fastlstm/reference.py's (the comment block above
# quantize_rows). These calls check their arguments and allocate their results; the time loop
# calls the table's C functions directly.

INT8_ISAS = ("avx512vnni", "avx2", "generic")  # best first


cdef const fl_ops_i8 *int8_ops(isa) except NULL:
    """The int8 kernels of the named variant, or the active one for None."""
    cdef const fl_ops_i8 *ops
    if isa is None:
        return &fl_current().i8
    ops = fl_i8_variant(str(isa).encode())
    if ops == NULL:
        if isa not in INT8_ISAS:
            raise ValueError(f"unknown int8 instruction set {isa!r}: expected one of {INT8_ISAS}")
        raise ValueError(f"int8 instruction set {isa!r} is not supported on this CPU "
                         f"(supported: {int8_isas()})")
    return ops


def isa_int8():
    """Name of the int8 kernel variant in use: 'avx512vnni', 'avx2' or 'generic' (it follows
    isa(): 'avx512' uses 'avx512vnni' where the CPU has AVX-512 VNNI and BW, else 'avx2')."""
    return fl_current().i8_name.decode()


def int8_isa_supported(name):
    """True when this CPU and build can run the named int8 variant."""
    return fl_i8_variant(str(name).encode()) != NULL


def int8_isas():
    """The int8 variants this CPU supports, best first."""
    return [name for name in INT8_ISAS if int8_isa_supported(name)]


cdef inline Py_ssize_t int8_check_k(Py_ssize_t K) except -1:
    if K < 0:
        raise ValueError(f"K must be >= 0, got {K}")
    if K > FL_I8_MAX_K:
        raise ValueError(f"int8 sums over K = {K} products can overflow int32 (127^2 * K >= "
                         f"2^31); the int8 kernels support K <= {FL_I8_MAX_K}")
    return 0


def int8_pack(q_w):
    """Pack int8 weights W (N, K) (row n = output column n) for int8_gemm.

    Returns (packed, bsum): packed int8 1-D, P*round_up(K, 4)*16 bytes (P = ceil(N/16) panels
    of 16 columns; element (k, n) at ((n//16)*KG + k//4)*64 + (n%16)*4 + k%4, KG =
    round_up(K, 4)/4, zero past N and K), and bsum int32 (P*16,): 128 * sum_k W[n, k] modulo 2^32
    (0 past N), which the VNNI kernel subtracts."""
    w = np.ascontiguousarray(q_w)
    if w.dtype != np.int8 or w.ndim != 2:
        raise TypeError(f"int8_pack needs a 2-D int8 array (N, K), got {w.dtype} {w.shape}")
    cdef Py_ssize_t N = w.shape[0], K = w.shape[1]
    int8_check_k(K)
    cdef Py_ssize_t P = (N + FL_I8_NR - 1) // FL_I8_NR, KG = (K + FL_I8_KG - 1) // FL_I8_KG
    packed = np.empty(P * KG * 64, np.int8)
    bsum = np.empty(P * FL_I8_NR, np.int32)
    if P * KG == 0:  # (nothing to pack: no columns, or no k)
        bsum[:] = 0
        return packed, bsum
    cdef const int8_t[:, ::1] wv = w
    cdef int8_t[::1] bv = packed
    cdef int32_t[::1] sv = bsum
    with nogil:
        fl_i8_pack(N, K, &wv[0, 0], &bv[0], &sv[0])
    return packed, bsum


def int8_gemm(q_a, packed, bsum, Py_ssize_t N, Py_ssize_t K, isa=None):
    """Exact int32 sums q_a @ W.T (M, N) of quantized rows and packed weights (int8_pack of W).

    q_a: int8 (M, >= round_up(K, 4)), rows with unit element stride (a wider array's leading
    columns are fine: its row stride is the kernel's lda); columns K..round_up(K, 4) are read
    and multiplied by the packing's zeros. packed, bsum: int8_pack's. isa: an int8 variant
    name, or None for the active one. Returns a new C-contiguous int32 (M, N)."""
    cdef const fl_ops_i8 *ops = int8_ops(isa)
    int8_check_k(K)
    if N < 0:
        raise ValueError(f"N must be >= 0, got {N}")
    cdef Py_ssize_t P = (N + FL_I8_NR - 1) // FL_I8_NR, KG = (K + FL_I8_KG - 1) // FL_I8_KG
    cdef Py_ssize_t Kp = KG * FL_I8_KG
    a = np.asarray(q_a)
    if a.dtype != np.int8 or a.ndim != 2:
        raise TypeError(f"q_a must be a 2-D int8 array, got {a.dtype} {a.shape}")
    cdef Py_ssize_t M = a.shape[0]
    if a.shape[1] < Kp:
        raise ValueError(f"q_a has {a.shape[1]} columns; K = {K} needs round_up(K, 4) = {Kp}")
    if M > 0 and Kp > 0 and (a.strides[1] != 1 or (M > 1 and a.strides[0] < Kp)):
        a = np.ascontiguousarray(a[:, :Kp])
    cdef const int8_t[::1] pv = packed
    cdef const int32_t[::1] sv = bsum
    if pv.shape[0] < P * KG * 64 or sv.shape[0] < P * FL_I8_NR:
        raise ValueError(f"packed ({pv.shape[0]}) / bsum ({sv.shape[0]}) are smaller than "
                         f"int8_pack's for N = {N}, K = {K}")
    cdef Py_ssize_t ldc = P * FL_I8_NR
    if M == 0 or P == 0:
        return np.zeros((M, N), np.int32)
    c = np.empty((M, ldc), np.int32)
    cdef int32_t[:, ::1] cv = c
    cdef int8_t dummy[64]
    cdef const int8_t *ap = dummy
    cdef const int8_t *bp = dummy
    cdef Py_ssize_t lda = Kp
    cdef const int8_t[:, :] av
    if Kp > 0:
        av = a
        ap = &av[0, 0]
        lda = av.strides[0] if M > 1 else Kp
        bp = &pv[0]
    with nogil:
        ops.gemm(M, P, K, ap, lda, bp, &sv[0], &cv[0, 0], ldc)
    return c if ldc == N else np.ascontiguousarray(c[:, :N])


def int8_quantize_rows(x, isa=None):
    """Quantize each row of x (float32 (M, K)): (q int8 (M, round_up(K, 4)), zeros past K;
    scale float32 (M,)), bitwise fastlstm.reference.quantize_rows (q's first K columns)."""
    cdef const fl_ops_i8 *ops = int8_ops(isa)
    a = np.asarray(x)
    if a.dtype != np.float32 or a.ndim != 2:
        raise TypeError(f"x must be a 2-D float32 array, got {a.dtype} {a.shape}")
    if a.shape[1] > 0 and a.strides[1] != 4:
        a = np.ascontiguousarray(a)
    cdef Py_ssize_t M = a.shape[0], K = a.shape[1], m
    cdef Py_ssize_t Kp = (K + FL_I8_KG - 1) // FL_I8_KG * FL_I8_KG
    q = np.empty((M, Kp), np.int8)
    scale = np.empty(M, np.float32)
    if M == 0:
        return q, scale
    cdef float[::1] sv = scale
    cdef const float[:, :] xv
    cdef int8_t[:, ::1] qv
    cdef float dummy_x[4]
    cdef int8_t dummy_q[4]
    if K == 0:  # (no element to point at: the kernel reads and writes nothing)
        with nogil:
            for m in range(M):
                sv[m] = ops.quantize_row(0, dummy_x, dummy_q)
        return q, scale
    xv = a
    qv = q
    with nogil:
        for m in range(M):
            sv[m] = ops.quantize_row(K, &xv[m, 0], &qv[m, 0])
    return q, scale


def int8_dequant_add(acc, s_a, s_w, add=None, isa=None, out=None):
    """out[m, n] = add[m, n] + float32(acc[m, n]) * (s_a[m] * s_w[n]) in float32, rounded as
    written (no FMA); without add, the product alone. acc int32 (M, N), s_a float32 (M,), s_w
    float32 (N,), add float32 (M, N) or None; out float32 (M, N), C-contiguous (may be add),
    or None for a new array. Returns out."""
    cdef const fl_ops_i8 *ops = int8_ops(isa)
    acc_arr, sa_arr, sw_arr = np.asarray(acc), np.asarray(s_a), np.asarray(s_w)
    if acc_arr.dtype != np.int32 or acc_arr.ndim != 2:
        raise TypeError(f"acc must be a 2-D int32 array, got {acc_arr.dtype} {acc_arr.shape}")
    cdef Py_ssize_t M = acc_arr.shape[0], N = acc_arr.shape[1], m
    if sa_arr.dtype != np.float32 or sw_arr.dtype != np.float32:
        raise TypeError(f"s_a and s_w must be float32, got {sa_arr.dtype} and {sw_arr.dtype}")
    if sa_arr.shape != (M,) or sw_arr.shape != (N,):
        raise ValueError(f"s_a {sa_arr.shape} and s_w {sw_arr.shape} must be ({M},) and ({N},)")
    cdef bint have_add = add is not None
    if have_add and (np.asarray(add).dtype != np.float32 or np.shape(add) != (M, N)):
        raise ValueError(f"add must be float32 ({M}, {N}), got {np.asarray(add).dtype} "
                         f"{np.shape(add)}")
    if out is None:
        out = np.empty((M, N), np.float32)
    cdef float[:, ::1] ov = out
    if ov.shape[0] != M or ov.shape[1] != N:
        raise ValueError(f"out must be ({M}, {N}), got ({ov.shape[0]}, {ov.shape[1]})")
    if M == 0 or N == 0:
        return out
    cdef const int32_t[:, ::1] av = np.ascontiguousarray(acc_arr)
    cdef const float[::1] sav = np.ascontiguousarray(sa_arr)
    cdef const float[::1] swv = np.ascontiguousarray(sw_arr)
    cdef const float[:, ::1] adv = (add if add is out else np.ascontiguousarray(add)) if have_add else None
    with nogil:
        for m in range(M):
            ops.dequant_add(N, &av[m, 0], sav[m], &swv[0], &adv[m, 0] if have_add else NULL,
                            &ov[m, 0])
    return out


def _time_gemm(str dtype, Py_ssize_t M, Py_ssize_t K, Py_ssize_t N, Py_ssize_t reps, isa=None,
               int seed=0):
    """Seconds per call of one single-threaded GEMM (M, K) x (K, N), the mean of reps calls in
    a row on the same operands (a benchmark helper, not an API): dtype 'int8' (the int8 kernel
    of variant isa, or the active one) or 'float32' (the active float variant's packed GEMM, the
    forward weights' layout with its weight_group)."""
    cdef Py_ssize_t P = (N + 15) // 16, r, gp, nslab
    cdef Py_ssize_t Kp = (K + FL_I8_KG - 1) // FL_I8_KG * FL_I8_KG
    cdef const fl_ops_i8 *ops8
    cdef const fl_isa_ops *ops = fl_current()
    cdef int8_t[:, ::1] a8
    cdef int8_t[::1] b8
    cdef int32_t[::1] s8
    cdef int32_t[:, ::1] c8
    cdef float[:, ::1] af, cf
    cdef float[::1] bf
    rng = np.random.default_rng(seed)
    if M < 1 or K < 1 or N < 1 or reps < 1:
        raise ValueError("M, K, N and reps must be >= 1")
    if dtype == "int8":
        ops8 = int8_ops(isa)
        a8 = np.zeros((M, Kp), np.int8)
        np.asarray(a8)[:, :K] = rng.integers(-127, 128, (M, K), dtype=np.int8)
        packed, bsum = int8_pack(rng.integers(-127, 128, (N, K), dtype=np.int8))
        b8, s8 = packed, bsum
        c8 = np.empty((M, P * 16), np.int32)
        t = time.perf_counter()
        with nogil:
            for r in range(reps):
                ops8.gemm(M, P, K, &a8[0, 0], Kp, &b8[0], &s8[0], &c8[0, 0], P * 16)
        return (time.perf_counter() - t) / reps
    if dtype == "float32":
        gp = ops.f32.weight_group
        nslab = (P + gp - 1) // gp
        af = rng.standard_normal((M, K), np.float32)
        bf = rng.standard_normal(nslab * gp * 16 * K, np.float32)
        cf = np.empty((M, P * 16), np.float32)
        t = time.perf_counter()
        with nogil:
            for r in range(reps):
                ops.f32.gemm(M, P, K, &af[0, 0], K, 1, &bf[0], gp * 16, gp, K * gp * 16,
                             &cf[0, 0], P * 16, 0, NULL)
        return (time.perf_counter() - t) / reps
    raise ValueError(f"dtype must be 'int8' or 'float32', got {dtype!r}")
