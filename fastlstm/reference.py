"""Plain NumPy reference LSTM: forward pass and hand-written BPTT.

This module is the oracle of the test suite and the NumPy baseline of the
benchmarks.  It depends on NumPy only and imports nothing else from
``fastlstm``, so it stays usable while the compiled kernels are being built.

The equations are PyTorch's (``torch.nn.LSTM``, one layer, one direction,
optionally with ``proj_size``),
with the four gate blocks stacked as ``i, f, g, o`` along the ``4H`` axis::

    gates = x_t @ W_ih^T + b_ih + h_{t-1} @ W_hh^T + b_hh
    i, f, o = sigmoid(gates_i), sigmoid(gates_f), sigmoid(gates_o)
    g = tanh(gates_g)
    c_t = f * c_{t-1} + i * g
    h_t = o * tanh(c_t)

All arrays are time-major: ``x`` is ``(T, B, I)``.

Method (kept deliberately simple, but not naive, so that the benchmark
baseline is honest):

* the input projection ``x @ W_ih^T + b_ih + b_hh`` is ONE matmul over all
  ``T*B`` rows, done before the time loop;
* each step does one matmul ``h @ W_hh^T`` written with ``out=`` into a
  preallocated buffer, and the gate math runs in place;
* the sigmoid is computed as ``0.5 * tanh(0.5 * x) + 0.5``, which cannot
  overflow (``exp(-x)`` does for large negative ``x``);
* the backward pass accumulates all per-step gate gradients and does the
  weight gradients as two big matmuls after the loop.

Note on threads: ``numpy.matmul`` calls the BLAS that NumPy was built with
(OpenBLAS for the wheels), which may use several threads.  Benchmarks pin
the thread count with ``threadpoolctl.threadpool_limits`` or the
``OMP_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` environment variables set
before NumPy is imported.
"""

import numpy as np

__all__ = ["forward", "forward_train", "backward"]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------
def _sigmoid_(a):
    """Numerically stable sigmoid, in place: ``0.5 * tanh(0.5 * a) + 0.5``."""
    np.multiply(a, 0.5, out=a)
    np.tanh(a, out=a)
    np.multiply(a, 0.5, out=a)
    np.add(a, 0.5, out=a)
    return a


def _transposed(w):
    """C-contiguous copy of ``w.T``.

    OpenBLAS (NumPy's wheels) runs the per-step ``h @ W_hh^T`` for B >= 2
    rows 1.1x to 5x faster with the right operand stored as a contiguous
    ``(H, 4H)`` array than as the transposed view ``W_hh.T``.
    ``np.ascontiguousarray(w.T)`` reads ``w`` with a stride of a whole row
    per element, which is cache- and TLB-hostile for large matrices
    (~3.5 ms at H = 512); copying in slabs of 16 rows is ~5x faster.
    """
    if w.T.flags.c_contiguous:
        return w.T
    out = np.empty(w.T.shape, w.dtype)
    for r in range(0, w.shape[0], 16):
        out[:, r:r + 16] = w[r:r + 16].T
    return out


def _check_shape(name, a, shape):
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")


def _prepare(x, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0, weight_hr=None):
    """Validate shapes and cast everything to ``x.dtype`` (no copies when
    the dtype already matches; nothing here is ever written to)."""
    x = np.asarray(x)
    dtype = x.dtype
    if dtype not in _FLOAT_DTYPES:
        raise TypeError(f"x must be float32 or float64, got {dtype}")
    if x.ndim != 3:
        raise ValueError(f"x must have shape (T, B, I), got {x.shape}")
    T, B, I = x.shape
    w_ih = np.asarray(weight_ih, dtype=dtype)
    w_hh = np.asarray(weight_hh, dtype=dtype)
    if weight_hr is None:
        if w_hh.ndim != 2 or w_hh.shape[0] != 4 * w_hh.shape[1]:
            raise ValueError(f"weight_hh must have shape (4H, H), got {w_hh.shape}")
        H = P = w_hh.shape[1]
        w_hr = None
    else:
        w_hr = np.asarray(weight_hr, dtype=dtype)
        if w_hr.ndim != 2:
            raise ValueError(f"weight_hr must have shape (P, H), got {w_hr.shape}")
        P, H = w_hr.shape
        _check_shape("weight_hh", w_hh, (4 * H, P))
    _check_shape("weight_ih", w_ih, (4 * H, I))

    bias = None  # b_ih + b_hh (a missing one counts as zero); None: no bias
    for name, b in (("bias_ih", bias_ih), ("bias_hh", bias_hh)):
        if b is not None:
            b = np.asarray(b, dtype=dtype)
            _check_shape(name, b, (4 * H,))
            bias = b if bias is None else bias + b

    states = []
    for name, s, width in (("h0", h0, P), ("c0", c0, H)):
        if s is None:
            s = np.zeros((B, width), dtype)
        else:
            s = np.asarray(s, dtype=dtype)
            _check_shape(name, s, (B, width))
        states.append(s)
    return x, w_ih, w_hh, bias, states[0], states[1], w_hr


def _matmul(a, b, out, rowwise):
    """``a @ b`` into ``out``; with ``rowwise``, one row at a time (a vector-matrix product per
    row, so a row's result does not depend on how many rows are computed together)."""
    if not rowwise:
        return np.matmul(a, b, out=out)
    for r in range(a.shape[0]):
        np.matmul(a[r], b, out=out[r])
    return out


def _run(x, w_ih, w_hh, bias, h0, c0, keep, w_hr=None, rowwise=False):
    """The forward time loop.  ``keep=True`` also stores what BPTT needs.

    Returns ``(hs, c_n, gates, cells, tanh_cells, raw)``: ``hs`` is
    ``(T+1, B, H_out)`` with ``hs[0] = h0`` and ``hs[1:]`` the output (so the
    "previous h" of every step is the contiguous slice ``hs[:-1]``, no
    concatenation needed in backward); the last four are None unless
    ``keep`` (``raw``, the unprojected ``o * tanh(c)``, only with ``w_hr``).
    """
    T, B, I = x.shape
    H = w_ih.shape[0] // 4
    P = w_hh.shape[1]  # H_out: the width of h, H unless projected
    dtype = x.dtype
    # For B >= 2 the contiguous copy pays for itself within a few steps.  For
    # B == 1 NumPy uses gemv, which is about as fast on the transposed view
    # (BLAS handles the transpose), so the copy would rarely pay off.
    w_hh_t = _transposed(w_hh) if (B >= 2 and T >= 8) or rowwise else w_hh.T
    w_hr_t = None if w_hr is None else (_transposed(w_hr) if rowwise else w_hr.T)

    # Input projection for all time steps at once: one big, efficient GEMM.
    # With keep=True it is then activated in place, step by step, and
    # becomes the cache of activated gates.
    gates = np.empty((T, B, 4 * H), dtype)
    _matmul(x.reshape(T * B, I), _transposed(w_ih) if rowwise else w_ih.T,
            gates.reshape(T * B, 4 * H), rowwise)
    if bias is not None:
        gates += bias

    hs = np.empty((T + 1, B, P), dtype)
    hs[0] = h0
    raw = np.empty((T, B, H), dtype) if (keep and w_hr is not None) else None
    if keep:
        cells = np.empty((T + 1, B, H), dtype)
        cells[0] = c0
        tanh_cells = np.empty((T, B, H), dtype)
        c = cells[0]
    else:
        cells = tanh_cells = None
        c = c0.copy()  # updated in place every step, becomes c_n
        tc_buf = np.empty((B, H), dtype)
    rec = np.empty((B, 4 * H), dtype)  # h_{t-1} @ W_hh^T
    ig = np.empty((B, H), dtype)  # i * g
    h_raw = np.empty((B, H), dtype) if w_hr is not None else None

    for t in range(T):
        _matmul(hs[t], w_hh_t, rec, rowwise)
        if keep:
            gt = gates[t]  # activated in place: becomes the cache
            gt += rec
        else:
            gt = rec  # work in the small buffer, which stays in cache
            gt += gates[t]
        i, f, g, o = gt[:, :H], gt[:, H:2 * H], gt[:, 2 * H:3 * H], gt[:, 3 * H:]
        _sigmoid_(gt[:, :2 * H])  # i and f are adjacent: one call for both
        np.tanh(g, out=g)
        _sigmoid_(o)

        c_new = cells[t + 1] if keep else c
        tc = tanh_cells[t] if keep else tc_buf
        np.multiply(f, c, out=c_new)  # in place when not keeping (c_new is c)
        np.multiply(i, g, out=ig)
        c_new += ig
        np.tanh(c_new, out=tc)
        if w_hr is None:
            np.multiply(o, tc, out=hs[t + 1])
        else:  # projection: h = W_hr (o * tanh(c))
            r = raw[t] if keep else h_raw
            np.multiply(o, tc, out=r)
            _matmul(r, w_hr_t, hs[t + 1], rowwise)
        c = c_new

    c_n = c.copy() if keep else c
    if keep:
        return hs, c_n, gates, cells, tanh_cells, raw
    return hs, c_n, None, None, None, None


# ----------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------
def forward(x, weight_ih, weight_hh, bias_ih=None, bias_hh=None, h0=None, c0=None,
            weight_hr=None, *, rowwise=False):
    """Run a one-layer LSTM over a sequence (inference, no cache).

    Parameters
    ----------
    x : ndarray, shape (T, B, I)
        Input sequence, time-major.  Its dtype (float32 or float64) is the
        dtype of the whole computation.
    weight_ih : ndarray, shape (4H, I)
        Input-to-hidden weights, gate blocks ``i, f, g, o`` (PyTorch's
        ``weight_ih_l0``).  Cast to ``x.dtype``.
    weight_hh : ndarray, shape (4H, H_out)
        Hidden-to-hidden weights (PyTorch's ``weight_hh_l0``).
    bias_ih, bias_hh : ndarray, shape (4H,), optional
        Biases; None means no bias (zeros).
    h0, c0 : ndarray, shapes (B, H_out) and (B, H), optional
        Initial hidden and cell state; None means zeros.
    weight_hr : ndarray, shape (P, H), optional
        Projection (PyTorch's ``weight_hr_l0``, ``proj_size=P``): then
        ``h_t = W_hr (o * tanh(c_t))`` and ``H_out = P``; else ``H_out = H``.
    rowwise : bool, default False
        Compute each matrix product one row at a time. Slower, but each
        sequence's result is then bitwise the same whatever the batch it runs
        in and however its steps are split into calls (BLAS sums a product
        in an order that can depend on the number of rows).

    Returns
    -------
    output : ndarray, shape (T, B, H)
        Hidden state of every step.
    h_n : ndarray, shape (B, H)
        Last hidden state (``h0`` when ``T == 0``).
    c_n : ndarray, shape (B, H)
        Last cell state (``c0`` when ``T == 0``).

    Notes
    -----
    Inputs are never modified; all outputs are newly allocated arrays.
    """
    x, w_ih, w_hh, bias, h0, c0, w_hr = _prepare(x, weight_ih, weight_hh, bias_ih,
                                                 bias_hh, h0, c0, weight_hr)
    hs, c_n, _, _, _, _ = _run(x, w_ih, w_hh, bias, h0, c0, keep=False, w_hr=w_hr,
                               rowwise=rowwise)
    return hs[1:], hs[-1].copy(), c_n


def forward_train(x, weight_ih, weight_hh, bias_ih=None, bias_hh=None, h0=None, c0=None,
                  weight_hr=None, *, rowwise=False):
    """Like :func:`forward`, and also return the cache for :func:`backward`.

    Parameters
    ----------
    x, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0
        As in :func:`forward`.

    Returns
    -------
    output, h_n, c_n : ndarray
        As in :func:`forward`.
    cache : dict
        What :func:`backward` needs: activated gates ``(T, B, 4H)``, cell
        states ``(T+1, B, H)`` (``c0`` first), ``tanh`` of the cells, the
        hidden states ``(T+1, B, H)`` (``h0`` first; ``output`` is a view of
        them), ``x`` and the weights (cast to ``x.dtype``).

    Notes
    -----
    Like autograd frameworks, the cache references ``x``, the weights and
    ``output`` instead of copying them: do not modify those in place before
    calling :func:`backward`.
    """
    x, w_ih, w_hh, bias, h0, c0, w_hr = _prepare(x, weight_ih, weight_hh, bias_ih,
                                                 bias_hh, h0, c0, weight_hr)
    hs, c_n, gates, cells, tanh_cells, raw = _run(x, w_ih, w_hh, bias, h0, c0, keep=True,
                                                  w_hr=w_hr, rowwise=rowwise)
    cache = dict(x=x, weight_ih=w_ih, weight_hh=w_hh, weight_hr=w_hr,
                 has_bias=bias is not None, gates=gates, cells=cells,
                 tanh_cells=tanh_cells, hs=hs, raw=raw)
    return hs[1:], hs[-1].copy(), c_n, cache


def backward(cache, grad_output=None, grad_h_n=None, grad_c_n=None):
    """Backpropagation through time for :func:`forward_train`.

    Parameters
    ----------
    cache : dict
        The cache returned by :func:`forward_train`.  It is not modified, so
        ``backward`` may be called on it several times.
    grad_output : ndarray, shape (T, B, H), optional
        Gradient of the loss w.r.t. ``output``.
    grad_h_n, grad_c_n : ndarray, shapes (B, H_out) and (B, H), optional
        Gradients of the loss w.r.t. ``h_n`` and ``c_n``.

    Returns
    -------
    grads : dict of ndarray
        ``'x'`` (T, B, I), ``'h0'`` (B, H_out), ``'c0'`` (B, H),
        ``'weight_ih'`` (4H, I), ``'weight_hh'`` (4H, H_out), ``'weight_hr'``
        (P, H) when projected, and, only if the
        forward pass had at least one bias, ``'bias_ih'`` and ``'bias_hh'``
        (both (4H,) and equal, since both biases enter the gates the same way).

    Raises
    ------
    ValueError
        If all three upstream gradients are None, or a shape is wrong.

    Notes
    -----
    A None upstream gradient counts as zero.
    """
    if grad_output is None and grad_h_n is None and grad_c_n is None:
        raise ValueError("backward needs at least one of grad_output, grad_h_n, grad_c_n")
    x, w_ih, w_hh = cache["x"], cache["weight_ih"], cache["weight_hh"]
    w_hr, raw = cache.get("weight_hr"), cache.get("raw")
    gates, cells, tanh_cells, hs = (cache["gates"], cache["cells"],
                                    cache["tanh_cells"], cache["hs"])
    T, B, I = x.shape
    H = w_ih.shape[0] // 4
    P = w_hh.shape[1]
    dtype = x.dtype

    def upstream(name, g, shape):
        # Own, writable copy (the loop updates dh / dc in place).
        if g is None:
            return np.zeros(shape, dtype)
        g = np.array(g, dtype=dtype, copy=True)
        _check_shape(name, g, shape)
        return g

    if grad_output is not None:
        grad_output = np.asarray(grad_output, dtype=dtype)
        _check_shape("grad_output", grad_output, (T, B, P))
    dh_rec = upstream("grad_h_n", grad_h_n, (B, P))  # dL/dh_t through h_{t+1}
    dc = upstream("grad_c_n", grad_c_n, (B, H))  # dL/dc_t, carried backwards

    d_gates = np.empty((T, B, 4 * H), dtype)  # pre-activation gate grads
    dh_out = np.empty((B, P), dtype)  # dL/dh_t, of the (projected) h
    dh = np.empty((B, H), dtype) if w_hr is not None else dh_out  # of o * tanh(c)
    d_hs = np.empty((T, B, P), dtype) if w_hr is not None else None
    tmp = np.empty((B, H), dtype)
    for t in range(T - 1, -1, -1):
        at = gates[t]
        i, f, g, o = at[:, :H], at[:, H:2 * H], at[:, 2 * H:3 * H], at[:, 3 * H:]
        tc, c_prev = tanh_cells[t], cells[t]
        dgt = d_gates[t]
        di, df, dg, do = dgt[:, :H], dgt[:, H:2 * H], dgt[:, 2 * H:3 * H], dgt[:, 3 * H:]

        # total dL/dh_t: from the output at t and from the recurrence
        if grad_output is not None:
            np.add(dh_rec, grad_output[t], out=dh_out)
        else:
            np.copyto(dh_out, dh_rec)
        if w_hr is not None:  # h = (o * tanh(c)) @ W_hr^T
            d_hs[t] = dh_out
            np.matmul(dh_out, w_hr, out=dh)
        # o: h = o * tanh(c);  sigmoid' = s * (1 - s)
        np.multiply(dh, tc, out=do)
        np.subtract(1.0, o, out=tmp)
        tmp *= o
        do *= tmp
        # c: through h (tanh' = 1 - tanh^2) plus what came from c_{t+1}
        np.multiply(tc, tc, out=tmp)
        np.subtract(1.0, tmp, out=tmp)
        tmp *= o
        tmp *= dh
        dc += tmp
        # i: c = f * c_prev + i * g
        np.multiply(dc, g, out=di)
        np.subtract(1.0, i, out=tmp)
        tmp *= i
        di *= tmp
        # f
        np.multiply(dc, c_prev, out=df)
        np.subtract(1.0, f, out=tmp)
        tmp *= f
        df *= tmp
        # g (tanh)
        np.multiply(dc, i, out=dg)
        np.multiply(g, g, out=tmp)
        np.subtract(1.0, tmp, out=tmp)
        dg *= tmp
        # carry to step t-1 (at t == 0 these are the h0 / c0 gradients)
        dc *= f
        np.matmul(dgt, w_hh, out=dh_rec)

    # Weight gradients: one GEMM each over all T*B rows.
    dg2 = d_gates.reshape(T * B, 4 * H)
    x2 = x.reshape(T * B, I)
    h_prev = hs[:-1].reshape(T * B, P)
    if T * B == 1:
        # OpenBLAS sgemm with K=1 (an outer product) is pathologically slow
        # (~265 us for 1024x256, vs ~47 us for this broadcast multiply).
        dw_ih = np.multiply(dg2.T, x2)
        dw_hh = np.multiply(dg2.T, h_prev)
    else:
        dw_ih = np.matmul(dg2.T, x2)
        dw_hh = np.matmul(dg2.T, h_prev)
    grads = {
        "x": np.matmul(dg2, w_ih).reshape(T, B, I),
        "h0": dh_rec,
        "c0": dc,
        "weight_ih": dw_ih,
        "weight_hh": dw_hh,
    }
    if w_hr is not None:
        grads["weight_hr"] = np.matmul(d_hs.reshape(T * B, P).T, raw.reshape(T * B, H))
    if cache["has_bias"]:
        db = dg2.sum(axis=0)
        grads["bias_ih"] = db
        grads["bias_hh"] = db.copy()
    return grads
