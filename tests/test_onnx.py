"""ONNX import (from_onnx) and export (to_onnx) against onnxruntime and the NumPy reading of the
ONNX LSTM spec (tests/onnx_spec.py, itself checked against onnxruntime here).

Errors are max|ours - reference| / max|reference| <= 2e-5: onnxruntime computes in float32.
"""
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import fastlstm  # noqa: E402
from fastlstm.interop.onnx import from_onnx, to_onnx  # noqa: E402
from helpers import scaled_err  # noqa: E402
import onnx_spec  # noqa: E402

TOL = 2e-5
OPSET = 14


def session(model_or_path):
    options = ort.SessionOptions()
    options.log_severity_level = 3  # imported test graphs list initializers as inputs too
    data = model_or_path.SerializeToString() if hasattr(model_or_path, "SerializeToString") \
        else str(model_or_path)
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def assert_close(ours, ref, what):
    for name, a, r in zip(("output", "h_n", "c_n"), ours, ref):
        err = scaled_err(a, r)
        assert err <= TOL, f"{what}: {name} scaled error {err:.2e} > {TOL}"


def random_weights(rng, D, H, I, bias=True, peephole=False):
    W = rng.uniform(-0.6, 0.6, (D, 4 * H, I)).astype(np.float32)
    R = rng.uniform(-0.6, 0.6, (D, 4 * H, H)).astype(np.float32)
    B = rng.uniform(-0.6, 0.6, (D, 8 * H)).astype(np.float32) if bias else None
    P = rng.uniform(-0.6, 0.6, (D, 3 * H)).astype(np.float32) if peephole else None
    return W, R, B, P


def lstm_model(W, R, B=None, P=None, *, layout=0, as_constants=False, x_input=True, **attrs):
    """A one-node ONNX model: inputs X, initial_h, initial_c; outputs Y, Y_h, Y_c. W, R, B, P are
    initializers (or Constant nodes)."""
    D, H, I = W.shape[0], R.shape[-1], W.shape[-1]
    seq = ["B", "T", I] if layout else ["T", "B", I]
    state = ["B", D, H] if layout else [D, "B", H]
    y = ["B", "T", D, H] if layout else ["T", D, "B", H]
    tensors = {"W": W, "R": R, "B": B, "P": P}
    inits, nodes = [], []
    for name, value in tensors.items():
        if value is None:
            continue
        tensor = numpy_helper.from_array(value, name)
        if as_constants:
            nodes.append(helper.make_node("Constant", [], [name], value=tensor))
        else:
            inits.append(tensor)
    inputs = ["X", "W", "R", "B" if B is not None else "", "", "initial_h", "initial_c"]
    if P is not None:
        inputs.append("P")
    nodes.append(helper.make_node("LSTM", inputs, ["Y", "Y_h", "Y_c"], hidden_size=H,
                                  layout=layout, **attrs))
    f32 = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes, "one_lstm",
        [helper.make_tensor_value_info(n, f32, s)
         for n, s in (("X", seq), ("initial_h", state), ("initial_c", state))],
        [helper.make_tensor_value_info(n, f32, s) for n, s in (("Y", y), ("Y_h", state),
                                                                ("Y_c", state))],
        inits)
    opsets = [helper.make_opsetid("", OPSET)]
    return helper.make_model(graph, opset_imports=opsets,
                             ir_version=helper.find_min_ir_version_for(opsets))


def to_torch_layout(Y, Y_h, Y_c, layout):
    """ONNX Y / Y_h / Y_c -> fastlstm's output (T, B, D*H) or (B, T, D*H) and (D, B, H) states."""
    if layout:
        batch, T = Y.shape[:2]
        return Y.reshape(batch, T, -1), Y_h.transpose(1, 0, 2), Y_c.transpose(1, 0, 2)
    T, _, batch, _ = Y.shape
    return Y.transpose(0, 2, 1, 3).reshape(T, batch, -1), Y_h, Y_c


# -- the spec reading itself ------------------------------------------------------------------

@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_spec_matches_onnxruntime(rng, direction):
    D, H, I, T, batch = (2 if direction == "bidirectional" else 1), 5, 3, 6, 2
    W, R, B, P = random_weights(rng, D, H, I, peephole=True)
    x = rng.standard_normal((T, batch, I)).astype(np.float32)
    h0, c0 = rng.standard_normal((2, D, batch, H)).astype(np.float32)
    got = session(lstm_model(W, R, B, P, direction=direction)).run(
        None, {"X": x, "initial_h": h0, "initial_c": c0})
    ref = onnx_spec.lstm(x, W, R, B, h0, c0, P, direction=direction)
    assert_close(got, ref, f"spec vs onnxruntime, {direction}")


# -- import -----------------------------------------------------------------------------------

def export_torch(path, num_layers, bidirectional, bias, batch_first, with_state):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torch.nn.LSTM(3, 4, num_layers=num_layers, bias=bias, bidirectional=bidirectional,
                           batch_first=batch_first).eval()
    D = 2 if bidirectional else 1
    x = torch.randn(2, 5, 3) if batch_first else torch.randn(5, 2, 3)
    batch_axis = 0 if batch_first else 1
    axes = {"x": {batch_axis: "batch", 1 - batch_axis: "seq_len"},
            "output": {batch_axis: "batch", 1 - batch_axis: "seq_len"},
            "h_n": {1: "batch"}, "c_n": {1: "batch"}}
    names, args = ["x"], (x,)
    if with_state:
        state = (torch.randn(D * num_layers, 2, 4), torch.randn(D * num_layers, 2, 4))
        names, args = ["x", "h0", "c0"], (x, state)
        axes.update(h0={1: "batch"}, c0={1: "batch"})
    with warnings.catch_warnings():  # the tracer's notes on LSTM's shape checks
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), dynamo=False, opset_version=OPSET,
                          input_names=names, output_names=["output", "h_n", "c_n"],
                          dynamic_axes=axes)
    return module


@pytest.mark.parametrize("num_layers, bidirectional, bias, batch_first, with_state", [
    (1, False, True, False, True),
    (1, False, False, False, False),
    (1, False, True, True, False),
    (2, False, True, False, True),
    (1, True, True, False, True),
    (2, True, False, True, False),
])
def test_torch_export_imports(tmp_path, rng, num_layers, bidirectional, bias, batch_first,
                              with_state):
    path = tmp_path / "torch.onnx"
    export_torch(path, num_layers, bidirectional, bias, batch_first, with_state)
    model = from_onnx(path)
    assert (model.input_size, model.hidden_size, model.num_layers) == (3, 4, num_layers)
    assert bool(getattr(model, "bidirectional", False)) == bidirectional
    assert model.batch_first == batch_first and model.dtype == np.float32
    D = 2 if bidirectional else 1
    batch, T = 3, 7  # not the traced sizes
    x = rng.standard_normal((batch, T, 3) if batch_first else (T, batch, 3)).astype(np.float32)
    feeds, hx = {"x": x}, None
    if with_state:
        hx = tuple(rng.standard_normal((2, D * num_layers, batch, 4)).astype(np.float32))
        feeds.update(h0=hx[0], c0=hx[1])
    ref = session(path).run(["output", "h_n", "c_n"], feeds)
    out, (h_n, c_n) = model(x, hx)
    assert_close((out, h_n, c_n), ref, "from_onnx(torch export) vs onnxruntime")


@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
@pytest.mark.parametrize("bias", [True, False])
def test_layout1_import_matches_spec(rng, direction, bias):
    D, H, I, T, batch = (2 if direction == "bidirectional" else 1), 4, 3, 5, 2
    W, R, B, _ = random_weights(rng, D, H, I, bias=bias)
    model = from_onnx(lstm_model(W, R, B, layout=1, direction=direction))
    assert model.batch_first and model.bias == bias
    x = rng.standard_normal((batch, T, I)).astype(np.float32)
    h0, c0 = rng.standard_normal((2, batch, D, H)).astype(np.float32)  # layout=1 states
    ref = to_torch_layout(*onnx_spec.lstm(x, W, R, B, h0, c0, direction=direction, layout=1), 1)
    ours = model(x, (h0.transpose(1, 0, 2), c0.transpose(1, 0, 2)))
    assert_close((ours[0],) + tuple(ours[1]), ref, f"layout=1 {direction} bias={bias}")


def test_constant_nodes_and_absent_bias(rng):
    """W and R from Constant nodes, no B (ONNX's zero bias) -> bias=False, same results."""
    W, R, _, _ = random_weights(rng, 1, 4, 3, bias=False)
    proto = lstm_model(W, R, as_constants=True)
    model = from_onnx(proto)
    assert not model.bias and not model.batch_first
    x = rng.standard_normal((6, 2, 3)).astype(np.float32)
    h0, c0 = rng.standard_normal((2, 1, 2, 4)).astype(np.float32)
    ref = to_torch_layout(*session(proto).run(None, {"X": x, "initial_h": h0, "initial_c": c0}), 0)
    out, (h_n, c_n) = model(x, (h0, c0))
    assert_close((out, h_n, c_n), ref, "Constant-node W/R vs onnxruntime")


def test_dtype_follows_initializers(rng):
    W, R, B, _ = random_weights(rng, 1, 4, 3)
    assert from_onnx(lstm_model(W, R, B)).dtype == np.float32
    wide = lstm_model(W.astype(np.float64), R.astype(np.float64), B.astype(np.float64))
    assert from_onnx(wide).dtype == np.float64
    narrow = from_onnx(wide, dtype=np.float32)
    assert narrow.dtype == np.float32
    np.testing.assert_array_equal(narrow.state_dict()["weight_ih_l0"][:4], W[0, :4])  # block i


def test_all_zero_peepholes_accepted(rng):
    W, R, B, _ = random_weights(rng, 1, 4, 3)
    model = from_onnx(lstm_model(W, R, B, np.zeros((1, 12), np.float32)))
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    ref = to_torch_layout(*onnx_spec.lstm(x, W, R, B), 0)
    out, (h_n, c_n) = model(x)
    assert_close((out, h_n, c_n), ref, "P = 0")


@pytest.mark.parametrize("attrs, name", [
    ({"activations": ["Sigmoid", "Relu", "Tanh"]}, "activations"),
    ({"clip": 3.0}, "clip"),
    ({"input_forget": 1}, "input_forget"),
    ({"activation_alpha": [0.5]}, "activation_alpha"),
    ({"activation_beta": [0.5]}, "activation_beta"),
    ({"direction": "reverse"}, "direction=reverse"),
])
def test_unsupported_attributes_raise(rng, attrs, name):
    W, R, B, _ = random_weights(rng, 1, 4, 3)
    with pytest.raises(NotImplementedError, match=name):
        from_onnx(lstm_model(W, R, B, **attrs))


def test_default_attributes_written_out_accepted(rng):
    W, R, B, _ = random_weights(rng, 2, 4, 3)
    proto = lstm_model(W, R, B, direction="bidirectional", input_forget=0,
                       activations=["Sigmoid", "Tanh", "Tanh"] * 2)
    model = from_onnx(proto)
    assert model.num_layers == 1 and model.bidirectional


def test_nonzero_peepholes_raise(rng):
    W, R, B, P = random_weights(rng, 1, 4, 3, peephole=True)
    with pytest.raises(NotImplementedError, match="P .peephole"):
        from_onnx(lstm_model(W, R, B, P))


@pytest.mark.parametrize("how", ["initializer", "constant_node", "graph_input"])
def test_sequence_lens_is_taken_per_call(rng, how):
    """A constant sequence_lens would be lost (every row would run to seq_len): refused, naming
    it. Fed at run time it is what fastlstm takes per call as lengths=, and the model imports."""
    W, R, B, _ = random_weights(rng, 1, 4, 3)
    proto = lstm_model(W, R, B)
    proto.graph.node[-1].input[4] = "seq"
    lens = numpy_helper.from_array(np.array([2, 5], np.int32), "seq")
    if how == "initializer":
        proto.graph.initializer.append(lens)
    elif how == "constant_node":
        proto.graph.node.insert(0, helper.make_node("Constant", [], ["seq"], value=lens))
    else:
        proto.graph.input.append(helper.make_tensor_value_info("seq", TensorProto.INT32, ["B"]))
        assert from_onnx(proto).hidden_size == 4
        return
    with pytest.raises(NotImplementedError, match="constant sequence_lens .*'seq'.*lengths="):
        from_onnx(proto)


def test_import_errors(tmp_path, rng):
    W, R, B, _ = random_weights(rng, 1, 4, 3)
    empty = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["a"], ["b"])], "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1])]))
    with pytest.raises(ValueError, match="no LSTM node"):
        from_onnx(empty)
    proto = lstm_model(W, R, B)
    proto.graph.initializer.pop(0)  # W becomes a run-time tensor
    with pytest.raises(ValueError, match="W .*initializer or a Constant"):
        from_onnx(proto)
    with pytest.raises(TypeError, match="file path or an onnx.ModelProto"):
        from_onnx(42)


def test_side_by_side_lstms_are_not_a_stack(rng):
    """Two nodes both reading X (input size = hidden size, so sizes alone would chain)."""
    W, R, B, _ = random_weights(rng, 1, 4, 4)
    proto = lstm_model(W, R, B)
    second = helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y2"], hidden_size=4)
    proto.graph.node.append(second)
    with pytest.raises(ValueError, match="not computed from the Y output"):
        from_onnx(proto)


# -- export -----------------------------------------------------------------------------------

@pytest.mark.parametrize("num_layers, bidirectional", [(1, False), (2, False), (1, True),
                                                       (2, True)])
@pytest.mark.parametrize("batch_first", [False, True])
def test_export_runs_in_onnxruntime(tmp_path, rng, num_layers, bidirectional, batch_first):
    kwargs = {"bidirectional": True} if bidirectional else {}  # the plain call on any version
    model = fastlstm.LSTM(3, 5, num_layers, batch_first=batch_first, seed=1, **kwargs)
    path = tmp_path / "fastlstm.onnx"
    to_onnx(model, path)
    sess = session(path)
    inputs = {i.name: i.type for i in sess.get_inputs()}
    assert inputs == {"x": "tensor(float)", "h0": "optional(tensor(float))",
                      "c0": "optional(tensor(float))"}  # x the only required one
    assert sess.get_overridable_initializers() == []
    D = 2 if bidirectional else 1
    for T, batch in ((6, 2), (1, 3)):  # symbolic seq_len and batch
        x = rng.standard_normal((batch, T, 3) if batch_first else (T, batch, 3)).astype(np.float32)
        out, (h_n, c_n) = model(x)
        assert_close((out, h_n, c_n), sess.run(["output", "h_n", "c_n"], {"x": x}),
                     f"to_onnx no state T={T} B={batch}")
        h0, c0 = rng.standard_normal((2, D * num_layers, batch, 5)).astype(np.float32)
        out, (h_n, c_n) = model(x, (h0, c0))
        assert_close((out, h_n, c_n),
                     sess.run(["output", "h_n", "c_n"], {"x": x, "h0": h0, "c0": c0}),
                     f"to_onnx with state T={T} B={batch}")


@pytest.mark.parametrize("bias", [True, False])
def test_export_import_round_trip(tmp_path, bias):
    model = fastlstm.LSTM(3, 4, bias=bias, batch_first=True, seed=2)
    proto = model.to_onnx(tmp_path / "m.onnx")  # the methods delegate to to_onnx / from_onnx
    assert any(i.name == "B_l0" for i in proto.graph.initializer) == bias
    back = fastlstm.LSTM.from_onnx(tmp_path / "m.onnx")
    assert (back.bias, back.batch_first, back.dtype) == (bias, True, np.float32)
    assert back.state_dict().keys() == model.state_dict().keys()
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[name], value, err_msg=name)


def test_export_float64_model_as_float32(tmp_path, rng):
    model = fastlstm.LSTM(3, 4, seed=3, dtype=np.float64)
    proto = to_onnx(model, tmp_path / "m.onnx")
    assert all(t.data_type == TensorProto.FLOAT for t in proto.graph.initializer
               if t.name[0] in "WRBhc")
    x = rng.standard_normal((5, 2, 3))
    out, (h_n, c_n) = model(x)
    ref = session(proto).run(["output", "h_n", "c_n"], {"x": x.astype(np.float32)})
    assert_close((out, h_n, c_n), ref, "float64 model vs its float32 export")


def test_export_opset(tmp_path):
    model = fastlstm.LSTM(3, 4, seed=0)
    assert to_onnx(model, tmp_path / "m.onnx").opset_import[0].version == 15
    assert to_onnx(model, tmp_path / "m.onnx", opset=17).opset_import[0].version == 17
    with pytest.raises(ValueError, match="opset must be an int from 15"):
        to_onnx(model, tmp_path / "m.onnx", opset=14)  # no Optional type before opset 15


ORT_LOAD = """
import sys, warnings
import numpy as np, onnxruntime as ort
warnings.simplefilter("always")
options = ort.SessionOptions()
options.log_severity_level = 1  # info and up: a warning must show in what the test reads
sess = ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
x = np.ones((2, 3, 3), np.float32)
sess.run(None, {"x": x})
sess.run(None, {"x": x, "h0": np.zeros((2, 3, 5), np.float32),
                "c0": np.zeros((2, 3, 5), np.float32)})
print("loaded")
"""


@pytest.mark.parametrize("opset", [15, 18])  # 18: OptionalHasElement's second version
def test_onnxruntime_loads_the_export_without_warnings(tmp_path, opset):
    """No initializer behind a graph input: ONNX Runtime's log (its own stderr, at info level
    and up, so warnings are in it) and Python's warnings stay free of warnings, both when it
    loads the model and when it runs it with and without states."""
    model = fastlstm.LSTM(3, 5, num_layers=1, bidirectional=True, seed=4)
    to_onnx(model, tmp_path / "m.onnx", opset=opset)
    done = subprocess.run([sys.executable, "-c", ORT_LOAD, str(tmp_path / "m.onnx")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "loaded", done.stderr[-3000:]
    log = done.stderr
    assert "onnxruntime" in log, "no ORT log at info level: the check would see nothing"
    flagged = [line for line in log.splitlines()
               if "[W:" in line or "[E:" in line or "Warning" in line]
    assert not flagged, "\n".join(flagged)


@pytest.mark.parametrize("batch_first", [False, True])
def test_export_streams_in_chunks(tmp_path, rng, batch_first):
    """Feeding one chunk's h_n, c_n as the next chunk's h0, c0 gives the one-call result."""
    model = fastlstm.LSTM(3, 5, num_layers=2, batch_first=batch_first, seed=5)
    sess = session(to_onnx(model, tmp_path / "m.onnx"))
    t_axis = 1 if batch_first else 0
    x = rng.standard_normal((2, 9, 3) if batch_first else (9, 2, 3)).astype(np.float32)
    out, (h_n, c_n) = model(x)
    chunks, state = [], {}
    for part in np.split(x, [4, 5], axis=t_axis):  # 4 steps, 1 step, 4 steps
        y, h, c = sess.run(["output", "h_n", "c_n"], {"x": part, **state})
        chunks.append(y)
        state = {"h0": h, "c0": c}
    assert_close((np.concatenate(chunks, axis=t_axis), state["h0"], state["c0"]),
                 (out, h_n, c_n), "to_onnx streamed in chunks")


def test_export_proj_size_raises(tmp_path):
    model = fastlstm.LSTM(3, 4, proj_size=2, seed=0)
    with pytest.raises(NotImplementedError, match="proj_size"):
        to_onnx(model, tmp_path / "m.onnx")


# -- without onnx -----------------------------------------------------------------------------

def test_missing_onnx_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now raises ImportError
    with pytest.raises(ImportError, match="pip install onnx"):
        from_onnx(tmp_path / "m.onnx")
    with pytest.raises(ImportError, match="pip install onnx"):
        to_onnx(fastlstm.LSTM(3, 4), tmp_path / "m.onnx")


def test_module_imports_without_onnx():
    code = ("import sys; sys.modules['onnx'] = None; import fastlstm.interop.onnx, fastlstm; "
            "print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
