/* fl_interrupt.h: Ctrl-C (SIGINT) during a long call, and how a team agrees to stop.
 *
 * A long call from Python's main thread watches SIGINT while it runs: fl_watch_sigint puts a
 * handler in front of the one installed (Python's), which notes the signal and then calls it, so
 * Python sees the signal as it always does. The kernels' thread 0 (the caller) polls the note at
 * points of its work; when it is set, it takes the GIL and lets Python run its handler
 * (src/interrupt.pxi, stopping). If that raises (KeyboardInterrupt), the team stops at its next
 * agreement and the call raises; if the handler returns, the work goes on.
 *
 * A team agrees to stop at a barrier: thread 0 writes its answer before it arrives and every
 * thread reads it after, from a slot of its own per agreement (k % 2), since thread 0 may write
 * the next answer before the slowest thread has read this one. In between, other threads may
 * read `requested` to skip work items early: it only ever goes from 0 to 1, and thread 0 sets
 * it before the agreement that stops the team. */
#ifndef FL_INTERRUPT_H
#define FL_INTERRUPT_H
#include "fl_omp.h"

typedef struct {
    int watch;     /* 1: thread 0 polls for SIGINT (a long call from the main thread) */
    int requested; /* 1: Python's handler raised; the team stops at its next agreement */
    int agreed[2]; /* `requested` as thread 0 saw it before agreement k (slot k % 2) */
} fl_stop_state;

static inline void fl_stop_init(fl_stop_state *s, int watch)
{
    s->watch = watch;
    s->requested = 0;
    s->agreed[0] = s->agreed[1] = 0;
}

#if defined(__GNUC__)
static inline int fl_stop_requested(fl_stop_state *s)
{
    return __atomic_load_n(&s->requested, __ATOMIC_RELAXED);
}
static inline void fl_request_stop(fl_stop_state *s)
{
    __atomic_store_n(&s->requested, 1, __ATOMIC_RELAXED);
}
#else
static inline int fl_stop_requested(fl_stop_state *s) { return *(volatile int *)&s->requested; }
static inline void fl_request_stop(fl_stop_state *s) { *(volatile int *)&s->requested = 1; }
#endif

/* A barrier of the whole team where it may decide to stop; every thread of the team calls it at
 * the same points with its own counter *k (starting at 0). Returns 1 for all of them, or 0. */
static inline int fl_stop_agree(fl_stop_state *s, fl_barrier_state *bar, int tid, int team,
                                int *k)
{
    int slot = *k & 1;
    if (tid == 0)
        s->agreed[slot] = fl_stop_requested(s);
    fl_barrier(bar, team);
    *k += 1;
    return s->agreed[slot];
}

#if defined(__unix__) || defined(__APPLE__)
#include <signal.h>
static volatile sig_atomic_t fl_sigint_seen;
static struct sigaction fl_sigint_next; /* the handler ours calls (Python's) */

static void fl_on_sigint(int sig, siginfo_t *info, void *context)
{
    fl_sigint_seen = 1;
    if (fl_sigint_next.sa_flags & SA_SIGINFO)
        fl_sigint_next.sa_sigaction(sig, info, context);
    else if (fl_sigint_next.sa_handler != SIG_DFL && fl_sigint_next.sa_handler != SIG_IGN)
        fl_sigint_next.sa_handler(sig);
}

static inline int fl_is_ours(const struct sigaction *a)
{
    return (a->sa_flags & SA_SIGINFO) && a->sa_sigaction == fl_on_sigint;
}

/* Before a long call, with the GIL (only the main thread calls it, so never two at once): 1 if
 * SIGINT is now watched (call fl_unwatch_sigint after), 0 if there is nothing to watch: the
 * default action ends the process anyway, an ignored signal stops nothing, and a call that
 * Python's handler made while we watch is watched already. */
static inline int fl_watch_sigint(void)
{
    struct sigaction now, ours;
    if (sigaction(SIGINT, NULL, &now) != 0 || fl_is_ours(&now))
        return 0;
    if (!(now.sa_flags & SA_SIGINFO) && (now.sa_handler == SIG_DFL || now.sa_handler == SIG_IGN))
        return 0;
    fl_sigint_next = now;
    fl_sigint_seen = 0;
    ours = now;
    ours.sa_sigaction = fl_on_sigint;
    ours.sa_flags = now.sa_flags | SA_SIGINFO;
    return sigaction(SIGINT, &ours, NULL) == 0;
}

/* After it: the handler we found goes back, unless a handler set meanwhile (by Python code that
 * ran at a poll: signal.signal) replaced ours, which then stays. */
static inline void fl_unwatch_sigint(void)
{
    struct sigaction now;
    if (sigaction(SIGINT, NULL, &now) == 0 && fl_is_ours(&now))
        sigaction(SIGINT, &fl_sigint_next, NULL);
}

/* Whether SIGINT came since the last call of this (thread 0's poll). */
static inline int fl_take_sigint(void)
{
    if (!fl_sigint_seen)
        return 0;
    fl_sigint_seen = 0;
    return 1;
}
#else /* no sigaction (Windows): long calls cannot be interrupted */
static inline int fl_watch_sigint(void) { return 0; }
static inline void fl_unwatch_sigint(void) {}
static inline int fl_take_sigint(void) { return 0; }
#endif
#endif
