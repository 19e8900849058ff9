"""The systems a cell times: the seeded data every system shares, and one maker per system
(fastlstm, the NumPy reference, torch with and without oneDNN, ONNX Runtime) that wraps its
call and reads its result in one common form."""
import contextlib
import importlib
import os

import numpy as np

import fastlstm
from fastlstm import reference

from .peers import Unavailable
from .workloads import SEED


def make_data(B, T, I, H, state=False, seed=SEED, dtype=np.float32):
    """A seeded fastlstm.LSTM (its weights are every system's), x (T, B, I), optional state,
    all in `dtype` (float32 or float64)."""
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    model = fastlstm.LSTM(I, H, seed=seed, dtype=dtype)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0 = c0 = None
    if state:
        h0 = (0.5 * rng.standard_normal((B, H))).astype(dtype)
        c0 = (0.5 * rng.standard_normal((B, H))).astype(dtype)
    return dict(B=B, T=T, I=I, H=H, model=model, params=model.parameters(), x=x, h0=h0, c0=c0,
                dy=np.ones((T, B, H), dtype), dtype=dtype)


class System:
    """fn(): the timed call; extract(result) -> {name: array} compared with the baseline (not
    timed); context(): entered around each check and each timed round (not timed)."""

    def __init__(self, name, fn, extract, context=contextlib.nullcontext, note=""):
        self.name, self.fn, self.extract, self.context, self.note = (
            name, fn, extract, context, note)
        self.inner = 1
        self.samples = []  # seconds per call, one per round


def _fwd_result(output, h_n, c_n):
    B, H = output.shape[1], output.shape[2]
    return {"output": np.asarray(output), "h_n": np.reshape(h_n, (B, H)),
            "c_n": np.reshape(c_n, (B, H))}


GRAD_NAMES = ("x", "weight_ih", "weight_hh", "bias_ih", "bias_hh")


def make_fastlstm(d, mode, threads, peers):
    model, x = d["model"], d["x"]
    hx = None if d["h0"] is None else (d["h0"][None], d["c0"][None])
    if mode == "fwd":
        def fn():
            return model(x, hx, num_threads=threads)

        def extract(r):
            return _fwd_result(r[0], *r[1])
    else:
        dy = d["dy"]

        def fn():
            y, _, backprop = model.forward_train(x, hx, num_threads=threads)
            return y, backprop(grad_output=dy, num_threads=threads)

        def extract(r):
            y, g = r
            out = {"output": y}
            out.update({k: g[k if k == "x" else k + "_l0"] for k in GRAD_NAMES})
            return out
    return System("fastlstm", fn, extract, note=f"num_threads={threads}")


def make_numpy(d, mode, threads, peers):
    if peers.controller() is None:
        env = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
        if env != str(threads):
            raise Unavailable(f"threadpoolctl is not installed and OPENBLAS_NUM_THREADS / "
                              f"OMP_NUM_THREADS != {threads}: NumPy's BLAS threads cannot be "
                              f"pinned (pip install threadpoolctl)")
    p, x, h0, c0 = d["params"], d["x"], d["h0"], d["c0"]
    w = (p["weight_ih_l0"], p["weight_hh_l0"], p["bias_ih_l0"], p["bias_hh_l0"])
    if mode == "fwd":
        def fn():
            return reference.forward(x, *w, h0=h0, c0=c0)

        def extract(r):
            return _fwd_result(*r)
    else:
        dy = d["dy"]

        def fn():
            y, _, _, cache = reference.forward_train(x, *w, h0=h0, c0=c0)
            return y, reference.backward(cache, grad_output=dy)

        def extract(r):
            y, g = r
            out = {"output": y}
            out.update({k: g[k] for k in GRAD_NAMES})
            return out
    return System("numpy", fn, extract, note="fastlstm.reference; BLAS threads via threadpoolctl")


def _mkldnn_off(torch):
    """torch.backends.mkldnn.flags(enabled=False), leaving the other flags as they are."""
    try:
        return torch.backends.mkldnn.flags(enabled=False, deterministic=None, allow_tf32=None,
                                           fp32_precision=None)
    except TypeError:  # another torch's signature
        return torch.backends.mkldnn.flags(enabled=False)


def _make_torch(d, mode, threads, peers, native):
    torch = peers.module("torch")
    lstm = torch.nn.LSTM(d["I"], d["H"], num_layers=1, bias=True, batch_first=False)
    wide = d["x"].dtype == np.float64
    if wide:
        lstm = lstm.double()
    with torch.no_grad():
        for name, value in d["params"].items():
            getattr(lstm, name).copy_(torch.from_numpy(np.array(value)))
    xt = torch.from_numpy(d["x"])
    hx = None
    if d["h0"] is not None:
        hx = (torch.from_numpy(d["h0"])[None].clone(), torch.from_numpy(d["c0"])[None].clone())
    name = "torch-native" if native else "torch"

    @contextlib.contextmanager
    def context():
        with contextlib.ExitStack() as stack:
            if native:
                stack.enter_context(_mkldnn_off(torch))
            if mode == "fwd":
                stack.enter_context(torch.inference_mode())
            yield

    if mode == "fwd":
        def fn():
            return lstm(xt, hx)

        def extract(r):
            out, (h_n, c_n) = r
            return _fwd_result(out.numpy(), h_n.numpy(), c_n.numpy())
        note = "inference_mode"
    else:
        params = list(lstm.parameters())
        xg = xt.clone().requires_grad_(True)

        def fn():
            for q in params:
                q.grad = None
            xg.grad = None
            out, _ = lstm(xg, hx)
            out.sum().backward()
            return out

        def extract(out):
            return {"output": out.detach().numpy(), "x": xg.grad.numpy(),
                    "weight_ih": lstm.weight_ih_l0.grad.numpy(),
                    "weight_hh": lstm.weight_hh_l0.grad.numpy(),
                    "bias_ih": lstm.bias_ih_l0.grad.numpy(),
                    "bias_hh": lstm.bias_hh_l0.grad.numpy()}
        note = "out.sum().backward()"
    note += f"; set_num_threads({threads})" + ("; mkldnn.flags(enabled=False)" if native else "")
    if wide:
        note += "; float64 (.double()): native kernels, oneDNN's LSTM is float32/bf16 only"
    return System(name, fn, extract, context, note)


def make_torch(d, mode, threads, peers):
    return _make_torch(d, mode, threads, peers, native=False)


def make_torch_native(d, mode, threads, peers):
    return _make_torch(d, mode, threads, peers, native=True)


def _ifgo_to_iofc(a):
    i, f, g, o = np.split(np.asarray(a), 4, axis=0)
    return np.concatenate([i, o, f, g], axis=0)


def onnx_lstm_model(params, T, B, I, H, with_state, dtype=np.float32):
    """Serialized ONNX model of one LSTM node (opset 14; ONNX's gate order is i, o, f, c), in
    float32 or float64."""
    onnx = importlib.import_module("onnx")
    from onnx import TensorProto, helper, numpy_helper

    dtype = np.dtype(dtype)
    FLOAT = TensorProto.DOUBLE if dtype == np.float64 else TensorProto.FLOAT
    W = _ifgo_to_iofc(params["weight_ih_l0"])[None].astype(dtype)
    R = _ifgo_to_iofc(params["weight_hh_l0"])[None].astype(dtype)
    Bv = np.concatenate([_ifgo_to_iofc(params["bias_ih_l0"]),
                         _ifgo_to_iofc(params["bias_hh_l0"])])[None].astype(dtype)
    inits = [numpy_helper.from_array(W, "W"), numpy_helper.from_array(R, "R"),
             numpy_helper.from_array(Bv, "B")]
    inputs = [helper.make_tensor_value_info("X", FLOAT, [T, B, I])]
    node_in = ["X", "W", "R", "B"]
    if with_state:
        inputs += [helper.make_tensor_value_info("h0", FLOAT, [1, B, H]),
                   helper.make_tensor_value_info("c0", FLOAT, [1, B, H])]
        node_in += ["", "h0", "c0"]  # no sequence_lens
    node = helper.make_node("LSTM", node_in, ["Y", "Y_h", "Y_c"], hidden_size=H)
    outputs = [helper.make_tensor_value_info("Y", FLOAT, [T, 1, B, H]),
               helper.make_tensor_value_info("Y_h", FLOAT, [1, B, H]),
               helper.make_tensor_value_info("Y_c", FLOAT, [1, B, H])]
    graph = helper.make_graph([node], "lstm", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def make_onnxruntime(d, mode, threads, peers):
    if mode != "fwd":
        raise Unavailable("ONNX Runtime runs inference only")
    ort = peers.module("onnxruntime")
    peers.module("onnx")  # to build the model
    T, B, I, H = d["T"], d["B"], d["I"], d["H"]
    with_state = d["h0"] is not None
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    dtype = d["x"].dtype
    try:
        sess = ort.InferenceSession(onnx_lstm_model(d["params"], T, B, I, H, with_state, dtype),
                                    so, providers=["CPUExecutionProvider"])
    except Exception as exc:
        if dtype != np.float32:
            raise Unavailable(f"ONNX Runtime has no {dtype} LSTM on the CPU provider: "
                              f"{type(exc).__name__}: {exc}"[:400]) from None
        raise
    feeds = {"X": d["x"]}
    if with_state:
        feeds.update(h0=d["h0"][None], c0=d["c0"][None])
    if dtype != np.float32:  # the kernel may load and then refuse at run time
        try:
            sess.run(None, feeds)
        except Exception as exc:
            raise Unavailable(f"ONNX Runtime's CPU LSTM does not run {dtype}: "
                              f"{type(exc).__name__}: {exc}"[:400]) from None

    def fn():
        return sess.run(None, feeds)

    def extract(r):
        Y, Y_h, Y_c = r
        return _fwd_result(Y[:, 0], Y_h[0], Y_c[0])
    return System("onnxruntime", fn, extract,
                  note=f"LSTM node, opset 14; intra_op={threads}, inter_op=1")


MAKERS = {
    "fastlstm": make_fastlstm,
    "numpy": make_numpy,
    "torch": make_torch,
    "torch-native": make_torch_native,
    "onnxruntime": make_onnxruntime,
}
