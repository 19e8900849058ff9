# Build and CPU facts: the compiled options (OpenMP, instruction sets), the choice of the active
# instruction set, and the probes of this CPU (FMA rate, read bandwidth, FTZ/DAZ per thread).

def weight_group(dtype):
    """Panels per slab that the active ISA's GEMM tiles read as one stream, for packing forward
    weights of this dtype (any of 1, 2, 4 gives the same results; this one is fastest)."""
    cdef const fl_isa_ops *ops = fl_current()
    return ops.f64.weight_group if np.dtype(dtype) == np.float64 else ops.f32.weight_group


def thread_fpmodes(int num_threads):
    """The FTZ/DAZ bits of MXCSR (0 = subnormals kept) in each thread of an OpenMP team of
    num_threads, outside any kernel: what the kernels must leave as they found it."""
    global fl_teams_started
    cdef int flags[64]
    cdef int tid, n = 1 if fl_pool_lost else min(max(num_threads, 1), 64)
    cdef int k
    for k in range(64):
        flags[k] = -1
    tid = 0
    if n > 1:
        fl_teams_started = 1
    with nogil, parallel(num_threads=n):
        tid = omp_get_thread_num()
        if tid < 64:
            flags[tid] = fl_fpmode_flags()
    return [flags[k] for k in range(n) if flags[k] >= 0]


cdef double fma_seconds(bint f32, Py_ssize_t iters):
    cdef const fl_isa_ops *ops = fl_current()
    t = time.perf_counter()
    with nogil:  # (the result, a checksum, only makes the work observable)
        ops.f32.probe_fma(iters) if f32 else ops.f64.probe_fma(iters)
    return time.perf_counter() - t


cdef double read_seconds(buf, Py_ssize_t reps):
    cdef const fl_isa_ops *ops = fl_current()
    cdef float[::1] b32
    cdef double[::1] b64
    if buf.dtype == np.float32:
        b32 = buf
        t = time.perf_counter()
        with nogil:
            ops.f32.probe_read(&b32[0], b32.shape[0], reps)
    else:
        b64 = buf
        t = time.perf_counter()
        with nogil:
            ops.f64.probe_read(&b64[0], b64.shape[0], reps)
    return time.perf_counter() - t


def _best_rate(run, double seconds):
    """Units of work per second: `run(n)` does n units and returns the seconds it took; n doubles
    until a run lasts a fifth of `seconds`, then the best of 5 runs of that size."""
    n = 1
    while run(n) < seconds / 5 and n < (1 << 40):
        n *= 2
    return max(n / run(n) for _ in range(5))


def probe_fma_gflops(dtype, double seconds=0.05):
    """One thread's multiply-add rate in GFLOP/s for `dtype` (float32 or float64) with the
    active instruction set."""
    cdef bint f32 = np.dtype(dtype) == np.float32
    flops_per_iter = 2.0 * FL_PROBE_CHAINS * (16 if f32 else 8)
    return flops_per_iter * _best_rate(lambda n: fma_seconds(f32, n), seconds) / 1e9


def probe_read_gbs(Py_ssize_t nbytes, dtype=np.float32, double seconds=0.05):
    """One thread's read bandwidth in GB/s over a buffer of about `nbytes`, read over and over
    (so it comes from the cache level that holds that size)."""
    dtype = np.dtype(dtype)
    cdef Py_ssize_t itemsize = dtype.itemsize, block = 8 * 64 // itemsize  # 8 panels
    cdef Py_ssize_t n = max(block, (nbytes // itemsize) // block * block)
    raw = np.ones(n + 64 // itemsize, dtype)
    skip = (-raw.ctypes.data % 64) // itemsize  # whole-line loads, as the kernels' panels
    buf = raw[skip:skip + n]
    return n * itemsize * _best_rate(lambda reps: read_seconds(buf, reps), seconds) / 1e9


def openmp_enabled():
    """True when the extension was compiled with OpenMP."""
    return bool(FL_OPENMP)


def max_threads():
    """What num_threads=None means: omp_get_max_threads() (OMP_NUM_THREADS, threadpoolctl), at
    most cpu_limit()."""
    return resolve_threads(0)


def isa():
    """Name of the kernel variant in use: 'avx512', 'avx2' or 'generic'."""
    return fl_current().name.decode()


def isa_supported(name):
    """True when this CPU and build can run the named variant."""
    return bool(fl_supported(name.encode()))


def best_isa():
    """The best variant this CPU supports."""
    return fl_best().decode()


def select_isa(name):
    """Switch the kernel variant for the whole process (calls already running keep theirs)."""
    cdef int rc = fl_select(name.encode())
    if rc == -1:
        raise ValueError(f"unknown instruction set {name!r}: expected 'avx512', 'avx2' or 'generic'")
    if rc == -2:
        raise ValueError(f"instruction set {name!r} is not supported on this CPU "
                         f"(best available: {best_isa()!r})")
