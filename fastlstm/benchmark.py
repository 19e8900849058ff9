"""fastlstm against its peers, in one command: ``python -m fastlstm bench``.

Peers: the NumPy reference (``fastlstm.reference``), PyTorch's ``nn.LSTM`` with oneDNN (its
default) and with its native kernels (``torch.backends.mkldnn.flags(enabled=False)``), and ONNX
Runtime's ``LSTM`` op (a hand-built node, forward only). Each peer is imported only when it runs
and is left out, with a note, when it is not installed: this module needs only NumPy.

Method:

- Workloads (B, T, I, H), one layer, time-major: a 1,100,128,128; b 1,100,512,512;
  c 16,100,256,256; d 64,50,512,512; e 256,25,1024,1024; f 1,1,256,256 (one step, random h0/c0
  in, h_n/c_n out). The weights are a seeded ``fastlstm.LSTM``'s, copied into every peer.
- Dtype: ``--dtype float32`` (default) or ``float64``: data, weights and every system in that
  dtype (torch: the module ``.double()``; ONNX Runtime: a DOUBLE model). oneDNN's LSTM is
  float32/bfloat16 only, so in float64 torch's default path runs its native kernels, as
  "torch native" does: both columns are kept (the same kernels timed twice; the first is
  labelled "torch (default: native in f64)").
  ONNX Runtime's CPU LSTM kernel does not implement float64: it is skipped with a note.
- Modes: ``fwd`` (inference) and ``fwd+bwd`` (forward keeping what the backward needs, then
  the gradients of x and of all four parameters for grad_output = ones; torch:
  ``out.sum().backward()``).
- Threads: fastlstm ``num_threads=``; every thread pool threadpoolctl knows (NumPy's BLAS, the
  OpenMP runtimes) limited with ``threadpool_limits``; ``torch.set_num_threads``; ONNX Runtime
  ``intra_op_num_threads`` with ``inter_op_num_threads = 1``.
- Checks before timing: every system's result (fastlstm's own at each thread count included) is
  compared with fastlstm's at 1 thread: outputs and states within tol absolute, gradients within
  tol * max(1, max|g|); tol = 1e-4 in float32, 1e-9 in float64. A system that fails is reported
  in the table and not timed. That first call is also its warm-up.
- Timing: per (workload, mode, threads) cell, the systems run in interleaved rounds (round r runs
  every system once, starting from a different one each round, ``inner`` back-to-back calls so a
  round lasts >= ~40 ms; ``inner`` comes from one timed call, or the faster of two when the
  first took 1-4 rounds' worth), so machine noise hits them alike; the number of rounds fits
  the cell's time budget (within a minimum and maximum). With more than one thread each
  system's round follows an idle gap: every library's worker pool spins for a while after a
  call (OpenBLAS up to ~0.1 s) and would otherwise steal a core from the next system.
  Reported: the median over rounds of the per-call time; results.json keeps every sample.
- FLOPs: fwd = 2 * 4H * (I + H) * B * T (the two matrix products; gate math not counted),
  fwd+bwd = 3x.
- % of limit, against this machine's limits measured at the start of the run (``limits`` in
  results.json): one core's multiply-add peak in the run's dtype (``--peak-gflops`` replaces it)
  and its read bandwidth at the sizes that matter. Batch-1 forward cells (a, b, f) stream their
  weights: their limit is the time to read each thread's share of W_hh once per step, plus the
  input projection (the larger of its FLOPs at peak and one read of W_ih), over fastlstm's time
  ("% read"). Every other cell: GFLOP/s / (peak * threads) ("% FMA").
"""
import contextlib
import datetime
import gc
import importlib
import importlib.metadata
import json
import math
import os
import platform
import statistics
import sys
import time

import numpy as np

import fastlstm
from fastlstm import _kernels, reference

WORKLOADS = {
    "a": dict(B=1, T=100, I=128, H=128, desc="streaming / latency"),
    "b": dict(B=1, T=100, I=512, H=512, desc="latency, larger H"),
    "c": dict(B=16, T=100, I=256, H=256, desc="small batch"),
    "d": dict(B=64, T=50, I=512, H=512, desc="medium batch"),
    "e": dict(B=256, T=25, I=1024, H=1024, desc="throughput, GEMM-bound"),
    "f": dict(B=1, T=1, I=256, H=256, desc="one step, state in and out", state=True),
}
MODES = ("fwd", "fwd+bwd")
SYSTEMS = ("fastlstm", "numpy", "torch", "torch-native", "onnxruntime")
FWD_ONLY = frozenset({"onnxruntime"})
LABELS = {"fastlstm": "fastlstm", "numpy": "NumPy ref", "torch": "torch (oneDNN)",
          "torch-native": "torch native", "onnxruntime": "ONNX Runtime"}
SHORT = {"numpy": "numpy", "torch": "torch", "torch-native": "native", "onnxruntime": "ort"}

TOL = 1e-4  # float32
TOLS = {"float32": TOL, "float64": 1e-9}
DTYPES = tuple(TOLS)
SEED = 1234
PEAK_GFLOPS_REFERENCE = 225.0  # one core's float32 FMA peak where peers/RESULTS.md was measured

# The scaling plot: fwd, 1 thread, time per step against the batch and against the hidden size.
SCALING_T = 20
SCALING_B = (1, 4, 16, 64)  # I = H = 256
SCALING_H = (64, 128, 256, 512, 1024)  # I = H, B = 16

DEFAULTS = dict(workloads="abcdef", threads="1,2", budget=3.0, min_rounds=5, max_rounds=25,
                scaling_budget=0.6)
QUICK = dict(workloads="acf", threads="1,2", budget=1.0, min_rounds=3, max_rounds=7,
             scaling_budget=0.25)
TARGET_ROUND = 0.04  # seconds: cheap calls repeat `inner` times per round to last this long
GAP = 0.15  # idle seconds before each system's round when threads > 1


def fwd_flops(B, T, I, H):
    """Forward FLOPs of the two matrix products; fwd+bwd counts 3x."""
    return 2 * 4 * H * (I + H) * B * T


def mode_flops(sizes, mode):
    return fwd_flops(sizes["B"], sizes["T"], sizes["I"], sizes["H"]) * (
        3 if mode == "fwd+bwd" else 1)


def peak_for(peak_gflops, dtype):
    """One core's peak in `dtype` from the float32 one: float64 vectors hold half the lanes."""
    return peak_gflops / 2 if np.dtype(dtype) == np.float64 else peak_gflops


def streamed_bytes(sizes, threads, itemsize):
    """Batch-1 forward: each thread's share of W_hh (read every step) and of W_ih (read once)."""
    H, I = sizes["H"], sizes["I"]
    return 4 * H * H * itemsize // threads, 4 * H * I * itemsize // threads


def measure_limits(dtype, workloads, threads, peak_gflops=None):
    """This machine's limits for the report: one core's multiply-add rate in `dtype` (or the
    float32 `peak_gflops` given, halved for float64) and its read bandwidth over the weight
    shares the batch-1 workloads stream (fastlstm's own probes, its active instruction set)."""
    itemsize = np.dtype(dtype).itemsize
    peak = (peak_for(peak_gflops, dtype) if peak_gflops else
            _kernels.probe_fma_gflops(dtype))
    sizes = sorted({n for wl in workloads if WORKLOADS[wl]["B"] == 1 for nt in threads
                    for n in streamed_bytes(WORKLOADS[wl], nt, itemsize)})
    return dict(fma_gflops_per_core=peak, peak_given=bool(peak_gflops),
                read_gbs={str(n): _kernels.probe_read_gbs(n, dtype) for n in sizes})


def limit_fraction(cell, limits):
    """(fraction of this machine's limit fastlstm reached, which limit) for a cell, or None."""
    res = cell["systems"].get("fastlstm")
    if not res or res["status"] != "ok" or not limits:
        return None
    seconds = res["median_ms"] * 1e-3
    peak = limits["fma_gflops_per_core"] * 1e9 * cell["threads"]
    read = limits.get("read_gbs", {})
    itemsize = np.dtype(cell.get("dtype", "float32")).itemsize
    hh, ih = streamed_bytes(cell, cell["threads"], itemsize)
    if cell["mode"] == "fwd" and cell["B"] == 1 and str(hh) in read and str(ih) in read:
        input_flops = 2 * 4 * cell["H"] * cell["I"] * cell["T"]
        floor = (cell["T"] * hh / (read[str(hh)] * 1e9)
                 + max(input_flops / peak, ih / (read[str(ih)] * 1e9)))
        return floor / seconds, "read"
    return cell["flops"] / seconds / peak, "FMA"


class Unavailable(Exception):
    """A system that cannot run here (a package is missing); the message is the note."""


# ----------------------------------------------------------------------------------------------
# peers: lazy imports, thread pinning
# ----------------------------------------------------------------------------------------------
class Peers:
    """Imports each peer the first time it is needed, and pins every thread pool per cell."""

    def __init__(self):
        self._modules = {}
        self._controller = None
        self.threads = None
        # torch's thread count to restore after the run, when the caller had imported torch
        # (measured now, before any limit; a torch imported here is left at its default)
        torch = sys.modules.get("torch")
        self._torch_threads_before = torch.get_num_threads() if torch is not None else None

    def module(self, name, pip_name=None):
        if name not in self._modules:
            try:
                self._modules[name] = importlib.import_module(name)
            except ImportError as exc:
                self._modules[name] = Unavailable(
                    f"{pip_name or name} is not installed (pip install {pip_name or name}): {exc}")
            if name == "torch" and self.threads and \
                    not isinstance(self._modules[name], Exception):
                self._modules[name].set_num_threads(self.threads)
        mod = self._modules[name]
        if isinstance(mod, Exception):
            raise mod
        return mod

    def controller(self):
        """threadpoolctl's controller (made once: scanning the loaded libraries takes ms), or
        None when threadpoolctl is not installed."""
        if self._controller is None:
            try:
                tpc = self.module("threadpoolctl")
            except Unavailable:
                self._controller = False
            else:
                self._controller = tpc.ThreadpoolController()
        return self._controller or None

    @contextlib.contextmanager
    def pinned(self, threads):
        """Every thread pool threadpoolctl sees and torch's (when imported) at `threads`."""
        self.threads = threads
        ctl = self.controller()
        torch = self._modules.get("torch")
        torch = None if isinstance(torch, Exception) else torch
        if torch is not None:
            torch.set_num_threads(threads)
        try:
            with ctl.limit(limits=threads) if ctl is not None else contextlib.nullcontext():
                yield
        finally:
            self.threads = None

    def restore(self):
        torch = self._modules.get("torch")
        if torch is not None and not isinstance(torch, Exception) and \
                self._torch_threads_before is not None:
            torch.set_num_threads(self._torch_threads_before)

    def threadpool_info(self):
        ctl = self.controller()
        if ctl is None:
            return "threadpoolctl not installed"
        ctl = self.module("threadpoolctl").ThreadpoolController()  # what is loaded now
        return [{k: d.get(k) for k in ("internal_api", "prefix", "version", "num_threads",
                                        "architecture")} for d in ctl.info()]


# ----------------------------------------------------------------------------------------------
# data and systems
# ----------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------
# check and timing
# ----------------------------------------------------------------------------------------------
STATE_NAMES = ("output", "h_n", "c_n")


def compare(got, ref, tol=TOL):
    """(ok, largest error, {name: error}): outputs and states absolute, gradients scaled by
    max(1, max|g|), each against tol (TOLS[dtype]; default the float32 TOL)."""
    errs = {}
    for name, r in ref.items():
        if name not in got:
            return False, math.inf, {name: "missing"}
        g = np.asarray(got[name], np.float64)
        r = np.asarray(r, np.float64)
        if g.shape != r.shape:
            return False, math.inf, {name: f"shape {g.shape} != {r.shape}"}
        if not r.size:
            errs[name] = 0.0
            continue
        scale = 1.0 if name in STATE_NAMES else max(1.0, float(np.max(np.abs(r))))
        err = float(np.max(np.abs(g - r))) / scale
        errs[name] = err if math.isfinite(err) else math.inf
    worst = max(errs.values()) if errs else 0.0
    return worst <= tol, worst, errs


def _call_seconds(s, n):
    pc = time.perf_counter
    with s.context():
        t0 = pc()
        for _ in range(n):
            s.fn()
        return pc() - t0


def time_interleaved(systems, *, budget, min_rounds, max_rounds, rounds=None, gap=0.0,
                     target_round=TARGET_ROUND):
    """Calibrate each system's `inner`, then run rounds; round r runs every system once,
    starting from system r mod n. Appends seconds per call to each system's samples. Returns
    the number of rounds."""
    if not systems:
        return 0
    per_round = 0.0
    for s in systems:
        t = _call_seconds(s, 1)
        if target_round <= t < 4 * target_round:
            # One slow call (a core waking from idle, a neighbour's burst: ~3 ms on a 6 ms call
            # here) must not make every round of this system a single cold call.
            t = min(t, _call_seconds(s, 1))
        if t < target_round:
            n = max(2, int(min(0.25 * target_round / max(t, 1e-7), 200)))
            t = _call_seconds(s, n) / n
            s.inner = max(1, math.ceil(target_round / max(t, 1e-7)))
        else:
            s.inner = 1
        per_round += s.inner * t + gap
    if rounds is None:
        rounds = int(min(max_rounds, max(min_rounds, budget // per_round)))
    pc = time.perf_counter
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            k = r % len(systems)
            for s in systems[k:] + systems[:k]:
                if gap:
                    time.sleep(gap)
                with s.context():
                    t0 = pc()
                    for _ in range(s.inner):
                        s.fn()
                    dt = pc() - t0
                s.samples.append(dt / s.inner)
    finally:
        if was_enabled:
            gc.enable()
    return rounds


def summarize(samples):
    q = (statistics.quantiles(samples, n=4, method="inclusive") if len(samples) >= 2
         else [samples[0]] * 3)
    med = statistics.median(samples)
    return dict(median_ms=1e3 * med, min_ms=1e3 * min(samples), iqr_ms=1e3 * (q[2] - q[0]),
                noise=(q[2] - q[0]) / med if med > 0 else None)


# ----------------------------------------------------------------------------------------------
# progress
# ----------------------------------------------------------------------------------------------
class Progress:
    """Lines on stderr: what runs, time elapsed, and an estimate of what is left (a rough
    model of each planned step, corrected by how long the finished ones really took)."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.start = time.perf_counter()
        self.planned = {}
        self.done_model = 0.0
        self.done_real = 0.0
        self._step_start = None

    def plan(self, key, estimate):
        self.planned[key] = estimate

    def begin(self, key):
        self._step_start = time.perf_counter()

    def end(self, key):
        self.done_model += self.planned.pop(key, 0.0)
        self.done_real += time.perf_counter() - self._step_start

    def left(self):
        factor = (self.done_real + 10.0) / (self.done_model + 10.0)  # 10 s of prior weight
        return factor * sum(self.planned.values())

    def say(self, msg):
        el = time.perf_counter() - self.start
        print(f"[{_fmt_s(el)} elapsed, ~{_fmt_s(self.left())} left] {msg}", file=self.stream,
              flush=True)


def _fmt_s(sec):
    sec = max(0.0, sec)
    return f"{sec:.0f} s" if sec < 120 else f"{sec / 60:.1f} min"


def _estimate_cell(sizes, mode, threads, n_systems, opts, gap):
    """Seconds a cell should take: a crude model (~40 GFLOP/s per thread for an average
    system), used only for the progress line's estimate."""
    call = mode_flops(sizes, mode) / (40e9 * threads) + 2e-4
    per_round = n_systems * (max(call, TARGET_ROUND) + gap)
    rounds = opts["rounds"] or min(opts["max_rounds"],
                                   max(opts["min_rounds"], opts["budget"] // per_round))
    return n_systems * 3 * call + rounds * per_round + 0.05 * n_systems


# ----------------------------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------------------------
def run_cell(d, mode, threads, systems, baseline, peers, opts, progress, label):
    """Check and time the systems on one (workload, mode, threads). Returns {system: result}."""
    results, live = {}, []
    gap = opts["gap"] if threads > 1 else 0.0
    with peers.pinned(threads):
        for name in systems:
            if mode != "fwd" and name in FWD_ONLY:
                continue
            progress.say(f"{label}: check {name}")
            try:
                s = MAKERS[name](d, mode, threads, peers)
            except Unavailable as exc:
                results[name] = dict(status="skipped", note=str(exc))
                continue
            except Exception as exc:  # a peer that breaks is reported, not fatal
                results[name] = dict(status="error", note=f"{type(exc).__name__}: {exc}"[:400])
                continue
            try:
                with s.context():
                    got = s.extract(s.fn())
                ok, err, errs = compare(got, baseline, TOLS[opts.get("dtype", "float32")])
            except Exception as exc:
                results[name] = dict(status="error", note=f"{type(exc).__name__}: {exc}"[:400])
                continue
            results[name] = dict(status="ok" if ok else "check failed", check_err=err,
                                 check_errs=errs, note=s.note)
            if ok:
                live.append(s)
        if live:
            progress.say(f"{label}: timing {', '.join(s.name for s in live)}")
            rounds = time_interleaved(live, budget=opts["budget"], rounds=opts["rounds"],
                                      min_rounds=opts["min_rounds"],
                                      max_rounds=opts["max_rounds"], gap=gap)
            for s in live:
                results[s.name].update(summarize(s.samples), rounds=rounds, inner=s.inner,
                                       samples_ms=[1e3 * t for t in s.samples])
    return results


def baseline_of(d, mode, peers):
    """fastlstm's result at 1 thread: what every system is checked against."""
    with peers.pinned(1):
        s = make_fastlstm(d, mode, 1, peers)
        return s.extract(s.fn())


def run_benchmark(opts, progress=None):
    """Run the planned cells (and the scaling sweep). Returns the results dict (results.json)."""
    progress = progress or Progress()
    peers = Peers()
    wls, modes, threads, systems = (opts["workloads"], opts["modes"], opts["threads"],
                                    opts["systems"])
    dtype = opts.get("dtype", "float32")
    for wl in wls:
        for mode in modes:
            n = sum(1 for s in systems if not (mode != "fwd" and s in FWD_ONLY))
            for nt in threads:
                progress.plan(("cell", wl, mode, nt),
                              _estimate_cell(WORKLOADS[wl], mode, nt, n, opts,
                                             opts["gap"] if nt > 1 else 0.0))
    scaling_points = []
    if opts["scaling"]:
        scaling_points = ([("batch", dict(B=B, T=SCALING_T, I=256, H=256)) for B in SCALING_B]
                          + [("hidden", dict(B=16, T=SCALING_T, I=H, H=H)) for H in SCALING_H])
        sopts = dict(opts, budget=opts["scaling_budget"], rounds=None, min_rounds=3,
                     max_rounds=max(3, opts["max_rounds"] // 2))
        for axis, sz in scaling_points:
            progress.plan(("scaling", axis, sz["B"], sz["H"]),
                          _estimate_cell(sz, "fwd", 1, len(systems), sopts, 0.0))

    out = dict(started=_now(), dtype=dtype, tol=TOLS[dtype], machine=machine_info(peers),
               options=_jsonable(opts), cells=[], scaling=[], notes=[])
    out["machine"]["loadavg_start"] = _loadavg()
    progress.say("measuring this machine's multiply-add peak and read bandwidth")
    out["limits"] = measure_limits(dtype, wls, threads, opts.get("peak_gflops"))
    progress.say(f"bench: {dtype}, workloads {''.join(wls)}, modes {','.join(modes)}, threads "
                 f"{','.join(map(str, threads))}, systems {','.join(systems)}")
    load = out["machine"]["loadavg_start"]
    if load and load[0] > 0.5:
        progress.say(f"warning: the machine is busy (load average {load[0]:.2f}): expect "
                     f"noisy numbers, multi-threaded ones most")
    try:
        for wl in wls:
            sizes = WORKLOADS[wl]
            d = make_data(sizes["B"], sizes["T"], sizes["I"], sizes["H"], sizes.get("state"),
                          dtype=dtype)
            for mode in modes:
                base = baseline_of(d, mode, peers)
                for nt in threads:
                    key = ("cell", wl, mode, nt)
                    label = (f"{wl}) {sizes['B']},{sizes['T']},{sizes['I']},{sizes['H']} "
                             f"{mode} {nt}thr")
                    progress.begin(key)
                    res = run_cell(d, mode, nt, systems, base, peers, opts, progress, label)
                    progress.end(key)
                    out["cells"].append(dict(workload=wl, mode=mode, threads=nt, dtype=dtype,
                                             B=sizes["B"], T=sizes["T"], I=sizes["I"],
                                             H=sizes["H"], flops=mode_flops(sizes, mode),
                                             loadavg=_loadavg(), systems=res))
                del base
            del d
            fastlstm.release_memory()
            gc.collect()
        for axis, sz in scaling_points:
            key = ("scaling", axis, sz["B"], sz["H"])
            label = f"scaling B={sz['B']} T={sz['T']} I={sz['I']} H={sz['H']} fwd 1thr"
            progress.begin(key)
            d = make_data(sz["B"], sz["T"], sz["I"], sz["H"], dtype=dtype)
            base = baseline_of(d, "fwd", peers)
            res = run_cell(d, "fwd", 1, systems, base, peers, sopts, progress, label)
            progress.end(key)
            out["scaling"].append(dict(axis=axis, **sz, dtype=dtype, systems={
                k: {kk: vv for kk, vv in v.items() if kk != "check_errs"} for k, v in res.items()}))
    finally:
        peers.restore()
        out["finished"] = _now()
        out["wall_s"] = time.perf_counter() - progress.start
        out["machine"]["loadavg_end"] = _loadavg()
        out["machine"]["threadpools"] = peers.threadpool_info()
        out["machine"]["versions"] = versions()
    return out


# ----------------------------------------------------------------------------------------------
# machine info
# ----------------------------------------------------------------------------------------------
def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _loadavg():
    try:
        return list(os.getloadavg())
    except (OSError, AttributeError):
        return None


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions():
    out = {"python": platform.python_version(), "fastlstm": fastlstm.__version__}
    for pkg in ("numpy", "threadpoolctl", "torch", "onnx", "onnxruntime", "matplotlib"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def machine_info(peers):
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info = fastlstm.openmp_info()
    return dict(cpu=_cpu_model(), cpus=os.cpu_count(), usable_cpus=usable,
                platform=platform.platform(), fastlstm_isa=info["isa"],
                fastlstm_isas=info["isas"], fastlstm_openmp=info["enabled"],
                env={k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                "MKL_NUM_THREADS", "FASTLSTM_ISA",
                                                "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
                     if k in os.environ})


def _jsonable(opts):
    return dict(opts)


# ----------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------
def _fmt_ms(ms):
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    if ms >= 1:
        return f"{ms:.2f}"
    return f"{ms:.3f}"


def _fmt_ratio(r):
    return f"**{r:.2f}**" if r < 1 else f"{r:.2f}"  # bold: fastlstm slower


def _cell_text(res):
    if res is None:
        return "-"
    st = res["status"]
    if st == "ok":
        return _fmt_ms(res["median_ms"])
    if st == "check failed":
        return f"CHECK FAILED ({res['check_err']:.1e})"
    return st  # skipped / error: the reason is in the notes


def labels(dtype):
    """Column labels; in float64 torch's default path is its native one (no oneDNN LSTM)."""
    if dtype == "float64":
        return dict(LABELS, torch="torch (default: native in f64)")
    return LABELS


def table(results):
    """The ratio table (markdown lines)."""
    cells = results["cells"]
    dtype = results.get("dtype", "float32")
    limits = results.get("limits")
    names = labels(dtype)
    present = {s for c in cells for s in c["systems"]}
    systems = [s for s in SYSTEMS if s in present] + sorted(present - set(SYSTEMS))
    peers = [s for s in systems if s != "fastlstm"]
    head = (["workload (B,T,I,H)", "mode", "thr", "dtype"]
            + [f"{names.get(s, s)} ms" for s in systems]
            + ["best peer/fl"] + [f"{SHORT.get(s, s)}/fl" for s in peers]
            + ["fastlstm GFLOP/s", "% of limit", "noise"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in cells:
        res = c["systems"]
        line = [f"{c['workload']}) {c['B']},{c['T']},{c['I']},{c['H']}", c["mode"],
                str(c["threads"]), c.get("dtype", dtype)]
        line += [_cell_text(res.get(s)) for s in systems]
        fl = res.get("fastlstm")
        base = fl["median_ms"] if fl and fl["status"] == "ok" else None
        timed = {s: res[s]["median_ms"] for s in peers
                 if s in res and res[s]["status"] == "ok"}
        if base and timed:
            best = min(timed, key=timed.get)
            line.append(f"{_fmt_ratio(timed[best] / base)} ({SHORT.get(best, best)})")
        else:
            line.append("-")
        line += [_fmt_ratio(timed[s] / base) if base and s in timed else "-" for s in peers]
        if base:
            reached = limit_fraction(c, limits)
            line += [f"{c['flops'] / (base * 1e-3) / 1e9:.1f}",
                     f"{100 * reached[0]:.0f}% {reached[1]}" if reached else "-"]
        else:
            line += ["-", "-"]
        noisy = [(v["noise"], s) for s, v in res.items() if v.get("noise") is not None]
        if noisy:
            n, s = max(noisy)
            line.append(f"{n:.2f} ({SHORT.get(s, s)})" + (" !" if n > 0.2 else ""))
        else:
            line.append("-")
        lines.append("| " + " | ".join(line) + " |")
    return lines


def notes(results):
    """Skipped systems, errors and failed checks, deduplicated."""
    seen, lines = set(), []
    tol = results.get("tol", TOL)
    for c in results["cells"] + results["scaling"]:
        where = (f"{c['workload']} {c['mode']} {c['threads']}thr" if "workload" in c else
                 f"scaling B={c['B']} H={c['H']}")
        for s, v in c["systems"].items():
            if v["status"] == "ok":
                continue
            if v["status"] == "check failed":
                errs = v.get("check_errs") or {}
                bad = ", ".join(f"{k} {e:.1e}" if isinstance(e, float) else f"{k} {e}"
                                for k, e in errs.items()
                                if not (isinstance(e, float) and e <= tol))
                lines.append(f"- {where}: {s} CHECK FAILED ({bad or v['check_err']}); not timed")
            elif (s, v["status"], v["note"]) not in seen:
                seen.add((s, v["status"], v["note"]))
                lines.append(f"- {s}: {v['status']}: {v['note']}")
    return lines


def markdown(results, plot_note):
    m = results["machine"]
    v = m.get("versions", {})
    vers = ", ".join(f"{k} {val}" for k, val in v.items() if val)
    missing = [k for k, val in v.items() if not val]
    opts = results["options"]
    dtype = results.get("dtype", "float32")
    tol = results.get("tol", TOL)
    limits = results.get("limits") or {}
    reads = ", ".join(f"{int(n) / 1024:g} KiB {v:.0f} GB/s"
                      for n, v in sorted(limits.get("read_gbs", {}).items(), key=lambda kv:
                                         int(kv[0])))
    L = [f"# fastlstm vs peers (`python -m fastlstm bench`), {dtype}", "",
         f"- Dtype: {dtype} (data, weights and every system)"
         + ("; torch's oneDNN LSTM is float32/bf16 only, so torch's default path runs its "
            "native kernels, the same as \"torch native\"; ONNX Runtime's CPU LSTM has no "
            "float64 kernel (skipped)." if dtype == "float64" else "."),
         f"- Machine: {m['cpu']}, {m['usable_cpus']} usable CPUs of {m['cpus']}, "
         f"{m['platform']}; fastlstm kernels: {m['fastlstm_isa']}, OpenMP "
         f"{'on' if m['fastlstm_openmp'] else 'OFF'}.",
         f"- Versions: {vers}" + (f"; not installed: {', '.join(missing)}" if missing else ""),
         f"- Run: {results['started']} to {results.get('finished', '?')} "
         f"({results.get('wall_s', 0):.0f} s); load average at start "
         f"{_fmt_load(m.get('loadavg_start'))}, at end {_fmt_load(m.get('loadavg_end'))}"
         + (" (the machine was busy when the run started: expect noise)."
            if (m.get("loadavg_start") or [0])[0] > 0.5 else "."),
         f"- Timing: median ms per call over interleaved rounds (budget {opts['budget']} s per "
         f"cell, {opts['rounds'] or str(opts['min_rounds']) + '-' + str(opts['max_rounds'])} "
         f"rounds; {opts['gap']} s idle before each system's round when threads > 1). "
         f"Every sample is in results.json.",
         "- best peer/fl = the fastest other system's median / fastlstm's (> 1: fastlstm "
         "faster; **bold** < 1: fastlstm slower); x/fl the same for each peer.",
         "- fastlstm GFLOP/s: fwd FLOPs 2*4H*(I+H)*B*T, fwd+bwd 3x.",
         f"- % of limit: FMA = GFLOP/s / ({limits.get('fma_gflops_per_core', 0):.0f} GFLOP/s "
         f"{dtype} per core x threads, "
         + ("given by --peak-gflops" if limits.get("peak_given") else "measured at the start")
         + "); read (batch-1 fwd: a, b, f) = the time to read each thread's share of W_hh once "
         "per step plus the input projection (its FLOPs at that peak, or one read of W_ih if "
         "longer), at the read bandwidth measured for that size"
         + (f" ({reads})" if reads else "") + ", over fastlstm's time.",
         "- noise = the largest IQR/median of a system in the row (! above 0.2: the ratios of "
         "that row are not to be trusted).",
         f"- Every system is checked against fastlstm (1 thread) before timing: outputs within "
         f"{tol:g} absolute, gradients within {tol:g} * max(1, max|g|); ONNX Runtime is forward "
         f"only.",
         "", *table(results), ""]
    n = notes(results)
    if n:
        L += ["Notes:", "", *n, ""]
    if plot_note:
        L += [plot_note, ""]
    return "\n".join(L) + "\n"


def _fmt_load(la):
    return "/".join(f"{x:.2f}" for x in la) if la else "?"


def plot_scaling(results, path):
    """scaling.png: log-log time per step vs batch and vs hidden size. Returns a note."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return "No scaling plot: matplotlib is not installed (pip install fastlstm[bench])."
    pts = results["scaling"]
    dtype = results.get("dtype", "float32")
    label_of = labels(dtype)
    if not pts:
        return "No scaling plot: no scaling points were measured."
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, axis, xkey, title in ((axes[0], "batch", "B", f"I = H = 256, T = {SCALING_T}"),
                                  (axes[1], "hidden", "H", f"I = H, B = 16, T = {SCALING_T}")):
        rows = [p for p in pts if p["axis"] == axis]
        names = [s for s in SYSTEMS if any(s in p["systems"] for p in rows)]
        for s in names:
            xs, ys = [], []
            for p in rows:
                v = p["systems"].get(s)
                if v and v["status"] == "ok":
                    xs.append(p[xkey])
                    ys.append(1e3 * v["median_ms"] / p["T"])  # us per step
            if xs:
                ax.plot(xs, ys, marker="o", label=label_of.get(s, s),
                        linewidth=2.5 if s == "fastlstm" else 1.5)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ticks = sorted({p[xkey] for p in rows})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("batch size B" if axis == "batch" else "hidden size H")
        ax.set_ylabel("time per step (us)")
        ax.set_title(f"fwd, 1 thread, {title}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(f"fastlstm vs peers: forward time per time step (median), {dtype}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return "Scaling plot: scaling.png (fwd, 1 thread, time per step vs B and vs H)."


def write_outputs(results, out_dir, plot):
    """results.json, results.md and (plot=True) scaling.png in out_dir. Returns the markdown."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "results.json"), "w") as fh:
        json.dump(results, fh, indent=1, default=_json_default)
    if plot:
        plot_note = plot_scaling(results, os.path.join(out_dir, "scaling.png"))
    else:
        plot_note = "No scaling plot (--no-plot)."
    results.setdefault("notes", []).append(plot_note)
    md = markdown(results, plot_note)
    with open(os.path.join(out_dir, "results.md"), "w") as fh:
        fh.write(md)
    with open(os.path.join(out_dir, "results.json"), "w") as fh:
        json.dump(results, fh, indent=1, default=_json_default)
    return md


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


# ----------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------
def add_arguments(p):
    p.add_argument("--workloads", default=None,
                   help="workload letters, e.g. acf (default abcdef; --quick: acf). "
                        + "; ".join(f"{k}: B,T,I,H = {w['B']},{w['T']},{w['I']},{w['H']}"
                                    for k, w in WORKLOADS.items()))
    p.add_argument("--threads", default=None, help="comma-separated thread counts (default 1,2)")
    p.add_argument("--systems", default=",".join(SYSTEMS),
                   help=f"comma-separated systems (default {','.join(SYSTEMS)}); fastlstm "
                        "always runs (it is the reference of every ratio)")
    p.add_argument("--modes", default=",".join(MODES), help="fwd, fwd+bwd or both (default)")
    p.add_argument("--dtype", default="float32", choices=DTYPES,
                   help="data, weights and every system in this dtype (default float32); "
                        "float64: torch has no oneDNN path (both torch columns run native), "
                        "ONNX Runtime is skipped, checks within 1e-9, %% peak of half the "
                        "float32 peak")
    p.add_argument("--quick", action="store_true",
                   help="workloads a,c,f, a 1 s budget and 3-7 rounds per cell (about a minute "
                        "on 2 cores)")
    p.add_argument("--rounds", type=int, default=None,
                   help="timed rounds per cell (default: as many as the budget allows, 5-25; "
                        "--quick 3-7)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds of timing per (workload, mode, threads) cell (default 3; "
                        "--quick 1)")
    p.add_argument("--gap", type=float, default=GAP,
                   help=f"idle seconds before each system's round when threads > 1 (default "
                        f"{GAP}), so the previous library's spinning worker threads sleep")
    p.add_argument("--out", default="bench-results", help="output folder (default ./bench-results)")
    p.add_argument("--peak-gflops", type=float, default=None,
                   help="one core's float32 FMA peak in GFLOP/s for %% of limit (float64 uses "
                        "half); default: measured at the start of the run (the reference "
                        f"machine of peers/RESULTS.md had {PEAK_GFLOPS_REFERENCE:g})")
    p.add_argument("--no-plot", action="store_true",
                   help="skip the scaling sweep and scaling.png")


def options_from_args(args, error):
    """The run's options from parsed arguments; error(msg) reports a bad value (and exits)."""
    base = QUICK if args.quick else DEFAULTS
    given = base["workloads"] if args.workloads is None else args.workloads
    wls = given.replace(",", "").strip().lower()  # ("" is an error, not the default)
    bad = sorted(set(wls) - set(WORKLOADS))
    if bad or not wls:
        error(f"--workloads: letters from {''.join(WORKLOADS)}, got {args.workloads!r}")
    wls = [w for w in WORKLOADS if w in wls]
    try:
        threads = sorted({int(t) for t in (args.threads or base["threads"]).split(",")
                          if t.strip()})
    except ValueError:
        error(f"--threads: comma-separated positive ints, got {args.threads!r}")
    if not threads or threads[0] < 1:
        error(f"--threads: comma-separated positive ints, got {args.threads!r}")
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in systems if s not in MAKERS]
    if unknown:
        error(f"--systems: unknown {', '.join(unknown)}; choose from {', '.join(SYSTEMS)}")
    systems = ["fastlstm"] + [s for s in dict.fromkeys(systems) if s != "fastlstm"]
    aliases = {"fwd": "fwd", "fwd+bwd": "fwd+bwd", "fwdbwd": "fwd+bwd", "bwd": "fwd+bwd",
               "train": "fwd+bwd"}
    modes = []
    for m in args.modes.split(","):
        m = m.strip().lower()
        if m not in aliases:
            error(f"--modes: fwd and/or fwd+bwd, got {m!r}")
        modes.append(aliases[m])
    modes = [m for m in MODES if m in modes]
    if args.rounds is not None and args.rounds < 1:
        error("--rounds must be >= 1")
    budget = base["budget"] if args.budget is None else args.budget
    finite = all(math.isfinite(v) for v in (budget, args.gap, args.peak_gflops or 1.0))
    if (not finite or budget < 0 or args.gap < 0
            or (args.peak_gflops is not None and args.peak_gflops <= 0)):
        error(f"--budget and --gap must be finite numbers >= 0, --peak-gflops finite > 0; got "
              f"{budget}, {args.gap}, {args.peak_gflops}")
    # the folder is made now, so a bad --out stops the run before it times anything
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as exc:
        error(f"--out: cannot make the output folder {args.out!r}: {exc.strerror}")
    if not os.access(args.out, os.W_OK | os.X_OK):
        error(f"--out: the output folder {args.out!r} is not writable")
    return dict(workloads=wls, threads=threads, systems=systems, modes=modes, dtype=args.dtype,
                rounds=args.rounds, budget=budget, min_rounds=base["min_rounds"],
                max_rounds=base["max_rounds"], scaling_budget=base["scaling_budget"],
                gap=args.gap, quick=args.quick, scaling=not args.no_plot,
                out=args.out, peak_gflops=args.peak_gflops)


def main(args, error=None, stdout=None, stderr=None):
    """`python -m fastlstm bench`: returns 0, or 1 when a system failed its check."""
    stdout = stdout or sys.stdout

    def _error(msg):
        raise SystemExit(f"bench: {msg}")
    opts = options_from_args(args, error or _error)
    progress = Progress(stderr or sys.stderr)
    out_dir = opts["out"]
    results = run_benchmark(opts, progress)
    md = write_outputs(results, out_dir, plot=opts["scaling"])
    print(md, file=stdout)
    print(f"wrote {os.path.join(out_dir, 'results.md')}, results.json"
          + (", scaling.png" if os.path.exists(os.path.join(out_dir, "scaling.png"))
             and opts["scaling"] else "") + f" in {results['wall_s']:.0f} s",
          file=progress.stream, flush=True)
    failed = any(v["status"] in ("check failed", "error")
                 for c in results["cells"] for v in c["systems"].values())
    return 1 if failed else 0
