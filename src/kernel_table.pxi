# Typed access to the kernel table of the active instruction set (one inline function per
# kernel, its float or double entry picked at compile time), and the sizes of the work items
# the sequence loops hand to it.

cdef enum:
    # rows of the input projection handed out as one unit of work: a multiple of every ISA's tile
    # rows (AVX2 3, AVX-512 4, portable 2). At 32, AVX2 ran a 2-row remainder tile in every
    # block; 48 measured 3-6% faster on d) and c) forwards (AVX2 Zen VM, 1 and 2 threads).
    ROW_BLOCK = 48
    ROW_GROUP = 8  # row blocks of the input projection whose x rows stay in L2 together
    BIG_BLOCK = 256  # rows of the backward's big GEMMs per unit: their weights stream once per unit


cdef inline Py_ssize_t panel(floating *dummy) noexcept nogil:
    if floating is float:
        return 16
    else:
        return 8


cdef inline void gemm(const fl_isa_ops *ops, Py_ssize_t M, Py_ssize_t P, Py_ssize_t K,
                      const floating *a, Py_ssize_t rsa, Py_ssize_t csa, const floating *b,
                      Py_ssize_t ldb, Py_ssize_t gp, Py_ssize_t bgs, floating *c, Py_ssize_t ldc,
                      int accumulate, const floating *init) noexcept nogil:
    if floating is float:
        ops.f32.gemm(M, P, K, a, rsa, csa, b, ldb, gp, bgs, c, ldc, accumulate, init)
    else:
        ops.f64.gemm(M, P, K, a, rsa, csa, b, ldb, gp, bgs, c, ldc, accumulate, init)


cdef inline void gates_fwd(const fl_isa_ops *ops, Py_ssize_t nblk, floating *g,
                           const floating *c_prev, floating *c, floating *h,
                           floating *tc) noexcept nogil:
    if floating is float:
        ops.f32.gates_fwd(nblk, g, c_prev, c, h, tc)
    else:
        ops.f64.gates_fwd(nblk, g, c_prev, c, h, tc)


cdef inline void gates_bwd(const fl_isa_ops *ops, Py_ssize_t nblk, const floating *act,
                           const floating *c_prev, const floating *tc, const floating *dh,
                           floating *dc, floating *dg) noexcept nogil:
    if floating is float:
        ops.f32.gates_bwd(nblk, act, c_prev, tc, dh, dc, dg)
    else:
        ops.f64.gates_bwd(nblk, act, c_prev, tc, dh, dc, dg)


cdef inline void colsum(const fl_isa_ops *ops, Py_ssize_t rows, Py_ssize_t npanels,
                        const floating *src, Py_ssize_t ld, floating *dst,
                        int accumulate) noexcept nogil:
    if floating is float:
        ops.f32.colsum(rows, npanels, src, ld, dst, accumulate)
    else:
        ops.f64.colsum(rows, npanels, src, ld, dst, accumulate)


cdef inline Py_ssize_t round_up(Py_ssize_t n, Py_ssize_t multiple) noexcept nogil:
    """n rounded up to a multiple (a size padded to whole panels)."""
    return (n + multiple - 1) // multiple * multiple


cdef inline Py_ssize_t share(Py_ssize_t n, int k, int nthr) noexcept nogil:
    """Start of thread k's contiguous share of n items ([share(k), share(k+1)) is thread k's).
    Callers assign the result inside their parallel block, which makes it thread-private."""
    return (n * k) // nthr
