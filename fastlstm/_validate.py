"""Turn whatever the user passed into arrays the kernels accept, or raise the one clear error.

Every message names the argument, the shape it expected and why (in terms of input_size,
hidden_size, seq_len and batch), and what it got. Nothing below this module raises on user input.
"""
from __future__ import annotations

import operator
from typing import Any, Optional, Sequence, Tuple

import numpy as np
import numpy.typing as npt

from ._typing import FloatArray


def to_numpy(value: Any) -> Any:
    """A NumPy view of an ndarray, a torch tensor (detached, on the CPU) or anything array-like."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch.Tensor, without importing torch
        value = value.detach().cpu()
        try:
            return value.numpy()
        except TypeError:  # bfloat16 and other dtypes NumPy lacks: widen floats to float32
            if value.is_floating_point():
                return value.float().numpy()
            raise
    return value


def as_float_array(name: str, value: Any, dtype: npt.DTypeLike) -> FloatArray:
    """`value` as an aligned, C-contiguous array of the model's float dtype, never a view the caller
    owns for writing (kernels only read it). Other float dtypes are cast; anything else is a TypeError."""
    if type(value).__name__ == "PackedSequence" and hasattr(value, "batch_sizes"):
        raise TypeError(
            f"{name} is a torch PackedSequence; fastlstm.LSTM takes a padded array and the "
            f"lengths: padded, lengths = torch.nn.utils.rnn.pad_packed_sequence(packed), then "
            f"lstm(padded, lengths=lengths). fastlstm.torch.LSTM (a torch.nn.Module) takes the "
            f"PackedSequence itself")
    value = to_numpy(value)
    if not isinstance(value, np.ndarray):
        try:
            value = np.asarray(value)
        except (ValueError, TypeError) as exc:  # ragged nested lists and the like
            raise TypeError(f"{name} must be an array of floats; could not make one from "
                            f"{type(value).__name__}: {exc}") from None
    if value.dtype.kind != "f":
        raise TypeError(f"{name} must hold floating-point numbers (it is cast to the model's "
                        f"dtype {np.dtype(dtype).name}); got dtype {value.dtype}")
    out: FloatArray = np.asarray(value, dtype=dtype, order="C")  # (ascontiguousarray: 0-D -> 1-D)
    # A view of a byte buffer at an odd offset: C may not load a double from it (UBSan says so)
    return out if out.flags.aligned else out.copy()


def check_size(name: str, value: Any) -> int:
    """A layer size: a positive int (bools and floats are refused, as in PyTorch)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return int(value)


def check_num_threads(num_threads: Any) -> int:
    """None (OpenMP's own setting) or a positive int; returned as the kernels' 0-means-default."""
    if num_threads is None:
        return 0
    if isinstance(num_threads, bool):
        raise TypeError(f"num_threads must be None or a positive int, got {num_threads!r}")
    try:
        n = operator.index(num_threads)
    except TypeError:
        raise TypeError(f"num_threads must be None or a positive int, got "
                        f"{type(num_threads).__name__} {num_threads!r}") from None
    if n < 1:
        raise ValueError(f"num_threads must be None or a positive int, got {n}")
    return min(n, 2**31 - 1)  # the kernels cap the team at the work available anyway


def _layout(batch_first: bool) -> str:
    return "(batch, seq_len, input_size)" if batch_first else "(seq_len, batch, input_size)"


def check_input(x: Any, input_size: int, batch_first: bool,
                dtype: npt.DTypeLike) -> Tuple[FloatArray, bool]:
    """Validate x; returns (x as a 3-D contiguous array in the user's layout, unbatched)."""
    x = as_float_array("x", x, dtype)
    layout = _layout(batch_first)
    if x.ndim not in (2, 3):
        raise ValueError(
            f"x must be 3-D {layout} (batch_first={batch_first}), or 2-D (seq_len, input_size) "
            f"for one unbatched sequence, with input_size={input_size}; got a {x.ndim}-D array "
            f"of shape {x.shape}"
            + (". For a single time step use x[None] (seq_len=1)" if x.ndim == 1 else ""))
    if x.shape[-1] != input_size:
        expected = layout.replace("input_size", str(input_size))
        hint = ""
        axes = [k for k in range(x.ndim - 1) if x.shape[k] == input_size]
        if axes:
            hint = (f". Axis {axes[0]} has size {input_size}: if the features are there, move "
                    f"them to the last axis (e.g. np.moveaxis(x, {axes[0]}, -1))")
        raise ValueError(
            f"x has {x.shape[-1]} features in its last axis, but this LSTM was built with "
            f"input_size={input_size}: expected x of shape {expected} or (seq_len, "
            f"{input_size}) unbatched; got {x.shape}{hint}")
    unbatched = x.ndim == 2
    if unbatched:
        x = x[:, None, :] if not batch_first else x[None, :, :]
    return x, unbatched


def check_state(hx: Any, batch: int, layers: int, directions: int, h_size: int, c_size: int,
                unbatched: bool, batch_first: bool,
                dtype: npt.DTypeLike) -> Tuple[FloatArray, FloatArray]:
    """Validate hx = (h0, c0); returns contiguous (layers*directions, batch, h_size) and
    (..., c_size) arrays (h_size is proj_size when the model projects), or zeros for None."""
    S = layers * directions
    if hx is None:
        return np.zeros((S, batch, h_size), dtype), np.zeros((S, batch, c_size), dtype)
    if not isinstance(hx, (tuple, list)) or len(hx) != 2:
        raise TypeError(f"hx must be a tuple (h0, c0) of two arrays, got "
                        f"{type(hx).__name__}" + (f" of length {len(hx)}"
                                                  if isinstance(hx, (tuple, list)) else ""))
    out = []
    rows = f"num_layers * num_directions = {layers} * {directions}" if S > 1 else \
        "num_layers * num_directions"
    for name, value, size in (("h0", hx[0], h_size), ("c0", hx[1], c_size)):
        value = as_float_array(name, value, dtype)
        width = "proj_size" if size != c_size else "hidden_size"
        expected: Tuple[int, ...]
        if unbatched:
            expected = (S, size)
            why = f"({rows}, {width}) = ({S}, {size}) for an unbatched 2-D x"
        else:
            expected = (S, batch, size)
            why = f"({rows}, batch, {width}) = ({S}, {batch}, {size}), batch taken from x"
        if value.shape != expected:
            raise ValueError(f"{name} must have shape {why}; got {value.shape}"
                             f"{_state_hint(name, value.shape, expected, unbatched, batch_first, h_size, c_size, directions)}")
        out.append(value.reshape(S, -1, size))
    return out[0], out[1]


def _state_hint(name: str, shape: Tuple[int, ...], expected: Tuple[int, ...], unbatched: bool,
                batch_first: bool, h_size: int, c_size: int, directions: int) -> str:
    """The fix for the state-shape mistakes people make (seeds: missing layer axis, batch_first
    applied to the states, unbatched x with batched states, one state for a stacked model)."""
    S, size = expected[0], expected[-1]
    if shape == expected[1:]:
        if S == 1:
            return f". It lacks the leading layer axis: pass {name}[None]"
        return (f". It lacks the leading layer axis: this LSTM takes {S} initial states, one per "
                f"layer and direction, row layer*{directions} + direction; stack them "
                f"(np.stack) or repeat one: np.broadcast_to({name}, {expected})")
    if len(shape) != len(expected) and unbatched and len(shape) == 3 and shape[1] == 1:
        return (f". x is unbatched (2-D), so the states are 2-D too: pass "
                f"{name}[{'0' if S == 1 else ':, 0'}]")
    if len(shape) == len(expected) and shape[-1] != size and shape[-1] in (h_size, c_size):
        return (f". With proj_size={h_size}, h0/h_n hold proj_size features and c0/c_n hold "
                f"hidden_size={c_size}")
    if not unbatched and len(shape) == 3:
        batch = expected[1]
        if shape == (batch, S, size) and batch != S:
            return (f". States are (num_layers * num_directions, batch, ...)"
                    f"{' even with batch_first=True' if batch_first else ''}: pass "
                    f"{name}.transpose(1, 0, 2)")
        if shape[0] == S and shape[1] != batch:
            return (f". Its batch axis (1) has {shape[1]} rows but x has batch {batch} (x is "
                    f"{'(batch, seq_len, ...)' if batch_first else '(seq_len, batch, ...)'} "
                    f"with batch_first={batch_first})")
        if shape[1:] == expected[1:]:
            return (f". Its first axis must count the layers times the directions ({S}), one "
                    f"state per layer and direction, row layer*{directions} + direction")
    return ""


def check_lengths(lengths: Any, batch: int,
                  seq_len: int) -> Optional[npt.NDArray[np.intp]]:
    """None, or per-sequence lengths: integers in [0, seq_len], one per batch row."""
    if lengths is None:
        return None
    lengths = to_numpy(lengths)
    arr = np.asarray(lengths)
    if arr.size == 0 and arr.dtype.kind == "f":  # [] is float64 to NumPy: an empty batch's lengths
        arr = arr.astype(np.intp)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"lengths must be integers (one per sequence, each in [0, seq_len]); got "
                        f"dtype {arr.dtype}" + (": pass lengths.astype(int)"
                                                if arr.dtype.kind in "fb" else ""))
    if arr.shape != (batch,):
        raise ValueError(f"lengths must have shape (batch,) = ({batch},), one length per "
                         f"sequence of x; got shape {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() > seq_len):
        bad = arr[(arr < 0) | (arr > seq_len)]
        raise ValueError(f"lengths must lie in [0, seq_len] = [0, {seq_len}]; got {bad[:5].tolist()}"
                         f"{' ...' if bad.size > 5 else ''}")
    return arr.astype(np.intp)


def check_upstream(name: str, value: Any, expected_shape: Sequence[int],
                   dtype: npt.DTypeLike) -> Optional[FloatArray]:
    """An upstream gradient: None, or an array of exactly the shape of what it is the gradient of."""
    if value is None:
        return None
    array = as_float_array(name, value, dtype)
    if array.shape != tuple(expected_shape):
        of = {"grad_output": "output", "grad_h_n": "h_n", "grad_c_n": "c_n"}[name]
        raise ValueError(f"{name} must have the shape of {of}, {tuple(expected_shape)}; "
                         f"got {array.shape}")
    return array


def check_parameter(name: str, value: Any, expected_shape: Sequence[int], dtype: npt.DTypeLike,
                    why: str) -> FloatArray:
    """A parameter array of exactly `expected_shape` (why: how that shape follows from the sizes)."""
    array = as_float_array(name, value, dtype)
    if array.shape != tuple(expected_shape):
        hint = ""
        if array.ndim == 2 and array.shape[::-1] == tuple(expected_shape):
            hint = (f". It looks transposed (Keras stores this weight as {array.shape}): "
                    f"pass {name}.T")
        raise ValueError(f"{name} must have shape {tuple(expected_shape)} ({why}); "
                         f"got {array.shape}{hint}")
    return array
