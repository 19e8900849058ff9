/* tsan_barrier.c: fl_omp.h's team barrier, work counter and team-size accounting, and
 * fl_interrupt.h's stop agreement, under ThreadSanitizer (tests/test_sanitizers.py builds and
 * runs it). Exit status 0 when every check passed; at the first wrong value, a message and 1 (66
 * when TSan then reports the threads left running).
 *
 * Teams are plain pthreads, not OpenMP's: Debian's libgomp is not built with TSan, so TSan cannot
 * see its synchronization and reports races inside `#pragma omp parallel` that are not there. A
 * region here gives what libgomp's gives: thread 0 is the caller, the others start after it set
 * up the shared state (pthread_create) and it goes on once they all returned (pthread_join). In
 * between, only fl_omp.h orders their memory, as in the kernels.
 *
 * Compiled with -fopenmp all the same: fl_omp.h has its barrier only in OpenMP builds, and so the
 * header compiles exactly as in the extension, with libgomp's clock (omp_get_wtime) and CPU count
 * (omp_get_num_procs). No OpenMP region ever starts, so libgomp starts no thread and orders no
 * memory that TSan would need to see.
 *
 * Three phases:
 * 1. callers: 3 threads make calls at once, as several Python threads calling a model do, so
 *    fl_team_size, fl_take_cpus, fl_team_started and fl_team_ended run concurrently: first with
 *    every policy on and fl_cpus 2, as imported (the CPU shares are checked), then with none, as
 *    the tests run (3 teams at once on 2 CPUs).
 * 2. teams: one caller, no policy, teams of 2, 3, 4 and 8 on at most 2 CPUs (the process is
 *    pinned to 2, so every machine runs what the 2-core VM runs): the spinning barrier at 2 and
 *    the oversubscribed one (brief spin, then futex sleep and wake-up) above.
 * 3. crowded: the caller and its team pinned to one CPU with fl_cpus 2, so a waiter that offers
 *    its core sees the other thread take it and marks the CPUs crowded (fl_barrier).
 * Every call's threads exchange values through the barrier each round: each writes its own slot
 * (plainly) before it and reads every slot after it, so a missing happens-before edge is a TSan
 * report and a barrier that lets a thread through early is a wrong value. Some calls also take
 * work items (every item exactly once per round) and some stop at a random round (every thread
 * the same). */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fl_interrupt.h" /* (and fl_omp.h) */

#if !FL_OPENMP || !FL_HAVE_COLD_TEAMS
#error "compile with GCC or Clang and -fopenmp: fl_omp.h's own barrier exists only there"
#endif

#define MAX_TEAM 8
#define MAX_ITEMS 64

#define CHECK(cond, ...)                                                                        \
    do {                                                                                        \
        if (!(cond)) {                                                                          \
            fprintf(stderr, "tsan_barrier: check failed (%s:%d): ", __FILE__, __LINE__);        \
            fprintf(stderr, __VA_ARGS__);                                                       \
            fprintf(stderr, "\n");                                                              \
            _exit(1); /* (other threads may be waiting at a barrier that will never open) */    \
        }                                                                                       \
    } while (0)

/* One call: what the kernels keep on the caller's stack and share with the team. */
typedef struct {
    fl_barrier_state bar;
    fl_stop_state stop;
    long long id;    /* unique, so a value left from an earlier call never passes */
    int team;        /* threads that run it (fl_team_size's answer) */
    int rounds;      /* rounds of exchange */
    int items;       /* 1: each round also takes work items, then meets at a second barrier */
    int stop_at;     /* the round whose agreement stops the team; -1: none */
    int spins;       /* the barrier's spins as set up (a waiter lowers them when crowded) */
    long long buf[2][MAX_TEAM]; /* thread j's value of round r in slot r % 2 */
    int hits[MAX_ITEMS];        /* how often each work item of the round was taken */
    int stopped_at[MAX_TEAM];   /* the round where each thread left; rounds: none */
} call_t;

typedef struct {
    call_t *c;
    int tid;
} member_t;

static long long next_call_id = 1;
static int multi_threads; /* threads of the teams of 2+ running now (checked against fl_cpus) */

static unsigned int rnd(unsigned int *s)
{ /* (xorshift: each caller its own deterministic sequence) */
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

static long long value(const call_t *c, int r, int tid)
{
    return (c->id << 32) ^ ((long long)r << 8) ^ tid;
}

static int items_of(const call_t *c, int r)
{
    return (r * 7 + (int)c->id) % (MAX_ITEMS + 1); /* 0 to MAX_ITEMS: fewer than a team too */
}

/* A thread of the team: the kernels' pattern, with checks. */
static void member(call_t *c, int tid)
{
    int k = 0; /* this thread's agreements so far (fl_stop_agree) */
    fl_team_started(&c->bar, tid);
    for (int r = 0; r < c->rounds; r++) {
        int slot = r & 1, items = items_of(c, r);
        c->buf[slot][tid] = value(c, r, tid);
        if (tid == 0 && r == c->stop_at)
            fl_request_stop(&c->stop);
        if (c->items) { /* as input_projection: stop taking items once a stop is on its way */
            long long w;
            while ((w = fl_next_item(&c->bar)) < items && !fl_stop_requested(&c->stop))
                c->hits[w]++; /* (plain: an item taken twice is a race, and a count of 2) */
        }
        if (fl_stop_agree(&c->stop, &c->bar, tid, c->team, &k)) {
            CHECK(r == c->stop_at, "call %lld, thread %d: stopped at round %d, asked at %d",
                  c->id, tid, r, c->stop_at);
            c->stopped_at[tid] = r;
            return;
        }
        for (int j = 0; j < c->team; j++)
            CHECK(c->buf[slot][j] == value(c, r, j),
                  "call %lld (team %d), round %d: thread %d reads %llx from thread %d, not %llx",
                  c->id, c->team, r, tid, (unsigned long long)c->buf[slot][j], j,
                  (unsigned long long)value(c, r, j));
        if (c->items) {
            if (tid == r % c->team) { /* a different thread each round checks and resets */
                for (int i = 0; i < MAX_ITEMS; i++) {
                    CHECK(c->hits[i] == (i < items), "call %lld (team %d), round %d: item %d "
                          "of %d taken %d times", c->id, c->team, r, i, items, c->hits[i]);
                    c->hits[i] = 0;
                }
                fl_reset_items(&c->bar);
            }
            fl_barrier(&c->bar, c->team); /* the reset before anyone takes the next items */
        }
    }
    c->stopped_at[tid] = c->rounds;
}

static void *member_thread(void *arg)
{
    member_t *m = arg;
    member(m->c, m->tid);
    return NULL;
}

/* A call as the kernels make one (lstm_forward): the team size, the barrier, a region, the end. */
static void run_call(call_t *c, int planned, double work_ns, int rounds, int items, int stop_at)
{
    pthread_t threads[MAX_TEAM];
    member_t members[MAX_TEAM];
    memset(c, 0, sizeof *c);
    c->id = __atomic_fetch_add(&next_call_id, 1, __ATOMIC_RELAXED);
    c->rounds = rounds;
    c->items = items;
    c->stop_at = stop_at;
    int team = fl_team_size(&c->bar, planned, work_ns);
    CHECK(team >= 1 && team <= planned, "fl_team_size gave %d threads of %d", team, planned);
    if (team > 1) { /* teams of 2+ never hold more than the CPUs (fl_take_cpus) */
        int held = __atomic_add_fetch(&multi_threads, team, __ATOMIC_SEQ_CST);
        CHECK(fl_cpus <= 0 || held <= fl_cpus, "teams of 2+ hold %d threads of %d CPUs", held,
              fl_cpus);
    }
    fl_barrier_init(&c->bar, team);
    c->spins = c->bar.spins;
    fl_stop_init(&c->stop, 1);
    c->team = team;
    for (int t = 1; t < team; t++) {
        members[t].c = c;
        members[t].tid = t;
        CHECK(pthread_create(&threads[t], NULL, member_thread, &members[t]) == 0,
              "pthread_create");
    }
    member(c, 0);
    for (int t = 1; t < team; t++)
        pthread_join(threads[t], NULL);
    int expect = stop_at >= 0 && stop_at < rounds ? stop_at : rounds;
    for (int t = 0; t < team; t++)
        CHECK(c->stopped_at[t] == expect, "call %lld (team %d): thread %d left at round %d, not %d",
              c->id, team, t, c->stopped_at[t], expect);
    if (team > 1)
        __atomic_sub_fetch(&multi_threads, team, __ATOMIC_SEQ_CST);
    fl_team_ended(&c->bar);
}

static int busy_now(void) { return __atomic_load_n(&fl_busy_threads, __ATOMIC_RELAXED); }

static long long crowded_marks; /* calls during which a waiter marked the CPUs crowded */

static void note_crowding(const call_t *c)
{
    if (c->bar.spins != c->spins)
        __atomic_add_fetch(&crowded_marks, 1, __ATOMIC_RELAXED);
}

/* Phase 1: callers at once. */
#define CALLERS 3
typedef struct {
    unsigned int seed;
    int calls, shrunk, teams;
} caller_t;

static void *caller_thread(void *arg)
{
    caller_t *me = arg;
    call_t c;
    for (int i = 0; i < me->calls; i++) {
        int planned = 2 + rnd(&me->seed) % 3;
        double work_ns = 1e3 * (double)(1 + rnd(&me->seed) % 10000); /* 1 us to 10 ms */
        int rounds = 10 + rnd(&me->seed) % 60, items = rnd(&me->seed) & 1;
        int stop_at = rnd(&me->seed) % 3 == 0 ? (int)(rnd(&me->seed) % rounds) : -1;
        if (rnd(&me->seed) % 4 == 0) /* a mark lasts 100 ms, longer than this phase: end it */
            fl_crowded_seconds(0);
        run_call(&c, planned, work_ns, rounds, items, stop_at);
        note_crowding(&c);
        me->shrunk += c.team < planned;
        me->teams += c.team > 1;
        if (rnd(&me->seed) % 8 == 0) { /* an idle moment: the next team starts cold */
            struct timespec idle = {0, 1000000L * (1 + rnd(&me->seed) % 3)};
            nanosleep(&idle, NULL);
        }
    }
    return NULL;
}

static void run_callers(const char *name, unsigned int seed)
{
    caller_t callers[CALLERS];
    pthread_t threads[CALLERS];
    long long marks = crowded_marks;
    for (int i = 0; i < CALLERS; i++) {
        callers[i] = (caller_t){.seed = seed * (unsigned int)(i + 1), .calls = 150};
        CHECK(pthread_create(&threads[i], NULL, caller_thread, &callers[i]) == 0,
              "pthread_create");
    }
    int calls = 0, shrunk = 0, teams = 0, measured = 0;
    for (int i = 0; i < CALLERS; i++) {
        pthread_join(threads[i], NULL);
        calls += callers[i].calls;
        shrunk += callers[i].shrunk;
        teams += callers[i].teams;
    }
    CHECK(busy_now() == 0, "fl_busy_threads is %d after every call ended", busy_now());
    for (int k = 0; k < FL_IDLE_BUCKETS; k++)
        measured += fl_wake_ns[k] > 0;
    printf("%s: %d calls, %d on 2+ threads, %d on fewer than planned, %lld crowded marks, "
           "%d wake-up buckets measured\n", name, calls, teams, shrunk, crowded_marks - marks,
           measured);
}

static void pin(const cpu_set_t *set)
{
    CHECK(pthread_setaffinity_np(pthread_self(), sizeof *set, set) == 0, "setaffinity");
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    /* At most 2 CPUs, as on the 2-core VM: teams of 3 and more are then oversubscribed on any
     * machine, and the threads created from here on inherit it. */
    cpu_set_t all, two, one;
    CHECK(pthread_getaffinity_np(pthread_self(), sizeof all, &all) == 0, "getaffinity");
    CPU_ZERO(&two);
    CPU_ZERO(&one);
    for (int cpu = 0, n = 0; cpu < CPU_SETSIZE && n < 2; cpu++)
        if (CPU_ISSET(cpu, &all)) {
            CPU_SET(cpu, &two);
            if (n++ == 0)
                CPU_SET(cpu, &one);
        }
    pin(&two);
    int procs = omp_get_num_procs();
    CHECK(procs >= 1 && procs <= 2, "omp_get_num_procs() is %d after pinning to 2 CPUs", procs);

    /* 1. callers: as imported (2 CPUs shared, every policy on; the first calls also race to
     * measure the pause rate, fl_spins_for), then as tests/conftest.py sets it (no limit, no
     * policy: 3 teams at once on 2 CPUs). */
    fl_cpus = 2;
    fl_cold_teams = 1;
    fl_crowded_policy = 1;
    run_callers("callers sharing 2 CPUs", 0x9e3779b9u);
    fl_cpus = 0;
    fl_cold_teams = 0;
    fl_crowded_policy = 0;
    run_callers("callers, no limit", 0x85ebca6bu);

    /* 2. teams: one caller, still with no limit and no policy, so teams are as planned. */
    static const int teams[] = {2, 3, 4, 8};
    unsigned int seed = 12345;
    call_t c;
    for (int t = 0; t < 4; t++) {
        int barriers = 0;
        for (int i = 0; i < 40; i++) {
            int items = i & 1, rounds = 200;
            int stop_at = i % 4 == 1 ? (int)(rnd(&seed) % rounds) : -1;
            run_call(&c, teams[t], 1e9, rounds, items, stop_at);
            CHECK(c.team == teams[t], "team of %d, not %d", c.team, teams[t]);
            int left = c.stopped_at[0], met = left == rounds ? rounds * (1 + items)
                                                            : left * (1 + items) + 1;
            CHECK(c.bar.generation == (unsigned int)met, "call %lld: %u barriers, not %d",
                  c.id, c.bar.generation, met);
            barriers += (int)c.bar.generation;
        }
        printf("teams of %d on %d CPUs: %d barriers (%s)\n", teams[t], procs, barriers,
               teams[t] > procs ? "oversubscribed: brief spin, then sleep" : "spinning");
    }
    CHECK(busy_now() == 0, "fl_busy_threads is %d after every call ended", busy_now());

    /* 3. crowded: a team of 2 (2 CPUs by fl_cpus: the long spin with yields) on one CPU. */
    fl_cpus = 2;
    fl_crowded_policy = 1;
    pin(&one);
    long long before = crowded_marks;
    int tries = 0;
    while (crowded_marks == before && tries < 50) {
        fl_crowded_seconds(0); /* not crowded yet, so the call gets its team */
        run_call(&c, 2, 1e9, 50, 1, -1);
        CHECK(c.team == 2, "a team of %d, not 2, on CPUs not crowded", c.team);
        note_crowding(&c);
        tries++;
    }
    CHECK(crowded_marks > before, "no waiter saw its core taken in %d calls on one CPU", tries);
    int single = 0; /* calls just after: on one thread while the mark lasts (not checked: time) */
    for (int i = 0; i < 20; i++) {
        run_call(&c, 2, 1e9, 50, i & 1, -1);
        single += c.team == 1;
    }
    pin(&two);
    CHECK(busy_now() == 0, "fl_busy_threads is %d after every call ended", busy_now());
    printf("crowded: marked after %d call(s) on one CPU; then %d of 20 calls on one thread\n",
           tries, single);
    printf("ok\n");
    return 0;
}
