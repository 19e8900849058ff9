"""fastlstm int8 against fastlstm float32 and ONNX Runtime's int8 LSTM (quantize_dynamic of the
exported float model), one thread, forward, interleaved calls for ~3 s per workload; medians and
ratios. Run: python bench/int8_speed.py (needs onnx and onnxruntime for the third column)."""
import time, sys, numpy as np, fastlstm
W = {"a": (1, 100, 128, 128), "b": (1, 100, 512, 512), "c": (16, 100, 256, 256), "d": (64, 50, 512, 512), "f": (1, 1, 256, 256)}
ort = None
try:
    import onnxruntime as ort, onnx
    from onnxruntime.quantization import quantize_dynamic, QuantType
except Exception:
    ort = None
for name, (B, T, I, H) in W.items():
    m = fastlstm.LSTM(I, H, seed=0)
    q = m.quantize("int8")
    x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
    fns = {"f32": lambda: m(x, num_threads=1), "int8": lambda: q(x, num_threads=1)}
    if ort is not None:
        import tempfile, os
        d = tempfile.mkdtemp()
        m.to_onnx(os.path.join(d, "m.onnx"))
        quantize_dynamic(os.path.join(d, "m.onnx"), os.path.join(d, "q.onnx"), weight_type=QuantType.QInt8)
        so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.inter_op_num_threads = 1
        sess = ort.InferenceSession(os.path.join(d, "q.onnx"), so, providers=["CPUExecutionProvider"])
        iname = sess.get_inputs()[0].name
        feeds = {iname: x}
        for inp in sess.get_inputs()[1:]:
            shp = [d if isinstance(d, int) else B for d in inp.shape]
            feeds[inp.name] = np.zeros(shp, np.float32)
        fns["ort_int8"] = lambda: sess.run(None, feeds)
    for f in fns.values(): f(); f()
    ts = {k: [] for k in fns}
    budget = time.perf_counter() + 3
    while time.perf_counter() < budget:
        for k, f in fns.items():
            t = time.perf_counter(); f(); ts[k].append(time.perf_counter() - t)
    med = {k: np.median(v) * 1e3 for k, v in ts.items()}
    print(name, " ".join(f"{k} {v:.3f}ms" for k, v in med.items()), f"| f32/int8 {med['f32']/med['int8']:.2f}x" + (f" ort/int8 {med['ort_int8']/med['int8']:.2f}x" if 'ort_int8' in med else ""), flush=True)
