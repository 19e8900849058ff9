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
