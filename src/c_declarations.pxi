# The C side of fastlstm._kernels, declared for Cython: the kernel table of each instruction set
# (fl_kernels.h), the thread team and the process-wide state it keeps (fl_omp.h), the Ctrl-C
# watch (fl_interrupt.h). The C units are linked into this one module, so that state has one
# copy per process.

cdef extern from "fl_kernels.h" nogil:
    ctypedef Py_ssize_t fl_idx
    ctypedef struct fl_ops_f32:
        void (*gemm)(fl_idx, fl_idx, fl_idx, const float *, fl_idx, fl_idx, const float *,
                     fl_idx, fl_idx, fl_idx, float *, fl_idx, int, const float *) noexcept nogil
        void (*gates_fwd)(fl_idx, float *, const float *, float *, float *, float *) noexcept nogil
        void (*gates_bwd)(fl_idx, const float *, const float *, const float *, const float *,
                          float *, float *) noexcept nogil
        void (*colsum)(fl_idx, fl_idx, const float *, fl_idx, float *, int) noexcept nogil
        void (*repack_tile)(fl_idx, const float *const *, float *, float *) noexcept nogil
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
        void (*repack_tile)(fl_idx, const double *const *, double *, double *) noexcept nogil
        double (*probe_fma)(fl_idx) noexcept nogil
        double (*probe_read)(const double *, fl_idx, fl_idx) noexcept nogil
        int weight_group
    ctypedef struct fl_ops_i8:
        void (*gemm)(fl_idx, fl_idx, fl_idx, const int8_t *, fl_idx, const int8_t *,
                     const int32_t *, int32_t *, fl_idx) noexcept nogil
        float (*quantize_row)(fl_idx, const float *, int8_t *) noexcept nogil
        void (*dequant_add)(fl_idx, const int32_t *, float, const float *, const float *,
                            float *) noexcept nogil
    ctypedef struct fl_isa_ops:
        const char *name
        fl_ops_f32 f32
        fl_ops_f64 f64
        fl_ops_i8 i8
        const char *i8_name
    const fl_isa_ops *fl_current()
    int fl_select(const char *name)
    int fl_supported(const char *name)
    const char *fl_best()
    void fl_i8_pack(fl_idx N, fl_idx K, const int8_t *w, int8_t *b, int32_t *bsum)
    const fl_ops_i8 *fl_i8_variant(const char *name)
    int FL_I8_NR
    int FL_I8_KG
    int FL_I8_MAX_K
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
