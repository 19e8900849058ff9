"""`LSTM`: PyTorch's parameters, shapes and conventions, run by fastlstm's own kernels.

Data flows one way: `_validate` turns user input into arrays of the model's dtype (or raises),
this module turns the user's layout into time-major views, `_stack` runs the layers and directions
(and ragged batches) over `_direction`s, which allocate every buffer a call needs (nothing is
shared between calls, so one model serves many Python threads at once) and run `_kernels` with
the GIL released.
"""
from __future__ import annotations

import json
import numbers
import os
import weakref
from typing import (IO, TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional,
                    Tuple, Type, TypeVar, Union)

import numpy as np
import numpy.typing as npt

from . import _kernels, _stack, _workspace
from ._direction import KernelDirection, last_num_threads
from ._packing import PANEL, round_up
from ._typing import Backprop, FloatArray, Gradients, State, StateLike
from .interop.torch import check_torch_lstm, is_torch_cell
from ._validate import (as_float_array, check_input, check_lengths, check_num_threads, check_parameter,
                        check_size, check_state, check_upstream, to_numpy)

if TYPE_CHECKING:  # (imported for annotations only: they import this module)
    from .quantized import QuantizedLSTM
    from .shapes import Description, Trace

_L = TypeVar("_L", bound="LSTM")
_Lengths = npt.NDArray[np.intp]

# The newest format of LSTM.save that this fastlstm writes and reads: bump when it changes, keep
# LSTM.load reading the old ones. 1: a float model (config JSON and PyTorch-named parameters);
# 2: adds quantized models (config with "mode", the int8 weights, their scales, float32 biases).
# A file is written in the oldest format that holds it: float models still write 1, which
# every fastlstm reads.
_FORMAT_VERSION = 2
_FLOAT_FORMAT, _QUANTIZED_FORMAT = 1, 2


def _check_allocation(values: int, dtype: npt.DTypeLike, what: str) -> None:
    """Refuse, before any work, a call that could not allocate its buffers (rather than let the
    OS kill the process, or NumPy fail halfway through with a message that names nothing)."""
    nbytes = int(values) * np.dtype(dtype).itemsize
    if nbytes > _MAX_BYTES:
        raise MemoryError(f"{what} would need {nbytes / 2**30:.1f} GiB of buffers, more than this "
                          f"machine's {_MAX_BYTES / 2**30:.1f} GiB of memory")


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not POSIX: let NumPy decide
        return 2**62


_MAX_BYTES = _physical_memory()



def _save_npz(path: Union[str, os.PathLike[str], IO[bytes]], version: int, config: Dict[str, Any],
              arrays: Mapping[str, npt.NDArray[Any]]) -> None:
    """LSTM.save's file: format version, config JSON and the arrays, written at `path` as given
    (np.savez would add ``.npz`` to a name without it) or to a binary file object."""
    arrays = dict(fastlstm_format=np.array(version), fastlstm_config=np.array(json.dumps(config)),
                  **arrays)
    if isinstance(path, (str, os.PathLike)):
        with open(path, "wb") as f:
            # (ignore: NumPy's stub matches a **dict against allow_pickle: bool too)
            np.savez(f, **arrays)  # type: ignore[arg-type]
    else:
        np.savez(path, **arrays)  # type: ignore[arg-type]


def _rebuild(cls: Type[_L], config: Dict[str, Any], state_dict: Mapping[str, FloatArray],
             rng: np.random.Generator) -> _L:
    """LSTM.__reduce__'s inverse."""
    model = cls(**config)
    model.load_state_dict(state_dict)
    model._rng = rng
    return model


def _check_dropout(dropout: Any) -> float:
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real):
        raise TypeError(f"dropout must be a number in [0, 1], got {type(dropout).__name__} "
                        f"{dropout!r}")
    if not 0 <= float(dropout) <= 1:  # (float: the numbers.Real ABC declares no comparison)
        raise ValueError(f"dropout must be in [0, 1] (the probability of zeroing an element "
                         f"between layers), got {dropout}")
    return float(dropout)


class LSTM:
    """A multi-layer LSTM with ``torch.nn.LSTM``'s arguments, parameters, shapes and gate order.

    Parameters
    ----------
    input_size : int
        Features per time step (I).
    hidden_size : int
        Hidden units (H).
    num_layers : int, default 1
        Stacked layers; layer k > 0 takes layer k-1's output.
    bias : bool, default True
        Whether each layer has ``bias_ih_l{k}`` and ``bias_hh_l{k}``.
    batch_first : bool, default False
        Input and output as (batch, seq_len, features) instead of (seq_len, batch, features).
        The states h and c keep the layout (num_layers * num_directions, batch, ·) either way.
    dropout : float, default 0
        Dropout on each layer's output except the last, in `forward_train` only.
    bidirectional : bool, default False
        Adds a reverse direction per layer (parameters with the suffix ``_reverse``); the output
        holds the forward half, then the reverse half, on its last axis.
    proj_size : int, default 0
        When > 0, h_t = W_hr (o * tanh(c_t)) has proj_size features (``weight_hr_l{k}``),
        as in PyTorch; fastlstm's kernels run it, forward and backward.
    dtype : {np.float32, np.float64}, default np.float32
        The dtype of the parameters, of the computation and of every output.
    seed : int or None
        Seed of the model's generator: the initial parameters, U(-1/sqrt(H), 1/sqrt(H)) as in
        PyTorch, then the dropout masks of `forward_train` calls that give no seed.

    Raises
    ------
    TypeError
        A size, ``proj_size`` or ``dropout`` of the wrong type (bools and floats are not
        sizes), or a dtype other than float32 and float64.
    ValueError
        A size below 1, ``proj_size`` outside [0, hidden_size), ``dropout`` outside [0, 1].
    MemoryError
        Parameters (with the kernels' packed copies) larger than this machine's memory.

    See Also
    --------
    LSTMCell : one step, ``torch.nn.LSTMCell``'s conventions.
    fastlstm.reference.forward : the NumPy implementation the kernels are tested against.

    Notes
    -----
    Each step computes, with gate blocks i, f, g, o stacked along the 4H axis::

        i, f, g, o = split(x_t @ W_ih.T + b_ih + h_{t-1} @ W_hh.T + b_hh)
        c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
        h_t = sigmoid(o) * tanh(c_t)

    Results are bitwise identical for any ``num_threads``, from run to run, for each batch row
    alone or in a batch, and for a sequence run in chunks while carrying (h, c).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, *, dtype: npt.DTypeLike = np.float32,
                 seed: Optional[int] = None) -> None:
        self.input_size = check_size("input_size", input_size)
        self.hidden_size = check_size("hidden_size", hidden_size)
        self.num_layers = check_size("num_layers", num_layers)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.dropout = _check_dropout(dropout)
        self.bidirectional = bool(bidirectional)
        self.num_directions = 2 if self.bidirectional else 1
        if isinstance(proj_size, bool) or not isinstance(proj_size, (int, np.integer)):
            raise TypeError(f"proj_size must be an int, got {type(proj_size).__name__}")
        if not 0 <= proj_size < self.hidden_size:
            raise ValueError(f"proj_size must be 0 (no projection) or in [1, hidden_size) = "
                             f"[1, {self.hidden_size}), got {proj_size}")
        self.proj_size = int(proj_size)
        try:
            self.dtype: np.dtype[Any] = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
        if self.dtype not in PANEL:
            raise TypeError(f"dtype must be float32 or float64, got {self.dtype}")
        _check_allocation(self._parameter_memory(), self.dtype, f"the parameters of {self!r}")
        shapes = self._parameter_shapes()
        self._rng = np.random.default_rng(seed)
        bound = self.dtype.type(1.0 / np.sqrt(self.hidden_size))
        self._params: Dict[str, FloatArray] = {}
        self._layers: List[List[Any]] = [[None] * self.num_directions
                                         for _ in range(self.num_layers)]
        # (ignore: NumPy's stub takes only literal float32/float64 dtypes, which self.dtype is)
        self._set({name: (2 * self._rng.random(shape, self.dtype) - 1) * bound  # type: ignore
                   for name, (shape, _) in shapes.items()})

    @property
    def _h_out(self) -> int:
        return self.proj_size or self.hidden_size

    # -- parameters ---------------------------------------------------------------------------

    def _parameter_memory(self) -> int:
        """Values the parameters take, in O(1) (a huge num_layers is refused before any loop
        over the layers): 3x the user's arrays (drawn, checked, kept), the kernels' two packed
        copies of each, zero-padded to the panel (16x at hidden_size 1), and the transient
        copies of packing one layer."""
        H, P, D, L = self.hidden_size, self.proj_size, self.num_directions, self.num_layers
        H_out, NR = P or H, PANEL[self.dtype]
        Hp, Kp = round_up(H, NR), round_up(H_out, NR)

        # (the user's values, packed values) of one layer and direction
        def layer(I: int) -> Tuple[int, int]:
            user = 4 * H * (I + H_out) + (8 * H if self.bias else 0) + P * H
            return user, 2 * 4 * Hp * (round_up(I, NR) + Kp) + 4 * Hp + 2 * Kp * Hp * (P > 0)
        first, rest = layer(self.input_size), layer(D * H_out)
        user = D * (first[0] + (L - 1) * rest[0])
        packed = D * (first[1] + (L - 1) * rest[1])
        return 3 * user + packed + 3 * max(first[1], rest[1] if L > 1 else 0) // 2

    def _parameter_shapes(self) -> Dict[str, Tuple[Tuple[int, ...], str]]:
        """{name: (shape, why)} in PyTorch's order."""
        H, P, D = self.hidden_size, self.proj_size, self.num_directions
        H_out = P or H
        shapes: Dict[str, Tuple[Tuple[int, ...], str]] = {}
        for k in range(self.num_layers):
            if k == 0:
                I, i_why = self.input_size, f"input_size = {self.input_size}"
            else:
                I = D * H_out
                i_why = (f"layer {k} takes layer {k - 1}'s output: num_directions * "
                         f"{'proj_size' if P else 'hidden_size'} = {I}")
            for suffix in ("", "_reverse")[:D]:
                shapes[f"weight_ih_l{k}{suffix}"] = ((4 * H, I), f"4*hidden_size = {4 * H}, {i_why}")
                shapes[f"weight_hh_l{k}{suffix}"] = (
                    (4 * H, H_out), f"4*hidden_size = {4 * H}, "
                    f"{'proj_size' if P else 'hidden_size'} = {H_out}")
                if self.bias:
                    shapes[f"bias_ih_l{k}{suffix}"] = ((4 * H,), f"4*hidden_size = {4 * H}")
                    shapes[f"bias_hh_l{k}{suffix}"] = ((4 * H,), f"4*hidden_size = {4 * H}")
                if P:
                    shapes[f"weight_hr_l{k}{suffix}"] = (
                        (P, H), f"proj_size = {P}, hidden_size = {H}")
        return shapes

    @staticmethod
    def _split_name(name: str) -> Tuple[str, int, int]:
        """'weight_ih_l1_reverse' -> ('weight_ih', 1, 1)."""
        base, _, rest = name.rpartition("_l")
        layer, _, rev = rest.partition("_")
        return base, int(layer), 1 if rev else 0

    def _set(self, arrays: Mapping[str, Any]) -> None:
        """Validate, store read-only copies and repack: the only way parameters change."""
        shapes = self._parameter_shapes()
        params = dict(self._params)
        for name, value in arrays.items():
            shape, why = shapes[name]
            value = check_parameter(name, value, shape, self.dtype, why)
            # Our own copy, over bytes: NumPy will not make it writable again (an array that
            # owns its memory can be), so what parameters() shows is what the kernels run.
            params[name] = np.frombuffer(value.tobytes(), self.dtype).reshape(shape)
        layers: List[List[Any]] = [list(directions) for directions in self._layers]
        touched = {self._split_name(name)[1:] for name in arrays}
        for k, d in sorted(touched):
            suffix = f"_l{k}" + ("_reverse" if d else "")
            local = {base: params[base + suffix] for base in
                     ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
                     if base + suffix in params}
            layers[k][d] = KernelDirection(local, self.dtype)
        single = len(layers) == 1 and len(layers[0]) == 1
        small: Optional[_kernels.SmallForward] = layers[0][0].small if single else None
        small_train: Optional[_kernels.SmallTrain] = layers[0][0].small_train if single else None
        # swapped together, after all checks
        self._params, self._layers = params, layers
        self._small, self._small_train = small, small_train

    def parameters(self) -> Dict[str, FloatArray]:
        """The parameters by PyTorch name, as read-only arrays.

        Returns
        -------
        dict of str to ndarray
            ``weight_ih_l{k}`` (4H, I_k), ``weight_hh_l{k}`` (4H, H_out), ``bias_ih_l{k}``,
            ``bias_hh_l{k}`` (4H,), ``weight_hr_l{k}`` (P, H), with the suffix ``_reverse``
            for the reverse direction, in PyTorch's order. Their memory is immutable bytes:
            neither they nor their bases can be made writable; change them with
            `set_parameters`.
        """
        return {name: value.view() for name, value in self._params.items()}

    def state_dict(self) -> Dict[str, FloatArray]:
        """The parameters by PyTorch name, as read-only arrays: the same as `parameters`.

        Returns
        -------
        dict of str to ndarray
            What ``torch.nn.LSTM.load_state_dict`` takes (after ``torch.from_numpy``).
        """
        return self.parameters()

    def set_parameters(self, **arrays: npt.ArrayLike) -> None:
        """Replace some or all parameters by PyTorch name, and repack the kernels' copy.

        All arrays are checked before any is set. The model keeps its own copies (the arrays
        given are never written to); a `forward_train`'s backprop keeps the parameters of its
        forward.

        Parameters
        ----------
        **arrays : array_like
            ``name=array`` for each parameter to replace (``weight_ih_l0=...``), of exactly
            its shape; other float dtypes are cast to the model's.

        Raises
        ------
        TypeError
            An unknown name (the message lists the model's), or values that are not floats.
        ValueError
            An array of the wrong shape (the message gives the shape and why; a transposed
            weight is pointed out).
        """
        unknown = sorted(set(arrays) - set(self._parameter_shapes()))
        if unknown:
            raise TypeError(f"unknown parameter name(s) {unknown}; this LSTM has "
                            f"{sorted(self._parameter_shapes())}")
        self._set(arrays)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> None:
        """Load parameters by PyTorch name, cast to the model's dtype.

        Parameters
        ----------
        state_dict : mapping of str to array_like or torch.Tensor
            Parameters by PyTorch name, such as ``torch.nn.LSTM.state_dict()``.
        strict : bool, default True
            Require exactly this model's names; without it, missing names keep their values
            and unknown ones are ignored.

        Raises
        ------
        KeyError
            With ``strict``, missing or unexpected names (the message lists both).
        TypeError, ValueError
            As `set_parameters`: values that are not floats, or of the wrong shape.
        """
        state_dict = {k: to_numpy(v) for k, v in dict(state_dict).items()}
        expected = set(self._parameter_shapes())
        missing, unexpected = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
        if strict and (missing or unexpected):
            raise KeyError(f"state_dict does not match {self!r}: missing keys {missing}, "
                           f"unexpected keys {unexpected}")
        self._set({k: v for k, v in state_dict.items() if k in expected})

    @classmethod
    def from_state_dict(cls: Type[_L], state_dict: Mapping[str, Any], *, batch_first: bool = False,
                        dropout: float = 0.0, dtype: Optional[npt.DTypeLike] = None) -> _L:
        """Build an LSTM from PyTorch-named parameters.

        The configuration (sizes, num_layers, bidirectional, proj_size, bias) is read from the
        names and shapes.

        Parameters
        ----------
        state_dict : mapping of str to array_like or torch.Tensor
            Parameters by PyTorch name, such as ``torch.nn.LSTM.state_dict()``.
        batch_first : bool, default False
            The layout of the model's input and output (not recorded in the parameters).
        dropout : float, default 0.0
            Dropout between layers in `forward_train` (not recorded in the parameters).
        dtype : {np.float32, np.float64}, optional
            Default: ``weight_ih_l0``'s dtype when it is float32 or float64, else float32.

        Returns
        -------
        LSTM
            A model holding copies of these parameters.

        Raises
        ------
        KeyError
            ``weight_ih_l0`` or ``weight_hh_l0`` is missing, or the names do not form one
            model (missing or unexpected keys).
        ValueError
            Shapes that do not form an LSTM.
        """
        state_dict = {k: to_numpy(v) for k, v in dict(state_dict).items()}
        if "weight_ih_l0" not in state_dict or "weight_hh_l0" not in state_dict:
            raise KeyError(f"state_dict needs weight_ih_l0 and weight_hh_l0 (PyTorch's names); "
                           f"got keys {sorted(state_dict)}")
        w_ih = np.asarray(state_dict["weight_ih_l0"])
        if w_ih.ndim != 2 or w_ih.shape[0] % 4:
            raise ValueError(f"weight_ih_l0 must have shape (4*hidden_size, input_size); got "
                             f"{w_ih.shape}")
        num_layers = 1
        while f"weight_ih_l{num_layers}" in state_dict:
            num_layers += 1
        w_hr = state_dict.get("weight_hr_l0")
        if dtype is None:
            dtype = w_ih.dtype if w_ih.dtype in PANEL else np.float32
        model = cls(w_ih.shape[1], w_ih.shape[0] // 4, num_layers,
                    bias="bias_ih_l0" in state_dict, batch_first=batch_first, dropout=dropout,
                    bidirectional="weight_ih_l0_reverse" in state_dict,
                    proj_size=0 if w_hr is None else np.shape(w_hr)[0], dtype=dtype)
        model.load_state_dict(state_dict)
        return model

    @classmethod
    def from_torch(cls: Type[_L], module: Any) -> _L:
        """The same LSTM as a ``torch.nn.LSTM``, or a one-layer LSTM from a ``torch.nn.LSTMCell``.

        Parameters
        ----------
        module : torch.nn.LSTM or torch.nn.LSTMCell
            Any configuration; its parameters are copied (from any device). float64 stays
            float64; other float dtypes become float32. ``batch_first`` and ``dropout`` are
            taken from it.

        Returns
        -------
        LSTM
            A model that gives ``module``'s results.

        Raises
        ------
        KeyError, ValueError
            ``module``'s parameters do not form an LSTM (see `from_state_dict`).
        TypeError
            ``module`` is not an ``nn.LSTM`` or ``nn.LSTMCell`` (a GRU, an RNN...): the
            message names what it got and what it needs.
        """
        check_torch_lstm(module)
        sd = {k: v.detach().cpu() for k, v in module.state_dict().items()}
        if is_torch_cell(module):
            sd = {f"{k}_l0": v for k, v in sd.items()}
        wide = str(sd["weight_ih_l0"].dtype) == "torch.float64"
        sd = {k: (v.double() if wide else v.float()).numpy() for k, v in sd.items()}
        return cls.from_state_dict(sd, batch_first=bool(getattr(module, "batch_first", False)),
                                   dropout=float(getattr(module, "dropout", 0.0)),
                                   dtype=np.float64 if wide else np.float32)

    @classmethod
    def from_keras(cls, layer: Any, **kwargs: Any) -> LSTM:
        """A Keras 3 LSTM as a batch-first fastlstm LSTM.

        Parameters
        ----------
        layer : Keras layer, list of layers, or arrays
            A built ``keras.layers.LSTM``, a ``Bidirectional`` of one, a list of stacked ones,
            or their ``get_weights()`` arrays.
        **kwargs
            ``dtype`` and ``batch_first``, as `fastlstm.interop.keras.from_keras` takes them.

        Returns
        -------
        LSTM
            See `fastlstm.interop.keras.from_keras`.

        Raises
        ------
        NotImplementedError
            Options fastlstm's cell cannot compute (named in the message).
        ValueError, TypeError
            Unbuilt layers, wrong shapes, or layers that do not form one stack.
        """
        from .interop.keras import from_keras
        return from_keras(layer, **kwargs)

    @classmethod
    def from_onnx(cls, model: Any, **kwargs: Any) -> LSTM:
        """The LSTM nodes of an ONNX model, as a fastlstm LSTM.

        Parameters
        ----------
        model : str, os.PathLike or onnx.ModelProto
            The ``.onnx`` file or the loaded model.
        **kwargs
            ``dtype``, as `fastlstm.interop.onnx.from_onnx` takes it.

        Returns
        -------
        LSTM
            See `fastlstm.interop.onnx.from_onnx`.

        Raises
        ------
        NotImplementedError
            Options fastlstm's cell cannot compute (named in the message).
        ValueError
            No LSTM node, weights that are not constants, or nodes that do not form one stack.
        ImportError
            The ``onnx`` package is not installed.
        """
        from .interop.onnx import from_onnx
        return from_onnx(model, **kwargs)

    def to_onnx(self, path: Any, **kwargs: Any) -> Any:
        """Write this LSTM as a float32 ONNX model that ONNX Runtime runs.

        Parameters
        ----------
        path : str or os.PathLike
            Where to write the ``.onnx`` file.
        **kwargs
            Options of `fastlstm.interop.onnx.to_onnx` (``opset``).

        Returns
        -------
        onnx.ModelProto
            The model written; its inputs and outputs are described in
            `fastlstm.interop.onnx.to_onnx`.

        Raises
        ------
        NotImplementedError
            ``proj_size > 0``: the ONNX LSTM operator has no projection.
        ValueError
            An unsupported ``opset``.
        ImportError
            The ``onnx`` package is not installed.
        """
        from .interop.onnx import to_onnx
        return to_onnx(self, path, **kwargs)

    def config(self) -> Dict[str, Any]:
        """The constructor arguments (without seed) as a dict of plain Python values.

        Returns
        -------
        dict
            ``input_size``, ``hidden_size``, ``num_layers``, ``bias``, ``batch_first``,
            ``dropout``, ``bidirectional``, ``proj_size`` and ``dtype`` (its name):
            ``LSTM(**lstm.config())`` builds the same configuration.
        """
        return dict(input_size=self.input_size, hidden_size=self.hidden_size,
                    num_layers=self.num_layers, bias=self.bias, batch_first=self.batch_first,
                    dropout=self.dropout, bidirectional=self.bidirectional,
                    proj_size=self.proj_size, dtype=self.dtype.name)

    def save(self, path: Union[str, os.PathLike[str], IO[bytes]]) -> None:
        """Write the configuration and the weights to a ``.npz`` that NumPy alone reads.

        The file holds ``fastlstm_format`` (int), ``fastlstm_config`` (JSON text) and the
        parameters by PyTorch name; no pickle. `load` reads it.

        Parameters
        ----------
        path : str, os.PathLike or binary file object
            A file name, written as given (``np.savez`` would add ``.npz`` to a name without
            it, and `load` of the same name would not find it), or a file opened for writing.

        Raises
        ------
        OSError
            The file cannot be written.
        """
        _save_npz(path, _FLOAT_FORMAT, self.config(), self._params)

    def __reduce__(self) -> Tuple[Any, ...]:
        """pickle and copy.deepcopy (a best checkpoint kept aside): the configuration, the
        parameters and the dropout generator, from which the kernels' packed weights are rebuilt
        (they hold raw pointers, which do not travel)."""
        return _rebuild, (type(self), self.config(), self.state_dict(), self._rng)

    @classmethod
    def load(cls, path: Union[str, os.PathLike[str], IO[bytes]]) -> Union[LSTM, QuantizedLSTM]:
        """Read a model written by `save` (``allow_pickle=False``: loading runs no code).

        Parameters
        ----------
        path : str, os.PathLike or binary file object
            The file `save` (or `QuantizedLSTM.save`) wrote.

        Returns
        -------
        LSTM or QuantizedLSTM
            A float model's file (format 1) gives an `LSTM`, a quantized one's (format 2) the
            `QuantizedLSTM`.

        Raises
        ------
        ValueError
            The file is not fastlstm's, or has a format newer than this fastlstm reads.
        OSError
            The file cannot be read.
        """
        with np.load(path, allow_pickle=False) as data:
            if "fastlstm_format" not in data or "fastlstm_config" not in data:
                raise ValueError(f"{path} is not a file written by fastlstm.LSTM.save (it lacks "
                                 f"fastlstm_format/fastlstm_config; keys {sorted(data)})")
            version = int(data["fastlstm_format"])
            if version > _FORMAT_VERSION:
                raise ValueError(f"{path} has format {version}; this fastlstm reads formats up "
                                 f"to {_FORMAT_VERSION}: upgrade fastlstm")
            config = json.loads(str(data["fastlstm_config"]))
            params = {k: data[k] for k in data.files if not k.startswith("fastlstm_")}
        if config.get("mode") is not None:  # a quantized model
            from .quantized import QuantizedLSTM
            return QuantizedLSTM._from_arrays(config, params)
        config.pop("mode", None)
        model = cls(**config)
        model.load_state_dict(params)
        return model

    def quantize(self, mode: str = "int8") -> QuantizedLSTM:
        """An inference copy of this model with quantized weights: ``q = lstm.quantize("int8")``.

        Parameters
        ----------
        mode : str, default "int8"
            The scheme: ``"int8"`` (int8 weights with a float32 scale per row, activations
            quantized per row at run time, exact int32 sums; see `fastlstm.reference`).

        Returns
        -------
        QuantizedLSTM
            The same call surface (``q(x, hx, lengths=..., num_threads=...)``, ``step``,
            ``describe``, ``save``/``load``, pickle) with inputs and outputs in this model's
            dtype; it does not train. This model is not changed.

        Raises
        ------
        ValueError
            An unknown mode (the message lists the modes), or a size over
            `fastlstm.reference.INT8_MAX_K` (the int32 sums could overflow).
        """
        from .quantized import QuantizedLSTM
        return QuantizedLSTM(self, mode)

    def describe(self, seq_len: Optional[int] = None, batch: Optional[int] = None) -> Description:
        """Every tensor's shape and meaning, as a printable table.

        Parameters
        ----------
        seq_len, batch : int, optional
            Sizes to put in the shapes; None leaves them symbolic (``'seq_len'``, ``'batch'``).

        Returns
        -------
        fastlstm.shapes.Description
            ``print(desc)`` shows the table; ``desc['h0'].shape`` is one tensor's shape.

        Raises
        ------
        TypeError, ValueError
            ``seq_len`` or ``batch`` not None nor an int >= 0.
        """
        from .shapes import describe
        return describe(self, seq_len=seq_len, batch=batch)

    def trace(self, x: npt.ArrayLike, hx: StateLike = None) -> Trace:
        """Run x in plain float64 NumPy, keeping every gate value of every step.

        Parameters
        ----------
        x : array_like
            As for `__call__`.
        hx : (h0, c0) or None
            As for `__call__`.

        Returns
        -------
        fastlstm.shapes.Trace
            ``tr[layer, direction]['f']`` is the forget gate at every step; see
            `fastlstm.shapes.trace`.

        Raises
        ------
        TypeError, ValueError
            As `__call__`, for x and hx.
        """
        from .shapes import trace
        return trace(self, x, hx)

    def _repr_args(self) -> str:
        """The constructor's arguments as torch.nn.LSTM's repr shows them: the non-defaults."""
        extra = "".join(f", {k}={v}" for k, v, default in (
            ("num_layers", self.num_layers, 1), ("bias", self.bias, True),
            ("batch_first", self.batch_first, False), ("dropout", self.dropout, 0.0),
            ("bidirectional", self.bidirectional, False), ("proj_size", self.proj_size, 0))
            if v != default)
        return f"{self.input_size}, {self.hidden_size}{extra}"

    def __repr__(self) -> str:
        return f"LSTM({self._repr_args()}, dtype={self.dtype.name})"

    # -- running ------------------------------------------------------------------------------

    def _check_call_size(self, T: int, B: int, train: bool, what: str) -> None:
        """Refuse, from the sizes alone (before x is copied or converted: a broadcast x costs
        nothing until then), a call of T steps of B rows whose buffers cannot fit."""
        Hp = round_up(self.hidden_size, 16)
        K = round_up(max(self.input_size, self.num_directions * self._h_out), 16)
        per_step = (2 * K + 8 * Hp) * self.num_layers * self.num_directions if train else \
            K + 5 * Hp
        _check_allocation(T * B * per_step, self.dtype, what)

    def _prepare(self, x: Any, hx: Any, lengths: Any, train: bool
                 ) -> Tuple[FloatArray, bool, FloatArray, FloatArray, Optional[_Lengths]]:
        shape = getattr(x, "shape", None)
        if shape is not None and len(shape) in (2, 3):
            T = shape[0] if (len(shape) == 2 or not self.batch_first) else shape[1]
            B = 1 if len(shape) == 2 else (shape[0] if self.batch_first else shape[1])
            self._check_call_size(T, B, train, f"x of shape {tuple(shape)}")
        x, unbatched = check_input(x, self.input_size, self.batch_first, self.dtype)
        xt = x.transpose(1, 0, 2) if self.batch_first else x  # time-major view
        T, B = xt.shape[:2]
        h0, c0 = check_state(hx, B, self.num_layers, self.num_directions, self._h_out,
                             self.hidden_size, unbatched, self.batch_first, self.dtype)
        if unbatched and lengths is not None and np.ndim(lengths) == 0:
            lengths = np.reshape(lengths, (1,))
        lengths = check_lengths(lengths, B, T)
        return xt, unbatched, h0, c0, lengths

    def _empty_output(self, T: int, B: int, unbatched: bool) -> Tuple[FloatArray, FloatArray]:
        """A fresh output in the user's layout and its time-major view."""
        F = self.num_directions * self._h_out
        y = np.empty((B, T, F) if self.batch_first else (T, B, F), self.dtype)
        y_tm = y.transpose(1, 0, 2) if self.batch_first else y
        return (y[0] if self.batch_first else y[:, 0]) if unbatched else y, y_tm

    @staticmethod
    def _states_out(h_n: FloatArray, c_n: FloatArray, unbatched: bool) -> State:
        return (h_n[:, 0], c_n[:, 0]) if unbatched else (h_n, c_n)

    def _run(self, x: Any, hx: Any, lengths: Any, train: bool, num_threads: Any,
             dropout: Optional[Callable[[int, FloatArray], FloatArray]] = None
             ) -> Tuple[FloatArray, State, Tuple[Any, Any, bool, Tuple[int, ...]]]:
        """The shared body of __call__ and forward_train."""
        nt = check_num_threads(num_threads)
        xt, unbatched, h0, c0, lengths = self._prepare(x, hx, lengths, train)
        T, B = xt.shape[:2]
        y, y_tm = self._empty_output(T, B, unbatched)
        order = None
        if lengths is not None:  # sorted longest first: the running rows are a prefix
            order = np.argsort(-lengths, kind="stable")
            # reused scratch (no page faults), and np.take (mode clip: unbuffered) runs ~5x
            # faster than fancy indexing along the middle axis
            xs = np.take(xt, order, axis=1, out=_workspace.take(xt.shape, self.dtype),
                         mode="clip")
            xt, h0, c0 = xs, np.take(h0, order, axis=1), np.take(c0, order, axis=1)
            lengths = lengths[order]
            out = _workspace.take(y_tm.shape, self.dtype)
            out.fill(0)
        else:
            out = y_tm
        h_n, c_n, tape = _stack.forward(self._layers, xt, h0, c0, lengths, out, train, nt,
                                        dropout)
        if order is not None:
            inverse = np.argsort(order)
            np.take(out, inverse, axis=1, out=y_tm, mode="clip")
            h_n, c_n = np.take(h_n, inverse, axis=1), np.take(c_n, inverse, axis=1)
            _workspace.give(xs, out)  # the tapes hold copies of what they need
        return y, self._states_out(h_n, c_n, unbatched), (tape, order, unbatched, xt.shape)

    def __call__(self, x: npt.ArrayLike, hx: StateLike = None, *,
                 lengths: Optional[npt.ArrayLike] = None,
                 num_threads: Optional[int] = None) -> Tuple[FloatArray, State]:
        """Run the sequence: ``output, (h_n, c_n) = lstm(x, hx)``.

        Parameters
        ----------
        x : array_like
            (seq_len, batch, input_size), (batch, seq_len, input_size) with ``batch_first``, or
            (seq_len, input_size) for one unbatched sequence. Any float dtype (cast to the
            model's), any memory layout; never written to.
        hx : (h0, c0) or None
            h0 of shape (num_layers * num_directions, batch, H_out) and c0 of shape
            (num_layers * num_directions, batch, hidden_size), whatever ``batch_first`` says
            (2-D for an unbatched x), row ``layer * num_directions + direction``;
            H_out = proj_size or hidden_size. None means zeros.
        lengths : array_like of int, shape (batch,), optional
            Each sequence's own length, in [0, seq_len], any order, as PyTorch's
            PackedSequence: output rows past a length are 0; h_n, c_n are each sequence's state
            at its own last step (the initial state for length 0); the reverse direction starts
            at each sequence's last step; padding is never read. Each row equals its sequence
            run alone, bitwise.
        num_threads : int, optional
            The most OpenMP threads to use; None: OpenMP's setting (``OMP_NUM_THREADS``,
            threadpoolctl). A call starts only the threads its work pays for
            (``openmp_info()['last_num_threads']`` says how many ran). Results do not depend
            on it.

        Returns
        -------
        output : ndarray
            x's layout with num_directions * H_out features: the forward half, then the
            reverse half.
        (h_n, c_n) : tuple of ndarray
            The last states, shaped as h0 and c0.

        Raises
        ------
        ValueError
            A shape that does not fit the model (the message names the argument, the shape
            expected and why, and the usual fix), bad ``lengths`` or ``num_threads``.
        TypeError
            Values that are not floats (ints, bools, complex, objects, ragged lists), ``hx``
            that is not a pair, ``lengths`` that are not integers.
        MemoryError
            A call whose buffers cannot fit in memory, refused before any work.
        KeyboardInterrupt
            Ctrl-C during a long call from the main thread, within milliseconds.
        """
        if lengths is None and self._small is not None:
            out = self._small(x, hx, num_threads, self.batch_first)
            if out is not None:  # a small call with nothing to convert or explain
                return out
        y, states, _ = self._run(x, hx, lengths, False, num_threads)
        return y, states

    forward = __call__

    def step(self, x_t: npt.ArrayLike, state: StateLike = None, *,
             num_threads: Optional[int] = None) -> Tuple[FloatArray, State]:
        """One time step of the whole stack, for streaming: ``y, (h, c) = lstm.step(x_t, (h, c))``.

        Steps in a row equal one call over the sequence, bitwise.

        Parameters
        ----------
        x_t : array_like
            (batch, input_size), or (input_size,) unbatched.
        state : (h, c) or None
            The states of `__call__` (2-D for an unbatched x_t); None means zeros.
        num_threads : int, optional
            As for `__call__`.

        Returns
        -------
        output_t : ndarray
            (batch, H_out), or (H_out,) unbatched: the last layer's h.
        (h, c) : tuple of ndarray
            The new states, shaped as ``state``.

        Raises
        ------
        ValueError
            A bidirectional model (its reverse direction needs the end of the sequence), or
            shapes as in `__call__`.
        TypeError
            As `__call__`.
        """
        if self.bidirectional:
            raise ValueError("a bidirectional LSTM cannot run step by step: its reverse "
                             "direction starts from the end of the sequence, which a stream has "
                             "not seen yet. Run the whole sequence with lstm(x)")
        shape = getattr(x_t, "shape", None)
        if shape is not None and len(shape) == 2:
            self._check_call_size(1, shape[0], False, f"x_t of shape {tuple(shape)}")
        x_t = as_float_array("x_t", x_t, self.dtype)
        if x_t.ndim not in (1, 2) or x_t.shape[-1] != self.input_size:
            raise ValueError(f"x_t is one time step: (batch, input_size) = (batch, "
                             f"{self.input_size}), or ({self.input_size},) unbatched; got shape "
                             f"{x_t.shape}. For a whole sequence call lstm(x)")
        seq = x_t[:, None] if self.batch_first and x_t.ndim == 2 else x_t[None]
        y, states = self(seq, state, num_threads=num_threads)
        return (y[:, 0] if self.batch_first and x_t.ndim == 2 else y[0]), states

    def forward_train(self, x: npt.ArrayLike, hx: StateLike = None, *,
                      lengths: Optional[npt.ArrayLike] = None, seed: Optional[int] = None,
                      num_threads: Optional[int] = None) -> Tuple[FloatArray, State, Backprop]:
        """Forward that keeps what the backward needs.

        Parameters
        ----------
        x, hx, lengths
            As for `__call__`; gradients flow only through valid steps of a ragged batch.
        seed : int, optional
            Seed of this call's dropout masks; None draws them from the model's generator.
            With ``dropout > 0``, each layer's output but the last is dropped out (kept
            elements scaled by 1 / (1 - dropout)).
        num_threads : int, optional
            As for `__call__`; ``backprop`` takes its own.

        Returns
        -------
        output, (h_n, c_n)
            As `__call__` returns them.
        backprop : callable
            ``backprop(grad_output=None, grad_h_n=None, grad_c_n=None, *, num_threads=None)``
            returns the gradients as a dict keyed ``x``, ``h0``, ``c0`` and the parameter
            names (at least one upstream gradient is needed; None counts as zeros). It can
            be called any number of times, from any thread, and uses the parameters as they
            were at this forward.

        Raises
        ------
        ValueError, TypeError, MemoryError
            As `__call__`; ``backprop`` raises ValueError for an upstream gradient of the
            wrong shape, or when all three are None.
        """
        draw_mask: Optional[Callable[[Tuple[int, ...]], FloatArray]] = None
        if self.dropout and self.num_layers > 1:
            rng = self._rng if seed is None else np.random.default_rng(seed)
            keep = 1.0 - self.dropout

            def draw(shape: Tuple[int, ...]) -> FloatArray:
                mask: FloatArray = (rng.random(shape) < keep).astype(self.dtype)
                if keep:
                    mask *= self.dtype.type(1.0 / keep)
                return mask

            draw_mask = draw
        return self._forward_train(x, hx, lengths, num_threads, draw_mask)

    def _forward_train(self, x: npt.ArrayLike, hx: Optional[StateLike],
                       lengths: Optional[npt.ArrayLike], num_threads: Optional[int],
                       draw_mask: Optional[Callable[[Tuple[int, ...]], FloatArray]]
                       ) -> Tuple[FloatArray, State, Backprop]:
        """forward_train with dropout masks from draw_mask(shape) -> scaled mask array, or none
        (fastlstm.torch draws them from torch's generator)."""
        if lengths is None and draw_mask is None and self._small_train is not None:
            out = self._small_train(x, hx, num_threads, self.batch_first)
            if out is not None:  # a small call with nothing to convert or explain
                return out
        dropout: Optional[Callable[[int, FloatArray], FloatArray]] = None
        masks: Dict[int, FloatArray] = {}
        if draw_mask is not None:
            drawer = draw_mask

            def apply(layer: int, y: FloatArray) -> FloatArray:
                mask = drawer(y.shape)
                masks[layer] = mask
                return y * mask

            dropout = apply

        y, states, (tape, order, unbatched, shape) = self._run(
            x, hx, lengths, True, num_threads, dropout)
        saved = (tape, order, unbatched, shape, y.shape, states[0].shape, states[1].shape, masks)

        def backprop(grad_output: Optional[npt.ArrayLike] = None,
                     grad_h_n: Optional[npt.ArrayLike] = None,
                     grad_c_n: Optional[npt.ArrayLike] = None, *,
                     num_threads: Optional[int] = None) -> Gradients:
            return self._backward(saved, grad_output, grad_h_n, grad_c_n, num_threads)

        # the buffers serve the next steps once nothing can call this backprop any more
        buffers = [b for layer in tape[0] for runner, dir_tape, _ in layer
                   if dir_tape is not None for b in runner.buffers(dir_tape)]
        weakref.finalize(backprop, _workspace.give, *buffers)
        return y, states, backprop

    def _backward(self, saved: Tuple[Any, ...], grad_output: Any, grad_h_n: Any, grad_c_n: Any,
                  num_threads: Any) -> Gradients:
        nt = check_num_threads(num_threads)
        tape, order, unbatched, shape, y_shape, h_shape, c_shape, masks = saved
        dy = check_upstream("grad_output", grad_output, y_shape, self.dtype)
        dh_n = check_upstream("grad_h_n", grad_h_n, h_shape, self.dtype)
        dc_n = check_upstream("grad_c_n", grad_c_n, c_shape, self.dtype)
        if dy is None and dh_n is None and dc_n is None:
            raise ValueError("backprop needs at least one of grad_output, grad_h_n, grad_c_n")
        T, B = shape[:2]
        S = self.num_layers * self.num_directions
        dh_n = np.zeros((S, B, self._h_out), self.dtype) if dh_n is None else \
            dh_n.reshape(S, B, self._h_out)
        dc_n = np.zeros((S, B, self.hidden_size), self.dtype) if dc_n is None else \
            dc_n.reshape(S, B, self.hidden_size)
        if dy is not None:
            dy = dy.reshape(T, 1, dy.shape[-1]) if unbatched else (
                dy.transpose(1, 0, 2) if self.batch_first else dy)
        if order is not None:
            dh_n, dc_n = np.take(dh_n, order, axis=1), np.take(dc_n, order, axis=1)
            dy = None if dy is None else np.take(dy, order, axis=1)
        dx, dh0, dc0, layer_grads = _stack.backward(
            tape, dy, dh_n, dc_n, nt, (lambda l, g: g * masks[l]) if masks else None)
        if order is not None:
            inverse = np.argsort(order)
            dx, dh0, dc0 = (np.take(a, inverse, axis=1) for a in (dx, dh0, dc0))
        dx_user = _workspace.output((B, T, self.input_size) if self.batch_first else
                                    (T, B, self.input_size), self.dtype)
        (dx_user.transpose(1, 0, 2) if self.batch_first else dx_user)[...] = dx
        dh0, dc0 = self._states_out(dh0, dc0, unbatched)
        grads = {"x": dx_user.reshape(T, self.input_size) if unbatched else dx_user,
                 "h0": np.ascontiguousarray(dh0), "c0": np.ascontiguousarray(dc0)}
        for k, directions in enumerate(layer_grads):
            for d, g in enumerate(directions):
                suffix = f"_l{k}" + ("_reverse" if d else "")
                grads.update({base + suffix: g[base] for base in
                              ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
                              if base in g})
        return grads
