"""int8 accuracy evidence (issue 19): fastlstm's int8 scheme (`fastlstm.reference.forward_int8`)
against ONNX Runtime's int8 LSTM (`quantize_dynamic` -> `DynamicQuantizeLSTM`, as
/work/shared/peers/bench_lowprec.py measures it), both against a float64 run on the same weights.

Imported by tests/test_int8_reference.py; run as a script for the report table and the drift
over a long sequence::

    python tests/int8_workloads.py            # table: workloads a b c d f (full T), then drift
    python tests/int8_workloads.py a f        # some workloads
    python tests/int8_workloads.py --drift    # drift only (T = 10,000, B = 1, I = H = 128)

Weights are PyTorch's initialisation, U(-1/sqrt(H), 1/sqrt(H)) from a fixed NumPy seed (no
torch needed); x ~ N(0, 1); zero initial states. Errors are over the whole output (T, B, H):
RMS = sqrt(mean((y - y64)^2)) and max = max|y - y64|, y64 the float64 reference run of the
same (float32) weights and inputs.
"""
import os
import sys
import tempfile
import time

import numpy as np

from fastlstm import LSTM, reference

# (B, T, I, H), the bench workloads' shapes (fastlstm.benchmark / bench_lowprec.py)
WORKLOADS = {"a": (1, 100, 128, 128), "b": (1, 100, 512, 512), "c": (16, 100, 256, 256),
             "d": (64, 50, 512, 512), "f": (1, 1, 256, 256)}


def make_case(B, T, I, H, seed=0):
    """float32 parameters (PyTorch's init) and x (T, B, I)."""
    rng = np.random.default_rng(seed)
    k = 1.0 / np.sqrt(H)
    params = {name: rng.uniform(-k, k, shape).astype(np.float32)
              for name, shape in (("weight_ih", (4 * H, I)), ("weight_hh", (4 * H, H)),
                                  ("bias_ih", (4 * H,)), ("bias_hh", (4 * H,)))}
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    return params, x


def float64_output(params, x):
    return reference.forward(x.astype(np.float64),
                             *(params[k].astype(np.float64) for k in
                               ("weight_ih", "weight_hh", "bias_ih", "bias_hh")))[0]


def int8_output(params, x):
    return reference.forward_int8(x, **reference.quantize_lstm(**params))[0]


def compiled_output(params, x):
    """The same scheme through the product: ``LSTM(...).quantize("int8")`` on its kernels."""
    model = LSTM(x.shape[2], params["weight_hh"].shape[1])
    model.load_state_dict({k + "_l0": v for k, v in params.items()})
    return model.quantize("int8")(x, num_threads=1)[0]


def ort_int8_session(params, directory):
    """ONNX Runtime's int8 LSTM of these parameters: fastlstm's to_onnx export, then
    onnxruntime.quantization.quantize_dynamic (QInt8 weights), one thread. Returns the session
    and the op types of the quantized graph (which must include DynamicQuantizeLSTM)."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    H4, I = params["weight_ih"].shape
    model = LSTM(I, H4 // 4)
    model.load_state_dict({k + "_l0": v for k, v in params.items()})
    p, q = os.path.join(directory, "m.onnx"), os.path.join(directory, "q.onnx")
    model.to_onnx(p)
    quantize_dynamic(p, q, weight_type=QuantType.QInt8)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3  # the export's (intentional) non-constant initializers warn
    sess = ort.InferenceSession(q, so, providers=["CPUExecutionProvider"])
    ops = {n.op_type for n in onnx.load(q).graph.node}
    return sess, ops


def _ort_activation_params(a):
    """ONNX Runtime's dynamic uint8 quantization parameters of a whole tensor
    (GetQuantizationParameter: the range widened to include 0, scale = (max - min) / 255,
    zero point = round-half-even(clamp(-min / scale, 0, 255)), all float32)."""
    f = np.float32
    mn, mx = min(f(a.min()), f(0)), max(f(a.max()), f(0))
    scale = f(1) if mx == mn else f((mx - mn) / f(255))
    zp = np.rint(np.clip(f(0) - mn / scale, f(0), f(255)))
    return scale, f(zp)


def _ort_quantize(a, scale, zp):
    """MlasQuantizeLinear to uint8, returned as q - zp (int64): a / scale clamped to
    [-zp, 255 - zp], rounded half to even."""
    v = np.clip(a / scale, -zp, np.float32(255) - zp)
    return np.rint(v).astype(np.int64)


def ort_int8_emulated(qmodel, x):
    """What ONNX Runtime's DynamicQuantizeLSTM computes on a CPU whose u8 x s8 dot products are
    exact (AVX-512 VNNI, AVX-VNNI, AMX: the CI machines), in NumPy: x quantized to uint8 as ONE
    tensor (all T*B rows, one scale and zero point), h_{t-1} as one tensor per step (all B
    rows), the weights as quantize_dynamic wrote them (int8, one scale per direction), exact
    integer sums, float32(acc) * (a_scale * w_scale), the bias Wb + Rb added before the gate
    functions (NumPy's sigmoid and tanh here, MLAS's approximations there: ~1e-7 apart).

    On a CPU without VNNI, MLAS's AVX2 / AVX-512BW u8s8 kernel sums pairs of products in
    saturating int16 (vpmaddubsw), which can clip, so ORT's own output is then much worse
    than this (20x the RMS error on workload a here); `test_ort_emulation_matches_ort` checks
    this emulation against ORT itself on a reduce_range model, whose 7-bit weights cannot
    saturate on any CPU. One layer, forward direction, zero initial state."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(qmodel) if isinstance(qmodel, (str, os.PathLike)) else qmodel
    init = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    node = next(n for n in m.graph.node if n.op_type == "DynamicQuantizeLSTM")
    wq, rq, bias = init[node.input[1]][0], init[node.input[2]][0], init[node.input[3]][0]
    ws, wzp = init[node.input[8]], init[node.input[9]]
    rs, rzp = init[node.input[10]], init[node.input[11]]
    assert ws.size == rs.size == 1 and not wzp.any() and not rzp.any()
    wq, rq = wq.astype(np.float64), rq.astype(np.float64)  # (I, 4H), (H, 4H); exact sums
    ws, rs = np.float32(ws.ravel()[0]), np.float32(rs.ravel()[0])
    T, B, I = x.shape
    H = rq.shape[0]
    b = bias[:4 * H] + bias[4 * H:]
    sx, zx = _ort_activation_params(x)
    acc = _ort_quantize(x.reshape(T * B, I), sx, zx).astype(np.float64) @ wq
    gx = (acc.astype(np.int64).astype(np.float32) * np.float32(sx * ws)).reshape(T, B, 4 * H)
    h = np.zeros((B, H), np.float32)
    c = np.zeros((B, H), np.float32)
    out = np.empty((T, B, H), np.float32)
    def sig(v):
        with np.errstate(over="ignore"):  # exp(-v) = inf for v < -88: sigmoid 0
            return np.float32(1) / (np.float32(1) + np.exp(-v))

    for t in range(T):
        sh, zh = _ort_activation_params(h)
        acc = _ort_quantize(h, sh, zh).astype(np.float64) @ rq
        a = gx[t] + acc.astype(np.int64).astype(np.float32) * np.float32(sh * rs) + b
        i, o, f = sig(a[:, :H]), sig(a[:, H:2 * H]), sig(a[:, 2 * H:3 * H])  # ONNX: i, o, f, c
        g = np.tanh(a[:, 3 * H:])
        c = f * c + i * g
        h = o * np.tanh(c)
        out[t] = h
    return out


def ort_int8_outputs(params, x):
    """(ONNX Runtime's own output on this CPU, `ort_int8_emulated`'s) for the same quantized
    model."""
    with tempfile.TemporaryDirectory() as d:
        sess, ops = ort_int8_session(params, d)
        assert "DynamicQuantizeLSTM" in ops, ops
        return (sess.run(["output"], {"x": x})[0],
                ort_int8_emulated(os.path.join(d, "q.onnx"), x))


def errors(y, ref):
    d = np.asarray(y, np.float64) - ref
    return float(np.sqrt(np.mean(d * d))), float(np.max(np.abs(d)))


def compare(B, T, I, H, seed=0):
    """{system: (rms, max)} on one case: 'int8' (ours: the NumPy definition), 'compiled' (ours:
    the quantized model's kernels), 'ort' (ONNX Runtime on this CPU),
    'ort_exact' (`ort_int8_emulated`: ONNX Runtime on a VNNI / AMX CPU)."""
    params, x = make_case(B, T, I, H, seed)
    ref = float64_output(params, x)
    y_ort, y_exact = ort_int8_outputs(params, x)
    return {"int8": errors(int8_output(params, x), ref),
            "compiled": errors(compiled_output(params, x), ref), "ort": errors(y_ort, ref),
            "ort_exact": errors(y_exact, ref)}


def drift(T=10_000, B=1, I=128, H=128, at=(100, 1000, 10_000), seed=0, ort=True):
    """RMS and max error vs float64 over the first t steps, and at step t alone, for t in `at`."""
    params, x = make_case(B, T, I, H, seed)
    ref = float64_output(params, x)
    ys = {"int8": int8_output(params, x)}
    if ort:
        ys["ort"], ys["ort_exact"] = ort_int8_outputs(params, x)
    out = {}
    for name, y in ys.items():
        out[name] = {t: (errors(y[:t], ref[:t]), errors(y[t - 1], ref[t - 1])) for t in at}
    return out


def main(argv):
    want_drift = "--drift" in argv or not argv
    names = [a for a in argv if a in WORKLOADS] or ([] if "--drift" in argv else list(WORKLOADS))
    if names:
        print("ORT: ONNX Runtime int8 on this CPU; ORT exact: the same model with exact u8s8 sums "
              "(VNNI/AMX CPUs), emulated. ratio = ours / ORT's.\n")
        print("| workload (B,T,I,H) | ours RMS | ORT RMS | ORT exact RMS | RMS ratio (ORT / exact) "
              "| ours max | ORT max | ORT exact max | max ratio (ORT / exact) | s |")
        print("|---|---|---|---|---|---|---|---|---|---|")
    for name in names:
        t0 = time.perf_counter()
        e = compare(*WORKLOADS[name])
        (r8, m8), (ro, mo), (rx, mx) = e["int8"], e["ort"], e["ort_exact"]
        print(f"| {name}) {WORKLOADS[name]} | {r8:.3e} | {ro:.3e} | {rx:.3e} | "
              f"{r8 / ro:.2f} / {r8 / rx:.2f} | {m8:.3e} | {mo:.3e} | {mx:.3e} | "
              f"{m8 / mo:.2f} / {m8 / mx:.2f} | {time.perf_counter() - t0:.1f} |", flush=True)
    if want_drift:
        t0 = time.perf_counter()
        res = drift()
        print(f"\ndrift, B=1 T=10000 I=H=128 ({time.perf_counter() - t0:.1f} s)")
        print("| system | t | RMS over steps < t | max over steps < t | RMS at step t | "
              "max at step t |")
        print("|---|---|---|---|---|---|")
        for name, rows in res.items():
            for t, ((ra, ma), (rt, mt)) in rows.items():
                print(f"| {name} | {t} | {ra:.3e} | {ma:.3e} | {rt:.3e} | {mt:.3e} |")


if __name__ == "__main__":
    main(sys.argv[1:])
