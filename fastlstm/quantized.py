"""Quantized inference models: `QuantizedLSTM` and `QuantizedLSTMCell` (``model.quantize("int8")``).

A quantized model answers the float model's calls (``q(x, hx, lengths=..., num_threads=...)``,
``step``, ``describe``, ``save``/``load``, pickle) with the same validation and messages: it
borrows `LSTM`'s and `LSTMCell`'s own input handling. Inputs and outputs stay in the float
model's dtype; the computation is the int8 scheme of `fastlstm.reference` (see the comment
block above `reference.quantize_rows`), in float32 with int8 weights and activations.

Layers, directions and ragged batches are `_stack`'s, composed from one `_int8_direction`
runner per layer and direction (where the compiled int8 driver plugs in).
"""
from __future__ import annotations

import json
import os
import re
from typing import (IO, TYPE_CHECKING, Any, Dict, List, Mapping, NoReturn, Optional, Tuple,
                    Union)

import numpy as np
import numpy.typing as npt

from . import _stack, reference
from ._int8_direction import Int8Direction
from ._packing import PANEL
from ._typing import FloatArray, State, StateLike
from ._validate import check_num_threads, check_size
from .cell import LSTMCell
from .model import _QUANTIZED_FORMAT, LSTM, _check_dropout, _save_npz

if TYPE_CHECKING:
    from .shapes import Description

__all__ = ["MODES", "QuantizedLSTM", "QuantizedLSTMCell"]

# mode -> what it means (quantize() lists these when it refuses a mode)
MODES = {"int8": "int8 weights with one float32 scale per row, int8 activations quantized per "
                 "row at run time, exact int32 sums; gates, c and h in float32"}

_CELL_NAME = re.compile(r"\b(\w+)_l0\b")  # a cell's parameters are its LSTM's layer 0
_F32 = np.dtype(np.float32)
_I8 = np.dtype(np.int8)


def check_mode(mode: object) -> str:
    """A quantization mode by name, or the ValueError that lists the modes there are."""
    if isinstance(mode, str) and mode in MODES:
        return mode
    listed = "; ".join(f"{name!r}: {what}" for name, what in MODES.items())
    raise ValueError(f"unknown quantization mode {mode!r}; the modes are {listed}")


def _refuse(model: Union[QuantizedLSTM, QuantizedLSTMCell], what: str) -> TypeError:
    kind = type(model).__name__
    base = kind.replace("Quantized", "")
    var = "cell" if base == "LSTMCell" else "model"
    return TypeError(f"{what} is not available on a {kind}: its {model.mode} weights are for "
                     f"inference only. Train (or change) the float {base} and quantize it again: "
                     f"{var}.quantize({model.mode!r})")


def _rebuild(config: Mapping[str, Any], arrays: Mapping[str, npt.NDArray[Any]]) -> QuantizedLSTM:
    """QuantizedLSTM.__reduce__'s inverse."""
    return QuantizedLSTM._from_arrays(config, arrays)


class QuantizedLSTM:
    """An `LSTM` for inference with int8 weights, from ``LSTM.quantize("int8")``.

    Parameters
    ----------
    model : fastlstm.LSTM
        The float model to quantize (any configuration: layers, bidirectional, proj_size,
        batch_first). It is not changed; the quantized model keeps no reference to it.
    mode : str, default "int8"
        The quantization scheme; ``"int8"`` is the only one (see `MODES`).

    Raises
    ------
    ValueError
        An unknown mode (the message lists the modes), or a sum longer than
        `reference.INT8_MAX_K` products (input_size, proj_size or hidden_size above 133,144),
        whose int32 accumulator could overflow.
    TypeError
        `model` is not a `fastlstm.LSTM`.

    Notes
    -----
    Each layer and direction keeps, in PyTorch's gate order: ``weight_ih_l{k}`` (4H, I_k) and
    ``weight_hh_l{k}`` (4H, H_out) int8, each row scaled by ``weight_ih_scale_l{k}`` /
    ``weight_hh_scale_l{k}`` (4H,) float32 (row j approximates ``q[j] * scale[j]``);
    ``bias_l{k}`` (4H,) float32 = bias_ih + bias_hh rounded to float32 (without bias: absent,
    +0.0 is added); with proj_size, ``weight_hr_l{k}`` (P, H) int8 and ``weight_hr_scale_l{k}``
    (P,). The reverse direction's names end in ``_reverse``.

    A step quantizes each row of x_t and h_{t-1} to int8 with its own scale, sums the products
    exactly in int32 and scales the sums back to float32; the gates, c and h are float32. A
    float64 model quantizes its float64 weights (rounded to float32 first), rounds its inputs
    to float32 and widens its float32 results back to float64. Results do not depend on the
    batch, on the number of threads, nor on how a sequence is split into calls (``step`` by
    ``step`` gives bitwise one call's result); they are within a few quantization steps of the
    float model's.

    Running: ``output, (h_n, c_n) = q(x, hx, lengths=..., num_threads=...)`` and ``q.step``
    are the float model's (`LSTM.__call__`, `LSTM.step`), with its shapes and checks.
    ``forward_train``, ``set_parameters`` and ``load_state_dict`` raise TypeError: train the
    float model and quantize it again. ``trace`` and ``to_onnx`` raise NotImplementedError.
    """

    def __init__(self, model: LSTM, mode: str = "int8") -> None:
        mode = check_mode(mode)
        if not isinstance(model, LSTM):
            hint = ""
            if type(model).__name__ == "LSTM":  # torch.nn.LSTM, say
                hint = ": fastlstm.LSTM.from_torch(module).quantize('int8')"
            raise TypeError(f"QuantizedLSTM quantizes a fastlstm.LSTM, got "
                            f"{type(model).__module__}.{type(model).__name__}{hint}")
        self._configure(model.config(), mode)
        self._check_sums(repr(model))
        params = model.parameters()
        arrays: Dict[str, npt.NDArray[Any]] = {}
        for k in range(self.num_layers):
            for d in range(self.num_directions):
                sfx = f"_l{k}" + ("_reverse" if d else "")
                quantized = reference.quantize_lstm(
                    params[f"weight_ih{sfx}"], params[f"weight_hh{sfx}"],
                    params.get(f"bias_ih{sfx}"), params.get(f"bias_hh{sfx}"),
                    params.get(f"weight_hr{sfx}"))
                for base in ("weight_ih", "weight_hh", "weight_hr"):
                    if quantized[base] is not None:
                        arrays[f"{base}{sfx}"], arrays[f"{base}_scale{sfx}"] = quantized[base]
                if self.bias:
                    arrays[f"bias{sfx}"] = quantized["bias"]
        self._set(arrays)

    # -- configuration ---------------------------------------------------------------------

    def _configure(self, config: Mapping[str, Any], mode: object) -> None:
        """The float model's configuration (checked: it may come from a file) and the mode."""
        config = dict(config)
        known = {"input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
                 "bidirectional", "proj_size", "dtype"}
        if set(config) != known:
            raise ValueError(f"a quantized LSTM's configuration has the keys {sorted(known)} "
                             f"and mode; got {sorted(config)}")
        self.mode = check_mode(mode)
        self.input_size = check_size("input_size", config["input_size"])
        self.hidden_size = check_size("hidden_size", config["hidden_size"])
        self.num_layers = check_size("num_layers", config["num_layers"])
        self.bias = bool(config["bias"])
        self.batch_first = bool(config["batch_first"])
        self.dropout = _check_dropout(config["dropout"])
        self.bidirectional = bool(config["bidirectional"])
        self.num_directions = 2 if self.bidirectional else 1
        proj_size = config["proj_size"]
        if isinstance(proj_size, bool) or not isinstance(proj_size, (int, np.integer)) or \
                not 0 <= proj_size < self.hidden_size:
            raise ValueError(f"proj_size must be 0 (no projection) or in [1, hidden_size) = "
                             f"[1, {self.hidden_size}), got {proj_size!r}")
        self.proj_size = int(proj_size)
        dtype: Optional[np.dtype[Any]]
        try:
            dtype = np.dtype(config["dtype"])
        except TypeError:
            dtype = None
        if dtype is None or dtype not in PANEL:
            raise TypeError(f"dtype must be float32 or float64, got {config['dtype']!r}")
        self.dtype: np.dtype[Any] = dtype

    if TYPE_CHECKING:
        @property
        def _h_out(self) -> int: ...
    else:
        _h_out = LSTM._h_out

    def config(self) -> Dict[str, Any]:
        """The float model's constructor arguments and ``mode``, as plain Python values.

        Returns
        -------
        dict
            `LSTM.config`'s keys and ``mode``.
        """
        return dict(input_size=self.input_size, hidden_size=self.hidden_size,
                    num_layers=self.num_layers, bias=self.bias, batch_first=self.batch_first,
                    dropout=self.dropout, bidirectional=self.bidirectional,
                    proj_size=self.proj_size, dtype=self.dtype.name, mode=self.mode)

    def _sums(self) -> List[Tuple[str, str, int]]:
        """[(parameter name, what it sums over, K)] of every integer sum, first layer first."""
        H, H_out, D = self.hidden_size, self._h_out, self.num_directions
        width = "proj_size" if self.proj_size else "hidden_size"
        out: List[Tuple[str, str, int]] = []
        inputs: Tuple[str, int]
        for k in range(self.num_layers):
            if k == 0:
                inputs = ("input_size", self.input_size)
            else:
                inputs = (f"num_directions * {width}", D * H_out)
            out.append((f"weight_ih_l{k}", *inputs))
            out.append((f"weight_hh_l{k}", width, H_out))
            if self.proj_size:
                out.append((f"weight_hr_l{k}", "hidden_size", H))
        return out

    def _check_sums(self, what: str) -> None:
        """Refuse, before any work, a model whose int32 sums could overflow."""
        for name, why, K in self._sums():
            if K > reference.INT8_MAX_K:
                raise ValueError(
                    f"cannot quantize {what} to {self.mode}: {name} sums over {why} = {K} "
                    f"products, more than fastlstm.reference.INT8_MAX_K = "
                    f"{reference.INT8_MAX_K} (127^2 * K must fit the int32 sum). Keep this "
                    f"model in floating point")

    # -- parameters ------------------------------------------------------------------------

    def _parameter_specs(self) -> Dict[str, Tuple[Tuple[int, ...], np.dtype[Any], str]]:
        """{name: (shape, dtype, why)} in the order parameters() lists them."""
        H, P, D = self.hidden_size, self.proj_size, self.num_directions
        H_out = P or H
        width = "proj_size" if P else "hidden_size"
        specs: Dict[str, Tuple[Tuple[int, ...], np.dtype[Any], str]] = {}
        for k in range(self.num_layers):
            I = self.input_size if k == 0 else D * H_out
            i_why = (f"input_size = {I}" if k == 0 else
                     f"layer {k} takes layer {k - 1}'s output: num_directions * {width} = {I}")
            for suffix in ("", "_reverse")[:D]:
                sfx = f"_l{k}{suffix}"
                rows = f"4*hidden_size = {4 * H}"
                specs[f"weight_ih{sfx}"] = ((4 * H, I), _I8, f"{rows}, {i_why}")
                specs[f"weight_ih_scale{sfx}"] = ((4 * H,), _F32, f"one per row: {rows}")
                specs[f"weight_hh{sfx}"] = ((4 * H, H_out), _I8, f"{rows}, {width} = {H_out}")
                specs[f"weight_hh_scale{sfx}"] = ((4 * H,), _F32, f"one per row: {rows}")
                if self.bias:
                    specs[f"bias{sfx}"] = ((4 * H,), _F32, rows)
                if P:
                    specs[f"weight_hr{sfx}"] = ((P, H), _I8, f"proj_size = {P}, hidden_size = {H}")
                    specs[f"weight_hr_scale{sfx}"] = ((P,), _F32, f"one per row: proj_size = {P}")
        return specs

    def _set(self, arrays: Mapping[str, Any]) -> None:
        """Check every array, store read-only copies and build the runners (all at once)."""
        specs = self._parameter_specs()
        missing, unexpected = sorted(set(specs) - set(arrays)), sorted(set(arrays) - set(specs))
        if missing or unexpected:
            raise KeyError(f"the arrays do not match {self!r}: missing {missing}, unexpected "
                           f"{unexpected}")
        params: Dict[str, npt.NDArray[Any]] = {}
        for name, (shape, dtype, why) in specs.items():
            value = np.asarray(arrays[name])
            if value.dtype != dtype or value.shape != shape:
                raise ValueError(f"{name} must be {dtype.name} of shape {shape} ({why}); got "
                                 f"{value.dtype.name} of shape {value.shape}")
            if dtype == _I8 and value.size and value.min() == -128:
                raise ValueError(f"{name} holds -128, which int8 quantization never produces "
                                 f"(the values are in [-127, 127])")
            # over immutable bytes, as LSTM's: what parameters() shows is what runs
            params[name] = np.frombuffer(value.tobytes(), dtype).reshape(shape)
        layers: List[List[Int8Direction]] = []
        for k in range(self.num_layers):
            directions: List[Int8Direction] = []
            for suffix in ("", "_reverse")[:self.num_directions]:
                sfx = f"_l{k}{suffix}"

                def pair(base: str) -> Optional[Tuple[npt.NDArray[Any], npt.NDArray[Any]]]:
                    if f"{base}{sfx}" not in params:
                        return None
                    return params[f"{base}{sfx}"], params[f"{base}_scale{sfx}"]
                directions.append(Int8Direction(dict(
                    weight_ih=pair("weight_ih"), weight_hh=pair("weight_hh"),
                    bias=params.get(f"bias{sfx}"), weight_hr=pair("weight_hr"))))
            layers.append(directions)
        self._params, self._layers = params, layers
        self._one_direction = len(layers) == 1 and len(layers[0]) == 1

    @classmethod
    def _from_arrays(cls, config: Mapping[str, Any], arrays: Mapping[str, Any]) -> QuantizedLSTM:
        """A quantized model from its configuration (with mode) and arrays (a file, a pickle)."""
        config = dict(config)
        mode = config.pop("mode", None)
        model = cls.__new__(cls)
        model._configure(config, mode)
        model._check_sums(repr(model))
        model._set(arrays)
        return model

    def parameters(self) -> Dict[str, npt.NDArray[Any]]:
        """The int8 weights, their float32 scales and the float32 biases by name.

        Returns
        -------
        dict of str to ndarray
            The arrays the class notes list, read-only, over immutable memory.
        """
        return {name: value.view() for name, value in self._params.items()}

    state_dict = parameters

    def set_parameters(self, **arrays: Any) -> NoReturn:
        """Refused: quantized weights are not set.

        Parameters
        ----------
        **arrays
            Ignored.

        Raises
        ------
        TypeError
            Always: train the float model and quantize it again.
        """
        raise _refuse(self, "set_parameters")

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> NoReturn:
        """Refused: quantized weights are not set.

        Parameters
        ----------
        state_dict : mapping
            Ignored.
        strict : bool, default True
            Ignored.

        Raises
        ------
        TypeError
            Always: train the float model and quantize it again.
        """
        raise _refuse(self, "load_state_dict")

    @property
    def nbytes(self) -> int:
        """Bytes of the weights, scales and biases (what the model keeps in memory)."""
        return sum(value.nbytes for value in self._params.values())

    # -- files and copies ------------------------------------------------------------------

    def save(self, path: Union[str, os.PathLike[str], IO[bytes]]) -> None:
        """Write the model to a ``.npz`` that NumPy alone reads (no pickle): ``fastlstm_format``
        (2), ``fastlstm_config`` (JSON: the float model's configuration and ``mode``) and the
        parameters (int8 weights, float32 scales and biases). `LSTM.load` and `load` read it.

        Parameters
        ----------
        path : str, os.PathLike or binary file object
            Written as given (no ``.npz`` is added).

        Raises
        ------
        OSError
            The file cannot be written.
        """
        _save_npz(path, _QUANTIZED_FORMAT, self.config(), self._params)

    @classmethod
    def load(cls, path: Union[str, os.PathLike[str], IO[bytes]]) -> QuantizedLSTM:
        """Read a quantized model written by `save` (``allow_pickle=False``).

        Parameters
        ----------
        path : str, os.PathLike or binary file object
            The file `save` wrote.

        Returns
        -------
        QuantizedLSTM
            The model saved.

        Raises
        ------
        ValueError
            The file is not fastlstm's, is newer than this fastlstm reads, or holds a float
            model (``LSTM.load(path).quantize("int8")`` quantizes that one).
        """
        model = LSTM.load(path)
        if not isinstance(model, cls):
            raise ValueError(f"{path} holds a float {model!r}, not a quantized one: "
                             f"LSTM.load(path) reads it, .quantize('int8') quantizes it")
        return model

    def __reduce__(self) -> Tuple[Any, ...]:
        """pickle and copy.deepcopy: the configuration and the arrays."""
        return _rebuild, (self.config(), self.parameters())

    # -- what the float model has and this one does not ------------------------------------

    def forward_train(self, x: npt.ArrayLike, hx: StateLike = None, *,
                      lengths: Optional[npt.ArrayLike] = None, seed: Optional[int] = None,
                      num_threads: Optional[int] = None) -> NoReturn:
        """Refused: a quantized model does not train.

        Parameters
        ----------
        x, hx, lengths, seed, num_threads
            Ignored.

        Raises
        ------
        TypeError
            Always: train the float model and quantize it again.
        """
        raise _refuse(self, "forward_train (and its backprop)")

    def trace(self, x: npt.ArrayLike, hx: StateLike = None) -> NoReturn:
        """Not available for a quantized model: trace the float model it came from.

        Parameters
        ----------
        x, hx
            Ignored.

        Raises
        ------
        NotImplementedError
            Always: a trace follows the float computation, which this model does not run.
        """
        from .shapes import trace
        trace(self, x, hx)  # which refuses, saying why
        raise AssertionError("unreachable: shapes.trace refuses quantized models")

    def to_onnx(self, path: Any, **kwargs: Any) -> NoReturn:
        """Not available for a quantized model: export the float model instead.

        Parameters
        ----------
        path, **kwargs
            Ignored.

        Raises
        ------
        NotImplementedError
            Always: ONNX has no int8 LSTM with fastlstm's per-row scheme (the message says
            how to quantize an exported float model with ONNX Runtime).
        """
        raise NotImplementedError(
            f"to_onnx() writes float LSTMs; ONNX has no int8 LSTM with fastlstm's per-row scheme "
            f"(ONNX Runtime's DynamicQuantizeLSTM quantizes differently). Export the float model "
            f"(model.to_onnx(path)) and quantize the ONNX file with "
            f"onnxruntime.quantization.quantize_dynamic")

    # -- describing ------------------------------------------------------------------------

    def describe(self, seq_len: Optional[int] = None, batch: Optional[int] = None) -> Description:
        """Every tensor's shape and meaning, the int8 parameters and their memory.

        Parameters
        ----------
        seq_len, batch : int, optional
            Sizes to put in the shapes; None leaves them symbolic.

        Returns
        -------
        fastlstm.shapes.Description
            A printable table; ``desc.memory`` holds the parameters' bytes.

        Raises
        ------
        TypeError, ValueError
            ``seq_len`` or ``batch`` not None nor an int >= 0.
        """
        from .shapes import describe
        return describe(self, seq_len=seq_len, batch=batch)

    if TYPE_CHECKING:
        def _repr_args(self) -> str: ...
    else:
        _repr_args = LSTM._repr_args

    def __repr__(self) -> str:
        return f"QuantizedLSTM({self._repr_args()}, mode={self.mode}, dtype={self.dtype.name})"

    # -- running: LSTM's validation, then the stack in float32 -----------------------------

    # The float model's own input handling, so every check and message is the same.
    # (declared for type checkers, which would refuse a QuantizedLSTM as LSTM's self)
    if TYPE_CHECKING:
        def _check_call_size(self, T: int, B: int, train: bool, what: str) -> None: ...
        def _prepare(self, x: Any, hx: Any, lengths: Any, train: bool) -> Tuple[
            FloatArray, bool, FloatArray, FloatArray, Optional[npt.NDArray[np.intp]]]: ...
        def _empty_output(self, T: int, B: int,
                          unbatched: bool) -> Tuple[FloatArray, FloatArray]: ...
        @staticmethod
        def _states_out(h_n: FloatArray, c_n: FloatArray, unbatched: bool) -> State: ...
    else:
        _check_call_size = LSTM._check_call_size
        _prepare = LSTM._prepare
        _empty_output = LSTM._empty_output
        _states_out = staticmethod(LSTM._states_out)

    def __call__(self, x: npt.ArrayLike, hx: StateLike = None, *,
                 lengths: Optional[npt.ArrayLike] = None,
                 num_threads: Optional[int] = None) -> Tuple[FloatArray, State]:
        """Run the sequence: ``output, (h_n, c_n) = q(x, hx, lengths=..., num_threads=...)``.

        x, hx and the outputs are in the model's dtype, the computation in float32 (the int8
        scheme).

        Parameters
        ----------
        x, hx, lengths, num_threads
            Shapes, layouts and meaning as for `LSTM.__call__`.

        Returns
        -------
        output, (h_n, c_n)
            As `LSTM.__call__` returns them.

        Raises
        ------
        ValueError, TypeError, MemoryError
            As `LSTM.__call__`, with the same messages.
        """
        nt = check_num_threads(num_threads)
        if lengths is None and self._one_direction:  # (x, hx unchecked: `small` checks them)
            small = self._small_call(x, hx, nt)
            if small is not None:
                return small
        xt, unbatched, h0, c0, lengths = self._prepare(x, hx, lengths, False)
        T, B = xt.shape[:2]
        y, y_tm = self._empty_output(T, B, unbatched)
        xt, h0, c0 = (a.astype(_F32, copy=False) for a in (xt, h0, c0))
        order = None
        if lengths is not None:  # sorted longest first: the running rows are a prefix
            order = np.argsort(-lengths, kind="stable")
            xt, h0, c0 = (np.take(a, order, axis=1) for a in (xt, h0, c0))
            lengths = lengths[order]
            out = np.zeros(y_tm.shape, _F32)
        else:
            out = y_tm if y_tm.dtype == _F32 else np.empty(y_tm.shape, _F32)
        h_n, c_n, _ = _stack.forward(self._layers, xt, h0, c0, lengths, out, False, nt)
        if order is not None:
            inverse = np.argsort(order)
            out, h_n, c_n = (np.take(a, inverse, axis=1) for a in (out, h_n, c_n))
        if out is not y_tm:
            y_tm[...] = out
        h_n, c_n = (a.astype(self.dtype, copy=False) for a in (h_n, c_n))
        return y, self._states_out(h_n, c_n, unbatched)

    def _small_call(self, x: Any, hx: Any, nt: int) -> Optional[Tuple[FloatArray, State]]:
        """A small float32 call of a one-layer, one-direction model without projection, whole in
        C (`_kernels.SmallForwardInt8`): validation and the stack would cost more than the work
        (a one-step call, workload f). None: take the general path."""
        small = self._layers[0][0].small
        if small is None or self.dtype != _F32:  # (a float64 model answers in float64)
            return None
        return small(x, hx, nt or None, self.batch_first)

    forward = __call__
    if TYPE_CHECKING:
        def step(self, x_t: npt.ArrayLike, state: StateLike = None, *,
                 num_threads: Optional[int] = None) -> Tuple[FloatArray, State]: ...
    else:
        step = LSTM.step


def _cell_message(exc: Exception) -> Exception:
    """An error of the LSTM inside a cell, in the cell's names (weight_ih, not weight_ih_l0)."""
    text = str(exc).replace("LSTM(", "LSTMCell(")
    return type(exc)(_CELL_NAME.sub(r"\1", text))


class QuantizedLSTMCell:
    """An `LSTMCell` for inference with int8 weights, from ``LSTMCell.quantize("int8")``.

    Parameters
    ----------
    cell : fastlstm.LSTMCell
        The float cell to quantize; it is not changed.
    mode : str, default "int8"
        The quantization scheme (see `MODES`).

    Raises
    ------
    ValueError
        An unknown mode, or input_size or hidden_size over `reference.INT8_MAX_K`.
    TypeError
        `cell` is not a `fastlstm.LSTMCell`.

    Notes
    -----
    ``h, c = qcell(x, (h, c))`` as `LSTMCell`, with its shapes and checks; x and the states in
    the cell's dtype, the step computed as `QuantizedLSTM` computes one. The parameters are
    ``weight_ih``, ``weight_ih_scale``, ``weight_hh``, ``weight_hh_scale`` and (with bias)
    ``bias`` = bias_ih + bias_hh in float32. ``forward_train``, ``set_parameters`` and
    ``load_state_dict`` raise TypeError: train the float cell and quantize it again.
    """

    def __init__(self, cell: LSTMCell, mode: str = "int8") -> None:
        mode = check_mode(mode)
        if not isinstance(cell, LSTMCell):
            raise TypeError(f"QuantizedLSTMCell quantizes a fastlstm.LSTMCell, got "
                            f"{type(cell).__module__}.{type(cell).__name__}")
        try:
            self._lstm = QuantizedLSTM(cell._lstm, mode)
        except ValueError as exc:
            raise _cell_message(exc) from None
        self.input_size, self.hidden_size = cell.input_size, cell.hidden_size
        self.bias, self.dtype, self.mode = cell.bias, cell.dtype, mode

    def parameters(self) -> Dict[str, npt.NDArray[Any]]:
        """The int8 weights, their scales and the bias by the cell's names, read-only.

        Returns
        -------
        dict of str to ndarray
            ``weight_ih``, ``weight_ih_scale``, ``weight_hh``, ``weight_hh_scale`` and, with
            bias, ``bias``.
        """
        return {k[:-3]: v for k, v in self._lstm.parameters().items()}

    state_dict = parameters

    @property
    def nbytes(self) -> int:
        """Bytes of the weights, scales and bias."""
        return self._lstm.nbytes

    def set_parameters(self, **arrays: Any) -> NoReturn:
        """Refused: quantized weights are not set.

        Parameters
        ----------
        **arrays
            Ignored.

        Raises
        ------
        TypeError
            Always: train the float cell and quantize it again.
        """
        raise _refuse(self, "set_parameters")

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> NoReturn:
        """Refused: quantized weights are not set.

        Parameters
        ----------
        state_dict : mapping
            Ignored.
        strict : bool, default True
            Ignored.

        Raises
        ------
        TypeError
            Always: train the float cell and quantize it again.
        """
        raise _refuse(self, "load_state_dict")

    def forward_train(self, x: npt.ArrayLike,
                      hx: Optional[Tuple[npt.ArrayLike, npt.ArrayLike]] = None, *,
                      num_threads: Optional[int] = None) -> NoReturn:
        """Refused: a quantized cell does not train.

        Parameters
        ----------
        x, hx, num_threads
            Ignored.

        Raises
        ------
        TypeError
            Always: train the float cell and quantize it again.
        """
        raise _refuse(self, "forward_train (and its backprop)")

    def __repr__(self) -> str:
        return (f"QuantizedLSTMCell({self.input_size}, {self.hidden_size}"
                f"{'' if self.bias else ', bias=False'}, mode={self.mode}, "
                f"dtype={self.dtype.name})")

    # the float cell's own input handling and call, on the quantized LSTM inside
    if TYPE_CHECKING:
        def _prepare(self, x: Any, hx: Any) -> Tuple[FloatArray, State, bool]: ...
        def __call__(self, x: npt.ArrayLike,
                     hx: Optional[Tuple[npt.ArrayLike, npt.ArrayLike]] = None, *,
                     num_threads: Optional[int] = None) -> State: ...
    else:
        _prepare = LSTMCell._prepare
        __call__ = LSTMCell.__call__
    forward = __call__
