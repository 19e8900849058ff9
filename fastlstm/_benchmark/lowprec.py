"""``--precision int8``: the systems (fastlstm int8 and its float32 model, ONNX Runtime int8, torch
dynamic int8, torch bfloat16), the float64 run every one is checked against with a bound per
system, and the int8 limits (multiply-add peak, weight streaming) that % of limit refers to."""
import contextlib
import logging
import os
import tempfile
import warnings

import numpy as np

import fastlstm
from fastlstm import _kernels

from .peers import Unavailable
from .systems import System, _fwd_result, make_fastlstm
from .workloads import WORKLOADS

# "fastlstm" is the int8 model: every ratio and % of limit refers to it, as in float32.
SYSTEMS = ("fastlstm", "fastlstm-float32", "onnxruntime-int8", "torch-int8", "torch-bf16")
LABELS = {"fastlstm": "fastlstm int8", "fastlstm-float32": "fastlstm float32",
          "onnxruntime-int8": "ONNX Runtime int8", "torch-int8": "torch dynamic int8",
          "torch-bf16": "torch bfloat16"}
SHORT = {"fastlstm-float32": "f32", "onnxruntime-int8": "ort8", "torch-int8": "torch8",
         "torch-bf16": "bf16"}

# (max abs, RMS) error vs float64 a system may have and still be timed. Wide enough for each
# system's own rounding on the workloads a-f (seed 1234; the max is largest in c_n), tight
# enough that a wrong model fails: permuted gates or a dropped state give max 0.4-1.1, RMS
# 0.13-0.19. fastlstm int8 (max <= 1.9e-2, RMS <= 1.4e-3) gets about 3x, so a regression of its
# own fails too; torch int8 max <= 4.1e-2, RMS <= 3.6e-3; bf16 <= 9.5e-3, 8.9e-4. ONNX Runtime's
# AVX2 kernel without VNNI saturates int16 sums: max 0.09-0.26, RMS 1.3-1.7e-2 there (about
# 1.4e-2 and 1.8e-3 with VNNI), so its bound is the loosest.
BOUNDS = {"fastlstm": (0.05, 5e-3), "fastlstm-float32": (1e-4, 1e-5),
          "onnxruntime-int8": (0.5, 0.05), "torch-int8": (0.1, 0.01), "torch-bf16": (0.05, 5e-3)}

PEAK_SHAPE = (32, 256, 256)  # M, K, N of the int8 peak's GEMM: its weights (64 KiB) stay in L2


def check(name, got, ref):
    """(ok, max abs error over output/h_n/c_n, {name: max abs error}, extra): extra holds the
    RMS error of the output and the system's bound; NaN or inf counts as an infinite error."""
    errs = {}
    for key, r in ref.items():
        g = np.asarray(got[key], np.float64)
        if g.shape != r.shape:
            return False, float("inf"), {key: f"shape {g.shape} != {r.shape}"}, {}
        e = float(np.max(np.abs(g - r))) if r.size else 0.0
        errs[key] = e if np.isfinite(e) else float("inf")
    d = np.asarray(got["output"], np.float64) - ref["output"]
    rms = float(np.sqrt(np.mean(d * d))) if d.size else 0.0
    rms = rms if np.isfinite(rms) else float("inf")
    worst = max(errs.values())
    bound = BOUNDS[name]
    return (worst <= bound[0] and rms <= bound[1], worst, errs,
            dict(check_rms=rms, bound=list(bound)))


def baseline_float64(d):
    """The float32 model's weights, x and state widened to float64 and run by fastlstm's
    float64 model: what every system's result is held against."""
    wide = fastlstm.LSTM(d["I"], d["H"], dtype=np.float64)
    wide.set_parameters(**{k: np.asarray(v, np.float64) for k, v in d["params"].items()})
    hx = None if d["h0"] is None else (d["h0"][None].astype(np.float64),
                                       d["c0"][None].astype(np.float64))
    out, (h_n, c_n) = wide(d["x"].astype(np.float64), hx)
    return _fwd_result(out, h_n, c_n)


def _hx(d):
    return None if d["h0"] is None else (d["h0"][None], d["c0"][None])


def make_fastlstm_int8(d, mode, threads, peers):
    if "int8" not in d:  # once per workload, shared by its thread counts
        d["int8"] = d["model"].quantize("int8")
    q, x, hx = d["int8"], d["x"], _hx(d)

    def fn():
        return q(x, hx, num_threads=threads)

    def extract(r):
        return _fwd_result(r[0], *r[1])
    return System("fastlstm", fn, extract,
                  note=f"model.quantize('int8'), num_threads={threads}, "
                       f"{_kernels.isa_int8()} kernels")


def make_fastlstm_float32(d, mode, threads, peers):
    s = make_fastlstm(d, mode, threads, peers)
    s.name = "fastlstm-float32"
    s.note = f"the model before quantize(); num_threads={threads}"
    return s


@contextlib.contextmanager
def _quiet():
    """quantize_dynamic's advice to pre-process and torch.ao's deprecation notes would land in
    the progress lines; the bench says what it ran in each system's note."""
    before = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(before)


def make_onnxruntime_int8(d, mode, threads, peers):
    ort = peers.module("onnxruntime")
    onnx = peers.module("onnx")  # fastlstm's exporter needs it
    quant = peers.module("onnxruntime.quantization", "onnxruntime")
    if "ort_int8" not in d:  # once per workload, shared by its thread counts
        with tempfile.TemporaryDirectory() as tmp, _quiet():
            f32, q8 = os.path.join(tmp, "float.onnx"), os.path.join(tmp, "int8.onnx")
            d["model"].to_onnx(f32)
            quant.quantize_dynamic(f32, q8, weight_type=quant.QuantType.QInt8)
            with open(q8, "rb") as fh:
                d["ort_int8"] = fh.read()
    ops = {n.op_type for n in onnx.load_from_string(d["ort_int8"]).graph.node}
    if "DynamicQuantizeLSTM" not in ops:  # it would time a float LSTM under an int8 label
        raise RuntimeError(f"quantize_dynamic made no DynamicQuantizeLSTM (ops: {sorted(ops)})")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # to_onnx's h0/c0 are overridable initializers on purpose
    sess = ort.InferenceSession(d["ort_int8"], so, providers=["CPUExecutionProvider"])
    feeds = {"x": d["x"]}
    if d["h0"] is not None:
        feeds.update(h0=d["h0"][None], c0=d["c0"][None])

    def fn():
        return sess.run(None, feeds)

    def extract(r):
        return _fwd_result(r[0], r[1][0], r[2][0])
    return System("onnxruntime-int8", fn, extract,
                  note=f"quantize_dynamic(QInt8) of model.to_onnx(): DynamicQuantizeLSTM; "
                       f"intra_op={threads}, inter_op=1")


def _torch_lstm(d, torch):
    lstm = torch.nn.LSTM(d["I"], d["H"])
    with torch.no_grad():
        for name, value in d["params"].items():
            getattr(lstm, name).copy_(torch.from_numpy(np.array(value)))
    return lstm.eval()


def _torch_system(name, module, x, hx, torch, note):
    def fn():
        return module(x, hx)

    def extract(r):
        out, (h_n, c_n) = r
        return _fwd_result(out.float().numpy(), h_n.float().numpy(), c_n.float().numpy())
    return System(name, fn, extract, torch.inference_mode, note)


def make_torch_int8(d, mode, threads, peers):
    torch = peers.module("torch")
    nn = torch.nn
    # quantize_dynamic swaps child modules only: a bare nn.LSTM would stay float
    with _quiet():
        q = torch.ao.quantization.quantize_dynamic(nn.Sequential(_torch_lstm(d, torch)),
                                                   {nn.LSTM}, dtype=torch.qint8)[0]
    if "quantized" not in type(q).__module__:
        raise RuntimeError(f"quantize_dynamic left a {type(q).__module__}.{type(q).__name__}")
    hx = None if d["h0"] is None else tuple(torch.from_numpy(a[None].copy())
                                            for a in (d["h0"], d["c0"]))
    return _torch_system("torch-int8", q, torch.from_numpy(d["x"]), hx, torch,
                         f"torch.ao.quantization.quantize_dynamic(qint8): {type(q).__name__}, "
                         f"engine {torch.backends.quantized.engine}; "
                         f"set_num_threads({threads})")


def make_torch_bf16(d, mode, threads, peers):
    torch = peers.module("torch")
    bf16 = torch.bfloat16
    lstm = _torch_lstm(d, torch).to(bf16)
    hx = None if d["h0"] is None else tuple(torch.from_numpy(a[None].copy()).to(bf16)
                                            for a in (d["h0"], d["c0"]))
    return _torch_system("torch-bf16", lstm, torch.from_numpy(d["x"]).to(bf16), hx, torch,
                         f"nn.LSTM.to(bfloat16), bf16 inputs; set_num_threads({threads})")


MAKERS = {
    "fastlstm": make_fastlstm_int8,
    "fastlstm-float32": make_fastlstm_float32,
    "onnxruntime-int8": make_onnxruntime_int8,
    "torch-int8": make_torch_int8,
    "torch-bf16": make_torch_bf16,
}


def probe_int8_gops(seconds=0.05):
    """One thread's int8 multiply-add rate in GOP/s (2 per multiply-add): fastlstm's own int8
    GEMM kernel (the active variant) on operands that stay in cache, timed as the FMA probe is
    (calls double until a run lasts a fifth of `seconds`, then the best of 5 runs)."""
    M, K, N = PEAK_SHAPE
    n = 1
    while _kernels._time_gemm("int8", M, K, N, n) * n < seconds / 5 and n < (1 << 20):
        n *= 2
    best = min(_kernels._time_gemm("int8", M, K, N, n) for _ in range(5))
    return 2.0 * M * K * N / best / 1e9


def int8_streamed_bytes(sizes, threads):
    """Each thread's share of the int8 W_hh (read every step) and W_ih (read once)."""
    H, I = sizes["H"], sizes["I"]
    return 4 * H * H // threads, 4 * H * I // threads


def measure_int8_limits(workloads, threads):
    sizes = sorted({n for wl in workloads for nt in threads
                    for n in int8_streamed_bytes(WORKLOADS[wl], nt)})
    return dict(int8_gops_per_core=probe_int8_gops(), peak_shape=list(PEAK_SHAPE),
                read_gbs={str(n): _kernels.probe_read_gbs(n) for n in sizes})


def int8_limit_fraction(cell, limits):
    """(fraction of the limit fastlstm int8 reached, "MAC" or "read"), or None. The limit is the
    larger of: every multiply-add at the int8 peak; or reading each thread's share of W_hh once
    per step plus the input projection (its multiply-adds at peak, or one read of W_ih if
    longer), as the float32 report holds batch-1 cells."""
    res = cell["systems"].get("fastlstm")
    if not res or res["status"] != "ok" or not limits:
        return None
    seconds = res["median_ms"] * 1e-3
    peak = limits["int8_gops_per_core"] * 1e9 * cell["threads"]
    mac = cell["flops"] / peak
    read = limits.get("read_gbs", {})
    hh, ih = int8_streamed_bytes(cell, cell["threads"])
    stream = 0.0
    if str(hh) in read and str(ih) in read:
        input_ops = 2 * 4 * cell["H"] * cell["I"] * cell["B"] * cell["T"]
        stream = (cell["T"] * hh / (read[str(hh)] * 1e9)
                  + max(input_ops / peak, ih / (read[str(ih)] * 1e9)))
    return (stream / seconds, "read") if stream > mac else (mac / seconds, "MAC")
