"""pytest-benchmark suite setup: workloads, command-line options, marker, parametrization.

Run from the repository root (pyproject's testpaths is tests/, so name bench/ explicitly)::

    python -m pytest bench --benchmark-json=/tmp/bench.json -q   # time everything (~5-10 min)
    python bench/report.py /tmp/bench.json                       # markdown table
    python -m pytest bench --benchmark-disable -q                # CI smoke run: each body once + checks
    python -m pytest bench -m "not slow_bench"                   # skip the big workloads d and e
    python -m pytest bench --bench-workloads=af --bench-threads=1
    python -m pytest bench --bench-threads=1 --benchmark-timer=time.process_time   # see below

On a shared machine, wall-clock medians include the time the process waits for a core (and
multi-threaded runs lose a scheduler slice at every barrier when oversubscribed). For 1-thread
runs, --benchmark-timer=time.process_time (CPU time) is much less sensitive to that; do not use it
with more than one thread (it adds up all threads, spinning included).

Each test is one (workload, mode, threads, system); its pytest-benchmark group is
"{workload}-{mode}-t{threads}" and its extra_info carries system/workload/mode/threads/sizes/FLOPs
so that bench/report.py can pivot the JSON.
"""
import os

import pytest

from fastlstm import benchmark as bm

# The workloads, modes and systems are fastlstm.benchmark's. `ROUNDS`: the big workloads use
# benchmark.pedantic with a fixed number of timed rounds (the check call before timing is their
# warm-up) so the whole suite stays within minutes, and are marked slow_bench; the others let
# pytest-benchmark calibrate (--benchmark-max-time, default 1 s per benchmark).
ROUNDS = {"d": 5, "e": 3}


@pytest.fixture(scope="session")
def peers():
    """fastlstm.benchmark.Peers: lazy peer imports and thread pinning; torch's threads restored."""
    p = bm.Peers()
    yield p
    p.restore()


def pytest_addoption(parser):
    group = parser.getgroup("fastlstm-bench")
    group.addoption("--bench-threads", default="1,2",
                    help="comma-separated thread counts to run (default 1,2)")
    group.addoption("--bench-workloads", default="".join(bm.WORKLOADS),
                    help="workload letters to run, e.g. 'acf' (default abcdef)")
    group.addoption("--bench-systems", default=",".join(bm.SYSTEMS),
                    help=f"comma-separated systems (default {','.join(bm.SYSTEMS)})")
    group.addoption("--bench-gap", type=float, default=bm.GAP,
                    help="seconds to idle before timing a multi-threaded case, so the previous "
                         f"library's spinning worker threads have gone to sleep (default {bm.GAP})")


def pytest_configure(config):
    # a typo would otherwise leave an empty parameter set: one skip, exit status 0
    opt = config.getoption
    bad = sorted(set(opt("--bench-workloads").replace(",", "")) - set(bm.WORKLOADS))
    if bad or not opt("--bench-workloads").replace(",", ""):
        raise pytest.UsageError(f"--bench-workloads: letters from {''.join(bm.WORKLOADS)}, got "
                                f"{opt('--bench-workloads')!r}")
    unknown = [s for s in _csv(opt("--bench-systems")) if s not in bm.SYSTEMS]
    if unknown or not _csv(opt("--bench-systems")):
        raise pytest.UsageError(f"--bench-systems: unknown {', '.join(unknown) or 'nothing'}; "
                                f"choose from {', '.join(bm.SYSTEMS)}")
    try:
        threads = [int(t) for t in _csv(opt("--bench-threads"))]
    except ValueError:
        threads = []
    if not threads or min(threads) < 1:
        raise pytest.UsageError(f"--bench-threads: comma-separated positive ints, got "
                                f"{opt('--bench-threads')!r}")
    config.addinivalue_line(
        "markers", "slow_bench: big workloads (d, e): seconds per call for the slower systems; "
                   "deselect with -m 'not slow_bench'")


def pytest_report_header(config):
    lines = []
    try:
        import fastlstm
        info = fastlstm.openmp_info()
        lines.append(f"fastlstm: isa={info['isa']}, openmp={info['enabled']}, "
                     f"max_threads={info['max_threads']}")
    except Exception as exc:  # pragma: no cover - reported, the tests will fail anyway
        lines.append(f"fastlstm: import failed: {exc!r}")
    vers = [f"{k} {v or 'not installed'}" for k, v in bm.versions().items()]
    lines.append("bench peers: " + ", ".join(vers) + f"; cpus={os.cpu_count()}")
    return lines


def _csv(value):
    return [v.strip() for v in value.split(",") if v.strip()]


def pytest_generate_tests(metafunc):
    if "case" not in metafunc.fixturenames:
        return
    opt = metafunc.config.getoption
    threads = [int(t) for t in _csv(opt("--bench-threads"))]
    wls = [w for w in opt("--bench-workloads").replace(",", "") if w in bm.WORKLOADS]
    systems = [s for s in _csv(opt("--bench-systems")) if s in bm.SYSTEMS]
    params = []
    for wl in wls:
        marks = [pytest.mark.slow_bench] if wl in ROUNDS else []
        for mode in bm.MODES:
            for nt in threads:
                for system in systems:
                    if mode != "fwd" and system in bm.FWD_ONLY:
                        continue
                    case = dict(bm.WORKLOADS[wl], workload=wl, mode=mode, threads=nt,
                                system=system, rounds=ROUNDS.get(wl))
                    params.append(pytest.param(
                        case, marks=marks,
                        id=f"{wl}-{mode.replace('+', '')}-t{nt}-{system}"))
    metafunc.parametrize("case", params)
