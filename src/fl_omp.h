/* fl_omp.h: the only place that touches OpenMP, so the library still builds (serially) without it. */
#ifndef FL_OMP_H
#define FL_OMP_H
/* Measured cost of waking a team that slept, by idle time (see fl_team_size); 0: not measured. */
#define FL_IDLE_BUCKETS 8
static long long fl_wake_ns[FL_IDLE_BUCKETS];
static int fl_cold_teams = 1; /* 0: a sleeping team starts whatever it costs (tests) */
/* The CPUs that the calls running at once share (set by _kernels.cpu_limit; 0: no limit), and
 * the threads those calls run now (see fl_take_cpus; GCC and Clang builds). */
static int fl_cpus;
static int fl_busy_threads;
static long long fl_crowded_until_ns; /* when the CPUs stop counting as crowded (fl_barrier) */
static int fl_crowded_policy = 1;     /* 0: crowded CPUs do not shrink teams (tests) */
/* fork(): GNU libgomp's thread pool does not survive it, and a child's first team of 2+
 * threads waits forever for workers that exist only in the parent. So a child forked after a
 * team ran (multiprocessing's default start method on Linux) runs every call on one thread,
 * which needs no pool (resolve_threads). */
static int fl_teams_started; /* a team of 2+ threads ran in this process */
static int fl_pool_lost;     /* this process was forked from one where a team had run */
#if defined(_OPENMP) && defined(__GNUC__)
#define FL_HAVE_COLD_TEAMS 1 /* and the sharing of fl_cpus between calls (fl_team_size) */
#else /* (MSVC: no such policies; without OpenMP: no teams) */
#define FL_HAVE_COLD_TEAMS 0
#endif
#ifdef _OPENMP
#include <omp.h>
#define FL_OPENMP 1
/* The barrier of one call's team: every thread of the region gets a pointer to the same state,
 * set up by fl_barrier_init before the region. libgomp's own barrier costs ~600 ns between two
 * cores of the AVX2 VM (it makes a futex system call on every release), this one ~250 ns when
 * the waiters spin: a batch-1 step of the unit split meets once, so a 100-step forward ran 14%
 * faster at 2 threads. A waiter spins a while, then sleeps in the kernel until the last thread
 * arrives and wakes it (Linux futex; elsewhere it yields its core in a loop): when other work
 * holds the cores, the thread it waits for may need its core, and a sleeper woken is scheduled
 * again at once, where one that only yielded waits for the other work's time slice (3x slower
 * on a) with a busy loop on one of 2 cores). Each barrier orders memory: what any thread wrote
 * before it is visible to every thread after it. */
#if defined(__GNUC__)
#define FL_CACHE_LINE __attribute__((aligned(64)))
#else
#define FL_CACHE_LINE
#endif
typedef struct {
    int arrived;             /* threads at the current barrier */
    unsigned int generation; /* barriers completed (wraps around); the futex word */
    int sleepers;            /* threads asleep (or about to be) on generation */
    int spins;               /* pauses before a waiter sleeps */
    int spins_crowded;       /* the same while calls hold more threads than there are CPUs */
    int yield_every;         /* pauses between two yields of the core while spinning */
    int team;                /* threads fl_team_size chose */
    int busy;                /* threads this call counts in fl_busy_threads */
    int cold;                /* idle-time bucket of a sleeping team that starts, or -1 */
    long long entry_ns;      /* when the caller chose the team size; 0: a plan of one thread */
    long long late_ns;       /* the latest start of a thread of the team after entry_ns */
    long long next_item;     /* the next work item to take (fl_next_item) */
} FL_CACHE_LINE fl_barrier_state; /* a cache line of its own: threads spin on it */

#if defined(__GNUC__) /* GCC and Clang: their atomic builtins */
#include <sched.h>
#if defined(__x86_64__) || defined(__i386__)
#define FL_SPIN_PAUSE() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define FL_SPIN_PAUSE() __asm__ __volatile__("yield")
#else /* no pause instruction: an empty statement the compiler may not remove */
#define FL_SPIN_PAUSE() __asm__ __volatile__("" ::: "memory")
#endif

#if defined(__linux__)
#include <limits.h>
#include <stddef.h>
#include <sys/syscall.h>
/* The futex interface, without <linux/futex.h> (kernel headers are not always installed) nor
 * the feature macros glibc wants before it declares syscall(). */
long syscall(long number, ...);
#define FL_FUTEX_WAIT_PRIVATE 128 /* FUTEX_WAIT | FUTEX_PRIVATE_FLAG */
#define FL_FUTEX_WAKE_PRIVATE 129 /* FUTEX_WAKE | FUTEX_PRIVATE_FLAG */
#if !defined(SYS_futex) && defined(SYS_futex_time64) /* 32-bit targets with 64-bit time only */
#define SYS_futex SYS_futex_time64 /* (same call when there is no timeout) */
#endif
/* Sleeps while *word == expected (returns at once if it no longer is, or on a spurious wake). */
static inline void fl_sleep_while(unsigned int *word, unsigned int expected)
{
    syscall(SYS_futex, word, FL_FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}
static inline void fl_wake_all(unsigned int *word)
{
    syscall(SYS_futex, word, FL_FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}
#include <sys/resource.h>
#ifndef RUSAGE_THREAD
#define RUSAGE_THREAD 1 /* (glibc declares it only with _GNU_SOURCE) */
#endif
/* The calling thread's involuntary context switches: a yield that let another thread of this
 * machine run counts one (a host taking the vCPU away does not). */
static inline long fl_switches(void)
{
    struct rusage r;
    return getrusage(RUSAGE_THREAD, &r) == 0 ? r.ru_nivcsw : 0;
}
#else
static inline void fl_sleep_while(unsigned int *word, unsigned int expected)
{
    (void)word;
    (void)expected;
    sched_yield();
}
static inline void fl_wake_all(unsigned int *word) { (void)word; }
static inline long fl_switches(void) { return 0; } /* (no crowding seen off Linux) */
#endif

/* How long a waiter spins before it sleeps: 2 ms, far longer than the threads of a balanced step
 * wait for each other, about what a sleep and wake-up costs on a VM: waking a halted vCPU took
 * 0.1-5 ms on the 2-vCPU VM, and with a 50 us spin a thread that fell behind once (a host
 * preemption) put the other to sleep, which then woke late itself, step after step: b) at 2
 * threads after 150 ms idle took 26 ms (2 ms spin: 12 ms; 1 thread: 16 ms), c) 24 (19) ms. With
 * a busy loop on one of the 2 cores the long spin measured no slower (a, c, f). With more
 * threads than processors only ~2 us: the thread waited for may be the one whose core the
 * waiter holds (4 threads on 2 cores ran 4x slower than with libgomp's barrier with a long
 * spin). A pause lasts ~25 ns on Zen 3, ~45 on Skylake, ~3 on older Intel cores and ~1 on arm64,
 * so the count comes from timing the pauses of this CPU once per process. */
#define FL_SPIN_NS 2000000
#define FL_SPIN_NS_OVERSUBSCRIBED 2000
/* A spinning waiter offers its core every 20 us: the thread it waits for may be queued on that
 * core behind it, when other processes run teams too (two processes each calling with 2 threads
 * on 2 cores: 207 ms per batch-1 forward, against 0.7 ms for one thread each). With nothing
 * else to run the yield returns at once. When another thread ran, the CPUs are crowded: the
 * call's waiters sleep soon, and the process's calls run on one thread for FL_CROWDED_NS
 * (fl_team_size), where a team would only wait for threads that have no core. */
#define FL_YIELD_NS 20000
#define FL_CROWDED_NS 100000000LL
static int fl_pauses_per_ms; /* 0 until measured; a race only measures twice */
static unsigned int fl_spin_probe; /* read by the timed loop, as a waiter reads the generation */

/* Seconds from OpenMP's clock (monotonic; no <time.h> clock that every platform has). */
static inline double fl_seconds(void) { return omp_get_wtime(); }

static inline int fl_spins_for(long ns)
{
    int rate = __atomic_load_n(&fl_pauses_per_ms, __ATOMIC_RELAXED);
    if (rate == 0) {
        double best = 1e9; /* the faster of three: a run the scheduler interrupted reads slow */
        for (int run = 0; run < 3; run++) {
            double t = fl_seconds();
            for (int i = 0; i < 256; i++) { /* a waiter's loop: a load, then a pause */
                if (__atomic_load_n(&fl_spin_probe, __ATOMIC_ACQUIRE) != 0)
                    break;
                FL_SPIN_PAUSE();
            }
            t = fl_seconds() - t;
            best = t < best ? t : best;
        }
        double per_ms = best > 0 ? 256 / (best * 1e3) : 1e8; /* 256 pauses per `best` seconds */
        rate = per_ms < 1 ? 1 : per_ms > 1e8 ? 100000000 : (int)per_ms;
        __atomic_store_n(&fl_pauses_per_ms, rate, __ATOMIC_RELAXED);
    }
    double spins = (double)rate * (double)ns * 1e-6;
    return spins < 1 ? 1 : spins > 1e9 ? 1000000000 : (int)spins;
}

static inline void fl_barrier_init(fl_barrier_state *b, int team)
{
    b->arrived = 0;
    b->generation = 0;
    b->sleepers = 0;
    b->next_item = 0;
    if (team <= 1) { /* no waiter: nothing to ask the OS (omp_get_num_procs is a system call) */
        b->spins_crowded = b->yield_every = b->spins = 0;
        return;
    }
    b->spins_crowded = fl_spins_for(FL_SPIN_NS_OVERSUBSCRIBED);
    b->yield_every = fl_spins_for(FL_YIELD_NS);
    b->spins = team > (fl_cpus > 0 ? fl_cpus : omp_get_num_procs()) ? b->spins_crowded
                                                                    : fl_spins_for(FL_SPIN_NS);
}

/* Work items a team takes in order, each thread the next one free, so a thread that starts late
 * (waking) finds the others into its share instead of making them wait for it. Item numbers
 * restart at 0 after fl_reset_items, which one thread calls between two barriers. */
static inline long long fl_next_item(fl_barrier_state *b)
{
    return __atomic_fetch_add(&b->next_item, 1, __ATOMIC_RELAXED);
}
static inline void fl_reset_items(fl_barrier_state *b) { b->next_item = 0; }

/* Cold teams. Starting a team whose threads went to sleep costs their wake-up: microseconds on
 * an idle core of a bare machine, but 0.1-5 ms on the 2-vCPU VM, whose host must schedule a
 * halted vCPU again (a helper started 1.8 ms after the region's entry after 150 ms idle, 6 us
 * after 8 ms, while libgomp's workers still spin). A one-step call (f: 0.04 ms) took 6 ms there
 * on 2 threads after idling. So when the calling thread's last team ended over FL_WARM_NS ago,
 * the call runs on one thread until the work of the burst it belongs to (calls each starting
 * within FL_WARM_NS of the previous one's end) reaches twice the wake-up that starts after a
 * like idle time were measured to cost: a sporadic small call never wakes the team, a stream of
 * them wakes it once, having spent at most about what waking it cost (the ski-rental rule).
 * With no measurement yet the team starts, and measures. Idle times are bucketed by powers of 2
 * ms; each bucket keeps a running estimate. */
#define FL_WARM_NS 1000000LL
static __thread long long fl_team_last_end_ns; /* this thread's last team's end; 0: none yet */
static __thread long long fl_call_last_end_ns; /* this thread's last call's end */
static __thread double fl_burst_work_ns;       /* one thread's work of the calls of this burst */

static inline long long fl_now_ns(void) { return (long long)(fl_seconds() * 1e9); }

/* Calls running at once share the CPUs. Two Python threads each calling with 2 threads on 2
 * CPUs ran 4 threads on 2 cores, and every step's barrier waited for a thread that had no core:
 * a batch-1 forward took 160 ms instead of 0.5. So each call counts the threads it runs in
 * fl_busy_threads for its duration and takes at most the CPUs left (at least 1); while calls
 * hold more threads than CPUs anyway (one came when none was left), waiters spin only briefly. */
static inline int fl_take_cpus(int want)
{
    int busy = __atomic_load_n(&fl_busy_threads, __ATOMIC_RELAXED), got;
    do {
        int left = fl_cpus - busy;
        got = fl_cpus <= 0 || want <= left ? want : left > 1 ? left : 1;
    } while (!__atomic_compare_exchange_n(&fl_busy_threads, &busy, busy + got, 1,
                                          __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    return got;
}

static inline int fl_oversubscribed(void)
{
    return fl_cpus > 0 && __atomic_load_n(&fl_busy_threads, __ATOMIC_RELAXED) > fl_cpus;
}

/* The threads to start of the `planned` a call's work plan asks for, for work_ns of one
 * thread's work: `planned`, or 1 while the team sleeps and the burst's work does not pay for its
 * wake-up or while the CPUs are crowded (fl_barrier), and no more than the CPUs other calls
 * leave. Sets b's clock for fl_team_started and fl_team_ended (before fl_barrier_init); every
 * call of it needs its fl_team_ended. */
static inline int fl_team_size(fl_barrier_state *b, int planned, double work_ns)
{
    b->team = planned;
    b->cold = -1;
    b->late_ns = 0;
    b->entry_ns = 0; /* (a plan of one thread: nothing to note at the end either) */
    if (planned > 1) {
        long long now = fl_now_ns(), idle = now - fl_team_last_end_ns;
        b->entry_ns = now;
        fl_burst_work_ns =
            (now - fl_call_last_end_ns < FL_WARM_NS ? fl_burst_work_ns : 0) + work_ns;
        if (fl_crowded_policy && now < __atomic_load_n(&fl_crowded_until_ns, __ATOMIC_RELAXED))
            b->team = 1;
        /* cold: not warm, and not this thread's first team (its start creates the threads) */
        else if (fl_team_last_end_ns != 0 && idle >= FL_WARM_NS) {
            int k = 0; /* [1, 2) ms: 0, [2, 4): 1, ..., 128 ms and more: 7 */
            for (long long ms = idle / 1000000; ms > 1 && k < FL_IDLE_BUCKETS - 1; ms >>= 1)
                k++;
            long long wake = __atomic_load_n(&fl_wake_ns[k], __ATOMIC_RELAXED);
            if (fl_cold_teams && wake > 0 && fl_burst_work_ns < 2.0 * (double)wake)
                b->team = 1;
            else
                b->cold = k;
        }
    }
    b->busy = b->team = fl_take_cpus(b->team);
    if (b->team > 1)
        __atomic_store_n(&fl_teams_started, 1, __ATOMIC_RELAXED);
    return b->team;
}

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
static void fl_after_fork_child(void)
{
    fl_busy_threads = 0; /* the calls running in the parent's other threads are not here */
    fl_pool_lost = fl_teams_started;
}
/* Once, at import: pthread_atfork's status (0). */
static inline int fl_watch_fork(void) { return pthread_atfork(NULL, NULL, fl_after_fork_child); }
#else
static inline int fl_watch_fork(void) { return 0; }
#endif

/* Seconds the CPUs still count as crowded, after setting that to `set` when it is >= 0 (tests
 * stand in for a crowded machine). */
static inline double fl_crowded_seconds(double set)
{
    long long now = fl_now_ns();
    if (set >= 0)
        __atomic_store_n(&fl_crowded_until_ns, now + (long long)(set * 1e9), __ATOMIC_RELAXED);
    long long left = __atomic_load_n(&fl_crowded_until_ns, __ATOMIC_RELAXED) - now;
    return left > 0 ? left * 1e-9 : 0.0;
}

/* Each thread of a team as it starts: the latest start after the entry is the wake-up's cost. */
static inline void fl_team_started(fl_barrier_state *b, int tid)
{
    if (tid == 0 || b->cold < 0)
        return;
    long long late = fl_now_ns() - b->entry_ns;
    long long seen = __atomic_load_n(&b->late_ns, __ATOMIC_RELAXED);
    while (late > seen && !__atomic_compare_exchange_n(&b->late_ns, &seen, late, 1,
                                                        __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
}

/* The caller, once the call's work is done, on a team or not: a cold start's cost joins its
 * bucket (1/4 weight), and the clocks of the burst and the team move on. */
static inline void fl_team_ended(fl_barrier_state *b)
{
    __atomic_sub_fetch(&fl_busy_threads, b->busy, __ATOMIC_RELAXED);
    if (b->entry_ns == 0)
        return;
    long long now = fl_now_ns();
    if (b->cold >= 0 && b->late_ns > 0) {
        long long old = __atomic_load_n(&fl_wake_ns[b->cold], __ATOMIC_RELAXED);
        long long late = old && b->late_ns > 4 * old ? 4 * old : b->late_ns; /* (one preempted
                                                       thread must not make the estimate stick) */
        __atomic_store_n(&fl_wake_ns[b->cold], old ? (3 * old + late) / 4 : late,
                         __ATOMIC_RELAXED);
    }
    if (b->team > 1)
        fl_team_last_end_ns = now;
    fl_call_last_end_ns = now;
}

/* Waits until all `team` threads of the region have arrived. team 1 returns at once: the
 * kernels then run with no region of their own (they may be inside a caller's, whose threads
 * are not theirs). Every thread of a team passes the same size and state. */
static inline void fl_barrier(fl_barrier_state *b, int team)
{
    if (team <= 1)
        return;
    unsigned int gen = __atomic_load_n(&b->generation, __ATOMIC_ACQUIRE);
    if (__atomic_add_fetch(&b->arrived, 1, __ATOMIC_ACQ_REL) == team) {
        /* the last to arrive resets the count before it releases the others, who cannot arrive
         * at the next barrier before they see the new generation */
        __atomic_store_n(&b->arrived, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&b->generation, gen + 1u, __ATOMIC_SEQ_CST);
        /* (sequentially consistent with a sleeper's count and check: either it sees the new
         * generation and does not sleep, or this sees it counted and wakes it) */
        if (__atomic_load_n(&b->sleepers, __ATOMIC_SEQ_CST) > 0)
            fl_wake_all(&b->generation);
        return;
    }
    int spins = fl_oversubscribed() ? b->spins_crowded : __atomic_load_n(&b->spins,
                                                                          __ATOMIC_RELAXED);
    for (int k = 0; spins > 0; spins--) {
        if (__atomic_load_n(&b->generation, __ATOMIC_ACQUIRE) != gen)
            return;
        FL_SPIN_PAUSE();
        if (++k == b->yield_every) {
            k = 0;
            long switches = fl_switches();
            sched_yield();
            if (fl_switches() != switches) { /* another thread had this core meanwhile */
                __atomic_store_n(&fl_crowded_until_ns, fl_now_ns() + FL_CROWDED_NS,
                                 __ATOMIC_RELAXED);
                __atomic_store_n(&b->spins, b->spins_crowded, __ATOMIC_RELAXED);
                break;
            }
        }
    }
    __atomic_add_fetch(&b->sleepers, 1, __ATOMIC_SEQ_CST);
    while (__atomic_load_n(&b->generation, __ATOMIC_SEQ_CST) == gen)
        fl_sleep_while(&b->generation, gen);
    __atomic_sub_fetch(&b->sleepers, 1, __ATOMIC_RELAXED);
}
#else /* other compilers: OpenMP's barrier, orphaned (it binds to the caller's region) */
static inline void fl_barrier_init(fl_barrier_state *b, int team)
{
    (void)team;
    b->arrived = 0;
    b->generation = 0;
    b->sleepers = 0;
    b->spins = 0;
    b->next_item = 0;
}
static inline long long fl_next_item(fl_barrier_state *b)
{
    long long v;
#pragma omp critical(fl_next_item) /* (MSVC's OpenMP 2.0 has no atomic capture) */
    v = b->next_item++;
    return v;
}
static inline void fl_reset_items(fl_barrier_state *b) { b->next_item = 0; }
static inline void fl_barrier(fl_barrier_state *b, int team)
{
    (void)b;
    if (team > 1) {
#pragma omp barrier
    }
}
#endif
#else
#define FL_OPENMP 0
static inline int omp_get_max_threads(void) { return 1; }
static inline int omp_get_num_threads(void) { return 1; }
static inline int omp_get_thread_num(void) { return 0; }
typedef struct { long long next_item; } fl_barrier_state;
static inline void fl_barrier_init(fl_barrier_state *b, int team) { (void)team; b->next_item = 0; }
static inline long long fl_next_item(fl_barrier_state *b) { return b->next_item++; }
static inline void fl_reset_items(fl_barrier_state *b) { b->next_item = 0; }
static inline void fl_barrier(fl_barrier_state *b, int team) { (void)b; (void)team; }
#endif
#if !FL_HAVE_COLD_TEAMS /* no policy on team sizes: every team starts as planned */
static inline double fl_crowded_seconds(double set)
{
    (void)set;
    return 0.0;
}
static inline int fl_team_size(fl_barrier_state *b, int planned, double work_ns)
{
    (void)b;
    (void)work_ns;
    return planned;
}
static inline int fl_watch_fork(void) { return 0; }
static inline void fl_team_started(fl_barrier_state *b, int tid) { (void)b; (void)tid; }
static inline void fl_team_ended(fl_barrier_state *b) { (void)b; }
#endif

/* Denormals flushed inside the kernels' threads only (they can make arithmetic many times
 * slower), and each thread's floating-point mode restored before it leaves the parallel region:
 * the user's process keeps subnormals everywhere. FTZ (bit 15) and DAZ (bit 6) of MXCSR. */
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
static inline unsigned int fl_flush_denormals(void)
{
    unsigned int old = _mm_getcsr();
    _mm_setcsr(old | 0x8040u);
    return old;
}
static inline void fl_restore_fpmode(unsigned int old) { _mm_setcsr(old); }
static inline unsigned int fl_fpmode_flags(void) { return _mm_getcsr() & 0x8040u; }
#else
static inline unsigned int fl_flush_denormals(void) { return 0; }
static inline void fl_restore_fpmode(unsigned int old) { (void)old; }
static inline unsigned int fl_fpmode_flags(void) { return 0; }
#endif
#endif
