"""Turn whatever the user passed into arrays the kernels accept, or raise the one clear error.

Every message names the argument, the shape it expected and why (in terms of input_size,
hidden_size, seq_len and batch), and what it got. Nothing below this module raises on user input.
"""
import operator

import numpy as np


def to_numpy(value):
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


def as_float_array(name, value, dtype):
    """`value` as a C-contiguous array of the model's float dtype, never a view the caller owns
    for writing (kernels only read it). Other float dtypes are cast; anything else is a TypeError."""
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
    return np.asarray(value, dtype=dtype, order="C")  # (ascontiguousarray would make 0-D 1-D)


def check_size(name, value):
    """A layer size: a positive int (bools and floats are refused, as in PyTorch)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return int(value)


def check_num_threads(num_threads):
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


def _layout(batch_first):
    return "(batch, seq_len, input_size)" if batch_first else "(seq_len, batch, input_size)"


def check_input(x, input_size, batch_first, dtype):
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


def check_state(hx, batch, hidden_size, unbatched, batch_first, dtype):
    """Validate hx = (h0, c0); returns (h0, c0) as contiguous (batch, hidden) arrays, or zeros."""
    if hx is None:
        zeros = np.zeros((batch, hidden_size), dtype)
        return zeros, zeros
    if not isinstance(hx, (tuple, list)) or len(hx) != 2:
        raise TypeError(f"hx must be a tuple (h0, c0) of two arrays, got "
                        f"{type(hx).__name__}" + (f" of length {len(hx)}"
                                                  if isinstance(hx, (tuple, list)) else ""))
    out = []
    for name, value in zip(("h0", "c0"), hx):
        value = as_float_array(name, value, dtype)
        if unbatched:
            expected = (1, hidden_size)
            why = ("(num_layers * num_directions, hidden_size) = (1, "
                   f"{hidden_size}) for an unbatched 2-D x")
        else:
            expected = (1, batch, hidden_size)
            why = ("(num_layers * num_directions, batch, hidden_size) = "
                   f"(1, {batch}, {hidden_size}), batch taken from x")
        if value.shape != expected:
            hint = ""
            if value.shape == expected[1:]:
                hint = f". It lacks the leading layer axis: pass {name}[None]"
            elif unbatched and value.shape == (1, 1, hidden_size):
                hint = f". x is unbatched (2-D), so the states are 2-D too: pass {name}[0]"
            elif (not unbatched and value.ndim == 3 and value.shape[0] == batch and
                  value.shape[1] == 1 and value.shape[2] == hidden_size):
                hint = (f". States are (num_layers, batch, hidden_size)"
                        f"{' even with batch_first=True' if batch_first else ''}: pass "
                        f"{name}.transpose(1, 0, 2)")
            elif not unbatched and value.ndim == 3 and value.shape[1] != batch:
                hint = (f". Its batch axis (1) has {value.shape[1]} rows but x has batch "
                        f"{batch} (x is {'(batch, seq_len, ...)' if batch_first else '(seq_len, batch, ...)'}"
                        f" with batch_first={batch_first})")
            raise ValueError(f"{name} must have shape {why}; got {value.shape}{hint}")
        out.append(value.reshape(-1, hidden_size))
    return out[0], out[1]


def check_upstream(name, value, expected_shape, dtype):
    """An upstream gradient: None, or an array of exactly the shape of what it is the gradient of."""
    if value is None:
        return None
    value = as_float_array(name, value, dtype)
    if value.shape != tuple(expected_shape):
        of = {"grad_output": "output", "grad_h_n": "h_n", "grad_c_n": "c_n"}[name]
        raise ValueError(f"{name} must have the shape of {of}, {tuple(expected_shape)}; "
                         f"got {value.shape}")
    return value


def check_parameter(name, value, expected_shape, dtype, why):
    """A parameter array of exactly `expected_shape` (why: how that shape follows from the sizes)."""
    value = as_float_array(name, value, dtype)
    if value.shape != tuple(expected_shape):
        hint = ""
        if value.ndim == 2 and value.shape[::-1] == tuple(expected_shape):
            hint = (f". It looks transposed (Keras stores this weight as {value.shape}): "
                    f"pass {name}.T")
        raise ValueError(f"{name} must have shape {tuple(expected_shape)} ({why}); "
                         f"got {value.shape}{hint}")
    return value
