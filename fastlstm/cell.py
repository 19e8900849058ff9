"""`LSTMCell`: one step, ``torch.nn.LSTMCell``'s parameters and call, on fastlstm's kernels.

A cell is a one-layer LSTM run for one step: it holds an `LSTM` and renames PyTorch's
``weight_ih_l0`` & co. to the cell's ``weight_ih`` & co., and its states lose the layer axis.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Tuple, Type, TypeVar

import numpy as np
import numpy.typing as npt

from ._typing import CellBackprop, FloatArray, Gradients, State
from ._validate import as_float_array, to_numpy
from .interop.torch import check_torch_lstm, is_torch_cell
from .model import LSTM

if TYPE_CHECKING:  # (for annotations only: quantized imports this module)
    from .quantized import QuantizedLSTMCell

_C = TypeVar("_C", bound="LSTMCell")

_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
_LAYER_SUFFIX = re.compile(r"\b(" + "|".join(_NAMES) + r")_l0\b")


class LSTMCell:
    """``h, c = cell(x, (h, c))``: one LSTM step with ``torch.nn.LSTMCell``'s conventions.

    Parameters
    ----------
    input_size, hidden_size : int
        Features of x (I) and hidden units (H).
    bias : bool, default True
        Whether the cell has ``bias_ih`` and ``bias_hh``.
    dtype : {np.float32, np.float64}, default np.float32
        The dtype of the parameters, of the computation and of every output.
    seed : int or None
        Seed for the initial parameters, U(-1/sqrt(H), 1/sqrt(H)) as in PyTorch.

    Raises
    ------
    TypeError
        A size that is not an int, or a dtype other than float32 and float64.
    ValueError
        A size below 1.
    MemoryError
        Parameters larger than this machine's memory.

    Notes
    -----
    x is (batch, input_size) or (input_size,); h and c are (batch, hidden_size), or
    (hidden_size,) with a 1-D x; None means zeros. The cell runs as a one-layer `LSTM` of one
    step, with the same kernels and guarantees.
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *,
                 dtype: npt.DTypeLike = np.float32, seed: Optional[int] = None) -> None:
        try:
            self._lstm = LSTM(input_size, hidden_size, bias=bias, dtype=dtype, seed=seed)
        except MemoryError as exc:  # it names the LSTM inside; the user made a cell
            raise MemoryError(str(exc).replace("LSTM(", "LSTMCell(", 1)) from None
        self.input_size, self.hidden_size = self._lstm.input_size, self._lstm.hidden_size
        self.bias, self.dtype = self._lstm.bias, self._lstm.dtype

    # -- parameters: the LSTM's, without the layer suffix --------------------------------------

    def parameters(self) -> Dict[str, FloatArray]:
        """The parameters by ``torch.nn.LSTMCell``'s names, as read-only arrays.

        Returns
        -------
        dict of str to ndarray
            ``weight_ih`` (4H, I), ``weight_hh`` (4H, H) and, with bias, ``bias_ih`` and
            ``bias_hh`` (4H,). Change them with `set_parameters`.
        """
        return {k[:-3]: v for k, v in self._lstm.parameters().items()}

    state_dict = parameters

    def set_parameters(self, **arrays: npt.ArrayLike) -> None:
        """Replace some or all parameters by name, and repack the kernels' copy.

        Parameters
        ----------
        **arrays : array_like
            ``weight_ih=``, ``weight_hh=``, ``bias_ih=``, ``bias_hh=``, each of exactly its
            shape; other float dtypes are cast to the cell's.

        Raises
        ------
        TypeError
            An unknown name, or values that are not floats.
        ValueError
            An array of the wrong shape.
        """
        unknown = sorted(set(arrays) - set(self.parameters()))
        if unknown:
            raise TypeError(f"unknown parameter name(s) {unknown}; this LSTMCell has "
                            f"{sorted(self.parameters())}")
        try:
            self._lstm.set_parameters(**{f"{k}_l0": v for k, v in arrays.items()})
        except (TypeError, ValueError) as exc:  # in the cell's names, which have no layer
            raise type(exc)(_LAYER_SUFFIX.sub(r"\1", str(exc))) from None

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> None:
        """Load parameters by ``torch.nn.LSTMCell``'s names, cast to the cell's dtype.

        Parameters
        ----------
        state_dict : mapping of str to array_like or torch.Tensor
            Such as ``torch.nn.LSTMCell.state_dict()``.
        strict : bool, default True
            Require exactly this cell's names; without it, unknown ones are ignored.

        Raises
        ------
        KeyError
            With ``strict``, missing or unexpected names.
        TypeError, ValueError
            As `set_parameters`.
        """
        state_dict = dict(state_dict)
        expected = set(self.parameters())
        missing, unexpected = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
        if strict and (missing or unexpected):
            raise KeyError(f"state_dict does not match {self!r}: missing keys {missing}, "
                           f"unexpected keys {unexpected}")
        self.set_parameters(**{k: v for k, v in state_dict.items() if k in expected})

    @classmethod
    def from_state_dict(cls: Type[_C], state_dict: Mapping[str, Any], *,
                        dtype: Optional[npt.DTypeLike] = None) -> _C:
        """An LSTMCell from ``torch.nn.LSTMCell``-named parameters.

        Parameters
        ----------
        state_dict : mapping of str to array_like or torch.Tensor
            ``weight_ih`` (4H, I), ``weight_hh`` (4H, H) and optionally ``bias_ih``,
            ``bias_hh`` (4H,).
        dtype : {np.float32, np.float64}, optional
            Default: ``weight_ih``'s dtype when it is float32 or float64, else float32.

        Returns
        -------
        LSTMCell
            A cell holding copies of these parameters.

        Raises
        ------
        KeyError
            ``weight_ih`` or ``weight_hh`` is missing, or unexpected names.
        ValueError
            Shapes that do not form a cell.
        """
        state_dict = {k: to_numpy(v) for k, v in dict(state_dict).items()}
        if "weight_ih" not in state_dict or "weight_hh" not in state_dict:
            raise KeyError(f"state_dict needs weight_ih and weight_hh (torch.nn.LSTMCell's "
                           f"names); got keys {sorted(state_dict)}")
        w_ih = np.asarray(state_dict["weight_ih"])
        if w_ih.ndim != 2 or w_ih.shape[0] % 4:
            raise ValueError(f"weight_ih must have shape (4*hidden_size, input_size); got "
                             f"{w_ih.shape}")
        if dtype is None:
            dtype = w_ih.dtype if w_ih.dtype in (np.float32, np.float64) else np.float32
        cell = cls(w_ih.shape[1], w_ih.shape[0] // 4, bias="bias_ih" in state_dict, dtype=dtype)
        cell.load_state_dict(state_dict)
        return cell

    @classmethod
    def from_torch(cls: Type[_C], module: Any) -> _C:
        """The same cell as a ``torch.nn.LSTMCell``.

        Parameters
        ----------
        module : torch.nn.LSTMCell
            Its parameters are copied (from any device); float64 stays float64, other float
            dtypes become float32.

        Returns
        -------
        LSTMCell
            A cell that gives ``module``'s results.

        Raises
        ------
        KeyError, ValueError
            ``module``'s parameters do not form a cell (see `from_state_dict`).
        TypeError
            ``module`` is not a ``torch.nn.LSTMCell`` (an ``nn.LSTM``, a GRU, an RNN...): the
            message names what it got and what to use.
        """
        check_torch_lstm(module)
        if not is_torch_cell(module):
            raise TypeError(f"LSTMCell.from_torch takes a torch.nn.LSTMCell; got "
                            f"{type(module).__qualname__} (a whole-sequence LSTM): use "
                            f"fastlstm.LSTM.from_torch")
        sd = {k: v.detach().cpu() for k, v in module.state_dict().items()}
        wide = str(sd["weight_ih"].dtype) == "torch.float64"
        return cls.from_state_dict({k: (v.double() if wide else v.float()).numpy()
                                    for k, v in sd.items()},
                                   dtype=np.float64 if wide else np.float32)

    def quantize(self, mode: str = "int8") -> QuantizedLSTMCell:
        """An inference copy of this cell with quantized weights: ``q = cell.quantize("int8")``.

        Parameters
        ----------
        mode : str, default "int8"
            The scheme (see `LSTM.quantize`).

        Returns
        -------
        QuantizedLSTMCell
            LSTMCell's call (``h, c = q(x, (h, c))``) in this cell's dtype; it does not train.
            This cell is not changed.

        Raises
        ------
        ValueError
            An unknown mode (the message lists the modes), or a size over
            `fastlstm.reference.INT8_MAX_K`.
        """
        from .quantized import QuantizedLSTMCell
        return QuantizedLSTMCell(self, mode)

    def __repr__(self) -> str:
        return (f"LSTMCell({self.input_size}, {self.hidden_size}"
                f"{'' if self.bias else ', bias=False'}, dtype={self.dtype.name})")

    # -- running ------------------------------------------------------------------------------

    def _prepare(self, x: Any, hx: Any) -> Tuple[FloatArray, State, bool]:
        """x as a one-step sequence (1, B, I) and the states as (1, B, H)."""
        shape = getattr(x, "shape", None)
        if shape is not None and len(shape) == 2:  # before x is copied
            self._lstm._check_call_size(1, shape[0], False, f"x of shape {tuple(shape)}")
        x = as_float_array("x", x, self.dtype)
        I, H = self.input_size, self.hidden_size
        if x.ndim not in (1, 2) or x.shape[-1] != I:
            raise ValueError(f"x must have shape (batch, input_size) = (batch, {I}), or ({I},) "
                             f"for one sample; got {x.shape}"
                             + (". LSTMCell runs one step: for a sequence use fastlstm.LSTM"
                                if x.ndim == 3 else ""))
        unbatched = x.ndim == 1
        B = 1 if unbatched else x.shape[0]
        expected = (H,) if unbatched else (B, H)
        if hx is None:
            states: List[FloatArray] = [np.zeros((1, B, H), self.dtype)] * 2
        else:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(f"hx must be a tuple (h, c) of two arrays, got "
                                f"{type(hx).__name__}")
            states = []
            for name, s in zip(("h", "c"), hx):
                s = as_float_array(name, s, self.dtype)
                if s.shape != expected:
                    hint = ""
                    if s.ndim == len(expected) + 1 and s.shape[0] == 1 and s.shape[1:] == expected:
                        hint = (f". LSTMCell states have no layer axis (nn.LSTM's do): pass "
                                f"{name}[0]")
                    raise ValueError(f"{name} must have shape {expected} ((batch, hidden_size), "
                                     f"batch taken from x{', 1-D for a 1-D x' if unbatched else ''}"
                                     f"); got {s.shape}{hint}")
                states.append(s.reshape(1, B, H))
        return x.reshape(1, B, I), (states[0], states[1]), unbatched

    def __call__(self, x: npt.ArrayLike, hx: Optional[Tuple[npt.ArrayLike, npt.ArrayLike]] = None,
                 *, num_threads: Optional[int] = None) -> State:
        """One step: ``h, c = cell(x, (h, c))``.

        Parameters
        ----------
        x : array_like
            (batch, input_size), or (input_size,) for one sample.
        hx : (h, c) or None
            Each (batch, hidden_size), or (hidden_size,) with a 1-D x; None means zeros.
        num_threads : int, optional
            As for `LSTM.__call__`.

        Returns
        -------
        (h, c) : tuple of ndarray
            The new states, shaped as hx.

        Raises
        ------
        ValueError
            Shapes that do not fit the cell (the message says which and how to fix it).
        TypeError
            Values that are not floats, or hx that is not a pair.
        """
        seq, states, unbatched = self._prepare(x, hx)
        _, (h, c) = self._lstm(seq, states, num_threads=num_threads)
        return (h[0, 0], c[0, 0]) if unbatched else (h[0], c[0])

    forward = __call__

    def forward_train(self, x: npt.ArrayLike,
                      hx: Optional[Tuple[npt.ArrayLike, npt.ArrayLike]] = None, *,
                      num_threads: Optional[int] = None) -> Tuple[State, CellBackprop]:
        """One step that keeps what the backward needs.

        Parameters
        ----------
        x, hx, num_threads
            As for `__call__`.

        Returns
        -------
        (h, c) : tuple of ndarray
            As `__call__` returns them.
        backprop : callable
            ``backprop(grad_h=None, grad_c=None, *, num_threads=None)`` returns the gradients
            keyed ``x``, ``h``, ``c`` and the parameter names (at least one upstream gradient
            is needed).

        Raises
        ------
        ValueError, TypeError
            As `__call__`; ``backprop`` raises ValueError for an upstream gradient of the
            wrong shape, or when both are None.
        """
        seq, states, unbatched = self._prepare(x, hx)
        _, (h, c), backprop_seq = self._lstm.forward_train(seq, states, num_threads=num_threads)
        shape = h.shape[1:] if not unbatched else h.shape[2:]

        def backprop(grad_h: Optional[npt.ArrayLike] = None, grad_c: Optional[npt.ArrayLike] = None,
                     *, num_threads: Optional[int] = None) -> Gradients:
            ups = []
            for name, g in (("grad_h", grad_h), ("grad_c", grad_c)):
                if g is not None:
                    g = as_float_array(name, g, self.dtype)
                    if g.shape != shape:
                        raise ValueError(f"{name} must have the shape of the returned "
                                         f"{name[-1]}, {shape}; got {g.shape}")
                    g = g.reshape(h.shape)
                ups.append(g)
            if ups[0] is None and ups[1] is None:
                raise ValueError("backprop needs at least one of grad_h, grad_c")
            grads = backprop_seq(None, *ups, num_threads=num_threads)
            out = {"x": grads.pop("x").reshape(np.shape(x) if unbatched else seq.shape[1:]),
                   "h": grads.pop("h0").reshape(shape), "c": grads.pop("c0").reshape(shape)}
            out.update({k[:-3]: v for k, v in grads.items()})
            return out

        return ((h[0, 0], c[0, 0]) if unbatched else (h[0], c[0])), backprop
