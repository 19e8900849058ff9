"""Plain NumPy reference LSTM: forward pass and hand-written BPTT, and the definition of the
int8 inference scheme (`quantize_rows`, `quantize_lstm`, `int8_gates`, `forward_int8`,
`forward_int8_layers`; see the comment block above `quantize_rows` for its exact arithmetic).

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
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import numpy.typing as npt

__all__ = ["forward", "forward_train", "backward", "quantize_rows", "quantize_lstm",
           "int8_gates", "forward_int8", "forward_int8_layers", "INT8_MAX_K"]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# Annotation aliases (this module imports nothing from fastlstm, so _typing's are restated)
FloatArray = npt.NDArray[np.floating[Any]]  # float32 or float64
_A = npt.NDArray[Any]
_Pair = Tuple[_A, _A]  # an int8 weight and its row scales, from quantize_rows
_Opt = Optional[npt.ArrayLike]
_F32A = npt.NDArray[np.float32]
_Out = Tuple[FloatArray, FloatArray, FloatArray]  # output, h_n, c_n


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------
def _sigmoid_(a: _A) -> _A:
    """Numerically stable sigmoid, in place: ``0.5 * tanh(0.5 * a) + 0.5``."""
    np.multiply(a, 0.5, out=a)
    np.tanh(a, out=a)
    np.multiply(a, 0.5, out=a)
    np.add(a, 0.5, out=a)
    return a


def _transposed(w: _A) -> _A:
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


def _check_shape(name: str, a: _A, shape: Tuple[int, ...]) -> None:
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")


def _prepare(x: npt.ArrayLike, weight_ih: npt.ArrayLike, weight_hh: npt.ArrayLike, bias_ih: _Opt,
             bias_hh: _Opt, h0: _Opt, c0: _Opt, weight_hr: _Opt = None
            ) -> Tuple[_A, _A, _A, Optional[_A], _A, _A, Optional[_A]]:
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


def _matmul(a: _A, b: _A, out: _A, rowwise: bool) -> _A:
    """``a @ b`` into ``out``; with ``rowwise``, one row at a time (a vector-matrix product per
    row, so a row's result does not depend on how many rows are computed together)."""
    if not rowwise:
        return np.matmul(a, b, out=out)
    for r in range(a.shape[0]):
        np.matmul(a[r], b, out=out[r])
    return out


def _run(x: _A, w_ih: _A, w_hh: _A, bias: Optional[_A], h0: _A, c0: _A, keep: bool,
         w_hr: Optional[_A] = None, rowwise: bool = False) -> Tuple[Any, ...]:
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
    w_hr_t: Any = None if w_hr is None else (_transposed(w_hr) if rowwise else w_hr.T)

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
    # (Any: these are None unless keep / w_hr, which every use below checks first)
    raw: Any = np.empty((T, B, H), dtype) if (keep and w_hr is not None) else None
    cells: Any
    tanh_cells: Any
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
    h_raw: Any = np.empty((B, H), dtype) if w_hr is not None else None

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
def forward(x: npt.ArrayLike, weight_ih: npt.ArrayLike, weight_hh: npt.ArrayLike,
            bias_ih: _Opt = None, bias_hh: _Opt = None, h0: _Opt = None, c0: _Opt = None,
            weight_hr: _Opt = None, *, rowwise: bool = False) -> _Out:
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
    output : ndarray, shape (T, B, H_out)
        Hidden state of every step.
    h_n : ndarray, shape (B, H_out)
        Last hidden state (``h0`` when ``T == 0``).
    c_n : ndarray, shape (B, H)
        Last cell state (``c0`` when ``T == 0``).

    Raises
    ------
    TypeError
        x is not float32 or float64.
    ValueError
        A shape that does not fit (the message names the array, the shape expected and the
        shape given).

    Notes
    -----
    Inputs are never modified; all outputs are newly allocated arrays.
    """
    x, w_ih, w_hh, bias, h0, c0, w_hr = _prepare(x, weight_ih, weight_hh, bias_ih,
                                                 bias_hh, h0, c0, weight_hr)
    hs, c_n, _, _, _, _ = _run(x, w_ih, w_hh, bias, h0, c0, keep=False, w_hr=w_hr,
                               rowwise=rowwise)
    return hs[1:], hs[-1].copy(), c_n


def forward_train(x: npt.ArrayLike, weight_ih: npt.ArrayLike, weight_hh: npt.ArrayLike,
                  bias_ih: _Opt = None, bias_hh: _Opt = None, h0: _Opt = None, c0: _Opt = None,
                  weight_hr: _Opt = None, *, rowwise: bool = False
                 ) -> Tuple[FloatArray, FloatArray, FloatArray, Dict[str, Any]]:
    """Like :func:`forward`, and also return the cache for :func:`backward`.

    Parameters
    ----------
    x, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0, weight_hr, rowwise
        As in :func:`forward`.

    Returns
    -------
    output, h_n, c_n : ndarray
        As in :func:`forward`.
    cache : dict
        What :func:`backward` needs: activated gates ``(T, B, 4H)``, cell
        states ``(T+1, B, H)`` (``c0`` first), ``tanh`` of the cells, the
        hidden states ``(T+1, B, H_out)`` (``h0`` first; ``output`` is a view of
        them), ``x`` and the weights (cast to ``x.dtype``).

    Raises
    ------
    TypeError, ValueError
        As in :func:`forward`.

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


def backward(cache: Dict[str, Any], grad_output: _Opt = None, grad_h_n: _Opt = None,
             grad_c_n: _Opt = None) -> Dict[str, FloatArray]:
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
    raw: Any  # (None without a projection, and used only with one)
    w_hr, raw = cache.get("weight_hr"), cache.get("raw")
    gates, cells, tanh_cells, hs = (cache["gates"], cache["cells"],
                                    cache["tanh_cells"], cache["hs"])
    T, B, I = x.shape
    H = w_ih.shape[0] // 4
    P = w_hh.shape[1]
    dtype = x.dtype

    def upstream(name: str, g: _Opt, shape: Tuple[int, ...]) -> FloatArray:
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
    d_hs: Any = np.empty((T, B, P), dtype) if w_hr is not None else None  # (None: unused)
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


# ----------------------------------------------------------------------------
# int8 inference (issue 19): the scheme's definition
# ----------------------------------------------------------------------------
# This section *defines* fastlstm's int8 LSTM: the compiled int8 kernels must reproduce, bitwise,
# everything listed under "Bitwise contract" below.  Everything is float32 (IEEE binary32, round
# to nearest even, every operation rounded on its own: no FMA contraction, no flush-to-zero /
# denormals-are-zero, no reassociation) except the integer sums, which are exact.
#
# Notation: a row is the last axis of an array; fl(.) rounds one operation to float32.
#
# 1. quantize_rows(a), per row a[0..K-1]  ->  q[0..K-1] int8, scale float32:
#        m = max_k |a_k|     (NaN when any a_k is NaN: a C max must propagate it, fmaxf does not)
#        if m is NaN or +inf:                 scale = NaN, q = 0     (a row with NaN or +-inf)
#        else:
#            inv = fl(127 / m)
#            if inv is +inf:                  scale = 0,   q = 0     (m = 0, or m < 127/FLT_MAX
#                                                                     ~ 3.7e-37: a zero row)
#            else:  scale = fl(m / 127),  q_k = rint(fl(a_k * inv))  (rint: half to even)
#    |q_k| <= 127 always (never -128): |fl(a_k * inv)| <= fl(m * inv) <= 127 * (1 + 2^-24)^2
#    < 127.5, and the max element maps to +-127 exactly.  A row of K = 0 elements is a zero row.
#
# 2. Weights, once: (Q_ih, S_ih) = quantize_rows(W_ih) (4H, I); (Q_hh, S_hh) = quantize_rows(W_hh)
#    (4H, H_out); with a projection (Q_hr, S_hr) = quantize_rows(W_hr) (P, H).  One scale per
#    output row (per gate row).  bias = fl(b_ih + b_hh), a missing bias being a vector of +0.0
#    (so a model without biases adds +0.0: the bias add below is never skipped).  A float64 model's
#    parameters (and x, h0, c0) are first rounded to float32; its outputs are the float32 results
#    widened to float64.
#
# 3. Integer sums: acc = sum_k qa_k * qw_k, exact in int32.  |acc| <= 127^2 * K, which fits int32
#    for K <= INT8_MAX_K = (2^31 - 1) // 127^2 = 133,144; a larger K (input_size, or H_out, or
#    hidden_size before a projection) is refused with ValueError (not split).
#
# 4. Dequantization of one sum:  deq(acc, s_a, s_w) = fl( fl(float32(acc)) * fl(s_a * s_w) )
#    i.e. the int32 is converted to float32 (round to nearest even: exact up to 2^24), the scale
#    product is formed first, in float32, activation scale on the left (the product of two float32
#    is commutative anyway), and then multiplied once.
#
# 5. One layer, one direction.  Input part, hoisted over all T*B rows r = (t, b) of x:
#        (qx, sx) = quantize_rows(x[t, b, :])
#        gx[r, j] = fl( deq(sum_k qx_k Q_ih[j, k], sx, S_ih[j]) + bias[j] )        j < 4H
#    Step t = 0..T-1, batch row b:
#        (qh, sh) = quantize_rows(h_{t-1}[b, :])            (h_{-1} = h0)
#        a[j]  = fl( gx[(t, b), j] + deq(sum_k qh_k Q_hh[j, k], sh, S_hh[j]) )
#        i, f, g, o = sigmoid(a[:H]), sigmoid(a[H:2H]), tanh(a[2H:3H]), sigmoid(a[3H:])
#        c_t = fl( fl(f * c_{t-1}) + fl(i * g) )
#        r = fl(o * tanh(c_t))
#        h_t = r                                                        (no projection)
#        h_t[p] = deq(sum_k qr_k Q_hr[p, k], sr, S_hr[p]),  (qr, sr) = quantize_rows(r)   (P > 0)
#    Here sigmoid(z) = 0.5 * tanh(0.5 * z) + 0.5 (float32 ops), as in `forward`.
#    The cell state c, the gates and h are float32 throughout; nothing but the matrix products
#    is quantized.  Layers stack as in PyTorch (each layer quantizes the float32 output of the
#    previous one as its x); the reverse direction runs on x reversed in time.
#
# Bitwise contract (what the C kernels must reproduce exactly, given the same float32 inputs to
# the step): 1 (q and scale of every row), 3 (every acc), gx, the pre-activation `a` of a step
# given x_t and h_{t-1} (`int8_gates`), and a projected h_t given r.  sigmoid and tanh are the
# kernels' own (their accuracy is tested against NumPy's, not bitwise), so h and c of a whole
# sequence match to the float kernels' tolerance, not bitwise.
#
# Non-finite values: a NaN or +-inf in a row of x (or of h, or of a weight row) makes that row's
# scale NaN, so every sum it enters dequantizes to NaN (acc * NaN): that (t, b)'s gates, h and c
# are NaN and stay NaN, as in the float model (which gives NaN there too, except that an inf
# whose products all have one sign gives +-inf there; int8 gives NaN).  Nothing raises or warns.
#
# Every row's result depends only on its own inputs (quantization is per row, integer sums are
# exact), so results are bitwise the same whatever the batch, the thread count or how a sequence
# is split into calls.
#
# This NumPy definition computes the exact integer sums as float64 matrix products of the int8
# values: each product is an integer of magnitude <= 127^2 < 2^14 and every partial sum an
# integer of magnitude <= 127^2 * K < 2^31 < 2^53, so every float64 operation is exact in any
# summation order (BLAS blocking and FMA included), and the result converts exactly to int32.

INT8_MAX_K = (2**31 - 1) // (127 * 127)  # 133,144: 127^2 * K must fit in int32
_F32 = np.float32
_Q127 = np.float32(127.0)


def quantize_rows(a: npt.ArrayLike) -> Tuple[npt.NDArray[np.int8], _F32A]:
    """Symmetric int8 quantization, one scale per row (the last axis).

    Parameters
    ----------
    a : array_like of float32 or float64, shape (..., K)
        float64 values are rounded to float32 first.

    Returns
    -------
    q : ndarray of int8, shape (..., K)
        ``rint(a * fl(127 / max|row|))`` (round half to even), in [-127, 127].
    scale : ndarray of float32, shape (...)
        ``fl(max|row| / 127)``; 0 for a zero row (and for a row whose max is below
        ``127 / FLT_MAX``, where ``127 / max`` overflows); NaN for a row with a NaN or +-inf
        (its q are then 0).  So ``q * scale`` approximates ``a``.

    Raises
    ------
    TypeError
        Values that are not float32 or float64.
    ValueError
        A 0-D ``a`` (it has no row).

    Notes
    -----
    The comment block above this function in ``fastlstm/reference.py`` is the exact definition
    (what the C kernels reproduce, bitwise).
    """
    a = np.asarray(a)
    if a.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"quantize_rows needs float32 or float64 values, got {a.dtype}")
    if a.ndim < 1:
        raise ValueError("quantize_rows needs at least one axis (the row)")
    a = a.astype(_F32, copy=False)
    if a.shape[-1] == 0:
        return np.zeros(a.shape, np.int8), np.zeros(a.shape[:-1], _F32)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        m = np.max(np.abs(a), axis=-1)  # NaN propagates
        inv = _Q127 / m  # +inf for m == 0 or m < 127 / FLT_MAX
        scale = m / _Q127
        q = np.rint(a * inv[..., None])
    finite = np.isfinite(m)
    usable = finite & np.isfinite(inv)
    scale = np.where(usable, scale, np.where(finite, _F32(0), _F32(np.nan))).astype(_F32)
    q = np.where(usable[..., None], q, _F32(0)).astype(np.int8)
    return q, scale


def _int_weights_t(q: _A) -> npt.NDArray[np.float64]:
    """(K, N) float64 copy of an int8 weight's transpose, the right operand of `_int_sums`."""
    return np.ascontiguousarray(q.T, dtype=np.float64)


def _int_sums(qa: _A, qw_t: _A) -> npt.NDArray[np.int32]:
    """Exact int32 ``qa @ qw.T`` (qa int8 (..., K), qw_t from `_int_weights_t`).

    Done as a float64 matrix product: exact, see the comment block above."""
    K = qa.shape[-1]
    if K > INT8_MAX_K:
        raise ValueError(f"int8 sums over K = {K} products can overflow int32 (127^2 * K >= "
                         f"2^31); the int8 scheme supports K <= {INT8_MAX_K}")
    sums: npt.NDArray[np.int32] = np.matmul(qa.astype(np.float64), qw_t).astype(np.int32)
    return sums


def _dequantize(acc: _A, s_a: _A, s_w: _A) -> _F32A:
    """fl(float32(acc) * fl(s_a * s_w)), s_a one scale per row of acc, s_w one per column."""
    with np.errstate(over="ignore", invalid="ignore"):
        out: npt.NDArray[np.float32] = acc.astype(_F32) * (s_a[..., None] * s_w)
    return out


def _as_pair(name: str, pair: Any, rows: Optional[int], cols: Optional[int]) -> _Pair:
    """Check a (q int8, scale float32) pair of a quantized weight."""
    try:
        q, s = pair
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a (q, scale) pair from quantize_rows") from None
    q, s = np.asarray(q), np.asarray(s)
    if q.dtype != np.int8 or s.dtype != _F32:
        raise TypeError(f"{name} must be (int8, float32) from quantize_rows, got "
                        f"({q.dtype}, {s.dtype})")
    if q.ndim != 2 or (rows is not None and q.shape[0] != rows) or (
            cols is not None and q.shape[1] != cols) or s.shape != q.shape[:1]:
        raise ValueError(f"{name} has shapes {q.shape}, {s.shape}; expected "
                         f"({rows if rows is not None else 'N'}, "
                         f"{cols if cols is not None else 'K'}) and its row count")
    if np.any(np.abs(q.astype(np.int16)) > 127):
        raise ValueError(f"{name} holds -128, which quantize_rows never produces")
    if q.shape[1] > INT8_MAX_K:
        raise ValueError(f"{name} sums over K = {q.shape[1]} products, more than "
                         f"INT8_MAX_K = {INT8_MAX_K} (127^2 * K must fit in int32)")
    return q, s


def quantize_lstm(weight_ih: npt.ArrayLike, weight_hh: npt.ArrayLike, bias_ih: _Opt = None,
                  bias_hh: _Opt = None, weight_hr: _Opt = None) -> Dict[str, Any]:
    """Quantize one layer and direction's parameters for `forward_int8`.

    Parameters
    ----------
    weight_ih, weight_hh, bias_ih, bias_hh, weight_hr : array_like
        PyTorch's parameters, as for :func:`forward` (biases and ``weight_hr`` optional);
        float64 values are rounded to float32 first.

    Returns
    -------
    dict
        The keyword arguments of `forward_int8`: ``weight_ih``, ``weight_hh`` and
        ``weight_hr`` (None without a projection) as ``(q, scale)`` pairs of `quantize_rows`,
        and ``bias`` = fl(b_ih + b_hh) (float32, (4H,); zeros when both are None).

    Raises
    ------
    ValueError
        Shapes that do not form an LSTM layer, or a sum length over ``INT8_MAX_K``.
    TypeError
        Biases that are not float32 or float64.
    """
    w_ih = np.asarray(weight_ih)
    w_hh = np.asarray(weight_hh)
    if w_ih.ndim != 2 or w_hh.ndim != 2 or w_ih.shape[0] % 4 or w_ih.shape[0] != w_hh.shape[0]:
        raise ValueError(f"weight_ih (4H, I) and weight_hh (4H, H_out) expected, got "
                         f"{w_ih.shape} and {w_hh.shape}")
    H = w_ih.shape[0] // 4
    biases = []
    for name, b in (("bias_ih", bias_ih), ("bias_hh", bias_hh)):
        if b is None:
            b = np.zeros(4 * H, _F32)  # +0.0
        b = np.asarray(b)
        if b.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{name} must be float32 or float64, got {b.dtype}")
        _check_shape(name, b, (4 * H,))
        biases.append(b.astype(_F32))
    bias = biases[0] + biases[1]  # fl(b_ih + b_hh)
    out = dict(weight_ih=quantize_rows(w_ih), weight_hh=quantize_rows(w_hh), bias=bias,
               weight_hr=None if weight_hr is None else quantize_rows(weight_hr))
    if out["weight_hr"] is not None:
        _as_pair("weight_hr", out["weight_hr"], w_hh.shape[1], H)
    _as_pair("weight_ih", out["weight_ih"], 4 * H, None)
    _as_pair("weight_hh", out["weight_hh"], 4 * H, H if weight_hr is None else None)
    return out


def _prepare_int8(x: npt.ArrayLike, weight_ih: Any, weight_hh: Any, bias: _Opt, h0: _Opt, c0: _Opt,
                  weight_hr: Any) -> Tuple[_A, _Pair, _Pair, _A, _A, _A, Optional[_Pair]]:
    x = np.asarray(x)
    if x.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"x must be float32 or float64, got {x.dtype}")
    if x.ndim != 3:
        raise ValueError(f"x must have shape (T, B, I), got {x.shape}")
    T, B, I = x.shape
    w_ih = _as_pair("weight_ih", weight_ih, None, I)
    H4 = w_ih[0].shape[0]
    if H4 % 4:
        raise ValueError(f"weight_ih must have 4H rows, got {H4}")
    H = H4 // 4
    if weight_hr is None:
        P = H
        w_hr = None
    else:
        w_hr = _as_pair("weight_hr", weight_hr, None, H)
        P = w_hr[0].shape[0]
    w_hh = _as_pair("weight_hh", weight_hh, 4 * H, P)
    if bias is None:
        bias = np.zeros(4 * H, _F32)
    bias = np.asarray(bias)
    if bias.dtype != _F32:
        raise TypeError(f"bias must be float32 (fl(b_ih + b_hh) from quantize_lstm), got "
                        f"{bias.dtype}")
    _check_shape("bias", bias, (4 * H,))
    states = []
    for name, s, width in (("h0", h0, P), ("c0", c0, H)):
        if s is None:
            s = np.zeros((B, width), _F32)
        else:
            s = np.asarray(s)
            if s.dtype not in _FLOAT_DTYPES:
                raise TypeError(f"{name} must be float32 or float64, got {s.dtype}")
            _check_shape(name, s, (B, width))
            s = s.astype(_F32)  # a copy: never written through
        states.append(s)
    return x, w_ih, w_hh, bias, states[0], states[1], w_hr


def _input_gates(x: _A, w_ih: _Pair, bias: _A, w_ih_t: Optional[_A] = None) -> _F32A:
    """gx = fl(deq(sum qx Q_ih) + bias) for every row of x (..., I): shape (..., 4H)."""
    q, s = w_ih
    qx, sx = quantize_rows(x)
    if w_ih_t is None:
        w_ih_t = _int_weights_t(q)
    gx = _dequantize(_int_sums(qx, w_ih_t), sx, s)
    gx += bias
    return gx


def _rec_gates(h: _A, w_hh: _Pair, w_hh_t: Optional[_A] = None) -> _F32A:
    """deq(sum qh Q_hh) for every row of h (B, H_out): shape (B, 4H)."""
    q, s = w_hh
    qh, sh = quantize_rows(h)
    if w_hh_t is None:
        w_hh_t = _int_weights_t(q)
    return _dequantize(_int_sums(qh, w_hh_t), sh, s)


def int8_gates(x_t: npt.ArrayLike, h_prev: npt.ArrayLike, weight_ih: _Pair, weight_hh: _Pair,
               bias: _Opt = None, weight_hr: Optional[_Pair] = None) -> _F32A:
    """The pre-activation gates of one int8 step: the per-step contract of the kernels.

    Bitwise what `forward_int8` computes at a step whose input row is x_t and previous hidden
    state h_prev (the hoisting does not change a bit).

    Parameters
    ----------
    x_t : array_like, shape (B, I)
        The step's input, float32 or float64 (rounded to float32).
    h_prev : array_like, shape (B, H_out)
        The previous hidden state, float32 or float64 (rounded to float32).
    weight_ih, weight_hh, bias, weight_hr
        As `quantize_lstm` returns them (``weight_hr`` only fixes H_out; it takes no part in
        the gates).

    Returns
    -------
    ndarray of float32, shape (B, 4H)
        The pre-activation gates ``a``, blocks i, f, g, o.

    Raises
    ------
    ValueError
        Shapes that do not fit, or int8 weights holding -128.
    TypeError
        Values or weights of the wrong dtypes.
    """
    x_t = np.asarray(x_t)
    if x_t.ndim != 2:
        raise ValueError(f"x_t must have shape (B, I), got {x_t.shape}")
    x, w_ih, w_hh, bias, h, _, _ = _prepare_int8(x_t[None], weight_ih, weight_hh, bias,
                                                 h_prev, None, weight_hr)
    with np.errstate(invalid="ignore", over="ignore"):
        a = _input_gates(x[0], w_ih, bias)
        a += _rec_gates(h, w_hh)
    return a


def _run_int8(x: _A, w_ih: _Pair, w_hh: _Pair, bias: _A, h0: _A, c0: _A, w_hr: Optional[_Pair]
             ) -> Tuple[_F32A, _F32A]:
    """The int8 time loop (all float32): returns hs (T+1, B, H_out) with hs[0] = h0, and c_n."""
    T, B, _ = x.shape
    H = w_ih[0].shape[0] // 4
    P = w_hh[0].shape[1]
    gates = _input_gates(x, w_ih, bias)  # (T, B, 4H): hoisted input part, bias included
    w_hh_t = _int_weights_t(w_hh[0])
    w_hr_t: Any = None if w_hr is None else _int_weights_t(w_hr[0])  # (None: unused)
    hs = np.empty((T + 1, B, P), _F32)
    hs[0] = h0
    c = c0.copy()
    ig = np.empty((B, H), _F32)
    tc = np.empty((B, H), _F32)
    r = np.empty((B, H), _F32)
    for t in range(T):
        gt = gates[t]
        gt += _rec_gates(hs[t], w_hh, w_hh_t)  # a = fl(gx + rec)
        i, f, g, o = gt[:, :H], gt[:, H:2 * H], gt[:, 2 * H:3 * H], gt[:, 3 * H:]
        _sigmoid_(gt[:, :2 * H])
        np.tanh(g, out=g)
        _sigmoid_(o)
        np.multiply(f, c, out=c)
        np.multiply(i, g, out=ig)
        c += ig
        np.tanh(c, out=tc)
        if w_hr is None:
            np.multiply(o, tc, out=hs[t + 1])
        else:
            np.multiply(o, tc, out=r)
            qr, sr = quantize_rows(r)
            hs[t + 1] = _dequantize(_int_sums(qr, w_hr_t), sr, w_hr[1])
    return hs, c


def forward_int8(x: npt.ArrayLike, weight_ih: _Pair, weight_hh: _Pair, bias: _Opt = None,
                 h0: _Opt = None, c0: _Opt = None, weight_hr: Optional[_Pair] = None) -> _Out:
    """Run one layer, one direction of the int8 LSTM (the scheme defined above).

    Parameters
    ----------
    x : ndarray, shape (T, B, I), float32 or float64
        Input, time-major.  Computed in float32 (float64 is rounded first); the outputs have
        x's dtype.
    weight_ih, weight_hh : (q, scale) pairs
        `quantize_rows` of W_ih (4H, I) and W_hh (4H, H_out) (see `quantize_lstm`).
    bias : float32 ndarray (4H,), optional
        fl(b_ih + b_hh) as `quantize_lstm` returns it; None: +0.0 (still added).
    h0, c0 : ndarray, shapes (B, H_out) and (B, H), optional
        Initial states (rounded to float32); None: zeros.
    weight_hr : (q, scale) pair, optional
        `quantize_rows` of W_hr (P, H): then h_t is the int8 projection of o * tanh(c_t).

    Returns
    -------
    output, h_n, c_n : ndarray
        (T, B, H_out), (B, H_out) and (B, H), in x's dtype.

    Raises
    ------
    ValueError
        Shapes that do not fit, or int8 weights holding -128.
    TypeError
        Values or weights of the wrong dtypes.

    Examples
    --------
    ``forward_int8(x, **quantize_lstm(W_ih, W_hh, b_ih, b_hh), h0=h0, c0=c0)``.
    """
    dtype = np.asarray(x).dtype
    x, w_ih, w_hh, bias, h0, c0, w_hr = _prepare_int8(x, weight_ih, weight_hh, bias, h0, c0,
                                                      weight_hr)
    with np.errstate(invalid="ignore", over="ignore"):
        hs, c_n = _run_int8(x, w_ih, w_hh, bias, h0, c0, w_hr)
    return (hs[1:].astype(dtype), hs[-1].astype(dtype), c_n.astype(dtype))


def forward_int8_layers(x: npt.ArrayLike, layers: Sequence[Sequence[Dict[str, Any]]],
                        h0: Optional[_A] = None, c0: Optional[_A] = None) -> _Out:
    """A stack of int8 layers and directions, composed as PyTorch composes them.

    Parameters
    ----------
    x : array_like, shape (T, B, I)
        Input, time-major, float32 or float64.
    layers : sequence of sequences of dict
        ``layers[l][d]`` is the `quantize_lstm` dict of layer l, direction d (0 forward,
        1 reverse: it runs on x reversed in time, and its output is reversed back).  Layer
        l > 0 takes the float32 concatenation [forward | reverse] of layer l-1's outputs as
        its x.
    h0, c0 : ndarray, optional
        (L*D, B, H_out) and (L*D, B, H), row l*D + d; None means zeros.

    Returns
    -------
    output, h_n, c_n : ndarray
        (T, B, D*H_out), (L*D, B, H_out) and (L*D, B, H), in x's dtype.

    Raises
    ------
    TypeError
        x is not float32 or float64.
    ValueError
        Layers with different numbers of directions, or shapes that do not fit.
    """
    x = np.asarray(x)
    dtype = x.dtype
    if dtype not in _FLOAT_DTYPES:
        raise TypeError(f"x must be float32 or float64, got {dtype}")
    D = len(layers[0])
    h_n, c_n = [], []
    inp = x.astype(_F32)
    for l, directions in enumerate(layers):
        if len(directions) != D:
            raise ValueError("every layer needs the same number of directions")
        outs = []
        for d, p in enumerate(directions):
            s = l * D + d
            xd = inp if d == 0 else inp[::-1]
            y, h, c = forward_int8(xd, **p, h0=None if h0 is None else h0[s],
                                   c0=None if c0 is None else c0[s])
            outs.append(y if d == 0 else y[::-1])
            h_n.append(h)
            c_n.append(c)
        inp = np.concatenate(outs, axis=-1)
    return inp.astype(dtype), np.stack(h_n).astype(dtype), np.stack(c_n).astype(dtype)
