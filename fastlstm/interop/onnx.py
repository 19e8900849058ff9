"""ONNX import and export: ONNX ``LSTM`` nodes <-> :class:`fastlstm.LSTM`.

ONNX stores each layer as one ``LSTM`` node with ``W`` [D, 4H, I], ``R`` [D, 4H, H] and
``B`` [D, 8H] = [W_b | R_b], gate row blocks in the order i, o, f, c; PyTorch (and fastlstm) keep
one matrix per direction with blocks i, f, g(=c), o. This module only reorders blocks and wires
layers together; nothing here computes an LSTM.

``onnx`` is imported inside the functions, so ``fastlstm`` imports without it.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from ..model import LSTM

# ONNX blocks (i, o, f, c) taken in this order give PyTorch's (i, f, g, o), and back.
_ONNX_TO_TORCH = (0, 2, 3, 1)
_TORCH_TO_ONNX = (0, 3, 1, 2)
_DEFAULT_ACTIVATIONS = ("Sigmoid", "Tanh", "Tanh")
_KNOWN_ATTRIBUTES = {"hidden_size", "direction", "layout", "activations", "clip", "input_forget",
                     "activation_alpha", "activation_beta"}
# The oldest opset the exporter writes: its optional h0/c0 inputs need the Optional type and
# OptionalHasElement / OptionalGetElement (opset 15); the LSTM node itself is LSTM-14.
_MIN_OPSET = 15


def _require_onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError("fastlstm's ONNX import/export needs the onnx package, which is not "
                          "installed: pip install onnx") from None
    return onnx


def _blocks(array, order):
    """Reorder the four gate blocks along axis 0."""
    parts = np.split(np.asarray(array), 4, axis=0)
    return np.concatenate([parts[k] for k in order], axis=0)


# -- import -----------------------------------------------------------------------------------

def _load(onnx, path_or_model):
    if isinstance(path_or_model, onnx.ModelProto):
        return path_or_model
    if isinstance(path_or_model, (str, bytes, os.PathLike)):
        return onnx.load(path_or_model)
    raise TypeError(f"from_onnx expects a file path or an onnx.ModelProto; got "
                    f"{type(path_or_model).__name__}. Pass the .onnx file's path or "
                    "onnx.load(path)")


def _constants(onnx, graph):
    """Every tensor whose value is known without running the graph: initializers and the
    outputs of Constant nodes (``value`` only, the form exporters write)."""
    from onnx import numpy_helper

    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


def _label(node, k):
    return f"LSTM node {node.name!r} (layer {k})" if node.name else f"LSTM node #{k} (layer {k})"


def _attributes(onnx, node, where):
    attrs = {}
    for attr in node.attribute:
        value = onnx.helper.get_attribute_value(attr)
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, list):
            value = [v.decode() if isinstance(v, bytes) else v for v in value]
        attrs[attr.name] = value
    unknown = sorted(set(attrs) - _KNOWN_ATTRIBUTES)
    if unknown:
        raise NotImplementedError(f"{where}: attribute(s) {unknown} are not supported; fastlstm "
                                  f"reads only {sorted(_KNOWN_ATTRIBUTES)}")
    return attrs


def _check_attributes(attrs, D, where):
    """Raise for every attribute that asks for a different cell than fastlstm's."""
    activations = attrs.get("activations")
    default = [name.lower() for name in _DEFAULT_ACTIVATIONS] * D
    if activations is not None and [str(a).lower() for a in activations] != default:
        raise NotImplementedError(
            f"{where}: activations={list(activations)} is not supported; fastlstm computes only "
            f"the default {list(_DEFAULT_ACTIVATIONS)} per direction. Re-export the model with "
            "the standard LSTM cell")
    if "clip" in attrs:
        raise NotImplementedError(f"{where}: clip={attrs['clip']} is not supported; fastlstm "
                                  "does not clip the gate pre-activations. Re-export without clip")
    if attrs.get("input_forget", 0):
        raise NotImplementedError(f"{where}: input_forget={attrs['input_forget']} (coupled input "
                                  "and forget gates) is not supported; fastlstm needs "
                                  "input_forget=0")
    for name in ("activation_alpha", "activation_beta"):
        if name in attrs:
            raise NotImplementedError(f"{where}: {name}={attrs[name]} is not supported; fastlstm "
                                      "has no parameterised activations. Remove the attribute")


def _input(node, index):
    """Name of an optional node input, or None when absent."""
    return node.input[index] if len(node.input) > index and node.input[index] else None


def _constant(constants, node, index, what, where):
    name = _input(node, index)
    if name is None:
        return None
    if name not in constants:
        raise ValueError(f"{where}: {what} (tensor {name!r}) is computed while the graph runs; "
                         "from_onnx needs it as an initializer or a Constant node. Fold constants "
                         "when exporting (e.g. onnxsim, or torch.onnx.export("
                         "do_constant_folding=True))")
    return constants[name]


def _read_node(onnx, node, k, constants):
    """One LSTM node as a dict of PyTorch-ordered arrays and sizes."""
    where = _label(node, k)
    attrs = _attributes(onnx, node, where)
    direction = attrs.get("direction", "forward")
    if direction == "reverse":
        raise NotImplementedError(
            f"{where}: direction=reverse is not supported; fastlstm runs each layer forward (or "
            "both ways with bidirectional). Set direction=forward on the node, import it, run "
            "it on x[::-1] and flip its output back")
    if direction not in ("forward", "bidirectional"):
        raise ValueError(f"{where}: direction must be forward, reverse or bidirectional; got "
                         f"{direction!r}")
    D = 2 if direction == "bidirectional" else 1
    layout = attrs.get("layout", 0)
    if layout not in (0, 1):
        raise ValueError(f"{where}: layout must be 0 (time-major) or 1 (batch-major); got {layout}")
    _check_attributes(attrs, D, where)

    W = _constant(constants, node, 1, "W", where)
    R = _constant(constants, node, 2, "R", where)
    B = _constant(constants, node, 3, "B", where)
    if W is None or R is None:
        raise ValueError(f"{where}: W and R are required LSTM inputs; the node lacks "
                         f"{'W' if W is None else 'R'}. The file is not a valid ONNX LSTM")
    H = attrs.get("hidden_size", W.shape[1] // 4 if W.ndim == 3 else 0)
    if W.ndim != 3 or W.shape[:2] != (D, 4 * H):
        raise ValueError(f"{where}: W must have shape [num_directions, 4*hidden_size, input_size]"
                         f" = [{D}, {4 * H}, input_size] (direction={direction}); got "
                         f"{list(W.shape)}")
    if R.shape != (D, 4 * H, H):
        raise ValueError(f"{where}: R must have shape [num_directions, 4*hidden_size, "
                         f"hidden_size] = [{D}, {4 * H}, {H}]; got {list(R.shape)}")
    if B is not None and B.shape != (D, 8 * H):
        raise ValueError(f"{where}: B must have shape [num_directions, 8*hidden_size] = "
                         f"[{D}, {8 * H}]; got {list(B.shape)}")

    P_name = _input(node, 7)
    if P_name is not None:
        P = constants.get(P_name)
        if P is None or np.any(P != 0):  # all-zero peepholes are the plain cell
            raise NotImplementedError(
                f"{where}: P (peephole weights, tensor {P_name!r}) is not supported; fastlstm "
                "has no peepholes. Only an absent or all-zero constant P can be imported")
    for index, name in ((5, "initial_h"), (6, "initial_c")):
        value = constants.get(_input(node, index))
        if value is not None and np.any(value != 0):
            raise NotImplementedError(
                f"{where}: a constant nonzero {name} is not part of an LSTM's parameters; "
                "fastlstm takes initial states per call. Remove it from the graph and pass it "
                "as hx=(h0, c0)")
    # sequence_lens (input 4) fed at run time is what fastlstm takes per call as lengths; a
    # constant one would be silently dropped, and the model would run every row to seq_len
    lens_name = _input(node, 4)
    if lens_name is not None and lens_name in constants:
        raise NotImplementedError(
            f"{where}: a constant sequence_lens (tensor {lens_name!r}) is not part of an LSTM's "
            "parameters; fastlstm takes each sequence's length per call. Remove it from the "
            "graph and pass it as lengths=")
    return {"node": node, "where": where, "D": D, "H": H, "I": W.shape[2], "layout": layout,
            "W": W, "R": R, "B": B}


def _ancestors(graph, tensor):
    """Names of every tensor `tensor` is computed from (itself included)."""
    producer = {out: node for node in graph.node for out in node.output if out}
    seen, todo = set(), [tensor]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in producer:
            todo.extend(i for i in producer[name].input if i)
    return seen


def _check_chain(graph, layers):
    """Layers must form one stack: same sizes and layout, each fed (through reshapes) by the
    previous one's Y."""
    first = layers[0]
    for k in range(1, len(layers)):
        prev, layer = layers[k - 1], layers[k]
        for key, what in (("D", "number of directions"), ("H", "hidden_size"),
                          ("layout", "layout")):
            if layer[key] != first[key]:
                raise ValueError(f"{layer['where']}: {what} {layer[key]} differs from layer 0's "
                                 f"{first[key]}; from_onnx reads the LSTM nodes as one stack "
                                 "(num_layers > 1), which needs them equal")
        if layer["I"] != prev["D"] * prev["H"]:
            raise ValueError(f"{layer['where']}: input_size {layer['I']} should be the previous "
                             f"layer's num_directions*hidden_size = {prev['D'] * prev['H']} to "
                             "read the LSTM nodes as one stack")
        y = prev["node"].output[0] if prev["node"].output else ""
        if not y or y not in _ancestors(graph, layer["node"].input[0]):
            raise ValueError(f"{layer['where']}: its input X is not computed from the Y output of "
                             f"{prev['where']}; from_onnx reads a graph's LSTM nodes as one stack "
                             "and cannot import side-by-side LSTMs")


def _batch_major_input(graph, tensor):
    """True when `tensor` is a graph input swapped by Transpose(perm=[1, 0, 2]): how exporters
    (torch.onnx, to_onnx) wrap a time-major node for a batch-first model."""
    inputs = {i.name for i in graph.input} - {t.name for t in graph.initializer}
    for node in graph.node:
        if tensor in node.output and node.op_type == "Transpose":
            perm = [list(a.ints) for a in node.attribute if a.name == "perm"]
            return perm == [[1, 0, 2]] and node.input[0] in inputs
    return False


def from_onnx(path_or_model: Any, *, dtype: Optional[npt.DTypeLike] = None) -> LSTM:
    """Build a :class:`fastlstm.LSTM` from the ``LSTM`` nodes of an ONNX model.

    Parameters
    ----------
    path_or_model : str, os.PathLike or onnx.ModelProto
        The ``.onnx`` file or the loaded model.
    dtype : {np.float32, np.float64}, optional
        Defaults to float64 when every W and R is float64, else float32.

    Returns
    -------
    fastlstm.LSTM
        One layer per ``LSTM`` node, in graph order (as ``torch.onnx.export`` writes a
        multi-layer ``torch.nn.LSTM``); ``bidirectional`` from ``direction``; ``batch_first``
        when the graph's x is batch-major: ``layout=1``, or ``layout=0`` fed by a
        Transpose(perm=[1, 0, 2]) of a graph input (what torch.onnx.export and to_onnx write
        for batch-first models); ``bias`` False when no node has ``B`` (ONNX's zero bias).

    Raises
    ------
    NotImplementedError
        For what fastlstm's cell cannot compute, naming it: direction=reverse, nonzero P
        (peepholes), activations other than (Sigmoid, Tanh, Tanh), clip, input_forget=1,
        activation_alpha / activation_beta, constant nonzero initial states.
    ValueError
        When there is no LSTM node, W/R/B are not constants, or the nodes do not form one stack.

    Notes
    -----
    Other nodes around the LSTMs (the Transpose/Reshape between layers, the Transpose of the
    output) are not interpreted: the model computes what the LSTM nodes compute, with outputs
    shaped as fastlstm returns them.
    """
    onnx = _require_onnx()
    graph = _load(onnx, path_or_model).graph
    nodes = [n for n in graph.node if n.op_type == "LSTM" and n.domain in ("", "ai.onnx")]
    if not nodes:
        ops = sorted({n.op_type for n in graph.node})
        raise ValueError(f"the ONNX graph has no LSTM node (its ops: {ops}); from_onnx imports "
                         "the standard ONNX LSTM operator")
    constants = _constants(onnx, graph)
    layers = [_read_node(onnx, node, k, constants) for k, node in enumerate(nodes)]
    _check_chain(graph, layers)

    if dtype is None:
        wide = all(np.asarray(layer[m]).dtype == np.float64 for layer in layers for m in "WR")
        dtype = np.float64 if wide else np.float32
    bias = any(layer["B"] is not None for layer in layers)
    state_dict = {}
    for k, layer in enumerate(layers):
        H = layer["H"]
        B = layer["B"] if layer["B"] is not None else np.zeros((layer["D"], 8 * H), dtype)
        for d in range(layer["D"]):
            suffix = f"_l{k}" + ("_reverse" if d else "")
            state_dict["weight_ih" + suffix] = _blocks(layer["W"][d], _ONNX_TO_TORCH)
            state_dict["weight_hh" + suffix] = _blocks(layer["R"][d], _ONNX_TO_TORCH)
            if bias:
                state_dict["bias_ih" + suffix] = _blocks(B[d, :4 * H], _ONNX_TO_TORCH)
                state_dict["bias_hh" + suffix] = _blocks(B[d, 4 * H:], _ONNX_TO_TORCH)
    state_dict = {k: np.asarray(v, dtype) for k, v in state_dict.items()}

    from ..model import LSTM  # here: model.py may import this module

    first = layers[0]
    batch_first = (first["layout"] == 1) != _batch_major_input(graph, first["node"].input[0])
    return LSTM.from_state_dict(state_dict, batch_first=batch_first, dtype=dtype)


# -- export -----------------------------------------------------------------------------------

def to_onnx(model: LSTM, path: Union[str, os.PathLike[str]], *, opset: int = _MIN_OPSET) -> Any:
    """Write `model` as a float32 ONNX model that onnxruntime runs with fastlstm's results.

    Parameters
    ----------
    model : fastlstm.LSTM
        Any configuration but ``proj_size > 0``. float64 parameters are rounded to float32.
    path : str or os.PathLike
        Where to write the ``.onnx`` file.
    opset : int, default 15
        The default-domain opset (15 or newer: the optional inputs need it).

    Returns
    -------
    onnx.ModelProto
        The model written (checked with ``onnx.checker``).

    Raises
    ------
    NotImplementedError
        ``proj_size > 0``: the ONNX LSTM operator has no projection.
    ValueError
        An ``opset`` that is not an int from 15 (optional h0/c0 inputs) to the installed
        onnx's newest.
    ImportError
        The ``onnx`` package is not installed.

    Notes
    -----
    Inputs: ``x``, the only required one, shaped as the model takes it ((seq_len, batch,
    input_size), or (batch, seq_len, input_size) with ``batch_first``; no unbatched form);
    ``h0`` and ``c0`` ((num_directions*num_layers, batch, hidden_size)), optional: graph inputs
    of type ``optional(tensor(float))`` with no initializer behind them, so ONNX Runtime loads
    the model without warnings. Leave them out for zero states, or feed both (e.g. the previous
    chunk's ``h_n`` and ``c_n``, to stream a long sequence); a fed batch of 1 is broadcast to
    every row.

    Outputs: ``output`` (shaped as fastlstm returns it), ``h_n``, ``c_n``. Seq_len and batch
    are symbolic. One ONNX LSTM node per layer (layout=0, which onnxruntime requires), with a
    Transpose and Reshape turning each Y [T, D, B, H] into [T, B, D*H].
    """
    onnx = _require_onnx()
    from onnx import TensorProto, helper, numpy_helper

    if getattr(model, "proj_size", 0):
        raise NotImplementedError(f"proj_size={model.proj_size} cannot be exported: the ONNX LSTM "
                                  "operator has no projection. Export a model with proj_size=0")
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)) or not (
            _MIN_OPSET <= opset <= onnx.defs.onnx_opset_version()):
        raise ValueError(f"opset must be an int from {_MIN_OPSET} to "
                         f"{onnx.defs.onnx_opset_version()} (this onnx's newest); got {opset!r}")
    L, H, I = model.num_layers, model.hidden_size, model.input_size
    D = 2 if getattr(model, "bidirectional", False) else 1
    params = model.state_dict()
    f32 = TensorProto.FLOAT

    inits, nodes = [], []

    def const(name, value, dtype=np.int64):
        inits.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def node(op, inputs, outputs, **attrs):
        nodes.append(helper.make_node(op, inputs, outputs, **attrs))
        return outputs[0]

    if model.batch_first:
        x_shape, out_shape = ["batch", "seq_len", I], ["batch", "seq_len", D * H]
        x = node("Transpose", ["x"], ["x_time_major"], perm=[1, 0, 2])
    else:
        x_shape, out_shape = ["seq_len", "batch", I], ["seq_len", "batch", D * H]
        x = "x"
    state_shape = [D * L, "batch", H]
    optional_state_type = helper.make_optional_type_proto(
        helper.make_tensor_type_proto(f32, state_shape))

    # Optional states: each is If(OptionalHasElement(s)) -> the fed state expanded to x's batch
    # (a state of the right batch passes through unchanged), else zeros of that shape.
    batch_axis = const("batch_axis", [0 if model.batch_first else 1])
    batch = node("Gather", [node("Shape", ["x"], ["x_shape"]), batch_axis], ["batch"], axis=0)
    full = node("Concat", [const("state_rows", [D * L]), batch, const("state_cols", [H])],
                ["state_shape"], axis=0)
    zero = helper.make_tensor("zero", f32, [1], [0.0])

    def optional_state(name):
        fed = helper.make_graph(
            [helper.make_node("OptionalGetElement", [name], [f"{name}_fed"]),
             helper.make_node("Expand", [f"{name}_fed", full], [f"{name}_expanded"])],
            f"{name}_fed", [], [helper.make_tensor_value_info(f"{name}_expanded", f32,
                                                              state_shape)])
        zeros = helper.make_graph(
            [helper.make_node("ConstantOfShape", [full], [f"{name}_zeros"], value=zero)],
            f"{name}_absent", [], [helper.make_tensor_value_info(f"{name}_zeros", f32,
                                                                 state_shape)])
        has = node("OptionalHasElement", [name], [f"{name}_given"])
        return node("If", [has], [f"{name}_full"], then_branch=fed, else_branch=zeros)

    h0, c0 = optional_state("h0"), optional_state("c0")

    h_parts, c_parts = [], []
    for k in range(L):
        W, R, B = [], [], []
        for d in range(D):
            suffix = f"_l{k}" + ("_reverse" if d else "")
            W.append(_blocks(params["weight_ih" + suffix], _TORCH_TO_ONNX))
            R.append(_blocks(params["weight_hh" + suffix], _TORCH_TO_ONNX))
            if model.bias:
                B.append(np.concatenate([_blocks(params["bias_ih" + suffix], _TORCH_TO_ONNX),
                                         _blocks(params["bias_hh" + suffix], _TORCH_TO_ONNX)]))
        rows = [const(f"rows_l{k}_start", [k * D]), const(f"rows_l{k}_end", [(k + 1) * D]),
                const("axis0", [0]) if k == 0 else "axis0"]
        inputs = [x, const(f"W_l{k}", np.stack(W), np.float32),
                  const(f"R_l{k}", np.stack(R), np.float32),
                  const(f"B_l{k}", np.stack(B), np.float32) if model.bias else "", "",
                  node("Slice", [h0] + rows, [f"h0_l{k}"]),
                  node("Slice", [c0] + rows, [f"c0_l{k}"])]
        y, y_h, y_c = f"Y_l{k}", f"h_n_l{k}", f"c_n_l{k}"
        node("LSTM", inputs, [y, y_h, y_c], hidden_size=H,
             direction="bidirectional" if D == 2 else "forward", name=f"lstm_l{k}")
        h_parts.append(y_h)
        c_parts.append(y_c)
        # [T, D, B, H] -> [T, B, D*H]: the next layer's input, PyTorch's output layout.
        last = k == L - 1 and not model.batch_first
        x = node("Reshape", [node("Transpose", [y], [f"Y_l{k}_TBDH"], perm=[0, 2, 1, 3]),
                             const("seq_shape", [0, 0, D * H]) if k == 0 else "seq_shape"],
                 ["output" if last else f"seq_l{k}"])
    if model.batch_first:
        node("Transpose", [x], ["output"], perm=[1, 0, 2])
    node("Concat", h_parts, ["h_n"], axis=0)
    node("Concat", c_parts, ["c_n"], axis=0)

    graph = helper.make_graph(
        nodes, "fastlstm",
        [helper.make_tensor_value_info("x", f32, x_shape),
         helper.make_value_info("h0", optional_state_type),
         helper.make_value_info("c0", optional_state_type)],
        [helper.make_tensor_value_info("output", f32, out_shape),
         helper.make_tensor_value_info("h_n", f32, state_shape),
         helper.make_tensor_value_info("c_n", f32, state_shape)],
        inits)
    opsets = [helper.make_opsetid("", int(opset))]
    # The oldest IR version that carries this opset, so older runtimes load the file too.
    proto = helper.make_model(graph, opset_imports=opsets, producer_name="fastlstm",
                              ir_version=helper.find_min_ir_version_for(opsets))
    proto.doc_string = repr(model)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, os.fspath(path))
    return proto
