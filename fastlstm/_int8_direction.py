"""One int8 direction of one layer: the unit `QuantizedLSTM` hands to `_stack`, as `LSTM` hands
it `_direction.KernelDirection`s.

This is the seam where the compiled int8 driver goes: `_stack.forward` composes layers,
directions and ragged batches from these runners, unchanged, and `quantized` builds one runner
per layer and direction with ``Int8Direction(params)``. A replacement keeps this interface:

``Int8Direction(params)``
    ``params`` is one layer and direction's `reference.quantize_lstm` dict, the keyword
    arguments of `reference.forward_int8`: ``weight_ih`` = (q, scale), q int8 (4H, K) and
    scale float32 (4H,); ``weight_hh`` = (q int8 (4H, H_out), scale float32 (4H,)); ``bias``
    float32 (4H,) = fl(bias_ih + bias_hh), or None (a model without biases: +0.0 is added);
    ``weight_hr`` = (q int8 (P, H), scale float32 (P,)) or None. Every array is C-contiguous and
    read-only (the model's own storage: a runner packs its copy, it never writes them). K, H_out
    and H are at most `reference.INT8_MAX_K` (the model refuses larger ones when quantizing).

``run(x, h0, c0, y, num_threads) -> (h_n, c_n)``
    x float32 (T, B, K), a view: last axis contiguous, time and batch strides anything (the time
    stride is negative for the reverse direction of a plain batch, and the batch stride is that
    of the user's layout with batch_first). h0 float32 (B, H_out) and c0 float32 (B, H),
    C-contiguous; read only. y float32 (T, B, H_out), a writable view the caller owns (half of a
    bidirectional output, a slice of a ragged batch: last axis contiguous, row stride possibly
    wider than H_out, strides non-negative): every element of it is written. Returns fresh
    float32 C-contiguous (B, H_out), (B, H) final states. T >= 1 and B >= 1: the stack passes
    the states through itself when there is no step to run. num_threads: 0 means OpenMP's
    setting, else an upper bound on the team (already validated).

``run_ragged(x, h0, c0, y, segs, num_threads) -> (h_n, c_n)``
    Segments ``[(t0, t1, n)]`` of a ragged batch sorted longest first (see `_stack`); inherited
    from `_direction._Direction` as one `run` per segment on x[t0:t1, :n] carrying (h, c). That
    is exact because the int8 scheme is per row and chunk-invariant; a driver may override it.

Attributes ``dtype`` (float32: the stack allocates its buffers in it), ``input_size``,
``hidden_size``, ``proj_size`` (0: none) and ``out_size`` (H_out) describe the direction.

`run` runs the compiled int8 forward (src/int8_forward.pxi) on weights packed once here: the
rows of W_ih and W_hh in the float kernels' gate order (`_packing.gate_order`: a block of 16 units'
i, f, g, o side by side), each with its scale and the summed bias, so the int32 sums dequantize
straight into the cell's input. Its results equal the NumPy definition's up to the ulps in which
the kernels' sigmoid and tanh differ from NumPy's (tests/test_quantized.py).
"""
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np

from . import _kernels, _workspace
from ._direction import CHUNK_VALUES, _Direction, _flat, _last_call
from ._packing import gate_order, round_up
from ._typing import FloatArray

NR = 16  # int8 output panel (FL_I8_NR)
F32 = np.dtype(np.float32)


@dataclass(frozen=True)
class PackedInt8:
    """One layer and direction's int8 weights as the kernels read them."""

    input_size: int
    hidden_size: int
    proj_size: int
    w_ih: np.ndarray  # int8_pack of Q_ih's rows in gate order (4Hp columns)
    bsum_ih: np.ndarray
    s_ih: np.ndarray  # (4Hp,) float32 scales in gate order, 0 on padding
    bias: np.ndarray  # (4Hp,) float32 fl(b_ih + b_hh) in gate order, 0 on padding
    w_hh: np.ndarray
    bsum_hh: np.ndarray
    s_hh: np.ndarray
    w_hr: Optional[np.ndarray] = None  # int8_pack of Q_hr (Pp columns), or None
    bsum_hr: Optional[np.ndarray] = None
    s_hr: Optional[np.ndarray] = None  # (Pp,)


def _in_gate_order(q, s, H):
    rows = gate_order(H, NR)
    real = rows >= 0
    qo = np.zeros((rows.size, q.shape[1]), np.int8)
    qo[real] = q[rows[real]]
    so = np.zeros(rows.size, F32)
    so[real] = s[rows[real]]
    return qo, so


def pack_int8(quantized):
    """PackedInt8 from `reference.quantize_lstm`'s dict (weight_ih, weight_hh, weight_hr as
    (q, scale) pairs, bias)."""
    q_ih, s_ih = quantized["weight_ih"]
    q_hh, s_hh = quantized["weight_hh"]
    H = q_ih.shape[0] // 4
    qi, si = _in_gate_order(q_ih, s_ih, H)
    qh, sh = _in_gate_order(q_hh, s_hh, H)
    bias = quantized.get("bias")
    bias = np.zeros(4 * H, F32) if bias is None else np.asarray(bias, F32)  # +0.0 is added
    _, bo = _in_gate_order(np.zeros((4 * H, 0), np.int8), bias, H)
    w_ih, bsum_ih = _kernels.int8_pack(qi)
    w_hh, bsum_hh = _kernels.int8_pack(qh)
    proj = {}
    P = 0
    if quantized.get("weight_hr") is not None:
        q_hr, s_hr = quantized["weight_hr"]
        P = q_hr.shape[0]
        w_hr, bsum_hr = _kernels.int8_pack(q_hr)
        sr = np.zeros(round_up(P, NR), F32)
        sr[:P] = s_hr
        proj = dict(w_hr=w_hr, bsum_hr=bsum_hr, s_hr=sr)
    return PackedInt8(q_ih.shape[1], H, P, w_ih, bsum_ih, si, bo, w_hh, bsum_hh, sh, **proj)


class Int8Direction(_Direction):
    """One direction's int8 weights, packed once for the compiled int8 forward."""

    dtype = F32
    small: Optional[_kernels.SmallForwardInt8]

    def __init__(self, params: Dict[str, Any]) -> None:
        self.packed = p = pack_int8(params)
        self.input_size = p.input_size
        self.hidden_size = p.hidden_size
        self.proj_size = p.proj_size
        self.out_size = p.proj_size or p.hidden_size
        # a whole small call in C (one layer, one direction, no projection: QuantizedLSTM's
        # _small_call), as _direction.KernelDirection has one
        self.small = None if p.proj_size else _kernels.SmallForwardInt8(p, _last_call)

    def run(self, x: FloatArray, h0: FloatArray, c0: FloatArray, y: FloatArray,
            num_threads: int) -> Tuple[FloatArray, FloatArray]:
        p, H, P = self.packed, self.hidden_size, self.proj_size
        T, B, K = x.shape
        Hp, Kr = round_up(H, NR), self.out_size
        Krp = round_up(Kr, NR)
        h_state = _workspace.take((2, B, Krp), F32)
        h_state[0, :, :Kr] = h0
        h_state[0, :, Kr:] = 0
        c_state = _workspace.take((1, B, Hp), F32)
        c_state[0, :, :H] = c0
        c_state[0, :, H:] = 0
        chunk = max(1, min(T, CHUNK_VALUES // max(1, B * 4 * Hp)))
        gates = _workspace.take(chunk * B * 4 * Hp, F32)
        h_full = _workspace.take(B * Hp, F32) if P else None
        xf, xs_t, xs_b = _flat(x)
        yf, ys_t, ys_b = _flat(y)
        _last_call.num_threads = _kernels.forward_int8(
            xf, xs_t, xs_b, T, B, K, H, P, p.w_ih, p.bsum_ih, p.s_ih, p.bias, p.w_hh, p.bsum_hh,
            p.s_hh, p.w_hr, p.bsum_hr, p.s_hr, gates, chunk, h_state.reshape(-1),
            c_state.reshape(-1), h_full, yf, ys_t, ys_b, num_threads or 0)
        h_n, c_n = h_state[T % 2, :, :Kr].copy(), c_state[0, :, :H].copy()
        _workspace.give(gates, h_state, c_state, *([h_full] if P else []))
        return h_n, c_n
