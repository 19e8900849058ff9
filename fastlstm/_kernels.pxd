# The C-level surface of fastlstm._kernels: sequence kernels on raw pointers and sizes,
# `noexcept nogil`, float32 and float64 through the `floating` fused type. The layouts they read
# (packed weights, padded state buffers) are described in src/_kernels.pyx; fastlstm/_direction.py
# builds every argument from a model's packed weights (tests/test_cimport.py calls lstm_forward
# from another module's prange). wgroup is the pack's weight_group (Packed.weight_group); with any
# value but 1, 2 or 4 lstm_forward computes nothing and returns 0. A call served by one thread
# opens no OpenMP region of its own.

ctypedef fused floating:
    float
    double

cdef int lstm_forward(
    Py_ssize_t T, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H,
    const floating *x, Py_ssize_t xs_t, Py_ssize_t xs_b,
    const floating *w_ih, const floating *w_hh, Py_ssize_t wgroup, const floating *bias,
    floating *gates, Py_ssize_t chunk,
    floating *h_state, floating *c_state, floating *tc_state,
    floating *y, Py_ssize_t ys_t, Py_ssize_t ys_b,
    Py_ssize_t P, const floating *w_hr, floating *h_full,
    int num_threads) noexcept nogil

cdef int lstm_backward(
    Py_ssize_t T, Py_ssize_t B, Py_ssize_t I, Py_ssize_t H,
    const floating *gates, const floating *c_state, const floating *tc_state,
    const floating *h_state, const floating *xpad,
    const floating *w_ih_t, const floating *w_hh_t,
    const floating *dy, Py_ssize_t dys_t, Py_ssize_t dys_b,
    floating *dh, floating *dc, floating *dgates, Py_ssize_t chunk,
    floating *dx, floating *dw_ih, floating *dw_hh, floating *db, floating *scratch,
    Py_ssize_t P, const floating *w_hr_t, const floating *h_full, floating *dr_steps,
    floating *dh_full, floating *dw_hr,
    int num_threads) noexcept nogil


cdef int lstm_weight_gradients(
    Py_ssize_t R, Py_ssize_t I, Py_ssize_t H, const floating *dgates, const floating *xpad,
    const floating *h_prev, const floating *w_ih_t, floating *dx, floating *dw_ih,
    floating *dw_hh, floating *db, floating *scratch, int num_threads) noexcept nogil
