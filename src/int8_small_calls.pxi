# The int8 forward's small calls: a whole call in C for a one-layer, one-direction quantized model
# without projection (a streaming step, one short sequence), as SmallForward is for the float
# model: at workload f's size the Python layer's validation and buffers cost several times the
# int8 step itself. It takes what _SmallCall.accept takes (float32 only: a float64 quantized
# model converts its inputs, on the general path) and returns None for anything else.


cdef class SmallForwardInt8(_SmallCall):
    """Inference of an int8 direction (fastlstm._int8_direction.PackedInt8 without projection)
    for calls that `accept` takes and whose scratch is under SMALL_SCRATCH values. Calling it
    returns (y, (h_n, c_n)), or None. The int8 weights, their column sums and scales, and the
    bias are raw pointers into `packed`'s arrays (kept alive)."""
    cdef const int32_t *bsum_ih
    cdef const int32_t *bsum_hh
    cdef const float *s_ih
    cdef const float *s_hh

    def __init__(self, packed, record):
        if packed.proj_size:
            raise ValueError("internal: the int8 small calls have no projection")
        self.packed, self.record = packed, record
        self.dtype, self.empty = np.dtype(np.float32), np.empty
        self.wide, self.z = False, 4
        self.fmt[0], self.fmt[1] = b'f', 0
        self.I, self.H = packed.input_size, packed.hidden_size
        self.Hp, self.Ip = round_up(self.H, FL_I8_NR), kpad4(self.I)
        self.w_ih = <const void *>address(packed.w_ih)
        self.w_hh = <const void *>address(packed.w_hh)
        self.bias = <const void *>address(packed.bias)
        self.bsum_ih = <const int32_t *>address(packed.bsum_ih)
        self.bsum_hh = <const int32_t *>address(packed.bsum_hh)
        self.s_ih = <const float *>address(packed.s_ih)
        self.s_hh = <const float *>address(packed.s_hh)

    def __call__(self, x, hx, num_threads, bint batch_first):
        cdef SmallArgs a
        cdef Py_buffer yb
        cdef Py_ssize_t T, B, S, Hp = self.Hp, H = self.H, I = self.I
        cdef int ran = 1
        cdef float *scratch = NULL
        cdef fl_stop_state stop
        if not self.accept(x, hx, num_threads, batch_first, &a):
            return None
        T, B = a.T, a.B
        S = B * Hp
        if 3 * S + T * B * 4 * Hp > SMALL_SCRATCH:  # every step's gates in one chunk
            release_args(&a)
            return None
        y = self.empty((B, T, H) if batch_first else (T, B, H), self.dtype)
        PyObject_GetBuffer(y, &yb, PyBUF_WRITABLE)
        scratch = <float *>malloc((3 * S + T * B * 4 * Hp) * sizeof(float))
        if scratch == NULL:
            PyBuffer_Release(&yb)
            release_args(&a)
            raise MemoryError()
        fl_stop_init(&stop, 0)  # under SMALL_SCRATCH a call is far below watch_sigint's 2 ms
        with nogil:  # h: 2 slots (scratch), c: 1 slot (scratch + 2S), then the gates
            self.load_state(&a, <char *>scratch, <char *>(scratch + 2 * S))
            ran = run_forward_int8(
                T, B, I, H, 0, <const float *>a.x.buf, (I if batch_first else B * I),
                (T * I if batch_first else I), <const int8_t *>self.w_ih, self.bsum_ih,
                self.s_ih, <const float *>self.bias, <const int8_t *>self.w_hh, self.bsum_hh,
                self.s_hh, NULL, NULL, NULL, scratch + 3 * S, T, scratch, scratch + 2 * S, NULL,
                <float *>yb.buf, (H if batch_first else B * H), (T * H if batch_first else H),
                a.num_threads, &stop)
        PyBuffer_Release(&yb)
        release_args(&a)
        try:  # the final state: h slot T % 2, c slot 0
            if ran < 0:
                raise MemoryError("the int8 forward could not allocate its threads' scratch")
            h_n = self.new_state(B, <char *>(scratch + (T % 2) * S))
            c_n = self.new_state(B, <char *>(scratch + 2 * S))
        finally:
            free(scratch)
        self.record.num_threads = ran
        return y, (h_n, c_n)
