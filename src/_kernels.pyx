# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False, embedsignature=True
"""Sequence-level LSTM kernels: the time loop, its OpenMP work split and the backward pass.

Layouts (NR = 16 floats or 8 doubles, one 64-byte panel; Hp = H rounded up to NR; G4 = 4*Hp):

- gates: rows of G4 values. Hidden units come in blocks of NR; block u owns the four panels
  [4u, 4u+4) holding its i, f, g, o gates. Whoever owns a unit block owns all it needs.
- packed weights (built once by fastlstm/_packing.py): w_ih (I x G4) and w_hh (H x G4) hold the
  transposed weights in slabs of wgroup panels (K x wgroup*NR each; wgroup divides 4, so a unit
  block's four gates are 4/wgroup whole slabs, one after another), zero in padding, with
  b_ih + b_hh pre-summed into one G4 row. wgroup is the ISA's weight_group at packing time: the
  panels of one GEMM register tile, which then reads its weights as one contiguous stream. The
  backward reads w_ih_t (G4 x Ip) and w_hh_t (G4 x Hp): the weights themselves, rows in the same
  interleaved gate order, stored one NR-wide panel of columns at a time (a G4 x NR slab each), so
  a GEMM walks each panel's column contiguously: row-major, a row stride of 4 KiB (H = 1024) put
  every row of a panel in the same cache set and cost 20% of those GEMMs' speed.
- h_state/c_state: slots of B x Hp. Inference keeps 2 h slots (step t reads slot t%2, writes the
  other) and 1 c slot (updated in place); training keeps all T+1 of each (slot 0 = h0/c0), and
  tc_state (T slots) holds tanh(c), so the backward recomputes no exponentials.
- projection (proj_size P > 0; Pp = P rounded up to NR): h_state slots hold r = h @ W_hr^T
  (B x Pp: the recurrence reads P values, so w_hh is P x G4 and w_hh_t G4 x Pp), the cell's h
  goes to h_full (B x Hp; all T steps when training), and w_hr (H x Pp) / w_hr_t (P x Hp) are
  packed by NR-wide column panels.

Work split, per call (plan_team: as many threads as the work pays for, up to the value asked):
- batch split: each thread owns whole batch rows for the entire sequence, no barrier per step;
- unit split (small batches): each thread owns unit blocks, one barrier per step, so each thread
  streams only its own slice of w_hh (with a projection, a second barrier per step: the
  projection is split by output panels). The barrier is fl_omp.h's own, not OpenMP's: ~250 ns
  against libgomp's ~600 ns between two cores.
A team that has slept starts only for work that pays for its wake-up (fl_omp.h, fl_team_size).
A plan of one thread calls the per-thread body directly, with no OpenMP region (libgomp's costs
~0.5 us even for one thread); the bodies take their thread number and team size as arguments.
Either way every element is computed by the same chain of operations, so results are bitwise
identical whatever the thread count, batch size or chunking.
"""
from cpython.exc cimport PyErr_CheckSignals
from cpython.buffer cimport (PyBUF_C_CONTIGUOUS, PyBUF_FORMAT, PyBUF_WRITABLE, PyBuffer_Release,
                             PyObject_GetBuffer)
from cython.parallel cimport parallel
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

import math
import os
import threading
import time

import numpy as np

cdef extern from "fl_kernels.h" nogil:
    ctypedef Py_ssize_t fl_idx
    ctypedef struct fl_ops_f32:
        void (*gemm)(fl_idx, fl_idx, fl_idx, const float *, fl_idx, fl_idx, const float *,
                     fl_idx, fl_idx, fl_idx, float *, fl_idx, int, const float *) noexcept nogil
        void (*gates_fwd)(fl_idx, float *, const float *, float *, float *, float *) noexcept nogil
        void (*gates_bwd)(fl_idx, const float *, const float *, const float *, const float *,
                          float *, float *) noexcept nogil
        void (*colsum)(fl_idx, fl_idx, const float *, fl_idx, float *, int) noexcept nogil
        float (*probe_fma)(fl_idx) noexcept nogil
        float (*probe_read)(const float *, fl_idx, fl_idx) noexcept nogil
        int weight_group
    ctypedef struct fl_ops_f64:
        void (*gemm)(fl_idx, fl_idx, fl_idx, const double *, fl_idx, fl_idx, const double *,
                     fl_idx, fl_idx, fl_idx, double *, fl_idx, int, const double *) noexcept nogil
        void (*gates_fwd)(fl_idx, double *, const double *, double *, double *, double *) noexcept nogil
        void (*gates_bwd)(fl_idx, const double *, const double *, const double *, const double *,
                          double *, double *) noexcept nogil
        void (*colsum)(fl_idx, fl_idx, const double *, fl_idx, double *, int) noexcept nogil
        double (*probe_fma)(fl_idx) noexcept nogil
        double (*probe_read)(const double *, fl_idx, fl_idx) noexcept nogil
        int weight_group
    ctypedef struct fl_isa_ops:
        const char *name
        fl_ops_f32 f32
        fl_ops_f64 f64
    const fl_isa_ops *fl_current()
    int fl_select(const char *name)
    int fl_supported(const char *name)
    const char *fl_best()
    int FL_KC
    void fl_prefetch(const void *p)
    int FL_PROBE_CHAINS

cdef extern from "fl_omp.h" nogil:
    int FL_OPENMP
    int omp_get_max_threads()
    int omp_get_num_threads()
    int omp_get_thread_num()
    ctypedef struct fl_barrier_state:
        pass
    void fl_barrier_init(fl_barrier_state *b, int team)
    void fl_barrier(fl_barrier_state *b, int team)
    long long fl_next_item(fl_barrier_state *b)
    void fl_reset_items(fl_barrier_state *b)
    int FL_IDLE_BUCKETS
    int fl_cpus
    int fl_busy_threads
    double fl_crowded_seconds(double set)
    int fl_crowded_policy
    long long fl_wake_ns[]
    int fl_cold_teams
    int FL_HAVE_COLD_TEAMS
    int fl_team_size(fl_barrier_state *b, int planned, double work_ns)
    int fl_teams_started
    int fl_pool_lost
    int fl_watch_fork()
    void fl_team_started(fl_barrier_state *b, int tid)
    void fl_team_ended(fl_barrier_state *b)
    unsigned int fl_flush_denormals()
    void fl_restore_fpmode(unsigned int old)
    unsigned int fl_fpmode_flags()

cdef extern from "fl_interrupt.h" nogil:
    ctypedef struct fl_stop_state:
        int watch
        long long steps
    void fl_stop_init(fl_stop_state *s, int watch)
    int fl_stop_requested(fl_stop_state *s)
    void fl_request_stop(fl_stop_state *s)
    int fl_stop_agree(fl_stop_state *s, fl_barrier_state *bar, int tid, int team, int *k)
    int fl_watch_sigint()
    void fl_unwatch_sigint()
    int fl_take_sigint()

cdef extern from "Python.h":
    # (declared without Cython's error check: the exception stays set for the call's caller)
    int run_python_signal_handlers "PyErr_CheckSignals" ()

cdef enum:
    # rows of the input projection handed out as one unit of work: a multiple of every ISA's tile
    # rows (AVX2 3, AVX-512 4, portable 2). At 32, AVX2 ran a 2-row remainder tile in every
    # block; 48 measured 3-6% faster on d) and c) forwards (AVX2 Zen VM, 1 and 2 threads).
    ROW_BLOCK = 48
    ROW_GROUP = 8  # row blocks of the input projection whose x rows stay in L2 together
    BIG_BLOCK = 256  # rows of the backward's big GEMMs per unit: their weights stream once per unit


# ------------------------------------------------------------------------------------------------
# Typed access to the kernel table of the active instruction set.

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


# The most threads a team starts, fl_cpus (fl_omp.h): the CPUs this process may run on
# (usable_cpus; 0: no limit). Past them, threads take turns on a core and every barrier waits for
# one that is not running: a 100-step batch-1 forward ran 8x slower with 8 threads on 2 cores
# than with 2. Calls running at once share them (fl_team_size).
cdef inline int resolve_threads(int num_threads) noexcept nogil:
    if fl_pool_lost:  # a fork() child of a process whose teams ran: one thread (fl_omp.h)
        return 1
    if num_threads <= 0:
        num_threads = omp_get_max_threads()
    if 0 < fl_cpus < num_threads:
        num_threads = fl_cpus
    return num_threads if num_threads > 0 else 1


def usable_cpus(cgroup="/sys/fs/cgroup"):
    """CPUs this process may run on: those of its affinity mask, fewer under a cgroup CPU quota
    (a container's --cpus, rounded up), at least 1. cgroup: where the cgroup files are."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        n = os.cpu_count() or 1
    for quota_file, period_file in (("cpu.max", None),  # v2: "max 100000", "200000 100000"
                                    ("cpu/cpu.cfs_quota_us", "cpu/cpu.cfs_period_us")):  # v1
        try:
            with open(os.path.join(cgroup, quota_file)) as f:
                words = f.read().split()
            if period_file is not None:
                with open(os.path.join(cgroup, period_file)) as f:
                    words.append(f.read().strip())
            quota = 0 if words[0] == "max" else int(words[0])  # (v1 says -1 for none)
            period = int(words[1])
        except (OSError, ValueError, IndexError):
            continue
        if quota > 0 and period > 0:
            n = min(n, math.ceil(quota / period))
        break
    return max(1, n)


def cpu_limit(n=None):
    """The CPUs fastlstm's calls may occupy, all calls running at once together, after setting
    it to n (0: no limit; tests lift it to get the teams they ask for on any machine). Set at
    import to usable_cpus(). Process-wide; not for use during calls."""
    global fl_cpus
    if n is not None:
        if type(n) is not int or n < 0:
            raise ValueError(f"cpu_limit takes an int >= 0, got {n!r}")
        fl_cpus = min(n, 2**31 - 1)
    return fl_cpus


def busy_threads(int add=0):
    """Threads that fastlstm's running calls occupy now, after adding `add` (tests stand in for
    a call running elsewhere; 0 in builds without the sharing: MSVC, no OpenMP)."""
    global fl_busy_threads
    if FL_HAVE_COLD_TEAMS:
        fl_busy_threads += add
        return fl_busy_threads
    return 0


def crowded(seconds=None, enabled=None):
    """(enabled, seconds left) of the crowded-CPU policy, after setting those given. A team's
    waiter that offers its core and sees another thread take it (another process's team, a busy
    loop) marks the CPUs crowded for 0.1 s, and meanwhile, when enabled, calls run on one thread.
    Tests set the seconds to stand in for a crowded machine, and turn the policy off (conftest)
    to get the teams they ask for. Process-wide. Builds without it (MSVC, no OpenMP) always
    report (False, 0.0)."""
    global fl_crowded_policy
    if seconds is not None and not 0 <= seconds <= 1e3:
        raise ValueError(f"crowded takes 0 to 1000 seconds, got {seconds!r}")
    if enabled is not None:
        fl_crowded_policy = 1 if enabled and FL_HAVE_COLD_TEAMS else 0
    left = fl_crowded_seconds(-1.0 if seconds is None else seconds)
    return bool(fl_crowded_policy and FL_HAVE_COLD_TEAMS), left


fl_cpus = usable_cpus()
fl_watch_fork()


# How a recurrence is shared among threads. Batch split: each thread owns whole batch rows and
# streams all of W_hh itself, no barrier. Unit split: each thread owns blocks of hidden units for
# every row, one barrier per step. Measured (issue 5 notes; 16-core Xeon, 2-core Zen 5): a barrier
# cost ~1-2 us (libgomp's, since replaced by fl_omp.h's), so a step must stream enough weight to
# pay for it, and a thread with fewer rows than a register tile (TILE_ROWS) reads its weights
# once per row it lacks.
cdef enum:
    TILE_ROWS = 4  # rows of the widest GEMM register tile (AVX-512); a thread with fewer wastes loads
cdef Py_ssize_t split_step_bytes = 128 * 1024  # weight a step streams before unit split pays
cdef Py_ssize_t split_thread_bytes = 32 * 1024  # and each thread's least share of it


cdef inline int plan_team(Py_ssize_t B, Py_ssize_t H, Py_ssize_t P, Py_ssize_t NR,
                          Py_ssize_t elsize, int num_threads, bint *by_batch) noexcept nogil:
    """Threads worth starting for a recurrence over B rows and H units, and how they split it.

    Batch split when every thread gets a full tile of rows; else unit split on as many threads as
    the step's weight stream pays for (at most one per unit block); else batch split on up to B
    threads when that uses more of them. Deterministic in its arguments."""
    cdef int n = resolve_threads(num_threads)
    cdef Py_ssize_t Hp = round_up(H, NR), nblk = Hp // NR
    cdef Py_ssize_t stream, units, rows
    if B >= TILE_ROWS * <Py_ssize_t>n:  # (n may be INT_MAX)
        by_batch[0] = True
        return n
    # a step's weights (W_hh, and W_hr with a projection of P > 0), read once per TILE_ROWS rows
    stream = (4 * Hp * (P if P > 0 else H) + round_up(P, NR) * H) * elsize
    stream *= (B + TILE_ROWS - 1) // TILE_ROWS
    units = 1
    if stream >= split_step_bytes:
        units = stream // split_thread_bytes if split_thread_bytes > 0 else nblk
        units = min(units, nblk, n)
        units = max(units, 1)
    rows = max(min(B, <Py_ssize_t>n), 1)
    by_batch[0] = rows > units or units == 1
    return <int>(rows if rows > units else units)


def split_thresholds(step_bytes=None, thread_bytes=None):
    """(step_bytes, thread_bytes) of the unit-split policy, after setting those given (tests set
    them to 0 to run the unit split on tiny shapes). Process-wide; not for use during calls."""
    global split_step_bytes, split_thread_bytes
    if step_bytes is not None:
        split_step_bytes = max(0, int(step_bytes))
    if thread_bytes is not None:
        split_thread_bytes = max(0, int(thread_bytes))
    return split_step_bytes, split_thread_bytes


# A team that has slept costs a wake-up to start (fl_omp.h, fl_team_size), so a call weighs its
# work against it: its FLOPs at a modest one-core rate (batch-1 steps stream their weights at
# ~30-50 GFLOP/s, larger ones compute at 60-90). The estimate need only tell 0.05 ms from 5 ms.
cdef double FLOPS_PER_NS = 30.0


cdef inline double lstm_flops(Py_ssize_t rows, Py_ssize_t I, Py_ssize_t H,
                              Py_ssize_t P) noexcept nogil:
    """Multiply-add FLOPs of a forward over `rows` (step, batch row) pairs."""
    cdef Py_ssize_t Kr = P if P > 0 else H
    return 2.0 * rows * (4.0 * H * (I + Kr) + (<double>P) * H)


def cold_teams(enabled=None, wake_costs=None):
    """(enabled, wake_costs) of the cold-team policy, after setting those given: whether a team
    that slept starts only for work that pays for its wake-up, and the wake-up costs measured so
    far, in seconds, by idle time ([1, 2), [2, 4), ... ms, the last 128 ms and more; 0: not
    measured yet). Tests turn the policy off to get the teams they ask for. Process-wide; not for
    use during calls. Builds without it (MSVC, or no OpenMP) always report it off."""
    global fl_cold_teams
    cdef int k
    if wake_costs is not None:
        costs = [float(c) for c in wake_costs]
        if len(costs) != FL_IDLE_BUCKETS or not all(0 <= c <= 1e3 for c in costs):
            raise ValueError(f"wake_costs takes {FL_IDLE_BUCKETS} values of 0 to 1000 seconds, "
                             f"got {wake_costs!r}")
        for k in range(FL_IDLE_BUCKETS):
            fl_wake_ns[k] = <long long>(costs[k] * 1e9)
    if enabled is not None:
        fl_cold_teams = 1 if enabled and FL_HAVE_COLD_TEAMS else 0
    return bool(fl_cold_teams), [fl_wake_ns[k] * 1e-9 for k in range(FL_IDLE_BUCKETS)]


# ------------------------------------------------------------------------------------------------
# Ctrl-C. A long call from the main thread watches SIGINT (fl_interrupt.h). Its thread 0 polls
# between work items (tiles of the input projection and of the weight gradients) and at every
# step. A team whose threads meet in a step (the unit split) agrees to stop at that barrier;
# threads that meet in none (the batch split, one thread) stop their own rows at the next step
# and the team agrees at its next barrier: after each chunk's input projection, or after each
# FL_KC block of the weight gradients. No barrier is added and no arithmetic changes, so no result.
# Calls shorter than WATCH_NS (one thread's work, estimated) do not watch: they end soon enough.
cdef double WATCH_NS = 2e6


def interrupt_settings(watch_ns=None):
    """watch_ns, after setting it when given (tests watch every call with 0)."""
    global WATCH_NS
    if watch_ns is not None:
        WATCH_NS = watch_ns
    return WATCH_NS


cdef void run_handlers(fl_stop_state *stop) noexcept nogil:
    with gil:  # Python's handler runs (on the main thread: thread 0 is the caller)
        if not fl_stop_requested(stop) and run_python_signal_handlers() != 0:
            fl_request_stop(stop)


cdef inline bint stopping(fl_stop_state *stop, int tid) noexcept nogil:
    """Thread 0 polls for SIGINT; any thread learns whether the team is on its way to stop (a
    hint to skip work items: the team decides at `agree`)."""
    if tid == 0 and stop.watch and fl_take_sigint():
        run_handlers(stop)
    return fl_stop_requested(stop)


cdef inline bint agree(fl_stop_state *stop, fl_barrier_state *bar, int tid, int n,
                       int *k) noexcept nogil:
    """A barrier of the team, where a watching call stops: true for all of its threads, or none."""
    if not stop.watch:
        fl_barrier(bar, n)
        return False
    stopping(stop, tid)
    return fl_stop_agree(stop, bar, tid, n, k)


cdef int watch_sigint(double work_ns) except -1:
    """1 when a call of work_ns watches SIGINT (then fl_unwatch_sigint after it), else 0. A signal
    that came before the call is answered now."""
    if work_ns < WATCH_NS or threading.get_ident() != threading.main_thread().ident:
        return 0
    PyErr_CheckSignals()
    return fl_watch_sigint()


cdef int reraise() except -1:
    return -1  # the exception Python's SIGINT handler raised at a poll is set


# ------------------------------------------------------------------------------------------------
# Forward

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


# ------------------------------------------------------------------------------------------------
# Backward

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


# ------------------------------------------------------------------------------------------------
# Python entry points (internal: fastlstm/model.py validates and allocates; these only check that
# the buffers are the sizes the kernels will touch, so a bug upstream raises instead of corrupting)

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


# ------------------------------------------------------------------------------------------------
# Small calls: whole entries in C for a one-layer, one-direction model without projection
# (inference: a streaming step, one short sequence; training: forward_train and its backprop),
# where Python-level validation and buffer handling would cost more than the LSTM itself.
# Each takes only arguments that are already what the kernels read and returns None for anything
# else: the general path then validates, explains and runs it.

cdef enum:
    SMALL_SCRATCH = 1 << 16  # values of inference scratch (states, every step's gates) at most
    SMALL_TAPE = 1 << 18  # values of a training tape at most; larger calls take the general
                          # path, whose overhead they amortize (and whose buffers are reused)


cdef inline int get_buffer(object obj, Py_buffer *view, int flags, const char *fmt,
                           int ndim) noexcept:
    """1 when obj exposes an aligned, C-contiguous buffer of ndim dimensions and format fmt (then
    held in view), else 0 (nothing held)."""
    try:
        PyObject_GetBuffer(obj, view, flags | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT)
    except Exception:
        return 0
    if view.ndim != ndim or view.format == NULL or view.format[0] != fmt[0] or \
            view.format[1] != 0 or <size_t>view.buf % <size_t>view.itemsize != 0:
        PyBuffer_Release(view)
        return 0
    return 1


cdef inline bint has_shape(const Py_buffer *view, Py_ssize_t d0, Py_ssize_t d1,
                           Py_ssize_t d2) noexcept:
    return view.shape[0] == d0 and view.shape[1] == d1 and view.shape[2] == d2


cdef struct SmallArgs:
    Py_buffer x, h0, c0  # h0, c0 held only with a state
    Py_ssize_t T, B
    int num_threads  # 0: OpenMP's setting
    bint have_state


cdef void release_args(SmallArgs *a) noexcept:
    if a.have_state:
        PyBuffer_Release(&a.c0)
        PyBuffer_Release(&a.h0)
    PyBuffer_Release(&a.x)


cdef void copy_rows(char *dst, Py_ssize_t dst_stride, const char *src, Py_ssize_t src_stride,
                    Py_ssize_t rows, Py_ssize_t width) noexcept nogil:
    """rows of `width` bytes from src to dst, each a stride (in bytes) after the one before."""
    cdef Py_ssize_t r
    for r in range(rows):
        memcpy(dst + r * dst_stride, src + r * src_stride, width)


cdef size_t address(a) except? 0:
    """The address of a contiguous array's first byte (0 for None)."""
    return 0 if a is None else a.ctypes.data


cdef class _SmallCall:
    """What the small entries share: the packed weights as raw pointers, and the test of a call's
    arguments: x a C-contiguous (T, B, I) array ((B, T, I) batch-first) of the model's dtype with
    T, B >= 1, hx None or a tuple of two C-contiguous (1, B, H) arrays of it, num_threads None or
    an int >= 1."""
    cdef object packed, record, dtype, empty
    cdef const void *w_ih
    cdef const void *w_hh
    cdef const void *bias
    cdef Py_ssize_t I, H, Hp, Ip, z, wgroup  # z: bytes per value
    cdef bint wide
    cdef char fmt[2]

    def __init__(self, packed, record):
        """packed: a fastlstm._packing.Packed without projection (kept alive: the pointers are
        into its arrays); record: an object whose num_threads attribute receives the team size."""
        cdef Py_ssize_t NR
        self.packed, self.record = packed, record
        self.dtype, self.empty = packed.w_ih.dtype, np.empty
        self.wide = self.dtype == np.float64
        self.z = 8 if self.wide else 4
        NR = 8 if self.wide else 16
        self.fmt[0] = b'd' if self.wide else b'f'
        self.fmt[1] = 0
        self.I, self.H = packed.input_size, packed.hidden_size
        self.Hp, self.Ip = round_up(self.H, NR), round_up(self.I, NR)
        self.w_ih = <const void *>address(packed.w_ih)
        self.w_hh = <const void *>address(packed.w_hh)
        self.wgroup = packed.weight_group
        self.bias = <const void *>address(packed.bias)

    cdef int accept(self, x, hx, num_threads, bint batch_first, SmallArgs *a) except -1:
        """1 when the call's arguments are what the kernels take (their buffers are then held in
        `a`: release_args), else 0 (nothing held)."""
        a.num_threads, a.have_state = 0, 0
        if num_threads is not None:
            if type(num_threads) is not int or num_threads < 1:
                return 0
            a.num_threads = num_threads if num_threads < 2**31 - 1 else 2**31 - 1
        if not get_buffer(x, &a.x, 0, self.fmt, 3):
            return 0
        a.T = a.x.shape[1] if batch_first else a.x.shape[0]
        a.B = a.x.shape[0] if batch_first else a.x.shape[1]
        if a.x.shape[2] != self.I or a.T == 0 or a.B == 0:
            PyBuffer_Release(&a.x)
            return 0
        if hx is None:
            return 1
        if type(hx) is tuple and len(<tuple>hx) == 2:
            if get_buffer(hx[0], &a.h0, 0, self.fmt, 3):
                if get_buffer(hx[1], &a.c0, 0, self.fmt, 3):
                    a.have_state = 1
                    if has_shape(&a.h0, 1, a.B, self.H) and has_shape(&a.c0, 1, a.B, self.H):
                        return 1
                else:
                    PyBuffer_Release(&a.h0)
        release_args(a)
        return 0

    cdef void load_state(self, const SmallArgs *a, char *h, char *c) noexcept nogil:
        """Slot 0 of the h and c state buffers (B x Hp each): the initial state, zero-padded."""
        cdef Py_ssize_t z = self.z
        memset(h, 0, a.B * self.Hp * z)
        memset(c, 0, a.B * self.Hp * z)
        if a.have_state:
            copy_rows(h, self.Hp * z, <char *>a.h0.buf, self.H * z, a.B, self.H * z)
            copy_rows(c, self.Hp * z, <char *>a.c0.buf, self.H * z, a.B, self.H * z)

    cdef object new_state(self, Py_ssize_t B, const char *slot):
        """A (1, B, H) array of a B x Hp state slot."""
        out = self.empty((1, B, self.H), self.dtype)
        cdef Py_buffer view
        PyObject_GetBuffer(out, &view, PyBUF_WRITABLE)
        copy_rows(<char *>view.buf, self.H * self.z, slot, self.Hp * self.z, B, self.H * self.z)
        PyBuffer_Release(&view)
        return out


cdef class SmallForward(_SmallCall):
    """Inference for calls that `accept` takes and whose scratch is under SMALL_SCRATCH values.
    Calling it returns (y, (h_n, c_n)), or None."""

    def __call__(self, x, hx, num_threads, bint batch_first):
        cdef SmallArgs a
        cdef Py_buffer yb
        cdef Py_ssize_t T, B, S, Hp = self.Hp, H = self.H, I = self.I, z = self.z
        cdef int ran = 1
        cdef char *scratch = NULL
        if not self.accept(x, hx, num_threads, batch_first, &a):
            return None
        T, B = a.T, a.B
        S = B * Hp
        if 3 * S + T * B * 4 * Hp > SMALL_SCRATCH:  # all steps' gates in one chunk, as the
            release_args(&a)                           # general path has them
            return None
        y = self.empty((B, T, H) if batch_first else (T, B, H), self.dtype)
        PyObject_GetBuffer(y, &yb, PyBUF_WRITABLE)
        scratch = <char *>malloc((3 * S + T * B * 4 * Hp) * z)
        if scratch == NULL:
            PyBuffer_Release(&yb)
            release_args(&a)
            raise MemoryError()
        with nogil:  # h: 2 slots (scratch), c: 1 slot (scratch + 2S), then the gates
            self.load_state(&a, scratch, scratch + 2 * S * z)
            if self.wide:
                ran = lstm_forward[double](
                    T, B, I, H, <const double *>a.x.buf, (I if batch_first else B * I),
                    (T * I if batch_first else I), <const double *>self.w_ih,
                    <const double *>self.w_hh, self.wgroup, <const double *>self.bias,
                    <double *>(scratch + 3 * S * z), T, <double *>scratch,
                    <double *>(scratch + 2 * S * z), NULL, <double *>yb.buf,
                    (H if batch_first else B * H), (T * H if batch_first else H), 0, NULL, NULL,
                    a.num_threads)
            else:
                ran = lstm_forward[float](
                    T, B, I, H, <const float *>a.x.buf, (I if batch_first else B * I),
                    (T * I if batch_first else I), <const float *>self.w_ih,
                    <const float *>self.w_hh, self.wgroup, <const float *>self.bias,
                    <float *>(scratch + 3 * S * z), T, <float *>scratch,
                    <float *>(scratch + 2 * S * z), NULL, <float *>yb.buf,
                    (H if batch_first else B * H), (T * H if batch_first else H), 0, NULL, NULL,
                    a.num_threads)
        PyBuffer_Release(&yb)
        release_args(&a)
        try:  # the final state: h slot T % 2, c slot 0
            h_n = self.new_state(B, scratch + (T % 2) * S * z)
            c_n = self.new_state(B, scratch + 2 * S * z)
        finally:
            free(scratch)
        self.record.num_threads = ran
        return y, (h_n, c_n)


cdef class SmallTrain(_SmallCall):
    """forward_train for calls that `accept` takes and whose tape is under SMALL_TAPE values.
    Calling it returns (y, (h_n, c_n), backprop) with backprop a SmallBackprop, or None."""
    cdef const void *w_ih_t
    cdef const void *w_hh_t
    cdef const Py_ssize_t *to_torch
    cdef object output, check_upstream, check_num_threads

    def __init__(self, packed, record, output, check_upstream, check_num_threads):
        """packed, record: as _SmallCall's. The Python layer's helpers: output(shape, dtype) a
        result array (fastlstm._workspace.output), check_upstream and check_num_threads (those
        of fastlstm._validate): the same memory reuse and the same explained errors as the
        general path."""
        _SmallCall.__init__(self, packed, record)
        if packed.to_torch_rows.dtype != np.intp:
            raise ValueError("internal: to_torch_rows must be intp")
        self.w_ih_t = <const void *>address(packed.w_ih_t)
        self.w_hh_t = <const void *>address(packed.w_hh_t)
        self.to_torch = <const Py_ssize_t *>address(packed.to_torch_rows)
        self.output, self.check_upstream = output, check_upstream
        self.check_num_threads = check_num_threads

    def __call__(self, x, hx, num_threads, bint batch_first):
        cdef SmallArgs a
        cdef Py_buffer yb
        cdef Py_ssize_t T, B, R, Hp = self.Hp, Ip = self.Ip, H = self.H, I = self.I, z = self.z
        cdef int ran = 1
        cdef Py_ssize_t t, r
        cdef SmallBackprop tape
        cdef char *buf[5]  # xpad, gates, h_state, c_state, tc_state
        if not self.accept(x, hx, num_threads, batch_first, &a):
            return None
        T, B = a.T, a.B
        R = T * B
        if R * (Ip + 5 * Hp) + 2 * (R + B) * Hp > SMALL_TAPE:
            release_args(&a)
            return None
        tape = SmallBackprop.__new__(SmallBackprop)
        tape.model, tape.T, tape.B, tape.batch_first = self, T, B, batch_first
        tape.memory = <char *>malloc((R * (Ip + 5 * Hp) + 2 * (R + B) * Hp) * z)
        if tape.memory == NULL:
            release_args(&a)
            raise MemoryError()
        y = self.empty((B, T, H) if batch_first else (T, B, H), self.dtype)
        PyObject_GetBuffer(y, &yb, PyBUF_WRITABLE)
        tape.buffers(buf)
        with nogil:
            for t in range(T):  # time-major rows of Ip values, zero-padded
                copy_rows(buf[0] + t * B * Ip * z, Ip * z, <char *>a.x.buf + t * I * z *
                          (1 if batch_first else B), (T if batch_first else 1) * I * z, B, I * z)
            if Ip > I:
                for r in range(R):
                    memset(buf[0] + (r * Ip + I) * z, 0, (Ip - I) * z)
            self.load_state(&a, buf[2], buf[3])
            if self.wide:
                ran = lstm_forward[double](
                    T, B, I, H, <const double *>buf[0], B * Ip, Ip, <const double *>self.w_ih,
                    <const double *>self.w_hh, self.wgroup, <const double *>self.bias,
                    <double *>buf[1], T, <double *>buf[2], <double *>buf[3], <double *>buf[4],
                    <double *>yb.buf, (H if batch_first else B * H), (T * H if batch_first else H),
                    0, NULL, NULL, a.num_threads)
            else:
                ran = lstm_forward[float](
                    T, B, I, H, <const float *>buf[0], B * Ip, Ip, <const float *>self.w_ih,
                    <const float *>self.w_hh, self.wgroup, <const float *>self.bias,
                    <float *>buf[1], T, <float *>buf[2], <float *>buf[3], <float *>buf[4],
                    <float *>yb.buf, (H if batch_first else B * H), (T * H if batch_first else H),
                    0, NULL, NULL, a.num_threads)
        PyBuffer_Release(&yb)
        release_args(&a)
        h_n = self.new_state(B, buf[2] + R * Hp * z)  # slot T of each
        c_n = self.new_state(B, buf[3] + R * Hp * z)
        self.record.num_threads = ran
        return y, (h_n, c_n), tape


cdef class SmallBackprop:
    """The backprop of a SmallTrain call: it owns that forward's tape (x padded, every step's
    gates, h, c and tanh(c)) and the model's packed weights as they were then.
    ``backprop(grad_output=None, grad_h_n=None, grad_c_n=None, *, num_threads=None)`` returns the
    gradients as a dict keyed ``x``, ``h0``, ``c0`` and the parameter names, any number of
    times, as the general path's backprop does."""
    cdef SmallTrain model
    cdef char *memory
    cdef Py_ssize_t T, B
    cdef bint batch_first
    cdef object __weakref__

    def __dealloc__(self):
        free(self.memory)

    cdef void buffers(self, char **out) noexcept nogil:
        """out[0..4] = xpad, gates, h_state, c_state, tc_state: the tape's buffers, in its
        memory one after another."""
        cdef Py_ssize_t R = self.T * self.B, Hp = self.model.Hp, z = self.model.z
        out[0] = self.memory
        out[1] = out[0] + R * self.model.Ip * z
        out[2] = out[1] + R * 4 * Hp * z
        out[3] = out[2] + (R + self.B) * Hp * z
        out[4] = out[3] + (R + self.B) * Hp * z

    cdef int upstream(self, name, value, shape, Py_buffer *view) except -1:
        """0 for None; else 1, with view holding the buffer of value when it is already a
        C-contiguous array of this shape and dtype, or else of what check_upstream makes of it
        (which raises the general path's explained error for a wrong shape)."""
        if value is None:
            return 0
        if get_buffer(value, view, 0, self.model.fmt, 3):
            if has_shape(view, shape[0], shape[1], shape[2]):
                return 1
            PyBuffer_Release(view)
        value = np.ascontiguousarray(self.model.check_upstream(name, value, shape,
                                                               self.model.dtype))
        PyObject_GetBuffer(value, view, PyBUF_C_CONTIGUOUS)
        return 1

    def __call__(self, grad_output=None, grad_h_n=None, grad_c_n=None, *, num_threads=None):
        cdef SmallTrain m = self.model
        cdef Py_ssize_t T = self.T, B = self.B, R = self.T * self.B, I = m.I, H = m.H
        cdef Py_ssize_t Ip = m.Ip, Hp = m.Hp, G4 = 4 * m.Hp, z = m.z, r, g
        cdef Py_ssize_t NR = 8 if m.wide else 16
        cdef bint batch_first = self.batch_first, by_batch, have_dy, have_dh, have_dc
        cdef bint direct_dx = not batch_first and Ip == I, direct_w = Ip == I and Hp == H
        cdef int nt, team, ran = 1
        cdef Py_buffer dyb, dhb, dcb
        cdef Py_buffer out[7]  # the results' buffers, in the dict's order
        cdef char *scratch
        cdef char *dh
        cdef char *dc
        cdef char *dgates
        cdef char *db
        cdef char *dx
        cdef char *dw_ih
        cdef char *dw_hh
        cdef char *p  # the next free byte of scratch: the kernel's own scratch, at the end
        cdef char *tape[5]
        if num_threads is None:
            nt = 0
        elif type(num_threads) is int and num_threads >= 1:
            nt = num_threads if num_threads < 2**31 - 1 else 2**31 - 1
        else:
            nt = m.check_num_threads(num_threads)
        have_dy = self.upstream("grad_output", grad_output,
                                (B, T, H) if batch_first else (T, B, H), &dyb)
        try:
            have_dh = self.upstream("grad_h_n", grad_h_n, (1, B, H), &dhb)
            try:
                have_dc = self.upstream("grad_c_n", grad_c_n, (1, B, H), &dcb)
            except BaseException:
                if have_dh:
                    PyBuffer_Release(&dhb)
                raise
        except BaseException:
            if have_dy:
                PyBuffer_Release(&dyb)
            raise
        try:
            if not (have_dy or have_dh or have_dc):
                raise ValueError("backprop needs at least one of grad_output, grad_h_n, "
                                 "grad_c_n")
            grads = {"x": m.output((B, T, I) if batch_first else (T, B, I), m.dtype),
                     "h0": m.empty((1, B, H), m.dtype), "c0": m.empty((1, B, H), m.dtype),
                     "weight_ih_l0": m.output((4 * H, I), m.dtype),
                     "weight_hh_l0": m.output((4 * H, H), m.dtype)}
            if m.bias != NULL:
                grads["bias_ih_l0"] = m.empty(4 * H, m.dtype)
                grads["bias_hh_l0"] = m.empty(4 * H, m.dtype)
            results = list(grads.values())
            for r in range(len(results)):
                PyObject_GetBuffer(results[r], &out[r], PyBUF_WRITABLE)
            team = plan_team(B, H, 0, NR, z, nt, &by_batch)  # as lstm_backward will plan it
            # dh, dc, dgates, db, then dx and the weight gradients unless they go straight into
            # the results, then the kernel's own scratch
            scratch = <char *>malloc(
                (2 * B * Hp + R * G4 + G4 + (0 if direct_dx else R * Ip) +
                 (0 if direct_w else G4 * (Ip + Hp)) +
                 team * BIG_BLOCK * FL_KC + FL_KC * (Ip + Hp)) * z)
            if scratch == NULL:
                for r in range(len(results)):
                    PyBuffer_Release(&out[r])
                raise MemoryError()
            dh = scratch
            dc = dh + B * Hp * z
            dgates = dc + B * Hp * z
            db = dgates + R * G4 * z
            p = db + G4 * z
            dx = <char *>out[0].buf
            if not direct_dx:
                dx, p = p, p + R * Ip * z
            dw_ih, dw_hh = <char *>out[3].buf, <char *>out[4].buf
            if not direct_w:
                dw_ih, dw_hh, p = p, p + G4 * Ip * z, p + G4 * (Ip + Hp) * z
            self.buffers(tape)
            with nogil:
                memset(dh, 0, 2 * B * Hp * z)  # dh and dc: zero-padded gradients of h_n, c_n
                if have_dh:
                    copy_rows(dh, Hp * z, <char *>dhb.buf, H * z, B, H * z)
                if have_dc:
                    copy_rows(dc, Hp * z, <char *>dcb.buf, H * z, B, H * z)
                if m.wide:
                    ran = lstm_backward[double](
                        T, B, I, H, <const double *>tape[1], <const double *>tape[3],
                        <const double *>tape[4], <const double *>tape[2],
                        <const double *>tape[0], <const double *>m.w_ih_t,
                        <const double *>m.w_hh_t, <const double *>(dyb.buf if have_dy else NULL),
                        (H if batch_first else B * H), (T * H if batch_first else H),
                        <double *>dh, <double *>dc, <double *>dgates, T, <double *>dx,
                        <double *>dw_ih, <double *>dw_hh,
                        <double *>(db if m.bias != NULL else NULL), <double *>p,
                        0, NULL, NULL, NULL, NULL, NULL, nt)
                else:
                    ran = lstm_backward[float](
                        T, B, I, H, <const float *>tape[1], <const float *>tape[3],
                        <const float *>tape[4], <const float *>tape[2],
                        <const float *>tape[0], <const float *>m.w_ih_t,
                        <const float *>m.w_hh_t, <const float *>(dyb.buf if have_dy else NULL),
                        (H if batch_first else B * H), (T * H if batch_first else H),
                        <float *>dh, <float *>dc, <float *>dgates, T, <float *>dx,
                        <float *>dw_ih, <float *>dw_hh,
                        <float *>(db if m.bias != NULL else NULL), <float *>p,
                        0, NULL, NULL, NULL, NULL, NULL, nt)
                if not direct_dx:  # time-major rows of Ip values -> the user's layout
                    for r in range(R):
                        memcpy(<char *>out[0].buf + ((r % B) * T + r // B if batch_first
                                                     else r) * I * z, dx + r * Ip * z, I * z)
                if not direct_w:  # (4, Hp, Ip) and (4, Hp, Hp) -> (4H, I) and (4H, H)
                    for g in range(4):
                        copy_rows(<char *>out[3].buf + g * H * I * z, I * z,
                                  dw_ih + g * Hp * Ip * z, Ip * z, H, I * z)
                        copy_rows(<char *>out[4].buf + g * H * H * z, H * z,
                                  dw_hh + g * Hp * Hp * z, Hp * z, H, H * z)
                if m.bias != NULL:  # interleaved gate order -> PyTorch's, twice
                    for r in range(4 * H):
                        memcpy(<char *>out[5].buf + r * z, db + m.to_torch[r] * z, z)
                    memcpy(out[6].buf, out[5].buf, 4 * H * z)
                copy_rows(<char *>out[1].buf, H * z, dh, Hp * z, B, H * z)
                copy_rows(<char *>out[2].buf, H * z, dc, Hp * z, B, H * z)
            free(scratch)
            for r in range(len(results)):
                PyBuffer_Release(&out[r])
        finally:
            if have_dc:
                PyBuffer_Release(&dcb)
            if have_dh:
                PyBuffer_Release(&dhb)
            if have_dy:
                PyBuffer_Release(&dyb)
        m.record.num_threads = ran
        return grads


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


# ------------------------------------------------------------------------------------------------
# Build and CPU facts

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
