"""Layers, directions and ragged batches, composed from single directions (`_direction`).

Everything here is time-major: x is (T, B, K), outputs (T, B, D*H_out), states (L*D, B, ·) with
row layer*D + direction, as in PyTorch.

Ragged batches (per-sequence lengths) run as PackedSequence does: the rows are sorted by length,
longest first (the caller does that), so the sequences still running at step t are a prefix of
the batch. Steps split into segments over which that prefix does not change; each segment is one
kernel call on x[t0:t1, :n] carrying (h, c), so the cost follows the real work and finished rows
are never touched: their state stays the one at their last valid step, their output rows stay 0,
whatever the padding holds is never read. A sequence run in segments gives bitwise the result
of one run (the kernels' results do not depend on how time is chunked nor on the other rows).

The reverse direction of a ragged batch starts at each sequence's own last step: its input is
each row's valid part reversed in time (padding stays where it is), and so is its output.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import numpy.typing as npt

from ._typing import FloatArray


def segments(lengths, T, B):
    """[(t0, t1, n)]: steps t0..t1-1 run the first n rows. lengths None: the whole batch."""
    if lengths is None:
        return [(0, T, B)] if T and B else []
    out, t0 = [], 0
    n = int(np.count_nonzero(lengths > 0))
    while n:
        t1 = int(lengths[n - 1])  # the shortest running row ends the segment
        out.append((t0, t1, n))
        t0 = t1
        n = int(np.count_nonzero(lengths > t0))
    return out


def reverser(lengths, T, B):
    """What `reverse` needs: None (reverse the whole time axis) or per-row gather indices."""
    if lengths is None:
        return None
    t = np.arange(T)[:, None]
    L = lengths[None, :]
    return np.where(t < L, L - 1 - t, t), np.arange(B)[None, :]


def reverse(a, rev):
    """Each row's valid steps in reverse order (a fresh array; a view when rev is None)."""
    return a[::-1] if rev is None else a[rev[0], rev[1]]


def _run_direction(runner, x, h0, c0, y, segs, train, num_threads):
    """Final (h, c) and, when training, the tape: None when no step ran."""
    T, B = x.shape[:2]
    if not segs:  # no step to run: the states pass through
        return h0.copy(), c0.copy(), None
    if segs == [(0, T, B)]:  # plain batch: one call
        if train:
            return runner.run_train(x, h0, c0, y, num_threads)
        return (*runner.run(x, h0, c0, y, num_threads), None)
    if train:
        return runner.run_train_ragged(x, h0, c0, y, segs, num_threads)
    return (*runner.run_ragged(x, h0, c0, y, segs, num_threads), None)


def _back_direction(runner, tape, segs, dy, dh_n, dc_n, shape, num_threads):
    T, B, K = shape
    if not segs:
        return np.zeros(shape, runner.dtype), dh_n.copy(), dc_n.copy(), runner.zero_grads()
    if segs == [(0, T, B)]:
        return runner.back(tape, dy, dh_n, dc_n, num_threads)
    return runner.back_ragged(tape, dy, dh_n, dc_n, num_threads)


def forward(layers: Any, x: FloatArray, h0: FloatArray, c0: FloatArray,
            lengths: Optional[npt.NDArray[np.intp]], out: FloatArray, train: bool, num_threads: int,
            dropout: Optional[Callable[[int, FloatArray], FloatArray]] = None
            ) -> Tuple[FloatArray, FloatArray, Any]:
    """Run the stack. layers[l][d] are directions; `out` (T, B, D*H_out) receives the last
    layer's output (zeros where padding); dropout(l, y) returns layer l's output as the next
    layer sees it (training only). Returns h_n, c_n and, when training, the tape."""
    T, B = x.shape[:2]
    D = len(layers[0])
    H_out, H = h0.shape[2], c0.shape[2]
    segs = segments(lengths, T, B)
    rev = reverser(lengths, T, B) if D == 2 else None
    h_n = np.empty(h0.shape, h0.dtype)
    c_n = np.empty(c0.shape, c0.dtype)
    tape = []
    for l, directions in enumerate(layers):
        y = out if l == len(layers) - 1 else (
            np.zeros if lengths is not None else np.empty)((T, B, D * H_out), x.dtype)
        layer_tape = []
        for d, runner in enumerate(directions):
            s = l * D + d
            if d == 0:
                h_n[s], c_n[s], dir_tape = _run_direction(runner, x, h0[s], c0[s],
                                                          y[..., :H_out], segs, train,
                                                          num_threads)
            else:
                y_rev = (np.zeros if lengths is not None else np.empty)((T, B, H_out), x.dtype)
                h_n[s], c_n[s], dir_tape = _run_direction(runner, reverse(x, rev), h0[s],
                                                          c0[s], y_rev, segs, train, num_threads)
                y[..., H_out:] = reverse(y_rev, rev)
            layer_tape.append((runner, dir_tape, x.shape))
        tape.append(layer_tape)
        x = y if dropout is None or l == len(layers) - 1 else dropout(l, y)
    return h_n, c_n, (tape, segs, rev, H_out, H)


def backward(tape: Any, dy: Optional[FloatArray], dh_n: FloatArray, dc_n: FloatArray,
             num_threads: int,
             dropout_grad: Optional[Callable[[int, FloatArray], FloatArray]] = None
             ) -> Tuple[FloatArray, FloatArray, FloatArray, List[List[Dict[str, FloatArray]]]]:
    """Gradients of a `forward(..., train=True)`: dx, dh0, dc0 and [layer][direction] parameter
    gradient dicts. dy (T, B, D*H_out) or None; dh_n, dc_n full state arrays (zeros if unused)."""
    layers, segs, rev, H_out, H = tape
    D = len(layers[0])
    dh0 = np.empty_like(dh_n)
    dc0 = np.empty_like(dc_n)
    grads = [[None] * D for _ in layers]
    for l in range(len(layers) - 1, -1, -1):
        dx = None
        for d, (runner, dir_tape, shape) in enumerate(layers[l]):
            s = l * D + d
            dy_d = None if dy is None else dy[..., d * H_out:(d + 1) * H_out]
            if d == 1 and dy_d is not None:
                dy_d = reverse(dy_d, rev)
            dx_d, dh0[s], dc0[s], grads[l][d] = _back_direction(
                runner, dir_tape, segs, dy_d, dh_n[s], dc_n[s], shape, num_threads)
            if d == 1:
                dx_d = reverse(dx_d, rev)
            if dx is None:
                dx = np.array(dx_d)
            else:  # (inf + -inf is NaN, as in the kernels, which do not warn either)
                with np.errstate(invalid="ignore"):
                    np.add(dx, dx_d, out=dx)
        if l > 0 and dropout_grad is not None:
            dx = dropout_grad(l - 1, dx)
        dy = dx
    return dy, dh0, dc0, grads

