"""One direction of one layer: the unit that `model` stacks into layers and directions.

A direction runs a time-major (T, B, K) view (any non-negative strides, last axis contiguous)
from states (B, H_out), (B, H); it writes its output into a (T, B, H_out) view the caller owns
(half of a bidirectional output, a slice of a ragged batch) and returns fresh final states.
`run_train` also returns a tape, which `back` turns into gradients: dx (T, B, K), dh0, dc0 and
the parameter gradients by their names without the layer suffix.

A ragged batch (rows sorted longest first, see `_stack`) runs in segments of steps over a
shrinking prefix of rows: `run_ragged`, `run_train_ragged` and `back_ragged`, which by default
loop over the plain methods. `KernelDirection` instead lays its training buffers out as a packed
sequence (the segments' rows one after another) so the weight gradients are one pass over all
valid rows, not one small pass per segment.

`KernelDirection` runs fastlstm's kernels, with or without a projection (`proj_size`: the
recurrent state and the output are then r = W_hr h, P wide; a ragged batch then runs segment by
segment with the plain methods).
"""
from __future__ import annotations

import threading
from typing import Any, Dict, Optional

import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import _kernels, _workspace
from ._packing import PANEL, pack, round_up
from ._typing import FloatArray
from ._validate import check_num_threads, check_upstream

# The input projection runs over a chunk of steps at a time, at most this many gate values
# (8 MiB in float32): memory stays bounded for long sequences, results do not change.
CHUNK_VALUES = 1 << 21

_last_call = threading.local()


def last_num_threads() -> Optional[int]:
    """Threads the last kernel call made by this Python thread actually ran (None before any)."""
    return getattr(_last_call, "num_threads", None)


def _flat(a):
    """(1-D view from a's first element to its last, step stride, row stride), in elements,
    of a (T, B, K) view; a copy first when a stride is negative (a time-reversed view)."""
    T, B, K = a.shape
    if a.flags.c_contiguous:  # the common case, without as_strided's ~5 us
        return a.reshape(-1), B * K, K
    if a.strides[0] < 0 or a.strides[1] < 0:
        a = np.ascontiguousarray(a)
    st, sb = a.strides[0] // a.itemsize, a.strides[1] // a.itemsize
    n = (T - 1) * st + (B - 1) * sb + K if T and B else 0
    return as_strided(a, (n,), (a.itemsize,), writeable=a.flags.writeable), st, sb


def _unpad(blocks, rows, cols):
    """(n, Rp, Cp) padded blocks (n = 4 gates, or 1) -> (n*rows, cols), a result array."""
    n = blocks.shape[0]
    if blocks.shape[1:] == (rows, cols):
        return blocks.reshape(n * rows, cols)
    out = _workspace.output((n * rows, cols), blocks.dtype)
    out.reshape(n, rows, cols)[...] = blocks[:, :rows, :cols]
    return out


def _chunk(T, B, Hp):
    return max(1, min(T, CHUNK_VALUES // max(1, B * 4 * Hp)))


class _Direction:
    """What every direction has: ragged runs as loops over segments of the plain runs."""

    def run_ragged(self, x, h0, c0, y, segs, num_threads):
        h, c = h0.copy(), c0.copy()
        for t0, t1, n in segs:
            h[:n], c[:n] = self.run(x[t0:t1, :n], h[:n], c[:n], y[t0:t1, :n], num_threads)
        return h, c

    def run_train_ragged(self, x, h0, c0, y, segs, num_threads):
        h, c, tapes = h0.copy(), c0.copy(), []
        for t0, t1, n in segs:
            h[:n], c[:n], tape = self.run_train(x[t0:t1, :n], h[:n], c[:n], y[t0:t1, :n],
                                                num_threads)
            tapes.append(tape)
        return h, c, (segs, x.shape, tapes, ())

    def back_ragged(self, tape, dy, dh_n, dc_n, num_threads):
        segs, shape, tapes, _ = tape
        dx = np.zeros(shape, self.dtype)
        dh, dc, grads = dh_n.copy(), dc_n.copy(), None
        for (t0, t1, n), t in zip(segs[::-1], tapes[::-1]):
            dxs, dh[:n], dc[:n], g = self.back(t, None if dy is None else dy[t0:t1, :n],
                                               dh[:n], dc[:n], num_threads)
            dx[t0:t1, :n] = dxs
            grads = g if grads is None else {k: grads[k] + g[k] for k in grads}
        return dx, dh, dc, grads

    @staticmethod
    def buffers(tape):
        """The workspace buffers a tape holds (given back once nothing can use the tape)."""
        return tape[-1]


class KernelDirection(_Direction):
    """One direction's weights, packed once for fastlstm's kernels."""

    small: Optional[_kernels.SmallForward]
    small_train: Optional[_kernels.SmallTrain]

    def __init__(self, params: Dict[str, FloatArray], dtype: Any) -> None:
        self.dtype = np.dtype(dtype)
        self.packed = pack(params["weight_ih"], params["weight_hh"], params.get("bias_ih"),
                           params.get("bias_hh"), self.dtype, params.get("weight_hr"))
        self.hidden_size = self.packed.hidden_size
        p = self.packed
        self.proj_size = p.proj_size
        self.out_size = p.proj_size or p.hidden_size  # h's width (and the output's)
        # whole calls in C (inference, and forward_train with its backprop) for small calls of
        # a one-layer, one-direction model
        self.small = self.small_train = None
        if not p.proj_size:
            self.small = _kernels.SmallForward(p, _last_call)
            self.small_train = _kernels.SmallTrain(p, _last_call, _workspace.output,
                                                   check_upstream, check_num_threads)

    def _states(self, slots, B, first):
        """`slots` x B x (first's width, padded) scratch, slot 0 = `first` with zero padding; the
        kernels write every other slot whole."""
        width = round_up(first.shape[1], PANEL[self.dtype])
        state = _workspace.take((slots, B, width), self.dtype)
        state[0, :, :first.shape[1]] = first
        state[0, :, first.shape[1]:] = 0
        return state

    def _projection(self, steps, B):
        """(keyword arguments of _kernels.forward for the projection, h_full or None)."""
        p = self.packed
        if not p.proj_size:
            return {}, None
        Hp = round_up(self.hidden_size, PANEL[self.dtype])
        h_full = _workspace.take((steps, B, Hp), self.dtype)
        return dict(P=p.proj_size, w_hr=p.w_hr.reshape(-1), h_full=h_full.reshape(-1)), h_full

    def run(self, x, h0, c0, y, num_threads):
        T, B, K = x.shape
        p, H = self.packed, self.hidden_size
        Hp = round_up(H, PANEL[self.dtype])
        h_state, c_state = self._states(2, B, h0), self._states(1, B, c0)
        chunk = _chunk(T, B, Hp)
        gates = _workspace.take(chunk * B * 4 * Hp, self.dtype)
        proj, h_full = self._projection(1, B)
        xf, xs_t, xs_b = _flat(x)
        yf, ys_t, ys_b = _flat(y)
        _last_call.num_threads = _kernels.forward(
            xf, xs_t, xs_b, T, B, K, H, p.w_ih.reshape(-1), p.w_hh.reshape(-1), p.weight_group,
            p.bias, gates, chunk, h_state.reshape(-1), c_state.reshape(-1), None, yf, ys_t, ys_b,
            num_threads, **proj)
        h_n, c_n = h_state[T % 2, :, :self.out_size].copy(), c_state[0, :, :H].copy()
        _workspace.give(gates, h_state, c_state, h_full)
        return h_n, c_n

    def run_train(self, x, h0, c0, y, num_threads):
        T, B, K = x.shape
        p, H = self.packed, self.hidden_size
        NR = PANEL[self.dtype]
        Hp, Kp = round_up(H, NR), round_up(K, NR)
        # x time-major and padded: the input of the projection and of the weight gradient
        xpad = _workspace.take((T, B, Kp), self.dtype)
        xpad[:, :, :K] = x
        xpad[:, :, K:] = 0
        gates = _workspace.take((T, B, 4 * Hp), self.dtype)
        h_state, c_state = self._states(T + 1, B, h0), self._states(T + 1, B, c0)
        tc_state = _workspace.take((T, B, Hp), self.dtype)
        proj, h_full = self._projection(T, B)
        yf, ys_t, ys_b = _flat(y)
        _last_call.num_threads = _kernels.forward(
            xpad.reshape(-1), B * Kp, Kp, T, B, K, H, p.w_ih.reshape(-1), p.w_hh.reshape(-1),
            p.weight_group, p.bias, gates.reshape(-1), max(T, 1), h_state.reshape(-1),
            c_state.reshape(-1), tc_state.reshape(-1), yf, ys_t, ys_b, num_threads, **proj)
        h_n, c_n = h_state[T, :, :self.out_size].copy(), c_state[T, :, :H].copy()
        return h_n, c_n, (p, T, B, K, (gates, h_state, c_state, tc_state, xpad, h_full))

    def back(self, tape, dy, dh_n, dc_n, num_threads):
        p, T, B, K, (gates, h_state, c_state, tc_state, xpad, h_full) = tape
        H, P = p.hidden_size, p.proj_size
        NR = PANEL[self.dtype]
        Hp, Kp = round_up(H, NR), round_up(K, NR)
        dh, dc = self._carry(dh_n, round_up(self.out_size, NR)), self._carry(dc_n, Hp)
        chunk = _chunk(T, B, Hp)
        dgates = _workspace.take(chunk * B * 4 * Hp, self.dtype)
        dx = _workspace.output((T, B, Kp), self.dtype)
        sums = self._sums(p)
        proj, scratch = {}, ()
        if P:
            scratch = (_workspace.take((T, B, round_up(P, NR)), self.dtype),
                       _workspace.take((B, Hp), self.dtype))
            proj = dict(P=P, w_hr_t=p.w_hr_t.reshape(-1), h_full=h_full.reshape(-1),
                        dr_steps=scratch[0].reshape(-1), dh_full=scratch[1].reshape(-1),
                        dw_hr=sums[4].reshape(-1))
        dyf, dys_t, dys_b = _flat(dy) if dy is not None else (None, 0, 0)
        _last_call.num_threads = _kernels.backward(
            T, B, K, H, gates.reshape(-1), c_state.reshape(-1), tc_state.reshape(-1),
            h_state.reshape(-1), xpad.reshape(-1), p.w_ih_t.reshape(-1), p.w_hh_t.reshape(-1),
            dyf, dys_t, dys_b, dh.reshape(-1), dc.reshape(-1), dgates, chunk, dx.reshape(-1),
            *(None if a is None else a.reshape(-1) for a in sums[1:4]), num_threads, **proj)
        _workspace.give(dgates, *scratch)
        return dx[:, :, :K], dh[:, :self.out_size], dc[:, :H], self._gradients(sums)

    def run_train_ragged(self, x, h0, c0, y, segs, num_threads):
        if self.proj_size:  # segment by segment (the packed layout below has no projection)
            return _Direction.run_train_ragged(self, x, h0, c0, y, segs, num_threads)
        return self._run_train_packed(x, h0, c0, y, segs, num_threads)

    def back_ragged(self, tape, dy, dh_n, dc_n, num_threads):
        if self.proj_size:
            return _Direction.back_ragged(self, tape, dy, dh_n, dc_n, num_threads)
        return self._back_packed(tape, dy, dh_n, dc_n, num_threads)

    @staticmethod
    def buffers(tape):
        """The workspace buffers a tape holds: a plain or packed tape's, or every segment's."""
        if len(tape) == 4:  # _Direction.run_train_ragged's (segs, shape, tapes, ())
            return tuple(b for t in tape[2] for b in t[-1])
        return tape[-1]

    def _run_train_packed(self, x, h0, c0, y, segs, num_threads):
        """Segment k's buffers start at row offs[k] of shared ones: the steps' rows follow each
        other as in a packed sequence, and segment k+1's initial state (a prefix of segment k's
        last state slot) is already in place when segment k ends."""
        T, B, K = x.shape
        p, H = self.packed, self.hidden_size
        NR = PANEL[self.dtype]
        Hp, Kp = round_up(H, NR), round_up(K, NR)
        offs = np.cumsum([0] + [(t1 - t0) * n for t0, t1, n in segs]).tolist()
        R, n0 = offs[-1], segs[0][2]
        # Segment k's last state slot, rows offs[k+1] to offs[k+1] + n_k, can reach past the
        # last segment's (one long sequence, then a short stretch: lengths [2, 1, 1]).
        S = max(o + n for (_, _, n), o in zip(segs, offs[1:]))
        xpad = _workspace.take((R, Kp), self.dtype)
        gates = _workspace.take((R, 4 * Hp), self.dtype)
        tc_state = _workspace.take((R, Hp), self.dtype)
        h_state = _workspace.take((S, Hp), self.dtype)
        c_state = _workspace.take((S, Hp), self.dtype)
        for state, first in ((h_state, h0), (c_state, c0)):
            state[:n0, :H] = first[:n0]
            state[:n0, H:] = 0
        h, c = h0.copy(), c0.copy()
        for (t0, t1, n), o in zip(segs, offs):
            L = t1 - t0
            xk = xpad[o:o + L * n].reshape(L, n, Kp)
            xk[:, :, :K] = x[t0:t1, :n]
            xk[:, :, K:] = 0
            hk, ck = h_state[o:o + (L + 1) * n], c_state[o:o + (L + 1) * n]
            yf, ys_t, ys_b = _flat(y[t0:t1, :n])
            _last_call.num_threads = _kernels.forward(
                xk.reshape(-1), n * Kp, Kp, L, n, K, H, p.w_ih.reshape(-1), p.w_hh.reshape(-1),
                p.weight_group, p.bias, gates[o:o + L * n].reshape(-1), L, hk.reshape(-1),
                ck.reshape(-1), tc_state[o:o + L * n].reshape(-1), yf, ys_t, ys_b, num_threads)
            h[:n], c[:n] = hk[L * n:, :H], ck[L * n:, :H]
        buffers = (xpad, gates, tc_state, h_state, c_state)
        return h, c, (p, segs, offs, x.shape, buffers)

    def _back_packed(self, tape, dy, dh_n, dc_n, num_threads):
        """BPTT segment by segment, last first, keeping every step's gate gradients; then the
        weight gradients and dx in one pass over all the packed rows."""
        p, segs, offs, (T, B, K), (xpad, gates, tc_state, h_state, c_state) = tape
        H = p.hidden_size
        NR = PANEL[self.dtype]
        Hp, Kp = round_up(H, NR), round_up(K, NR)
        R = offs[-1]
        dh, dc = self._carry(dh_n, Hp), self._carry(dc_n, Hp)
        dgates = _workspace.take((R, 4 * Hp), self.dtype)
        for (t0, t1, n), o in zip(segs[::-1], offs[-2::-1]):
            L = t1 - t0
            dyf, dys_t, dys_b = _flat(dy[t0:t1, :n]) if dy is not None else (None, 0, 0)
            _last_call.num_threads = _kernels.backward(
                L, n, K, H, gates[o:o + L * n].reshape(-1),
                c_state[o:o + (L + 1) * n].reshape(-1), tc_state[o:o + L * n].reshape(-1),
                h_state[o:o + (L + 1) * n].reshape(-1), xpad[o:o + L * n].reshape(-1),
                p.w_ih_t.reshape(-1), p.w_hh_t.reshape(-1), dyf, dys_t, dys_b,
                dh[:n].reshape(-1), dc[:n].reshape(-1), dgates[o:o + L * n].reshape(-1), L,
                None, None, None, None, num_threads)
        sums = self._sums(p)
        dx_rows = np.empty((R, Kp), self.dtype)
        _kernels.weight_gradients_packed(
            R, K, H, dgates.reshape(-1), xpad.reshape(-1), h_state[:R].reshape(-1),
            p.w_ih_t.reshape(-1), dx_rows.reshape(-1),
            *(None if a is None else a.reshape(-1) for a in sums[1:4]), num_threads)
        _workspace.give(dgates)
        dx = np.zeros((T, B, K), self.dtype)
        for (t0, t1, n), o in zip(segs, offs):
            dx[t0:t1, :n] = dx_rows[o:o + (t1 - t0) * n].reshape(t1 - t0, n, Kp)[:, :, :K]
        return dx, dh[:, :H], dc[:, :H], self._gradients(sums)

    def _carry(self, first, Hp):
        """A zero-padded (B, Hp) copy of a (B, H) state gradient, which the kernels update."""
        out = np.zeros((first.shape[0], Hp), self.dtype)
        out[:, :first.shape[1]] = first
        return out

    def _sums(self, p):
        """Weight-gradient outputs: PyTorch's gate blocks, padded, the interleaved db, and
        dW_hr (Pp, Hp) with a projection."""
        NR = PANEL[self.dtype]
        Hp, Kp = round_up(p.hidden_size, NR), round_up(p.input_size, NR)
        Op = round_up(self.out_size, NR)
        return (p, _workspace.output((4, Hp, Kp), self.dtype),
                _workspace.output((4, Hp, Op), self.dtype),
                np.empty(4 * Hp, self.dtype) if p.bias is not None else None,
                _workspace.output((Op, Hp), self.dtype) if p.proj_size else None)

    def _gradients(self, sums):
        """The parameter gradients by name, without the layer suffix."""
        p, dw_ih, dw_hh, db, dw_hr = sums
        H, K = p.hidden_size, p.input_size
        grads = {"weight_ih": _unpad(dw_ih, H, K), "weight_hh": _unpad(dw_hh, H, self.out_size)}
        if db is not None:
            grads["bias_ih"] = db[p.to_torch_rows]
            grads["bias_hh"] = db[p.to_torch_rows]  # the same values, a separate array
        if dw_hr is not None:
            grads["weight_hr"] = _unpad(dw_hr[None], p.proj_size, H)
        return grads

    def zero_grads(self):
        """Parameter gradients of a run of no step (T == 0 or an empty batch)."""
        p, H = self.packed, self.hidden_size
        out = {"weight_ih": np.zeros((4 * H, p.input_size), self.dtype),
               "weight_hh": np.zeros((4 * H, self.out_size), self.dtype)}
        if p.bias is not None:
            out["bias_ih"] = np.zeros(4 * H, self.dtype)
            out["bias_hh"] = np.zeros(4 * H, self.dtype)
        if p.proj_size:
            out["weight_hr"] = np.zeros((p.proj_size, H), self.dtype)
        return out
