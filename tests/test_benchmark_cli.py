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
