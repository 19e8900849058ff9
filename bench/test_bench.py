"""fastlstm vs its peers, one pytest-benchmark test per (workload, mode, threads, system).

The workloads, the systems and the check are those of ``python -m fastlstm bench``
(fastlstm/benchmark.py: its module docstring describes them); this suite times each system on
its own with pytest-benchmark instead of in interleaved rounds. torch / onnxruntime tests skip
when those are not installed.

Every test first checks the system's result against fastlstm's (computed once per workload and
mode, 1 thread) with fastlstm.benchmark.compare. With timing on, that call is also the warm-up;
with --benchmark-disable the body runs once and its result is checked, so CI exercises every path.
"""
import time

import pytest

import fastlstm
from fastlstm import benchmark as bm

_cache = {}  # one workload at a time (e's buffers are ~100 MB): its data and baselines


def _data(wl):
    """(data, {mode: baseline}) of workload wl."""
    if _cache.get("workload") != wl:
        _cache.clear()
        s = bm.WORKLOADS[wl]
        _cache.update(workload=wl, baselines={},
                      data=bm.make_data(s["B"], s["T"], s["I"], s["H"], s.get("state", False)))
    return _cache["data"], _cache["baselines"]


def _check(got, ref):
    """fastlstm.benchmark.compare, asserted; returns the largest error."""
    ok, err, errs = bm.compare(got, ref)
    assert ok, f"differs from fastlstm by more than {bm.TOL}: {errs}"
    return err


def _skip_unavailable(make, *args):
    """make(*args), or a pytest skip when a peer is not installed."""
    try:
        return make(*args)
    except bm.Unavailable as exc:
        pytest.skip(str(exc))


def test_lstm(benchmark, case, peers, request):
    wl, mode, nt, system = case["workload"], case["mode"], case["threads"], case["system"]
    d, baselines = _data(wl)
    # fastlstm at 1 thread IS the baseline: its own first call provides it (saves a call of the
    # big workloads); every other case computes it on demand.
    base = baselines.get(mode)
    if base is None and (system, nt) != ("fastlstm", 1):
        base = baselines[mode] = bm.baseline_of(d, mode, peers)

    benchmark.group = f"{wl}-{mode}-t{nt}"
    benchmark.extra_info.update(
        system=system, workload=wl, mode=mode, threads=nt, B=case["B"], T=case["T"],
        I=case["I"], H=case["H"], fwd_flops=bm.mode_flops(case, "fwd"),
        flops=bm.mode_flops(case, mode), isa=fastlstm.openmp_info()["isa"])

    with peers.pinned(nt):
        s = _skip_unavailable(bm.MAKERS[system], d, mode, nt, peers)
        with s.context():
            # Disabled: one run of the body (what pytest-benchmark does), checked. Otherwise the
            # check's call is also the warm-up (packing, primitive creation, page faults).
            got = s.extract(benchmark(s.fn) if benchmark.disabled else s.fn())
            if base is None:
                base = baselines[mode] = got
            benchmark.extra_info["check_err"] = _check(got, base)
            if benchmark.disabled:
                return
            gap = request.config.getoption("--bench-gap")
            if nt > 1 and gap > 0:
                time.sleep(gap)  # let other libraries' spinning worker threads go to sleep
            if case.get("rounds"):
                benchmark.pedantic(s.fn, rounds=case["rounds"], iterations=1, warmup_rounds=0)
            else:
                benchmark(s.fn)
