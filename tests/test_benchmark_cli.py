"""`python -m fastlstm bench`: a tiny run writes its files, the check catches a wrong result,
missing peers are skipped with a note, and the module imports with NumPy alone."""
import importlib.util
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from fastlstm import benchmark
from fastlstm.__main__ import main

HAVE_TORCH = importlib.util.find_spec("torch") is not None
HAVE_THREADPOOLCTL = importlib.util.find_spec("threadpoolctl") is not None
TINY = ["bench", "--workloads", "f", "--threads", "1", "--rounds", "2", "--no-plot"]


@pytest.fixture(autouse=True)
def numpy_pinned(monkeypatch):
    """The NumPy system runs only with its BLAS threads pinned: by threadpoolctl (the peers
    extra) or, without it, declared by OPENBLAS_NUM_THREADS (what these runs use: 1 thread)."""
    if not HAVE_THREADPOOLCTL:
        monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")


def _run(tmp_path, *extra):
    out = tmp_path / "out"
    rc = main(TINY + ["--out", str(out), *extra])
    md = (out / "results.md").read_text()
    with open(out / "results.json") as fh:
        data = json.load(fh)
    return rc, md, data, out


def _rows(md):
    return [line for line in md.splitlines() if line.startswith("| f) 1,1,256,256 |")]


def test_tiny_run_writes_table_and_samples(tmp_path):
    systems = "fastlstm,numpy" + (",torch" if HAVE_TORCH else "")
    rc, md, data, out = _run(tmp_path, "--systems", systems)
    assert rc == 0
    assert not (out / "scaling.png").exists()
    rows = _rows(md)
    assert [r.split(" | ")[1] for r in rows] == ["fwd", "fwd+bwd"]
    header = next(line for line in md.splitlines() if line.startswith("| workload"))
    assert "fastlstm ms" in header and "best peer/fl" in header and "% of limit" in header
    # f is a batch-1 workload: its forward is held against reading the weights, its training
    # against the multiply-add peak, both measured here at the start of the run
    limits = data["limits"]
    assert 0 < limits["fma_gflops_per_core"] < 10_000 and not limits["peak_given"]
    assert set(limits["read_gbs"]) == {str(4 * 256 * 256 * 4)} and \
        0 < limits["read_gbs"][str(4 * 256 * 256 * 4)] < 10_000
    fwd, train = rows
    assert fwd.split(" | ")[-2].endswith("% read") and train.split(" | ")[-2].endswith("% FMA")
    assert ("torch/fl" in header) == HAVE_TORCH
    assert len(data["cells"]) == 2
    for cell in data["cells"]:
        assert cell["workload"] == "f" and cell["threads"] == 1
        names = ["fastlstm", "numpy"] + (["torch"] if HAVE_TORCH else [])
        assert sorted(cell["systems"]) == sorted(names)
        for name in names:
            res = cell["systems"][name]
            assert res["status"] == "ok", res
            assert len(res["samples_ms"]) == 2 and all(t > 0 for t in res["samples_ms"])
            assert res["check_err"] <= benchmark.TOL
    assert data["machine"]["versions"]["numpy"] == np.__version__
    assert "No scaling plot (--no-plot)" in md


def test_tiny_float64_run(tmp_path):
    systems = "fastlstm,numpy" + (",torch,torch-native" if HAVE_TORCH else "")
    rc, md, data, _ = _run(tmp_path, "--systems", systems, "--dtype", "float64")
    assert rc == 0
    assert data["dtype"] == "float64" and data["tol"] == benchmark.TOLS["float64"] < 1e-8
    assert data["options"]["dtype"] == "float64"
    assert md.startswith("# fastlstm vs peers (`python -m fastlstm bench`), float64")
    rows = _rows(md)
    assert [r.split(" | ")[1:4] for r in rows] == [["fwd", "1", "float64"],
                                                   ["fwd+bwd", "1", "float64"]]
    assert data["limits"]["fma_gflops_per_core"] > 0
    assert "GFLOP/s float64 per core x threads, measured at the start" in md
    names = ["fastlstm", "numpy"] + (["torch", "torch-native"] if HAVE_TORCH else [])
    for cell in data["cells"]:
        assert cell["dtype"] == "float64"
        assert sorted(cell["systems"]) == sorted(names)
        for name in names:
            res = cell["systems"][name]
            assert res["status"] == "ok", res
            assert res["check_err"] <= benchmark.TOLS["float64"]
    if HAVE_TORCH:
        assert "torch (default: native in f64) ms" in md
        assert "native kernels" in data["cells"][0]["systems"]["torch"]["note"]
    # the data really is float64: a float32 round trip of the output is far outside 1e-9
    d = benchmark.make_data(1, 1, 256, 256, True, dtype=np.float64)
    assert d["x"].dtype == d["h0"].dtype == d["dy"].dtype == np.float64
    assert d["model"].dtype == np.float64
    s = benchmark.make_fastlstm(d, "fwd", 1, benchmark.Peers())
    ref = s.extract(s.fn())
    assert ref["output"].dtype == np.float64
    ok, err, _ = benchmark.compare({k: v.astype(np.float32) for k, v in ref.items()}, ref,
                                   benchmark.TOLS["float64"])
    assert not ok and 1e-9 < err < 1e-6


def test_onnxruntime_float64_is_skipped_not_fatal(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    rc, md, data, _ = _run(tmp_path, "--systems", "fastlstm,onnxruntime", "--dtype", "float64",
                           "--modes", "fwd")
    res = data["cells"][0]["systems"]["onnxruntime"]
    # ORT's CPU LSTM has no float64 kernel (as of 1.x); should one appear it must pass the check
    assert res["status"] in ("skipped", "ok"), res
    assert rc == 0


def test_failed_check_is_reported_not_timed(tmp_path, monkeypatch):
    real = benchmark.MAKERS["numpy"]

    def perturbed(d, mode, threads, peers):
        s = real(d, mode, threads, peers)
        extract = s.extract
        s.extract = lambda r: {k: v + 1e-3 if k == "output" else v
                               for k, v in extract(r).items()}
        return s
    monkeypatch.setitem(benchmark.MAKERS, "numpy", perturbed)
    rc, md, data, _ = _run(tmp_path, "--systems", "fastlstm,numpy", "--modes", "fwd")
    assert rc == 1
    (row,) = _rows(md)
    assert "CHECK FAILED" in row
    res = data["cells"][0]["systems"]["numpy"]
    assert res["status"] == "check failed" and "samples_ms" not in res
    assert res["check_errs"]["output"] == pytest.approx(1e-3, rel=1e-2)
    assert data["cells"][0]["systems"]["fastlstm"]["status"] == "ok"
    assert "numpy CHECK FAILED (output 1.0e-03)" in md


def test_missing_peers_are_skipped_with_a_note(tmp_path, monkeypatch):
    for name in ("torch", "onnxruntime"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError
    rc, md, data, _ = _run(tmp_path, "--modes", "fwd")
    assert rc == 0
    cell = data["cells"][0]["systems"]
    assert cell["fastlstm"]["status"] == "ok" and cell["numpy"]["status"] == "ok"
    for name in ("torch", "torch-native", "onnxruntime"):
        assert cell[name]["status"] == "skipped"
    assert "- torch: skipped: torch is not installed" in md
    assert "- onnxruntime: skipped: onnxruntime is not installed" in md


def test_plot(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    pts = [dict(axis=axis, B=B, T=20, I=H, H=H, systems={
        "fastlstm": dict(status="ok", median_ms=0.01 * B * H / 64),
        "numpy": dict(status="ok", median_ms=0.02 * B * H / 64)})
        for axis, B, H in [("batch", 1, 256), ("batch", 4, 256), ("hidden", 16, 64),
                           ("hidden", 16, 128)]]
    path = tmp_path / "scaling.png"
    assert "scaling.png" in benchmark.plot_scaling({"scaling": pts}, str(path))
    assert path.stat().st_size > 1000
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    note = benchmark.plot_scaling({"scaling": pts}, str(tmp_path / "other.png"))
    assert "matplotlib is not installed" in note and not (tmp_path / "other.png").exists()


def test_bad_options_exit_with_usage(capsys, tmp_path, monkeypatch):
    """Before any timing: a run of minutes must not end in an error it could have found."""
    def no_run(*args, **kwargs):
        raise AssertionError("the benchmark ran")
    monkeypatch.setattr(benchmark, "run_benchmark", no_run)
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    ok = ["--out", str(tmp_path / "out")]
    for argv in (["bench", "--workloads", "z"], ["bench", "--workloads", ""],
                 ["bench", "--systems", "tensorflow"], ["bench", "--threads", "0"],
                 ["bench", "--modes", "backward"], ["bench", "--dtype", "float16"],
                 ["bench", "--gap", "nan"], ["bench", "--gap", "inf"],
                 ["bench", "--budget", "nan"], ["bench", "--peak-gflops", "nan"],
                 ["bench", "--out", str(a_file)], ["bench", "--out", str(a_file / "sub")]):
        with pytest.raises(SystemExit) as exc:
            main(argv + (ok if "--out" not in argv else []))
        assert exc.value.code == 2, argv
        assert "bench" in capsys.readouterr().err, argv


@pytest.mark.parametrize("argv", [["--threads", "0"], ["--hidden-size", "0"],
                                  ["--seq-len", "-2"], ["--batch", "0"], ["--seq-len", "x"]])
def test_demo_bad_options_exit_with_usage(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main(["demo"] + argv)
    assert exc.value.code == 2
    assert "must be a positive int" in capsys.readouterr().err


def test_imports_with_numpy_alone():
    root = os.path.dirname(os.path.dirname(os.path.abspath(benchmark.__file__)))
    code = ("import sys\n"
            "for m in ('torch', 'onnx', 'onnxruntime', 'matplotlib', 'threadpoolctl'):\n"
            "    sys.modules[m] = None\n"
            "import fastlstm.benchmark, fastlstm.__main__\n"
            "assert not {'torch', 'onnxruntime', 'matplotlib'} & {k for k, v in "
            "sys.modules.items() if v is not None}\n")
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    subprocess.run([sys.executable, "-c", code], cwd=root, env=env, check=True, timeout=60)


def test_peak_given_replaces_the_measured_one(tmp_path):
    rc, md, data, _ = _run(tmp_path, "--systems", "fastlstm", "--peak-gflops", "1000",
                           "--dtype", "float64")
    assert rc == 0 and data["limits"] == dict(data["limits"], fma_gflops_per_core=500.0,
                                              peak_given=True)
    assert "(500 GFLOP/s float64 per core x threads, given by --peak-gflops)" in md
    flops = data["cells"][1]["flops"] / (data["cells"][1]["systems"]["fastlstm"]["median_ms"]
                                         * 1e-3)
    assert _rows(md)[1].split(" | ")[-2] == f"{100 * flops / 500e9:.0f}% FMA"


def test_limit_fraction_of_a_batch1_forward():
    """a's forward at 2 threads: each thread reads half of W_hh per step from its cache."""
    cell = dict(benchmark.WORKLOADS["a"], mode="fwd", threads=2, dtype="float32", flops=1.0,
                systems={"fastlstm": dict(status="ok", median_ms=1.0)})
    hh, ih = 4 * 128 * 128 * 4 // 2, 4 * 128 * 128 * 4 // 2
    limits = dict(fma_gflops_per_core=100.0, read_gbs={str(hh): 100.0})
    floor = 100 * hh / 100e9 + max(2 * 4 * 128 * 128 * 100 / 200e9, ih / 100e9)
    assert benchmark.limit_fraction(cell, limits) == pytest.approx((floor / 1e-3, "read"))
    cell["mode"] = "fwd+bwd"
    assert benchmark.limit_fraction(cell, limits) == pytest.approx((1.0 / 1e-3 / 200e9, "FMA"))


def test_one_slow_first_call_does_not_set_the_repeat_count():
    """Calibration: a first call slowed by a cold core must not leave the system at one call
    per round (every sample then a cold call) while its peers repeat theirs."""
    calls = []

    def fn():
        calls.append(None)
        time.sleep(0.03 if len(calls) == 1 else 0.001)

    s = benchmark.System("slow first", fn, extract=lambda r: {})
    benchmark.time_interleaved([s], budget=0.0, min_rounds=1, max_rounds=1,
                               target_round=0.02)
    assert s.inner > 1 and len(s.samples) == 1


# --precision int8: fastlstm's quantized model against its low-precision peers

HAVE_ORT = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))
INT8 = ["--precision", "int8"]


def test_tiny_int8_run_checks_against_float64_and_reports_errors(tmp_path):
    rc, md, data, out = _run(tmp_path, *INT8)
    assert rc == 0
    assert data["precision"] == "int8" and data["options"]["modes"] == ["fwd"]
    assert md.startswith("# fastlstm int8 vs low-precision peers")
    (row,) = _rows(md)  # forward only
    header = next(line for line in md.splitlines() if line.startswith("| workload"))
    cols = header.strip("| ").split(" | ")
    # every system's error column stands right after its time
    assert cols[4:8] == ["fastlstm int8 ms", "max / RMS err", "fastlstm float32 ms",
                         "max / RMS err"]
    assert "f32/fl" in cols and "fastlstm GOP/s" in cols
    assert ("ort8/fl" in cols) == HAVE_ORT and ("bf16/fl" in cols) == HAVE_TORCH
    (cell,) = data["cells"]
    assert cell["mode"] == "fwd" and cell["dtype"] == "int8"
    expected = {"fastlstm", "fastlstm-float32"} | (
        {"onnxruntime-int8"} if HAVE_ORT else set()) | (
        {"torch-int8", "torch-bf16"} if HAVE_TORCH else set())
    for name, res in cell["systems"].items():
        if name not in expected:
            assert res["status"] == "skipped", (name, res)
            continue
        assert res["status"] == "ok", (name, res)
        bound_max, bound_rms = benchmark.lowprec.BOUNDS[name]
        assert 0 <= res["check_err"] <= bound_max and 0 <= res["check_rms"] <= bound_rms
        assert res["bound"] == [bound_max, bound_rms] and len(res["samples_ms"]) == 2
        assert f"{res['check_err']:.1e} / {res['check_rms']:.1e}" in row
    # quantized results really are quantized: far from float64, unlike the float32 model's
    int8_err = cell["systems"]["fastlstm"]["check_err"]
    assert 1e-4 < int8_err and cell["systems"]["fastlstm-float32"]["check_err"] < 1e-5
    if HAVE_ORT:
        assert "DynamicQuantizeLSTM" in cell["systems"]["onnxruntime-int8"]["note"]
        assert cell["systems"]["onnxruntime-int8"]["check_err"] > 1e-4
    if HAVE_TORCH:
        assert "quantized" not in cell["systems"]["torch-bf16"]["note"]
        assert "engine" in cell["systems"]["torch-int8"]["note"]
    limits = data["limits"]
    assert 0 < limits["int8_gops_per_core"] < 10_000
    assert set(limits["read_gbs"]) == {str(4 * 256 * 256), str(4 * 256 * 256)}
    assert row.split(" | ")[-2].endswith(("% MAC", "% read"))
    assert "No scaling plot: --precision int8" in md and not (out / "scaling.png").exists()


@pytest.mark.parametrize("name, change", [
    ("fastlstm-float32", lambda a: a + 1e-3),  # fine for int8, not for a float32 model
    ("fastlstm", lambda a: np.where(np.arange(a.size).reshape(a.shape) == 3, np.nan, a)),
    ("fastlstm", lambda a: a + 0.06),
])
def test_int8_failed_check_is_reported_not_timed(tmp_path, monkeypatch, name, change):
    real = benchmark.lowprec.MAKERS[name]

    def perturbed(d, mode, threads, peers):
        s = real(d, mode, threads, peers)
        extract = s.extract
        s.extract = lambda r: {k: change(v) if k == "output" else v
                               for k, v in extract(r).items()}
        return s
    monkeypatch.setitem(benchmark.lowprec.MAKERS, name, perturbed)
    rc, md, data, _ = _run(tmp_path, *INT8, "--systems", "fastlstm,fastlstm-float32")
    assert rc == 1
    res = data["cells"][0]["systems"][name]
    assert res["status"] == "check failed" and "samples_ms" not in res
    other = "fastlstm" if name != "fastlstm" else "fastlstm-float32"
    assert data["cells"][0]["systems"][other]["status"] == "ok"
    assert f"{name} CHECK FAILED (max" in md and "not timed" in md
    assert "CHECK FAILED" in _rows(md)[0]


def test_int8_bounds_reject_a_wrong_model():
    """Every system's bound passes its own rounding (the run above) but not a model with its
    gate blocks permuted, nor one that ignores the state it is given."""
    d = benchmark.make_data(1, 1, 256, 256, True)
    ref = benchmark.lowprec.baseline_float64(d)
    wrong = dict(d, params={k: np.concatenate([np.split(v, 4)[g] for g in (0, 3, 1, 2)])
                            for k, v in d["params"].items()})
    stateless = dict(d, h0=None, c0=None)
    for bad in (wrong, stateless):
        got = benchmark.lowprec.baseline_float64(bad)
        for name in benchmark.lowprec.SYSTEMS:
            ok, err, _, extra = benchmark.lowprec.check(name, got, ref)
            assert not ok and err > 0.3 and extra["check_rms"] > 0.1, name
    ok, err, errs, extra = benchmark.lowprec.check("fastlstm-float32", ref, ref)
    assert ok and err == 0 and extra == dict(check_rms=0.0, bound=[1e-4, 1e-5])


def test_int8_peers_missing_are_skipped_with_a_note(tmp_path, monkeypatch):
    for name in ("torch", "onnxruntime"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError
    rc, md, data, _ = _run(tmp_path, *INT8)
    assert rc == 0
    cell = data["cells"][0]["systems"]
    assert cell["fastlstm"]["status"] == cell["fastlstm-float32"]["status"] == "ok"
    for name in ("onnxruntime-int8", "torch-int8", "torch-bf16"):
        assert cell[name]["status"] == "skipped", name
    assert "- torch-int8: skipped: torch is not installed" in md
    assert "- onnxruntime-int8: skipped: onnxruntime is not installed" in md


@pytest.mark.parametrize("extra, message", [
    (["--modes", "fwd,fwd+bwd"], "inference only"),
    (["--modes", "fwd+bwd"], "inference only"),
    (["--dtype", "float64"], "--dtype applies to --precision float32"),
    (["--systems", "torch"], "unknown torch with --precision int8"),
    (["--peak-gflops", "100"], "int8 multiply-add peak"),
])
def test_int8_bad_options_exit_with_usage(capsys, tmp_path, monkeypatch, extra, message):
    monkeypatch.setattr(benchmark, "run_benchmark", lambda *a, **k: pytest.fail("it ran"))
    with pytest.raises(SystemExit) as exc:
        main(["bench", *INT8, "--out", str(tmp_path / "out"), *extra])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_int8_limit_is_the_larger_floor():
    """b at 1 thread streams 1 MiB of int8 W_hh per step: read bound when the MAC peak is
    high, MAC bound when it is low."""
    cell = dict(benchmark.WORKLOADS["b"], mode="fwd", threads=1, dtype="int8",
                flops=benchmark.fwd_flops(1, 100, 512, 512),
                systems={"fastlstm": dict(status="ok", median_ms=10.0)})
    hh = ih = 4 * 512 * 512
    read = {str(hh): 50.0}
    stream = 100 * hh / 50e9 + max(2 * 4 * 512 * 512 * 100 / 1000e9, ih / 50e9)
    fast = benchmark.lowprec.int8_limit_fraction(cell, dict(int8_gops_per_core=1000.0,
                                                            read_gbs=read))
    assert fast == pytest.approx((stream / 10e-3, "read"))
    slow = benchmark.lowprec.int8_limit_fraction(cell, dict(int8_gops_per_core=10.0,
                                                            read_gbs=read))
    assert slow == pytest.approx((cell["flops"] / 10e9 / 10e-3, "MAC"))


def test_float32_run_is_unchanged_by_int8(tmp_path):
    """--precision float32 (the default) keeps its systems, modes and columns."""
    rc, md, data, _ = _run(tmp_path, "--systems", "fastlstm", "--precision", "float32")
    assert rc == 0 and data["precision"] == "float32"
    assert [c["mode"] for c in data["cells"]] == ["fwd", "fwd+bwd"]
    assert "max / RMS err" not in md and "fastlstm GFLOP/s" in md


DEMO = ["demo", "--seq-len", "5", "--batch", "2", "--input-size", "16", "--hidden-size", "16",
        "--threads", "1"]


def test_demo_shows_int8_time_and_error(capsys):
    assert main(DEMO) == 0
    out = capsys.readouterr().out
    assert 'int8 (lstm.quantize("int8")' in out and "x the float32 model's speed" in out
    line = next(line for line in out.splitlines() if "error vs float64" in line)
    err = float(line.split("max ")[1].split(",")[0])
    assert 1e-5 < err < benchmark.lowprec.BOUNDS["fastlstm"][0] and line.endswith("(ok)")


def test_demo_reports_a_wrong_int8_result(capsys, monkeypatch):
    from fastlstm.quantized import QuantizedLSTM
    real = QuantizedLSTM.__call__

    def off(self, x, hx=None, **kw):
        out, state = real(self, x, hx, **kw)
        return out + 0.1, state
    monkeypatch.setattr(QuantizedLSTM, "__call__", off)
    assert main(DEMO) == 1
    assert "(MISMATCH)" in capsys.readouterr().out
