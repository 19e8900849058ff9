"""`LSTM`: PyTorch's parameters, shapes and conventions, run by fastlstm's own kernels.

Data flows one way: `_validate` turns user input into contiguous arrays of the model's dtype (or
raises), this module allocates every buffer a call needs (nothing is shared between calls, so one
model serves many Python threads at once), and `_kernels` runs the sequence with the GIL released.
"""
import os
import threading
import weakref

import numpy as np

from . import _kernels, _workspace
from ._packing import PANEL, pack, round_up
from ._validate import (check_input, check_num_threads, check_parameter,
                        check_size, check_state, check_upstream, to_numpy)

# Inference computes the input projection for a chunk of steps at a time, at most this many
# gate values (8 MiB in float32): memory stays bounded for long sequences, results do not change.
_CHUNK_VALUES = 1 << 21

_last_call = threading.local()


def _check_allocation(values, dtype, what):
    """Refuse, before any work, a call that could not allocate its buffers (rather than let the
    OS kill the process, or NumPy fail halfway through with a message that names nothing)."""
    nbytes = int(values) * np.dtype(dtype).itemsize
    if nbytes > _MAX_BYTES:
        raise MemoryError(f"{what} would need {nbytes / 2**30:.1f} GiB of buffers, more than this "
                          f"machine's {_MAX_BYTES / 2**30:.1f} GiB of memory")


def _physical_memory():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not POSIX: let NumPy decide
        return 2**62


_MAX_BYTES = _physical_memory()


def _unpad(blocks, rows, cols):
    """(4, Hp, Kp) padded gate blocks -> (4*rows, cols); a view when there is no padding."""
    return np.ascontiguousarray(blocks[:, :rows, :cols]).reshape(4 * rows, cols)


def last_num_threads():
    """Threads the last kernel call made by this Python thread actually ran (None before any)."""
    return getattr(_last_call, "num_threads", None)


def _record(team):
    _last_call.num_threads = team
    return team


class LSTM:
    """A single-layer LSTM with ``torch.nn.LSTM``'s parameters, shapes and gate order.

    Parameters
    ----------
    input_size : int
        Features per time step (I).
    hidden_size : int
        Hidden units (H).
    num_layers : int, default 1
        Only 1 so far.
    bias : bool, default True
        Whether the layer has ``bias_ih_l0`` and ``bias_hh_l0``.
    batch_first : bool, default False
        Input and output as (batch, seq_len, features) instead of (seq_len, batch, features).
        The states h and c keep the layout (num_layers, batch, hidden_size) either way.
    dtype : {np.float32, np.float64}, default np.float32
        The dtype of the parameters, of the computation and of every output.
    seed : int or None
        Seed for the initial parameters, U(-1/sqrt(H), 1/sqrt(H)) as in PyTorch.

    Notes
    -----
    Each step computes, with gate blocks i, f, g, o stacked along the 4H axis::

        i, f, g, o = split(x_t @ W_ih.T + b_ih + h_{t-1} @ W_hh.T + b_hh)
        c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
        h_t = sigmoid(o) * tanh(c_t)

    Results are bitwise identical for any ``num_threads``, from run to run, for each batch row
    alone or in a batch, and for a sequence run in chunks while carrying (h, c).
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, *,
                 dtype=np.float32, seed=None):
        self.input_size = check_size("input_size", input_size)
        self.hidden_size = check_size("hidden_size", hidden_size)
        self.num_layers = check_size("num_layers", num_layers)
        if self.num_layers != 1:
            raise NotImplementedError("num_layers > 1 is not supported yet: stack single-layer "
                                      "LSTMs, feeding each one's output to the next")
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        try:
            self.dtype = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
        if self.dtype not in PANEL:
            raise TypeError(f"dtype must be float32 or float64, got {self.dtype}")
        shapes = self._parameter_shapes()
        _check_allocation(sum(np.prod(s) for s, _ in shapes.values()) * 3, self.dtype,
                          f"the parameters of LSTM(input_size={self.input_size}, "
                          f"hidden_size={self.hidden_size})")
        rng = np.random.default_rng(seed)
        bound = 1.0 / np.sqrt(self.hidden_size)
        self._set({name: (2 * rng.random(shape, self.dtype) - 1) * self.dtype.type(bound)
                   for name, (shape, _) in shapes.items()})

    # -- parameters ---------------------------------------------------------------------------

    def _parameter_shapes(self):
        I, H = self.input_size, self.hidden_size
        shapes = {
            "weight_ih_l0": ((4 * H, I), f"(4*hidden_size, input_size) = (4*{H}, {I})"),
            "weight_hh_l0": ((4 * H, H), f"(4*hidden_size, hidden_size) = (4*{H}, {H})"),
        }
        if self.bias:
            shapes["bias_ih_l0"] = ((4 * H,), f"(4*hidden_size,) = (4*{H},)")
            shapes["bias_hh_l0"] = ((4 * H,), f"(4*hidden_size,) = (4*{H},)")
        return shapes

    def _set(self, arrays):
        """Validate, store read-only copies and repack: the only way parameters change."""
        shapes = self._parameter_shapes()
        params = dict(getattr(self, "_params", {}))
        for name, value in arrays.items():
            shape, why = shapes[name]
            value = np.array(check_parameter(name, value, shape, self.dtype, why))  # own copy
            value.flags.writeable = False
            params[name] = value
        packed = pack(params["weight_ih_l0"], params["weight_hh_l0"], params.get("bias_ih_l0"),
                      params.get("bias_hh_l0"), self.dtype)
        self._params, self._packed = params, packed  # swapped together, after all checks

    def parameters(self):
        """The parameters by PyTorch name, as read-only arrays (change them with set_parameters).
        They are views of read-only arrays, which NumPy will not make writable again."""
        return {name: value.view() for name, value in self._params.items()}

    def state_dict(self):
        """Same as parameters(): PyTorch names, read-only arrays."""
        return self.parameters()

    def set_parameters(self, **arrays):
        """Replace some or all parameters (by PyTorch name) and repack the kernels' copy."""
        unknown = sorted(set(arrays) - set(self._parameter_shapes()))
        if unknown:
            raise TypeError(f"unknown parameter name(s) {unknown}; this LSTM has "
                            f"{sorted(self._parameter_shapes())}")
        self._set(arrays)

    def load_state_dict(self, state_dict, strict=True):
        """Load parameters by PyTorch name (NumPy arrays or torch tensors), cast to the model's
        dtype. With strict, missing and unexpected keys raise KeyError."""
        state_dict = {k: to_numpy(v) for k, v in dict(state_dict).items()}
        expected = set(self._parameter_shapes())
        missing, unexpected = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
        if strict and (missing or unexpected):
            raise KeyError(f"state_dict does not match this LSTM: missing keys {missing}, "
                           f"unexpected keys {unexpected}")
        self._set({k: v for k, v in state_dict.items() if k in expected})

    @classmethod
    def from_state_dict(cls, state_dict, *, batch_first=False, dtype=None):
        """Build an LSTM from PyTorch-named parameters, sizes inferred from the shapes. The dtype
        is that of weight_ih_l0 when it is float32/float64 (float32 otherwise) unless given."""
        state_dict = {k: to_numpy(v) for k, v in dict(state_dict).items()}
        if "weight_ih_l0" not in state_dict or "weight_hh_l0" not in state_dict:
            raise KeyError(f"state_dict needs weight_ih_l0 and weight_hh_l0; got keys "
                           f"{sorted(state_dict)}")
        for key in state_dict:
            if key.endswith("_reverse") or key.startswith("weight_hr") or key.endswith("_l1"):
                raise NotImplementedError(f"state_dict key {key!r}: only single-layer, "
                                          "unidirectional LSTMs without projection so far")
        w_ih = np.asarray(state_dict["weight_ih_l0"])
        if w_ih.ndim != 2 or w_ih.shape[0] % 4:
            raise ValueError(f"weight_ih_l0 must have shape (4*hidden_size, input_size); got "
                             f"{w_ih.shape}")
        if dtype is None:
            dtype = w_ih.dtype if w_ih.dtype in PANEL else np.float32
        model = cls(w_ih.shape[1], w_ih.shape[0] // 4, bias="bias_ih_l0" in state_dict,
                    batch_first=batch_first, dtype=dtype)
        model.load_state_dict(state_dict)
        return model

    @classmethod
    def from_torch(cls, module):
        """The same LSTM as a ``torch.nn.LSTM`` (single layer, unidirectional, no projection),
        in its dtype (float64 stays float64; other float dtypes become float32)."""
        for option, default in (("num_layers", 1), ("bidirectional", False), ("proj_size", 0)):
            if getattr(module, option, default) != default:
                raise NotImplementedError(f"torch LSTM with {option}="
                                          f"{getattr(module, option)} is not supported yet")
        sd = {k: v.detach().cpu() for k, v in module.state_dict().items()}
        wide = str(sd["weight_ih_l0"].dtype) == "torch.float64"
        sd = {k: (v.double() if wide else v.float()).numpy() for k, v in sd.items()}
        return cls.from_state_dict(sd, batch_first=bool(module.batch_first),
                                   dtype=np.float64 if wide else np.float32)

    def __repr__(self):
        return (f"LSTM({self.input_size}, {self.hidden_size}, bias={self.bias}, "
                f"batch_first={self.batch_first}, dtype={self.dtype.name})")

    # -- running ------------------------------------------------------------------------------

    def _prepare(self, x, hx, train):
        shape = getattr(x, "shape", None)
        if shape is not None and len(shape) in (2, 3):  # before x is copied or converted
            T = shape[0] if (len(shape) == 2 or not self.batch_first) else shape[1]
            B = 1 if len(shape) == 2 else (shape[0] if self.batch_first else shape[1])
            Hp, Ip = round_up(self.hidden_size, 16), round_up(self.input_size, 16)
            per_step = (2 * Ip + 8 * Hp) if train else (Ip + 5 * Hp)
            _check_allocation(T * B * per_step, self.dtype, f"x of shape {tuple(shape)}")
        x, unbatched = check_input(x, self.input_size, self.batch_first, self.dtype)
        T, B = (x.shape[1], x.shape[0]) if self.batch_first else (x.shape[0], x.shape[1])
        h0, c0 = check_state(hx, B, self.hidden_size, unbatched, self.batch_first, self.dtype)
        return x, unbatched, T, B, h0, c0

    def _strides(self, T, B, width):
        """Element strides (per step, per batch row) of a (T, B, width) sequence in user layout."""
        return (width, T * width) if self.batch_first else (B * width, width)

    def _user_shape(self, T, B, width, unbatched):
        if unbatched:
            return (T, width)
        return (B, T, width) if self.batch_first else (T, B, width)

    def _state_out(self, state, unbatched):
        """A fresh (1, B, H) copy of a (B, H) state, or (1, H) for unbatched input."""
        return np.array(state).reshape((1, -1) if unbatched else (1,) + state.shape)

    def _initial_state(self, slots, B, Hp, first):
        """`slots` x B x Hp scratch, slot 0 = `first` (B, H) with zero padding; the kernels
        write every other slot whole."""
        state = _workspace.take((slots, B, Hp), self.dtype)
        state[0, :, : first.shape[1]] = first
        state[0, :, first.shape[1]:] = 0
        return state

    def __call__(self, x, hx=None, *, num_threads=None):
        """Run the sequence: ``output, (h_n, c_n) = lstm(x, hx)``.

        x is (seq_len, batch, input_size), (batch, seq_len, input_size) with batch_first, or
        (seq_len, input_size) for one unbatched sequence. hx = (h0, c0), each (1, batch,
        hidden_size) ((1, hidden_size) unbatched); None means zeros. output has x's layout with
        hidden_size features; h_n and c_n have h0's shape. num_threads=None uses OpenMP's setting.
        """
        nt = check_num_threads(num_threads)
        x, unbatched, T, B, h0, c0 = self._prepare(x, hx, train=False)
        p, H = self._packed, self.hidden_size
        Hp = round_up(H, PANEL[self.dtype])
        y = np.empty(self._user_shape(T, B, H, unbatched), self.dtype)
        h_state = self._initial_state(2, B, Hp, h0)
        c_state = self._initial_state(1, B, Hp, c0)
        chunk = max(1, min(T, _CHUNK_VALUES // max(1, B * 4 * Hp)))
        gates = _workspace.take(chunk * B * 4 * Hp, self.dtype)
        xs_t, xs_b = self._strides(T, B, self.input_size)
        ys_t, ys_b = self._strides(T, B, H)
        _record(_kernels.forward(
            x.reshape(-1), xs_t, xs_b, T, B, self.input_size, H, p.w_ih.reshape(-1),
            p.w_hh.reshape(-1), None if p.bias is None else p.bias, gates, chunk,
            h_state.reshape(-1), c_state.reshape(-1), None, y.reshape(-1), ys_t, ys_b, nt))
        h_n = self._state_out(h_state[T % 2, :, :H], unbatched)
        c_n = self._state_out(c_state[0, :, :H], unbatched)
        _workspace.give(gates, h_state, c_state)
        return y, (h_n, c_n)

    forward = __call__

    def forward_train(self, x, hx=None, *, num_threads=None):
        """Forward that keeps what the backward needs.

        Returns ``output, (h_n, c_n), backprop``; ``backprop(grad_output=None, grad_h_n=None,
        grad_c_n=None, *, num_threads=None)`` returns the gradients as a dict keyed ``x``,
        ``h0``, ``c0`` and the parameter names. It can be called any number of times; it uses
        the parameters as they were at this forward, even if they are set again meanwhile.
        """
        nt = check_num_threads(num_threads)
        x, unbatched, T, B, h0, c0 = self._prepare(x, hx, train=True)
        p, I, H = self._packed, self.input_size, self.hidden_size
        NR = PANEL[self.dtype]
        Hp, Ip = round_up(H, NR), round_up(I, NR)
        # x time-major and padded: the input of the projection and of the weight gradient
        xpad = _workspace.take((T, B, Ip), self.dtype)
        xpad[:, :, :I] = x.transpose(1, 0, 2) if self.batch_first else x
        xpad[:, :, I:] = 0
        gates = _workspace.take((T, B, 4 * Hp), self.dtype)
        h_state = self._initial_state(T + 1, B, Hp, h0)
        c_state = self._initial_state(T + 1, B, Hp, c0)
        tc_state = _workspace.take((T, B, Hp), self.dtype)
        y = np.empty(self._user_shape(T, B, H, unbatched), self.dtype)
        ys_t, ys_b = self._strides(T, B, H)
        _record(_kernels.forward(
            xpad.reshape(-1), B * Ip, Ip, T, B, I, H, p.w_ih.reshape(-1), p.w_hh.reshape(-1),
            p.bias, gates.reshape(-1), max(T, 1), h_state.reshape(-1), c_state.reshape(-1),
            tc_state.reshape(-1), y.reshape(-1), ys_t, ys_b, nt))
        h_n = self._state_out(h_state[T, :, :H], unbatched)
        c_n = self._state_out(c_state[T, :, :H], unbatched)
        shapes = (y.shape, h_n.shape, x.shape, unbatched)
        saved = (p, T, B, gates, h_state, c_state, tc_state, xpad)

        def backprop(grad_output=None, grad_h_n=None, grad_c_n=None, *, num_threads=None):
            return self._backward(saved, shapes, grad_output, grad_h_n, grad_c_n, num_threads)

        # the buffers serve the next steps once nothing can call this backprop any more
        weakref.finalize(backprop, _workspace.give, gates, h_state, c_state, tc_state, xpad)
        return y, (h_n, c_n), backprop

    def _backward(self, saved, shapes, grad_output, grad_h_n, grad_c_n, num_threads):
        nt = check_num_threads(num_threads)
        p, T, B, gates, h_state, c_state, tc_state, xpad = saved
        y_shape, state_shape, x_shape, unbatched = shapes
        dy = check_upstream("grad_output", grad_output, y_shape, self.dtype)
        dh_n = check_upstream("grad_h_n", grad_h_n, state_shape, self.dtype)
        dc_n = check_upstream("grad_c_n", grad_c_n, state_shape, self.dtype)
        if dy is None and dh_n is None and dc_n is None:
            raise ValueError("backprop needs at least one of grad_output, grad_h_n, grad_c_n")
        I, H = p.input_size, p.hidden_size
        NR = PANEL[self.dtype]
        Hp, Ip = round_up(H, NR), round_up(I, NR)
        dh = np.zeros((B, Hp), self.dtype)
        dc = np.zeros((B, Hp), self.dtype)
        if dh_n is not None:
            dh[:, :H] = dh_n.reshape(B, H)
        if dc_n is not None:
            dc[:, :H] = dc_n.reshape(B, H)
        chunk = max(1, min(T, _CHUNK_VALUES // max(1, B * 4 * Hp)))
        dgates = _workspace.take(chunk * B * 4 * Hp, self.dtype)
        dx = np.empty((T, B, Ip), self.dtype)
        dw_ih = np.empty((4, Hp, Ip), self.dtype)  # PyTorch's gate blocks, padded
        dw_hh = np.empty((4, Hp, Hp), self.dtype)
        db = np.empty(4 * Hp, self.dtype) if p.bias is not None else None
        dys_t, dys_b = self._strides(T, B, H)
        _record(_kernels.backward(
            T, B, I, H, gates.reshape(-1), c_state.reshape(-1), tc_state.reshape(-1),
            h_state.reshape(-1), xpad.reshape(-1), p.w_ih_t.reshape(-1), p.w_hh_t.reshape(-1),
            None if dy is None else dy.reshape(-1), dys_t, dys_b, dh.reshape(-1),
            dc.reshape(-1), dgates, chunk, dx.reshape(-1), dw_ih.reshape(-1),
            dw_hh.reshape(-1), db, nt))
        _workspace.give(dgates)
        dx = dx[:, :, :I]
        if self.batch_first:
            dx = dx.transpose(1, 0, 2)
        rows = p.to_torch_rows
        grads = {
            "x": np.ascontiguousarray(dx).reshape(x_shape if not unbatched else (T, I)),
            "h0": self._state_out(dh[:, :H], unbatched),
            "c0": self._state_out(dc[:, :H], unbatched),
            "weight_ih_l0": _unpad(dw_ih, H, I),
            "weight_hh_l0": _unpad(dw_hh, H, H),
        }
        if db is not None:
            grads["bias_ih_l0"] = db[rows]
            grads["bias_hh_l0"] = db[rows]  # the same values, a separate array
        return grads
