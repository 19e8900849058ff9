"""Shapes explained: what every tensor of an LSTM is, and what one step computes.

`describe` lists, for a model or for a bare configuration, the input, the states, every
parameter (as PyTorch stacks it and as the textbook writes it, one matrix per gate acting on
``[x_t, h_{t-1}]``), the per-step gate values and the outputs, each with its shape and meaning.
`trace` runs a model's sequence in plain float64 NumPy and keeps every gate's pre-activation and
activation at every step, to show what the cell does. Both are explanatory tools, not fast paths.

    >>> from fastlstm.shapes import describe_config
    >>> desc = describe_config(input_size=3, hidden_size=5, batch=2)
    >>> desc["x"].shape, desc["weight_ih_l0"].shape, desc["W_f_l0"].shape, desc["h_n"].shape
    (('seq_len', 2, 3), (20, 3), (5, 8), (1, 2, 5))
"""
from __future__ import annotations

import operator
import textwrap
import types
from collections import namedtuple
from collections.abc import Mapping
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

from ._validate import check_input, check_size, check_state, to_numpy

__all__ = ["GATES", "Description", "Row", "Trace", "describe", "describe_config",
           "gate_weights", "trace"]

# PyTorch stacks the four gate blocks along the 4H axis in this order.
GATES = ("i", "f", "g", "o")
_GATE_WORDS = {
    "i": ("input gate", "sigmoid", "how much of the candidate g_t enters the cell"),
    "f": ("forget gate", "sigmoid", "how much of c_{t-1} is kept"),
    "g": ("candidate cell values (the textbook's C~_t)", "tanh", "what may be added to the cell"),
    "o": ("output gate", "sigmoid", "how much of tanh(c_t) goes out as h_t"),
}
_CONFIG_DEFAULTS = {"num_layers": 1, "bidirectional": False, "proj_size": 0,
                    "batch_first": False, "bias": True}
# quantization modes describe knows (fastlstm.quantized.MODES; None: a float model)
_MODES = ("int8",)
_F64 = npt.NDArray[np.float64]  # (annotations)

Row = namedtuple("Row", "name shape meaning")
Row.__doc__ = """One tensor of a `Description`: a named tuple ``(name, shape, meaning)``.

Parameters
----------
name : str
    The tensor's name (``x``, ``h0``, ``weight_ih_l0``, ``W_f_l0``, ``f_t``, ...).
shape : tuple of int or str
    Its shape: ints, or 'seq_len' / 'batch' where those were not given.
meaning : str
    What it is, in words.
"""


def _suffix(layer: int, direction: int) -> str:
    return f"_l{layer}" + ("_reverse" if direction else "")


def _fmt_shape(shape: Sequence[Union[int, str]]) -> str:
    inner = ", ".join(str(s) for s in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


# -- describe --------------------------------------------------------------------------------------

class Description:
    """The shapes of an LSTM, as a table.

    Attributes
    ----------
    config : dict
        input_size, hidden_size, num_layers, bidirectional, proj_size, batch_first, bias,
        seq_len, batch, mode (None for a float model, "int8" for a quantized one).
    sections : list of (title, list of Row)
        The rows grouped as printed: inputs and states, each layer and direction, each step,
        outputs.
    rows : list of Row
        Every row, in order: ``Row(name, shape, meaning)`` namedtuples.
    memory : dict or None
        A quantized model's parameter memory in bytes: ``int8`` (weights), ``scales``
        (float32, one per weight row), ``bias`` (float32), ``total``, and ``float32`` (the
        float32 model's parameters, for comparison). None for a float model.

    Parameters
    ----------
    config : mapping
        The configuration, as under Attributes (`describe_config` builds it).
    sections : sequence of (title, sequence of Row)
        The rows, grouped as printed.
    memory : mapping, optional
        A quantized model's parameter memory, as under Attributes.

    Notes
    -----
    ``str(desc)`` (and the REPL's ``repr``) is an aligned table; ``desc[name]`` is one Row.
    Made by `describe`, `describe_config` and the models' ``describe``.
    """

    def __init__(self, config: Mapping[str, Any], sections: Sequence[Tuple[str, Sequence[Row]]],
                 memory: Optional[Mapping[str, int]] = None) -> None:
        self.config = dict(config)
        self.config.setdefault("mode", None)
        self.sections = [(title, list(rows)) for title, rows in sections]
        self.memory = None if memory is None else dict(memory)

    @property
    def rows(self) -> List[Row]:
        """Every row, in order."""
        return [row for _, rows in self.sections for row in rows]

    def __getitem__(self, name: str) -> Row:
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(f"no row named {name!r}; the rows are {[r.name for r in self.rows]}")

    def __iter__(self) -> Iterator[Row]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def format(self, width: int = 100) -> str:
        """The table, its meaning column wrapped so that lines stay within `width` characters.

        Parameters
        ----------
        width : int, default 100
            The line width to wrap at (at least 30 characters go to the meaning column).

        Returns
        -------
        str
            The table, as ``print(desc)`` shows it with the default width.

        Raises
        ------
        TypeError
            A width that is not a number.
        """
        rows = self.rows
        w_name = max(len(r.name) for r in rows)
        w_shape = max(len(_fmt_shape(r.shape)) for r in rows)
        indent = " " * (2 + w_name + 2 + w_shape + 2)
        c = self.config
        quantized = c.get("mode") is not None
        lines = [
            f"{'Quantized' if quantized else ''}LSTM(input_size={c['input_size']}, "
            f"hidden_size={c['hidden_size']}, "
            f"num_layers={c['num_layers']}, bias={c['bias']}, batch_first={c['batch_first']}, "
            f"bidirectional={c['bidirectional']}, proj_size={c['proj_size']}"
            + (f", mode={c['mode']})" if quantized else ")"),
            f"H = hidden_size = {c['hidden_size']}, H_out = proj_size or hidden_size = "
            f"{c['proj_size'] or c['hidden_size']}, D = num_directions = "
            f"{2 if c['bidirectional'] else 1}"
            + ("" if c["seq_len"] is not None and c["batch"] is not None else
               "; seq_len and batch stand for any size"),
        ]
        if self.memory is not None:
            m = self.memory
            lines += textwrap.wrap(
                f"parameters in memory: {m['int8']:,} B int8 weights + {m['scales']:,} B float32 "
                f"scales + {m['bias']:,} B float32 biases = {m['total']:,} B "
                f"({m['float32'] / m['total']:.1f}x less than the float32 model's "
                f"{m['float32']:,} B); inputs, states and outputs stay floating point",
                max(30, width))
        for title, section in self.sections:
            lines += ["", title]
            for name, shape, meaning in section:
                head = f"  {name:<{w_name}}  {_fmt_shape(shape):<{w_shape}}  "
                wrapped = textwrap.wrap(meaning, max(30, width - len(indent))) or [""]
                lines.append(head + wrapped[0])
                lines += [indent + more for more in wrapped[1:]]
        return "\n".join(lines)

    __str__ = format

    def __repr__(self) -> str:
        return self.format()


def _optional_size(name: str, value: Any) -> Optional[int]:
    """seq_len / batch: None (shown symbolically) or an int >= 0."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError(f"{name} must be None or an int >= 0, got {value!r}")
    try:
        n = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be None (shown as '{name}') or an int >= 0, got "
                        f"{type(value).__name__} {value!r}") from None
    if n < 0:
        raise ValueError(f"{name} must be None (shown as '{name}') or an int >= 0, got {n}")
    return n


def _check_config(input_size: Any, hidden_size: Any, num_layers: Any, bidirectional: Any,
                  proj_size: Any, batch_first: Any, bias: Any) -> Dict[str, Any]:
    config = {"input_size": check_size("input_size", input_size),
              "hidden_size": check_size("hidden_size", hidden_size),
              "num_layers": check_size("num_layers", num_layers),
              "bidirectional": bool(bidirectional), "batch_first": bool(batch_first),
              "bias": bool(bias)}
    if isinstance(proj_size, bool) or not isinstance(proj_size, (int, np.integer)):
        raise TypeError(f"proj_size must be an int (0 for no projection), got "
                        f"{type(proj_size).__name__} {proj_size!r}")
    if not 0 <= proj_size < config["hidden_size"]:
        # as torch.nn.LSTM: a projection maps the H cell outputs to fewer values
        raise ValueError(f"proj_size must be 0 (no projection) or between 1 and hidden_size - 1 "
                         f"= {config['hidden_size'] - 1}, since it projects h from hidden_size "
                         f"values down to proj_size; got proj_size={proj_size}")
    config["proj_size"] = int(proj_size)
    return config


def describe_config(input_size: int, hidden_size: int, num_layers: int = 1,
                    bidirectional: bool = False, proj_size: int = 0, batch_first: bool = False,
                    bias: bool = True, seq_len: Optional[int] = None, batch: Optional[int] = None,
                    mode: Optional[str] = None) -> Description:
    """The shape and meaning of every tensor of an LSTM with this configuration.

    No weights are needed.

    Parameters
    ----------
    input_size, hidden_size, num_layers, bidirectional, proj_size, batch_first, bias
        As for ``torch.nn.LSTM`` (and `fastlstm.LSTM`).
    seq_len, batch : int, optional
        Sizes to put in the shapes; None leaves them symbolic ('seq_len', 'batch').
    mode : {None, "int8"}, optional
        None: a float model. "int8": a quantized model (`fastlstm.QuantizedLSTM`), with its
        int8 parameters, how a step uses them, and their memory (``desc.memory``).

    Returns
    -------
    Description
        ``desc.rows`` is a list of ``Row(name, shape, meaning)``; ``print(desc)`` shows a table.

    Raises
    ------
    TypeError
        A size of the wrong type (bools and floats are not sizes).
    ValueError
        A size out of range, ``proj_size`` not in [0, hidden_size), or an unknown mode.
    """
    config = _check_config(input_size, hidden_size, num_layers, bidirectional, proj_size,
                           batch_first, bias)
    config["seq_len"] = _optional_size("seq_len", seq_len)
    config["batch"] = _optional_size("batch", batch)
    if mode is not None and (not isinstance(mode, str) or mode not in _MODES):
        raise ValueError(f"mode must be None (a float model) or one of the quantization modes "
                         f"{list(_MODES)}, got {mode!r}")
    config["mode"] = mode
    return Description(config, _sections(**config), _memory(config) if mode else None)


def _memory(config: Mapping[str, Any]) -> Dict[str, int]:
    """Bytes of a quantized model's parameters (and of the float32 model's), from the sizes."""
    I, H, L, P = (config[k] for k in ("input_size", "hidden_size", "num_layers", "proj_size"))
    D = 2 if config["bidirectional"] else 1
    H_out = P or H
    weights = D * (4 * H * (I + H_out) + (L - 1) * 4 * H * (D * H_out + H_out) + L * P * H)
    scales = D * L * (8 * H + P)
    bias = D * L * 4 * H if config["bias"] else 0
    return {"int8": weights, "scales": 4 * scales, "bias": 4 * bias,
            "total": weights + 4 * (scales + bias),
            "float32": 4 * (weights + 2 * bias)}


def describe(model: Any, seq_len: Optional[int] = None, batch: Optional[int] = None) -> Description:
    """The shape and meaning of every tensor of `model` (see `describe_config`).

    Parameters
    ----------
    model : LSTM, torch.nn.LSTM or mapping
        Anything with ``torch.nn.LSTM``'s configuration attributes (a `fastlstm.LSTM`, a
        ``torch.nn.LSTM``) or a mapping of them; input_size and hidden_size are required, the
        others default as in PyTorch. Only the configuration is read, never the weights. A
        ``mode`` that names a quantization mode ("int8": a `fastlstm.QuantizedLSTM`, or its
        ``config()``) describes the quantized model; any other ``mode`` (``torch.nn.LSTM``'s
        is "LSTM") is not read.
    seq_len, batch : int, optional
        Sizes to put in the shapes; None leaves them symbolic.

    Returns
    -------
    Description
        As `describe_config` returns it.

    Raises
    ------
    TypeError
        `model` lacks input_size or hidden_size, or a size of the wrong type.
    ValueError
        A size out of range.
    """
    get: Callable[..., Any]
    if isinstance(model, Mapping):
        def get(key: str, default: Any = None) -> Any:
            return model.get(key, default)
    else:
        def get(key: str, default: Any = None) -> Any:
            return getattr(model, key, default)
    missing = [k for k in ("input_size", "hidden_size") if get(k) is None]
    if missing:
        raise TypeError(f"describe needs an LSTM or a mapping with input_size and hidden_size; "
                        f"{type(model).__name__} lacks {missing}. For sizes alone use "
                        f"describe_config(input_size, hidden_size, ...)")
    config = {k: get(k) for k in ("input_size", "hidden_size")}
    config.update({k: get(k, d) for k, d in _CONFIG_DEFAULTS.items()})
    mode = get("mode")
    config["mode"] = mode if isinstance(mode, str) and mode in _MODES else None
    return describe_config(**config, seq_len=seq_len, batch=batch)


def _sections(input_size: int, hidden_size: int, num_layers: int, bidirectional: bool,
              proj_size: int, batch_first: bool, bias: bool, seq_len: Optional[int],
              batch: Optional[int], mode: Optional[str] = None) -> List[Tuple[str, List[Row]]]:
    I, H, L, P = input_size, hidden_size, num_layers, proj_size
    D = 2 if bidirectional else 1
    H_out = P or H
    T = "seq_len" if seq_len is None else seq_len
    B = "batch" if batch is None else batch
    rows_note = ("row layer*D + direction" if L * D > 1 else "row 0 (one layer, one direction)")
    x_shape = (B, T, I) if batch_first else (T, B, I)
    sections = [("inputs", [
        Row("x", x_shape,
            f"the input: input_size = {I} features per time step, "
            + ("batch-first: (batch, seq_len, input_size). " if batch_first else
               "time-major: (seq_len, batch, input_size); batch_first=True takes (batch, "
               "seq_len, input_size). ")
            + f"One unbatched sequence: (seq_len, {I}), and every state then drops its batch "
              "axis."),
        Row("h0", (L * D, B, H_out),
            f"initial hidden state, zeros when hx is not given: (num_layers*D, batch, H_out), "
            f"{rows_note}; batch is axis 1 even with batch_first=True"),
        Row("c0", (L * D, B, H),
            "initial cell state, zeros when not given: same rows as h0, hidden_size wide"
            + (" (not proj_size: only h is projected)" if P else "")),
    ])]
    for layer in range(L):
        I_k = I if layer == 0 else D * H_out
        src = ("x_t" if layer == 0 else f"x_t, here layer {layer - 1}'s output at step t"
               + (" [forward | reverse]" if D == 2 else ""))
        for d in range(D):
            sfx = _suffix(layer, d)
            blocks = ", ".join(f"{g} = rows {j * H}:{(j + 1) * H}" for j, g in enumerate(GATES))
            title = f"layer {layer}"
            if D == 2:
                title += (", reverse: runs from the last step back to the first" if d else
                          ", forward")
            title += f" (row {layer * D + d} of h0, c0, h_n, c_n)"
            if mode is not None:
                sections.append((title, _quantized_rows(sfx, blocks, src, I_k, H, H_out, P, bias)))
                continue
            rows = [
                Row(f"weight_ih{sfx}", (4 * H, I_k),
                    f"PyTorch's input weights, the four gates stacked by rows: {blocks}; "
                    f"columns: the {I_k} values of {src}"),
                Row(f"weight_hh{sfx}", (4 * H, H_out),
                    f"PyTorch's recurrent weights, same row blocks; columns: the {H_out} values "
                    f"of h_{{t-1}}"),
            ]
            if bias:
                rows += [
                    Row(f"bias_ih{sfx}", (4 * H,), "bias, same row blocks"),
                    Row(f"bias_hh{sfx}", (4 * H,),
                        "second bias, same blocks: only the sum bias_ih + bias_hh matters"),
                ]
            if P:
                rows.append(Row(f"weight_hr{sfx}", (P, H),
                                f"projection, hidden_size -> proj_size: h_t = weight_hr{sfx} @ "
                                f"(o_t * tanh(c_t))"))
            for j, g in enumerate(GATES):
                what, act, _ = _GATE_WORDS[g]
                sl = f"{j * H}:{(j + 1) * H}"
                rows.append(Row(
                    f"W_{g}{sfx}", (H, I_k + H_out),
                    f"{what}: {g}_t = {act}(W_{g} @ [x_t, h_{{t-1}}]"
                    + (f" + b_{g})" if bias else ")")
                    + f", one matrix on x_t ({I_k}) and h_{{t-1}} ({H_out}) concatenated in that "
                      f"order; = hstack(weight_ih{sfx}[{sl}], weight_hh{sfx}[{sl}])"))
            if bias:
                rows += [Row(f"b_{g}{sfx}", (H,),
                             f"b_{g} = bias_ih{sfx}[{j * H}:{(j + 1) * H}] + "
                             f"bias_hh{sfx}[{j * H}:{(j + 1) * H}]")
                         for j, g in enumerate(GATES)]
            sections.append((title, rows))
    h_rule = "weight_hr @ (o_t * tanh(c_t))" if P else "o_t * tanh(c_t)"
    step = []
    if mode is not None:
        h_rule = ("(q(r_t) @ weight_hr.T) * (scale(r_t) * weight_hr_scale), r_t = o_t * "
                  "tanh(c_t) quantized per row as x_t is" if P else h_rule)
        step = [
            Row("q(x_t)", (B, "I_k"),
                "each row of the layer's input x_t quantized to int8 at run time, with its own "
                "float32 scale(x_t) = max|row| / 127 (I_k = the layer's input width)"),
            Row("q(h_{t-1})", (B, H_out), "each row of h_{t-1} quantized the same way"),
            Row("a_t", (B, 4 * H),
                "pre-activations, float32: (q(x_t) @ weight_ih.T) * (scale(x_t) * "
                "weight_ih_scale) + bias + (q(h_{t-1}) @ weight_hh.T) * (scale(h_{t-1}) * "
                "weight_hh_scale), the int8 products summed exactly in int32; i_t, f_t, g_t, o_t "
                "are its four row blocks, activated"),
        ]
    step += [Row(f"{g}_t", (B, H), f"{_GATE_WORDS[g][0]}, {_GATE_WORDS[g][1]}: "
                                  f"{_GATE_WORDS[g][2]}") for g in GATES]
    step += [
        Row("c_t", (B, H), "cell state: c_t = f_t * c_{t-1} + i_t * g_t, elementwise"),
        Row("h_t", (B, H_out), f"hidden state: h_t = {h_rule}; the next step's h_{{t-1}} and "
                               f"this step's output"),
    ]
    sections.append(("every step, in every layer and direction: vectors, one value per hidden "
                     "unit and sequence, not scalars"
                     + (" (float32; only the products are int8)" if mode is not None else
                        " (trace() shows them)"), step))
    out_shape = (B, T, D * H_out) if batch_first else (T, B, D * H_out)
    last = (L - 1) * D

    # output at time `step` (and feature slice `cols`), in x's layout
    def at(step: int, cols: str = "") -> str:
        if batch_first:
            return f"output[:, {step}{cols}]"
        return f"output[{step}, :{cols}]" if cols else f"output[{step}]"

    both = (f"; the last axis is [forward h_t | reverse h_t], {H_out} each: "
            f"{at(-1, f', :{H_out}')} == h_n[{last}], {at(0, f', {H_out}:')} == h_n[{last + 1}]"
            if D == 2 else f"; {at(-1)} == h_n[{last}]")
    sections.append(("outputs", [
        Row("output", out_shape,
            ("h_t of the last layer at every step" if L > 1 else "h_t at every step")
            + f", in x's layout{both}. A dense layer on top maps it to what you predict"),
        Row("h_n", (L * D, B, H_out),
            f"h_t after the last step, for each layer and direction: {rows_note}"
            + (" (the reverse direction's last step is t = 0)" if D == 2 else "")
            + "; pass (h_n, c_n) back as hx to continue the sequence"),
        Row("c_n", (L * D, B, H), "c_t after the last step: same rows as h_n, hidden_size wide"),
    ]))
    return sections


def _quantized_rows(sfx: str, blocks: str, src: str, I_k: int, H: int, H_out: int, P: int,
                    bias: bool) -> List[Row]:
    """A quantized model's parameters of one layer and direction."""
    rows = [
        Row(f"weight_ih{sfx}", (4 * H, I_k),
            f"int8 input weights, the four gates stacked by rows as PyTorch's: {blocks}; "
            f"columns: the {I_k} values of {src}. Row j stands for weight_ih{sfx}[j] * "
            f"weight_ih_scale{sfx}[j]"),
        Row(f"weight_ih_scale{sfx}", (4 * H,),
            "float32, one per row: the float row's max|w| / 127"),
        Row(f"weight_hh{sfx}", (4 * H, H_out),
            f"int8 recurrent weights, same row blocks; columns: the {H_out} values of "
            f"h_{{t-1}}"),
        Row(f"weight_hh_scale{sfx}", (4 * H,), "float32, one per row"),
    ]
    if bias:
        rows.append(Row(f"bias{sfx}", (4 * H,),
                        "float32, not quantized: bias_ih + bias_hh, same row blocks"))
    if P:
        rows += [Row(f"weight_hr{sfx}", (P, H),
                     "int8 projection, hidden_size -> proj_size"),
                 Row(f"weight_hr_scale{sfx}", (P,), "float32, one per row")]
    return rows


def _float_only(model: Any, what: str) -> None:
    """Refuse a quantized model where the float weights are needed (trace, gate_weights)."""
    mode = getattr(model, "mode", None)
    if isinstance(mode, str) and mode in _MODES:
        raise NotImplementedError(
            f"{what} follows the float computation, and {model!r} runs {mode} sums it does not "
            f"show. Use the float model it was quantized from (model.{what}) and compare "
            f"outputs with this one's")


def gate_weights(model: Any, gate: str, layer: int = 0,
                 direction: int = 0) -> Tuple[_F64, _F64]:
    """One gate's weights in the textbook's one-matrix view.

    Parameters
    ----------
    model : LSTM or torch.nn.LSTM
        A `fastlstm.LSTM` or anything with ``state_dict()`` and ``hidden_size``.
    gate : {"i", "f", "g", "o"}
        The gate, by PyTorch's letter.
    layer : int, default 0
        The layer.
    direction : int, default 0
        0 forward, 1 reverse.

    Returns
    -------
    W : ndarray of float64, shape (hidden_size, I_k + H_out)
        Such that the gate's pre-activation is ``W @ concatenate([x_t, h_prev]) + b``, from
        PyTorch's stacked ``weight_ih``/``weight_hh`` row blocks (a copy).
    b : ndarray of float64, shape (hidden_size,)
        bias_ih + bias_hh for that gate (zeros without bias).

    Raises
    ------
    ValueError
        An unknown gate.
    KeyError
        A layer or direction the model does not have.
    NotImplementedError
        A quantized model (its float weights are gone).
    """
    _float_only(model, "gate_weights(...)")
    if gate not in GATES:
        raise ValueError(f"gate must be one of {GATES} (PyTorch's block order), got {gate!r}")
    sd, H = _state_dict(model), model.hidden_size
    sfx = _suffix(layer, direction)
    if f"weight_ih{sfx}" not in sd:
        raise KeyError(f"this LSTM has no weight_ih{sfx} (layer={layer}, direction={direction}); "
                       f"its parameters are {sorted(sd)}")
    rows = slice(GATES.index(gate) * H, (GATES.index(gate) + 1) * H)
    W = np.hstack([sd[f"weight_ih{sfx}"][rows], sd[f"weight_hh{sfx}"][rows]])
    b = (sd[f"bias_ih{sfx}"][rows] + sd[f"bias_hh{sfx}"][rows] if f"bias_ih{sfx}" in sd
         else np.zeros(H))
    return W, b


# -- trace -----------------------------------------------------------------------------------------

def _state_dict(model: Any) -> Dict[str, _F64]:
    return {k: np.array(to_numpy(v), dtype=np.float64) for k, v in model.state_dict().items()}


def _sigmoid(a: _F64) -> _F64:
    # 1 / (1 + exp(-a)) overflows (with a warning) for large negative a; this form cannot
    return 0.5 * np.tanh(0.5 * a) + 0.5


class Trace:
    """Every gate value of every step of one run, from `trace`.

    ``tr[layer, direction]`` (or ``tr[layer]`` when unidirectional; negative layers count from
    the last) is a read-only mapping of float64 arrays, all time-major whatever batch_first says:

    ========================  ===================  ==========================================
    key                       shape                value at step t
    ========================  ===================  ==========================================
    'x'                       (T, B, I_k)          the layer's input x_t (layer > 0: the
                                                   previous layer's output)
    'i_pre' 'f_pre' 'g_pre'   (T, B, H)            pre-activation W_ih x_t + b_ih + W_hh
    'o_pre'                                        h_{t-1} + b_hh of that gate
    'i' 'f' 'o'               (T, B, H)            sigmoid of the pre-activation
    'g'                       (T, B, H)            tanh of the pre-activation
    'c'                       (T, B, H)            c_t = f * c_{t-1} + i * g
    'h'                       (T, B, H_out)        h_t = o * tanh(c_t) (weight_hr @ that with
                                                   proj_size)
    ========================  ===================  ==========================================

    Index t is the position in the sequence for both directions: the reverse direction
    computes t = T-1 first and its h_{t-1} is the h of position t+1. For an unbatched (2-D) x
    the B axis is absent, as in the model's outputs. ``tr.step(t, layer, direction)`` gives
    the same keys at one step. ``tr.output``, ``tr.h_n``, ``tr.c_n`` are what the model
    returns, in float64 and the model's layouts. ``print(tr)`` lists every value.

    Parameters
    ----------
    values : mapping
        ``{(layer, direction): {key: array}}``, as described above.
    output, h_n, c_n : ndarray
        The model's results, in float64.
    num_layers, num_directions : int
        The model's.

    Notes
    -----
    Made by `trace` and `fastlstm.LSTM.trace`.
    """

    KEYS = ("x", "i_pre", "f_pre", "g_pre", "o_pre", "i", "f", "g", "o", "c", "h")

    def __init__(self, values: Mapping[Tuple[int, int], Mapping[str, _F64]], output: _F64,
                 h_n: _F64, c_n: _F64, num_layers: int, num_directions: int) -> None:
        self._values = {key: types.MappingProxyType(arrays) for key, arrays in values.items()}
        self.output, self.h_n, self.c_n = output, h_n, c_n
        self.num_layers, self.num_directions = num_layers, num_directions

    def _key(self, key: Any) -> Tuple[int, int]:
        if isinstance(key, tuple) and len(key) == 2:
            layer, direction = key
        elif self.num_directions == 1 and not isinstance(key, tuple):
            layer, direction = key, 0
        else:
            raise KeyError(f"index a trace with [layer, direction] (direction 0 = forward, 1 = "
                           f"reverse); got {key!r}")
        try:
            layer, direction = operator.index(layer), operator.index(direction)
        except TypeError:
            raise KeyError(f"layer and direction must be ints, got {key!r}") from None
        if not -self.num_layers <= layer < self.num_layers or \
                direction not in range(self.num_directions):
            raise KeyError(f"[{layer}, {direction}] is outside this trace: layers 0.."
                           f"{self.num_layers - 1}, directions 0..{self.num_directions - 1}")
        return layer % self.num_layers, direction

    def __getitem__(self, key: Union[int, Tuple[int, int]]) -> Mapping[str, _F64]:
        return self._values[self._key(key)]

    def keys(self) -> List[Tuple[int, int]]:
        """The (layer, direction) pairs, in the order the model computes them.

        Returns
        -------
        list of (int, int)
            ``[(0, 0), (0, 1), (1, 0), ...]``.
        """
        return list(self._values)

    def step(self, t: int, layer: int = 0, direction: int = 0) -> Dict[str, _F64]:
        """The values at position t of one layer and direction.

        Parameters
        ----------
        t : int
            The position in the sequence.
        layer : int, default 0
            The layer (negative counts from the last).
        direction : int, default 0
            0 forward, 1 reverse.

        Returns
        -------
        dict of str to ndarray
            The keys of the class table, each (B, ·) (or (·,) unbatched) at step t.

        Raises
        ------
        KeyError
            A layer or direction outside the trace.
        IndexError
            t outside the sequence.
        """
        return {k: v[t] for k, v in self[layer, direction].items()}

    @property
    def seq_len(self) -> int:
        """The number of time steps T."""
        return int(self._values[0, 0]["x"].shape[0])

    def __repr__(self) -> str:
        first = self._values[0, 0]
        return (f"Trace(layers={self.num_layers}, directions={self.num_directions}, "
                f"seq_len={self.seq_len}, keys={list(first)}; shapes " +
                ", ".join(f"{k} {v.shape}" for k, v in first.items() if k in ("x", "c", "h")) +
                ")")

    def __str__(self) -> str:
        lines = []
        with np.printoptions(precision=4, suppress=True):
            for layer, direction in self.keys():
                lines.append(f"layer {layer}" + (f", {('forward', 'reverse')[direction]}"
                                                 if self.num_directions == 2 else ""))
                order = range(self.seq_len)
                for t in (reversed(order) if direction else order):
                    lines.append(f"  t = {t}")
                    for k, v in self.step(t, layer, direction).items():
                        text = np.array2string(v, prefix=" " * 12)
                        lines.append(f"    {k:<6}  {text}")
        return "\n".join(lines)


def _config_of(model: Any) -> Dict[str, Any]:
    config = {k: getattr(model, k) for k in ("input_size", "hidden_size")}
    config.update({k: getattr(model, k, d) for k, d in _CONFIG_DEFAULTS.items()})
    return _check_config(**config)


def trace(model: Any, x: npt.ArrayLike, hx: Optional[Tuple[npt.ArrayLike, npt.ArrayLike]] = None
          ) -> Trace:
    """Run `model` on x in plain float64 NumPy, keeping every gate value of every step.

    Parameters
    ----------
    model : fastlstm.LSTM, or anything with its configuration attributes and ``state_dict()``
        (a ``torch.nn.LSTM`` works too). Its parameters are read once, as float64.
    x : array
        As for the model: (seq_len, batch, input_size), (batch, seq_len, input_size) with
        batch_first, or (seq_len, input_size) unbatched. Cast to the model's dtype first, so the
        trace sees the numbers the model sees.
    hx : (h0, c0) or None
        h0 (num_layers*D, batch, H_out), c0 (num_layers*D, batch, hidden_size), 2-D when x is
        unbatched; None means zeros.

    Returns
    -------
    Trace
        ``tr[layer, direction]['f']`` etc.; see `Trace`. Dropout is not applied (inference).

    Raises
    ------
    ValueError, TypeError
        x or hx that do not fit the model (the model's own checks and messages).
    NotImplementedError
        A quantized model: trace the float model it was quantized from.
    """
    _float_only(model, "trace(x)")
    cfg = _config_of(model)
    I, H, L, P = cfg["input_size"], cfg["hidden_size"], cfg["num_layers"], cfg["proj_size"]
    D, H_out, batch_first = 2 if cfg["bidirectional"] else 1, P or H, cfg["batch_first"]
    try:
        dtype = np.dtype(getattr(model, "dtype", np.float64))
    except TypeError:  # a torch dtype, say: float64 is exact for every float the model holds
        dtype = np.dtype(np.float64)
    if dtype.kind != "f":
        dtype = np.dtype(np.float64)
    x, unbatched = check_input(x, I, batch_first, dtype)
    x = x.astype(np.float64)
    if batch_first:
        x = x.transpose(1, 0, 2)  # time-major from here on
    T, B = x.shape[:2]
    # the model's own rules and messages for hx; (L*D, B, ·) back, unbatched too
    h0, c0 = (s.astype(np.float64) for s in
              check_state(hx, B, L, D, H_out, H, unbatched, batch_first, dtype))
    sd = _state_dict(model)
    values, h_n, c_n = {}, np.empty((L * D, B, H_out)), np.empty((L * D, B, H))
    layer_in = x
    for layer in range(L):
        outs = []
        for d in range(D):
            sfx = _suffix(layer, d)
            w_ih, w_hh = sd[f"weight_ih{sfx}"], sd[f"weight_hh{sfx}"]
            bias = (sd[f"bias_ih{sfx}"] + sd[f"bias_hh{sfx}"] if cfg["bias"] else np.zeros(4 * H))
            w_hr = sd.get(f"weight_hr{sfx}")
            rec = {k: np.empty((T, B, H)) for k in Trace.KEYS[1:-1]}
            rec["h"] = np.empty((T, B, H_out))
            h, c = h0[layer * D + d], c0[layer * D + d]
            for t in (range(T - 1, -1, -1) if d else range(T)):
                pre = layer_in[t] @ w_ih.T + h @ w_hh.T + bias  # (B, 4H), blocks i, f, g, o
                for j, g in enumerate(GATES):
                    rec[f"{g}_pre"][t] = pre[:, j * H:(j + 1) * H]
                i, f = _sigmoid(rec["i_pre"][t]), _sigmoid(rec["f_pre"][t])
                g, o = np.tanh(rec["g_pre"][t]), _sigmoid(rec["o_pre"][t])
                c = f * c + i * g
                h = o * np.tanh(c)
                if w_hr is not None:
                    h = h @ w_hr.T
                rec["i"][t], rec["f"][t], rec["g"][t], rec["o"][t] = i, f, g, o
                rec["c"][t], rec["h"][t] = c, h
            h_n[layer * D + d], c_n[layer * D + d] = h, c
            values[layer, d] = {"x": layer_in, **rec}
            outs.append(rec["h"])
        layer_in = np.concatenate(outs, axis=-1)
    output = layer_in.transpose(1, 0, 2) if batch_first else layer_in
    if unbatched:
        values = {key: {k: v[:, 0] for k, v in arrays.items()} for key, arrays in values.items()}
        output, h_n, c_n = layer_in[:, 0], h_n[:, 0], c_n[:, 0]  # (T, features), T = 0 too
    for arrays in values.values():
        for v in arrays.values():
            v.flags.writeable = False
    return Trace(values, output, h_n, c_n, L, D)
