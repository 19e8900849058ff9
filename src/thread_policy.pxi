# Thread policy: how many threads a call starts and how they share it (the CPUs this process
# may use, calls running at once, batch or unit split, cold teams), and the functions that
# read and set that process-wide policy.

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
