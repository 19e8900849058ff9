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
