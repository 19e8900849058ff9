"""fastlstm vs its peers, one pytest-benchmark test per (workload, mode, threads, system).

Systems: fastlstm, the NumPy reference (fastlstm.reference), torch nn.LSTM with oneDNN (the
default) and with the native kernels (torch.backends.mkldnn.flags(enabled=False)), and ONNX
Runtime's LSTM op (a hand-built node, forward only). torch / onnxruntime tests skip when those are
not installed.

Modes: fwd = inference; fwd+bwd = forward keeping what the backward needs, then all gradients
(x and the four parameters) for grad_output = ones (torch: out.sum().backward()).

Threads: fastlstm num_threads=; every thread pool threadpoolctl sees (NumPy's BLAS, the OpenMP
runtimes) limited with threadpool_limits; torch.set_num_threads; ORT intra_op_num_threads with
inter_op_num_threads=1. Everything is restored afterwards.

Every test first checks the system's result against fastlstm's (computed once per workload and
mode, 1 thread): forward output / h_n / c_n within 1e-4 absolute, gradients within
1e-4 * max(1, max|g|) (they grow with B*T). With timing on, that call is also the warm-up; with
--benchmark-disable the body runs once and its result is checked, so CI exercises every path.
"""
import contextlib
import os
import time

import numpy as np
import pytest

import fastlstm
from fastlstm import reference

TOL = 1e-4
SEED = 1234

_data_cache = {}
_baseline_cache = {}


# ----------------------------------------------------------------------------------------------
# data, baseline, checks
# ----------------------------------------------------------------------------------------------
def _data(case):
    """Weights (a seeded fastlstm.LSTM), x, optional state, upstream gradient: per workload."""
    wl = case["workload"]
    if wl not in _data_cache:
        B, T, I, H = case["B"], case["T"], case["I"], case["H"]
        rng = np.random.default_rng(SEED)
        model = fastlstm.LSTM(I, H, seed=SEED)
        x = rng.standard_normal((T, B, I)).astype(np.float32)
        if case.get("state"):
            h0 = (0.5 * rng.standard_normal((B, H))).astype(np.float32)
            c0 = (0.5 * rng.standard_normal((B, H))).astype(np.float32)
        else:
            h0 = c0 = None
        _data_cache.clear()  # one workload at a time: e's buffers are ~100 MB
        _baseline_cache.clear()
        _data_cache[wl] = dict(model=model, params=model.parameters(), x=x, h0=h0, c0=c0,
                               dy=np.ones((T, B, H), np.float32))
    return _data_cache[wl]


def _baseline(case):
    """fastlstm's result (1 thread) that every system is compared with."""
    key = (case["workload"], case["mode"])
    if key not in _baseline_cache:
        fn, extract, ctx = make_fastlstm(dict(case, threads=1), _data(case))
        with ctx:
            _baseline_cache[key] = extract(fn())
    return _baseline_cache[key]


def _compare(got, ref):
    """Largest error over all compared arrays, each scaled by max(1, max|ref|); asserts <= TOL."""
    assert set(got) == set(ref), (sorted(got), sorted(ref))
    errs = {}
    for name, r in ref.items():
        g = np.asarray(got[name], np.float64)
        r = np.asarray(r, np.float64)
        assert g.shape == r.shape, f"{name}: shape {g.shape} != {r.shape}"
        scale = max(1.0, float(np.max(np.abs(r)))) if r.size else 1.0
        errs[name] = float(np.max(np.abs(g - r))) / scale if r.size else 0.0
    bad = {k: v for k, v in errs.items() if not v <= TOL}
    assert not bad, f"differs from fastlstm by more than {TOL} (scaled): {bad}"
    return max(errs.values())


def _fwd_dict(output, h_n, c_n):
    B, H = output.shape[1], output.shape[2]
    return {"output": output, "h_n": np.reshape(h_n, (B, H)), "c_n": np.reshape(c_n, (B, H))}


# ----------------------------------------------------------------------------------------------
# thread pinning
# ----------------------------------------------------------------------------------------------
def _threadpoolctl():
    try:
        import threadpoolctl
        return threadpoolctl
    except ImportError:
        return None


@contextlib.contextmanager
def _pinned(threads):
    """Limit every thread pool threadpoolctl knows (BLAS, OpenMP) to `threads`, if installed."""
    tpc = _threadpoolctl()
    if tpc is None:
        yield
        return
    with tpc.threadpool_limits(limits=threads):
        yield


@contextlib.contextmanager
def _torch_threads(torch, threads):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------------------------
# systems: each returns (fn, extract, ctx): fn() is the timed body, extract(result) -> dict of
# arrays to compare with the baseline (not timed), ctx is entered around checking and timing.
# ----------------------------------------------------------------------------------------------
def make_fastlstm(case, d):
    model, x, nt = d["model"], d["x"], case["threads"]
    hx = None if d["h0"] is None else (d["h0"][None], d["c0"][None])
    if case["mode"] == "fwd":
        def fn():
            return model(x, hx, num_threads=nt)

        def extract(r):
            return _fwd_dict(r[0], *r[1])
    else:
        dy = d["dy"]

        def fn():
            y, _, backprop = model.forward_train(x, hx, num_threads=nt)
            return y, backprop(grad_output=dy, num_threads=nt)

        def extract(r):
            y, g = r
            return {"output": y, "x": g["x"], "weight_ih": g["weight_ih_l0"],
                    "weight_hh": g["weight_hh_l0"], "bias_ih": g["bias_ih_l0"],
                    "bias_hh": g["bias_hh_l0"]}
    return fn, extract, _pinned(nt)


def make_numpy(case, d):
    nt = case["threads"]
    if _threadpoolctl() is None:
        env = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
        if env != str(nt):
            pytest.skip("threadpoolctl not installed and OPENBLAS_NUM_THREADS/OMP_NUM_THREADS "
                        f"!= {nt}: cannot pin NumPy's BLAS threads")
    p, x, h0, c0 = d["params"], d["x"], d["h0"], d["c0"]
    w = (p["weight_ih_l0"], p["weight_hh_l0"], p["bias_ih_l0"], p["bias_hh_l0"])
    if case["mode"] == "fwd":
        def fn():
            return reference.forward(x, *w, h0=h0, c0=c0)

        def extract(r):
            return _fwd_dict(*r)
    else:
        dy = d["dy"]

        def fn():
            y, _, _, cache = reference.forward_train(x, *w, h0=h0, c0=c0)
            return y, reference.backward(cache, grad_output=dy)

        def extract(r):
            y, g = r
            return {"output": y, "x": g["x"], "weight_ih": g["weight_ih"],
                    "weight_hh": g["weight_hh"], "bias_ih": g["bias_ih"],
                    "bias_hh": g["bias_hh"]}
    return fn, extract, _pinned(nt)


def _make_torch(case, d, native):
    torch = pytest.importorskip("torch")
    p, nt = d["params"], case["threads"]
    B, T, I, H = case["B"], case["T"], case["I"], case["H"]
    lstm = torch.nn.LSTM(I, H, num_layers=1, bias=True, batch_first=False)
    with torch.no_grad():
        for name, value in p.items():
            getattr(lstm, name).copy_(torch.from_numpy(np.array(value)))
    xt = torch.from_numpy(d["x"])
    hx = None
    if d["h0"] is not None:
        hx = (torch.from_numpy(d["h0"])[None].clone(), torch.from_numpy(d["c0"])[None].clone())

    stack = contextlib.ExitStack()
    stack.enter_context(_pinned(nt))
    stack.enter_context(_torch_threads(torch, nt))
    if native:
        # Only `enabled` (the defaults of flags() would also set allow_tf32, which warns).
        stack.enter_context(torch.backends.mkldnn.flags(
            enabled=False, deterministic=None, allow_tf32=None, fp32_precision=None))
    if case["mode"] == "fwd":
        stack.enter_context(torch.inference_mode())

        def fn():
            return lstm(xt, hx)

        def extract(r):
            out, (h_n, c_n) = r
            return _fwd_dict(out.numpy(), h_n.numpy(), c_n.numpy())
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
    return fn, extract, stack


def make_torch(case, d):
    return _make_torch(case, d, native=False)


def make_torch_native(case, d):
    return _make_torch(case, d, native=True)


def _ifgo_to_iofc(a):
    i, f, g, o = np.split(np.asarray(a), 4, axis=0)
    return np.concatenate([i, o, f, g], axis=0)


def make_onnxruntime(case, d):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    assert case["mode"] == "fwd", "ONNX Runtime is benchmarked forward only"
    p, nt = d["params"], case["threads"]
    B, T, I, H = case["B"], case["T"], case["I"], case["H"]
    with_state = d["h0"] is not None
    W = _ifgo_to_iofc(p["weight_ih_l0"])[None].astype(np.float32)
    R = _ifgo_to_iofc(p["weight_hh_l0"])[None].astype(np.float32)
    Bv = np.concatenate([_ifgo_to_iofc(p["bias_ih_l0"]),
                         _ifgo_to_iofc(p["bias_hh_l0"])])[None].astype(np.float32)
    inits = [numpy_helper.from_array(W, "W"), numpy_helper.from_array(R, "R"),
             numpy_helper.from_array(Bv, "B")]
    ins = [helper.make_tensor_value_info("X", TensorProto.FLOAT, [T, B, I])]
    node_in = ["X", "W", "R", "B"]
    feeds = {"X": d["x"]}
    if with_state:
        ins += [helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, B, H]),
                helper.make_tensor_value_info("c0", TensorProto.FLOAT, [1, B, H])]
        node_in += ["", "h0", "c0"]
        feeds.update(h0=d["h0"][None], c0=d["c0"][None])
    node = helper.make_node("LSTM", node_in, ["Y", "Y_h", "Y_c"], hidden_size=H)
    outs = [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [T, 1, B, H]),
            helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, [1, B, H]),
            helper.make_tensor_value_info("Y_c", TensorProto.FLOAT, [1, B, H])]
    graph = helper.make_graph([node], "lstm", ins, outs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    onnx.checker.check_model(model)

    so = ort.SessionOptions()
    so.intra_op_num_threads = nt
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])

    def fn():
        return sess.run(None, feeds)

    def extract(r):
        Y, Y_h, Y_c = r
        return _fwd_dict(Y[:, 0], Y_h[0], Y_c[0])
    return fn, extract, _pinned(nt)


MAKERS = {
    "fastlstm": make_fastlstm,
    "numpy": make_numpy,
    "torch": make_torch,
    "torch-native": make_torch_native,
    "onnxruntime": make_onnxruntime,
}


# ----------------------------------------------------------------------------------------------
# the benchmark
# ----------------------------------------------------------------------------------------------
def test_lstm(benchmark, case, request):
    wl, mode, nt, system = case["workload"], case["mode"], case["threads"], case["system"]
    d = _data(case)
    # fastlstm at 1 thread IS the baseline: its own first call provides it (saves a call of the
    # big workloads); every other case computes it on demand and compares.
    is_base = system == "fastlstm" and nt == 1 and (wl, mode) not in _baseline_cache
    if not is_base:
        _baseline(case)
    fn, extract, ctx = MAKERS[system](case, d)

    def check(result):
        got = extract(result)
        if is_base:
            _baseline_cache[(wl, mode)] = got
        benchmark.extra_info["check_err"] = _compare(got, _baseline_cache[(wl, mode)])

    flops = case["fwd_flops"] * (3 if mode == "fwd+bwd" else 1)
    benchmark.group = f"{wl}-{mode}-t{nt}"
    benchmark.extra_info.update(
        system=system, workload=wl, mode=mode, threads=nt, B=case["B"], T=case["T"],
        I=case["I"], H=case["H"], fwd_flops=case["fwd_flops"], flops=flops,
        isa=fastlstm.openmp_info()["isa"])

    with ctx:
        if benchmark.disabled:
            # One run of the body (what pytest-benchmark does when disabled), checked.
            check(benchmark(fn))
            return
        # Check first; this call is also the warm-up (packing, primitive creation, page faults).
        check(fn())
        gap = request.config.getoption("--bench-gap")
        if nt > 1 and gap > 0:
            time.sleep(gap)  # let other libraries' spinning worker threads go to sleep
        if case.get("rounds"):
            benchmark.pedantic(fn, rounds=case["rounds"], iterations=1, warmup_rounds=0)
        else:
            benchmark(fn)
