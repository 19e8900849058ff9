"""Keras import: Keras 3 LSTM layers (plain, Bidirectional, stacked) -> :class:`fastlstm.LSTM`.

Keras keeps one ``kernel`` (input_size, 4*units), one ``recurrent_kernel`` (units, 4*units) and
one ``bias`` (4*units,) per layer, gate column blocks in the order i, f, c, o: PyTorch's
i, f, g, o. So ``weight_ih = kernel.T``, ``weight_hh = recurrent_kernel.T``, ``bias_ih = bias``
and ``bias_hh = 0`` (Keras has a single bias). Nothing here computes an LSTM.

Keras objects are recognised by their attributes (duck typing), so this module imports without
Keras, and never imports it: everything is read from the layer that is passed in.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

import numpy as np
import numpy.typing as npt

from .._validate import to_numpy

if TYPE_CHECKING:
    from ..model import LSTM

_Arrays = Tuple[npt.NDArray[Any], npt.NDArray[Any], Optional[npt.NDArray[Any]]]

_PANEL = (np.dtype(np.float32), np.dtype(np.float64))


# -- recognising Keras objects -----------------------------------------------------------------

def _class_names(obj: Any) -> set[str]:
    return {cls.__name__ for cls in type(obj).__mro__}


def _is_bidirectional(obj: Any) -> bool:
    return hasattr(obj, "forward_layer") and hasattr(obj, "backward_layer")


def _is_lstm_cell(obj: Any) -> bool:
    return "LSTMCell" in _class_names(obj)


def _is_rnn(obj: Any) -> bool:
    """A keras.layers.LSTM, or keras.layers.RNN around one LSTMCell."""
    return hasattr(obj, "cell") and hasattr(obj, "go_backwards")


def _is_keras_layer(obj: Any) -> bool:
    return _is_bidirectional(obj) or _is_rnn(obj) or _is_lstm_cell(obj)


def _is_array(obj: Any) -> bool:
    return hasattr(obj, "shape") and hasattr(obj, "dtype")


def _describe(obj: Any) -> str:
    """E.g. LSTM 'lstm_1'; the bare type name for an object without a name."""
    name = getattr(obj, "name", "")
    return f"{type(obj).__name__} {name!r}" if name else type(obj).__name__


# -- reading one layer -------------------------------------------------------------------------

def _numpy(value: Any) -> npt.NDArray[Any]:
    """A Keras variable (any backend) or array-like as an ndarray."""
    if hasattr(value, "numpy") and not hasattr(value, "detach"):  # keras / tf Variable
        value = value.numpy()
    return np.asarray(to_numpy(value))


def _activation_name(cell: Any, key: str) -> Any:
    """How Keras itself serializes the cell's activation ('tanh', 'sigmoid', or a dict/name for
    custom ones); the function's __name__ when the cell cannot be serialized."""
    try:
        return cell.get_config()[key]
    except Exception:  # custom cells whose get_config fails: fall back to the function
        fn = getattr(cell, key, None)
        return getattr(fn, "__name__", repr(fn))


def _check_arrays(arrays: Any, where: str) -> _Arrays:
    """[kernel, recurrent_kernel(, bias)] -> (kernel, recurrent_kernel, bias or None) after
    checking Keras's shapes; the errors say which array is wrong and what it should be."""
    arrays = [_numpy(a) for a in arrays]
    if len(arrays) not in (2, 3):
        raise ValueError(
            f"{where}: expected Keras LSTM weights [kernel, recurrent_kernel, bias] (or "
            f"[kernel, recurrent_kernel] with use_bias=False), as layer.get_weights() returns "
            f"them; got {len(arrays)} arrays of shapes {[a.shape for a in arrays]}")
    kernel, recurrent, bias = arrays[0], arrays[1], arrays[2] if len(arrays) == 3 else None
    if recurrent.ndim != 2 or recurrent.shape[1] != 4 * recurrent.shape[0]:
        hint = ""
        if recurrent.ndim == 2 and recurrent.shape[0] == 4 * recurrent.shape[1]:
            hint = (" It looks transposed (PyTorch's (4*hidden, hidden) layout): use "
                    "fastlstm.LSTM.from_state_dict for PyTorch-layout weights")
        elif recurrent.ndim == 2 and recurrent.shape[1] == 3 * recurrent.shape[0]:
            hint = " It has 3 gate blocks: these look like a GRU's weights, not an LSTM's"
        raise ValueError(f"{where}: recurrent_kernel (the 2nd array) must have shape (units, "
                         f"4*units); got {recurrent.shape}.{hint}")
    H = recurrent.shape[0]
    if kernel.ndim != 2 or kernel.shape[1] != 4 * H:
        raise ValueError(f"{where}: kernel (the 1st array) must have shape (input_size, 4*units)"
                         f" = (input_size, {4 * H}) to match recurrent_kernel {recurrent.shape};"
                         f" got {kernel.shape}. The order is [kernel, recurrent_kernel, bias]")
    if bias is not None and bias.shape != (4 * H,):
        raise ValueError(f"{where}: bias (the 3rd array) must have shape (4*units,) = "
                         f"({4 * H},); got {bias.shape}")
    for name, a in (("kernel", kernel), ("recurrent_kernel", recurrent), ("bias", bias)):
        if a is not None and a.dtype.kind != "f":
            raise TypeError(f"{where}: {name} must hold floating-point numbers; got dtype "
                            f"{a.dtype}")
    return kernel, recurrent, bias


def _read_cell(cell: Any, where: str) -> _Arrays:
    """(kernel, recurrent_kernel, bias or None) of a built LSTMCell, after checking that it
    computes what fastlstm computes."""
    if not _is_lstm_cell(cell):
        raise NotImplementedError(f"{where}: its cell is a {type(cell).__name__}; fastlstm "
                                  "imports LSTM layers (keras.layers.LSTM, or keras.layers.RNN "
                                  "of one keras.layers.LSTMCell)")
    if not hasattr(cell, "kernel") or not hasattr(cell, "recurrent_kernel"):
        raise ValueError(f"{where} is not built, so it has no weights yet. Build it first: call "
                         "it on an input, or layer.build((None, None, input_size))")
    for key, want in (("activation", "tanh"), ("recurrent_activation", "sigmoid")):
        name = _activation_name(cell, key)
        if name != want:
            raise NotImplementedError(
                f"{where}: {key}={name!r} is not supported; fastlstm's cell computes only "
                f"activation='tanh' with recurrent_activation='sigmoid' (Keras's defaults). "
                "Train the layer with the defaults to import it")
    use_bias = bool(getattr(cell, "use_bias", True))
    arrays = [cell.kernel, cell.recurrent_kernel] + ([cell.bias] if use_bias else [])
    # dropout / recurrent_dropout act only while training (keras ignores them at inference).
    return _check_arrays(arrays, where)


def _read_rnn(layer: Any, where: str, in_bidirectional: bool = False) -> _Arrays:
    """One direction: a keras.layers.LSTM / RNN(LSTMCell), or a bare LSTMCell."""
    if _is_lstm_cell(layer):
        return _read_cell(layer, where)
    if getattr(layer, "go_backwards", False) and not in_bidirectional:
        raise NotImplementedError(
            f"{where}: go_backwards=True is not supported on a plain layer; fastlstm runs a "
            "layer forward (or both ways with bidirectional). Import it with go_backwards=False "
            "and run it on x[:, ::-1] (Keras's output is then that model's output, not flipped "
            "back), or use keras.layers.Bidirectional")
    return _read_cell(layer.cell, where)


def _read_layer(obj: Any, k: int) -> Dict[str, Any]:
    """One Keras layer (or one layer's arrays) as a dict: where, D, H, I, return_sequences and
    weights, a list of (kernel, recurrent_kernel, bias or None) per direction."""
    where = f"layer {k} ({_describe(obj)})" if _is_keras_layer(obj) else f"layer {k}"
    return_sequences = getattr(obj, "return_sequences", None)
    if _is_bidirectional(obj):
        merge_mode = getattr(obj, "merge_mode", "concat")
        if merge_mode != "concat":
            raise NotImplementedError(
                f"{where}: merge_mode={merge_mode!r} is not supported; fastlstm returns the two "
                "directions concatenated (merge_mode='concat'), output[..., :units] forward and "
                "output[..., units:] backward. The weights do not depend on merge_mode: "
                "rebuild the Bidirectional with merge_mode='concat' (same weights), or combine "
                "those halves yourself (sum/ave/mul; merge_mode=None is the two halves)")
        forward, backward = obj.forward_layer, obj.backward_layer
        if getattr(forward, "go_backwards", False) or not getattr(backward, "go_backwards", True):
            raise NotImplementedError(
                f"{where}: its forward_layer has go_backwards=True (and its backward_layer "
                "go_backwards=False); fastlstm's bidirectional layer needs the forward layer to "
                "run forward and the backward layer with go_backwards=True, as Bidirectional "
                "builds them from one layer")
        # Bidirectional flips the backward layer's output back into input order: PyTorch's
        # reverse direction, whose h_n is its state after reading x[0].
        weights = [_read_rnn(forward, f"{where}, forward_layer", True),
                   _read_rnn(backward, f"{where}, backward_layer", True)]
        if weights[0][1].shape != weights[1][1].shape or \
                weights[0][0].shape != weights[1][0].shape:
            raise ValueError(f"{where}: forward_layer and backward_layer must have the same "
                             f"units and input size (fastlstm's directions share them); got "
                             f"kernels {weights[0][0].shape} and {weights[1][0].shape}")
    elif _is_keras_layer(obj):
        weights = [_read_rnn(obj, where)]
    elif isinstance(obj, (list, tuple)) and all(_is_array(a) or isinstance(a, (list, np.ndarray))
                                                for a in obj):
        weights = [_check_arrays(obj, where)]
    else:
        raise TypeError(f"{where}: expected a keras.layers.LSTM, a keras.layers.Bidirectional "
                        f"of one, or its get_weights() arrays; got {type(obj).__name__}")
    kernel, recurrent, _ = weights[0]
    return {"where": where, "D": len(weights), "H": recurrent.shape[0], "I": kernel.shape[0],
            "return_sequences": return_sequences, "weights": weights}


# -- the stack ---------------------------------------------------------------------------------

def _split(obj: Any) -> List[Any]:
    """The layers `obj` holds: one Keras layer, a list of them, one layer's get_weights()
    arrays, or a list of such lists."""
    if _is_keras_layer(obj):
        return [obj]
    if not isinstance(obj, (list, tuple)):
        hint = ""
        if hasattr(obj, "layers"):
            hint = (" For a Model/Sequential pass its LSTM layers, e.g. [layer for layer in "
                    "model.layers if type(layer).__name__ in ('LSTM', 'Bidirectional')]")
        raise TypeError(f"from_keras expects a keras.layers.LSTM, a keras.layers.Bidirectional "
                        f"of one, a list of them (stacked), or get_weights() arrays; got "
                        f"{type(obj).__name__}.{hint}")
    if not obj:
        raise ValueError("from_keras got an empty list; pass at least one layer (or its "
                         "get_weights() arrays)")
    if all(_is_keras_layer(item) for item in obj):
        return list(obj)
    if all(isinstance(item, (list, tuple)) for item in obj):
        return list(obj)  # one get_weights() list per layer
    if all(_is_array(item) for item in obj):
        if len(obj) not in (2, 3):
            raise ValueError(
                f"from_keras got a flat list of {len(obj)} arrays (shapes "
                f"{[tuple(np.shape(a)) for a in obj]}); a flat list must be one LSTM layer's "
                "get_weights(): [kernel, recurrent_kernel, bias] or [kernel, recurrent_kernel]. "
                "For stacked layers pass one list per layer ([[k0, r0, b0], [k1, r1, b1]]); "
                "for a Bidirectional (or a whole model's get_weights(), whose layout is "
                "ambiguous) pass the Keras layers themselves")
        return [obj]
    raise TypeError(f"from_keras got a list mixing {sorted({type(i).__name__ for i in obj})}; "
                    "pass Keras layers only, or get_weights() arrays only")


def _check_stack(layers: List[Dict[str, Any]]) -> None:
    """Layer k+1 must read layer k's whole output sequence, with fastlstm's shared sizes."""
    first = layers[0]
    for k in range(1, len(layers)):
        prev, layer = layers[k - 1], layers[k]
        if layer["D"] != first["D"]:
            raise ValueError(f"{layer['where']} is {'' if layer['D'] == 2 else 'not '}"
                             f"bidirectional but layer 0 is {'' if first['D'] == 2 else 'not '}"
                             "bidirectional; a fastlstm.LSTM (like torch.nn.LSTM) has one "
                             "bidirectional flag for all its layers. Import them separately")
        if layer["H"] != first["H"]:
            raise ValueError(f"{layer['where']} has units={layer['H']} but layer 0 has "
                             f"units={first['H']}; a fastlstm.LSTM (like torch.nn.LSTM) has one "
                             "hidden_size for all its layers. Import them separately")
        if layer["I"] != prev["D"] * prev["H"]:
            raise ValueError(f"{layer['where']} takes input_size={layer['I']}, but layer {k - 1}"
                             f" outputs num_directions*units = {prev['D'] * prev['H']} features;"
                             " stacked layers must each read the previous layer's output")
        if prev["return_sequences"] is False:
            raise ValueError(f"{prev['where']} has return_sequences=False, so it outputs only "
                             f"its last step and cannot feed {layer['where']}; in a stack every "
                             "layer but the last needs return_sequences=True")


def from_keras(obj: Any, *, dtype: Optional[npt.DTypeLike] = None,
               batch_first: bool = True) -> LSTM:
    """Build a :class:`fastlstm.LSTM` from Keras LSTM layers or their weights.

    Parameters
    ----------
    obj : Keras layer, list of layers, or arrays
        A built ``keras.layers.LSTM`` (or ``keras.layers.RNN`` of one ``LSTMCell``, or the cell);
        a ``keras.layers.Bidirectional`` of one (``merge_mode='concat'``); a list of such
        layers stacked (layer k's output sequence feeds layer k+1); one layer's
        ``get_weights()``, ``[kernel, recurrent_kernel, bias]`` or ``[kernel,
        recurrent_kernel]``; or a list of those, one per stacked layer (unidirectional).
    dtype : {np.float32, np.float64}, optional
        Defaults to float64 when every kernel and recurrent_kernel is float64, else float32
        (Keras's variables usually are float32).
    batch_first : bool, default True
        Keras is batch-major: x (batch, seq_len, input_size).

    Returns
    -------
    fastlstm.LSTM
        ``num_layers`` = number of layers, ``bidirectional`` for Bidirectional layers,
        ``bias`` when any layer has ``use_bias=True`` (a layer without one gets zeros, the same
        cell), ``bias_hh`` zero. ``output`` is Keras's output with ``return_sequences=True``;
        ``h_n[layer*D + direction]`` / ``c_n[...]`` are Keras's states (a Bidirectional returns
        ``[output, h_fw, c_fw, h_bw, c_bw]``; h_bw is the backward layer's state after reading
        x[:, 0], as in PyTorch). Keras's ``initial_state=[h0, c0]`` (per direction and layer)
        is ``hx=(stack(h0s), stack(c0s))`` in that row order.

    Raises
    ------
    NotImplementedError
        For what fastlstm's cell cannot compute, naming it: ``activation`` other than 'tanh',
        ``recurrent_activation`` other than 'sigmoid', ``go_backwards=True`` on a plain layer,
        ``merge_mode`` other than 'concat', cells other than LSTMCell.
    ValueError
        For unbuilt layers, arrays of the wrong shapes, or layers that do not form one stack
        (directions, units, sizes, ``return_sequences=False`` before the last layer).

    Notes
    -----
    With ``return_sequences=False`` Keras returns only the last output, which is ``h_n[-1]``
    (a Bidirectional's is ``concatenate([h_n[-2], h_n[-1]], -1)``: its backward half is the
    state after x[:, 0], not ``output[:, -1]``). ``dropout`` and ``recurrent_dropout`` act only
    while Keras trains and are ignored, as at Keras inference; ``unit_forget_bias`` only
    initialises the bias, which is read as it is. ``stateful`` layers' carried states are not
    weights: pass them as ``hx``. Keras masks (``Masking``, ``mask_zero``) of right-padded
    batches correspond to ``lengths``.
    """
    layers = [_read_layer(item, k) for k, item in enumerate(_split(obj))]
    _check_stack(layers)

    if dtype is None:
        wide = all(a.dtype == np.float64 for layer in layers
                   for kernel, recurrent, _ in layer["weights"] for a in (kernel, recurrent))
        dtype = np.float64 if wide else np.float32
    bias = any(b is not None for layer in layers for _, _, b in layer["weights"])
    state_dict = {}
    for k, layer in enumerate(layers):
        for d, (kernel, recurrent, b) in enumerate(layer["weights"]):
            suffix = f"_l{k}" + ("_reverse" if d else "")
            state_dict["weight_ih" + suffix] = kernel.T
            state_dict["weight_hh" + suffix] = recurrent.T
            if bias:
                zeros = np.zeros(4 * layer["H"], dtype)
                state_dict["bias_ih" + suffix] = zeros if b is None else b
                state_dict["bias_hh" + suffix] = zeros  # Keras has one bias per layer
    state_dict = {name: np.ascontiguousarray(value, dtype) for name, value in state_dict.items()}

    from ..model import LSTM  # here: model.py imports this module lazily too

    first = layers[0]
    model = LSTM(first["I"], first["H"], len(layers), bias=bias, batch_first=batch_first,
                 bidirectional=first["D"] == 2, dtype=dtype)
    model.load_state_dict(state_dict)
    return model
