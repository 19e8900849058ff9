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

For now `run` computes through `reference.forward_int8`, the scheme's NumPy definition, so the
results are the definition's, bitwise, at NumPy's speed; num_threads is not used (NumPy's BLAS
has its own setting).
"""
import numpy as np

from . import reference
from ._direction import _Direction


class Int8Direction(_Direction):
    """One direction's int8 weights, run by the NumPy definition of the scheme."""

    dtype = np.dtype(np.float32)

    def __init__(self, params):
        self.params = {"weight_ih": params["weight_ih"], "weight_hh": params["weight_hh"],
                       "bias": params.get("bias"), "weight_hr": params.get("weight_hr")}
        q_ih, q_hh = self.params["weight_ih"][0], self.params["weight_hh"][0]
        self.input_size = q_ih.shape[1]
        self.hidden_size = q_ih.shape[0] // 4
        self.out_size = q_hh.shape[1]
        self.proj_size = 0 if self.params["weight_hr"] is None else self.out_size

    def run(self, x, h0, c0, y, num_threads):
        out, h_n, c_n = reference.forward_int8(x, **self.params, h0=h0, c0=c0)
        y[...] = out
        return h_n, c_n
