"""The run: every planned (workload, mode, threads) cell and the scaling sweep, each system
checked and timed, into the results dict that results.json holds."""
import gc
import time

import fastlstm

from . import lowprec
from .limits import measure_limits
from .machine import _jsonable, _loadavg, _now, machine_info, versions
from .measure import compare, summarize, time_interleaved
from .peers import Peers, Unavailable
from .progress import Progress, _estimate_cell
from .systems import MAKERS, make_data, make_fastlstm
from .workloads import (FWD_ONLY, SCALING_B, SCALING_H, SCALING_T, TOLS, WORKLOADS,
                        mode_flops)


def run_cell(d, mode, threads, systems, baseline, peers, opts, progress, label, makers=MAKERS,
             check=None):
    """Check and time the systems on one (workload, mode, threads). Returns {system: result}.
    check(name, got, baseline) -> (ok, error, {name: error}, extra result fields) replaces the
    default check (compare within TOLS[dtype])."""
    results, live = {}, []
    gap = opts["gap"] if threads > 1 else 0.0
    with peers.pinned(threads):
        for name in systems:
            if mode != "fwd" and name in FWD_ONLY:
                continue
            progress.say(f"{label}: check {name}")
            try:
                s = makers[name](d, mode, threads, peers)
            except Unavailable as exc:
                results[name] = dict(status="skipped", note=str(exc))
                continue
            except Exception as exc:  # a peer that breaks is reported, not fatal
                results[name] = dict(status="error", note=f"{type(exc).__name__}: {exc}"[:400])
                continue
            try:
                with s.context():
                    got = s.extract(s.fn())
                if check is None:
                    ok, err, errs = compare(got, baseline, TOLS[opts.get("dtype", "float32")])
                    extra = {}
                else:
                    ok, err, errs, extra = check(name, got, baseline)
            except Exception as exc:
                results[name] = dict(status="error", note=f"{type(exc).__name__}: {exc}"[:400])
                continue
            results[name] = dict(status="ok" if ok else "check failed", check_err=err,
                                 check_errs=errs, note=s.note, **extra)
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
    precision = opts.get("precision", "float32")
    int8 = precision == "int8"
    makers, check = (lowprec.MAKERS, lowprec.check) if int8 else (MAKERS, None)
    for wl in wls:
        for mode in modes:
            n = sum(1 for s in systems if not (mode != "fwd" and s in FWD_ONLY))
            for nt in threads:
                progress.plan(("cell", wl, mode, nt),
                              _estimate_cell(WORKLOADS[wl], mode, nt, n, opts,
                                             opts["gap"] if nt > 1 else 0.0))
    scaling_points = []
    if opts["scaling"] and not int8:  # the sweep is float32's
        scaling_points = ([("batch", dict(B=B, T=SCALING_T, I=256, H=256)) for B in SCALING_B]
                          + [("hidden", dict(B=16, T=SCALING_T, I=H, H=H)) for H in SCALING_H])
        sopts = dict(opts, budget=opts["scaling_budget"], rounds=None, min_rounds=3,
                     max_rounds=max(3, opts["max_rounds"] // 2))
        for axis, sz in scaling_points:
            progress.plan(("scaling", axis, sz["B"], sz["H"]),
                          _estimate_cell(sz, "fwd", 1, len(systems), sopts, 0.0))

    out = dict(started=_now(), dtype=dtype, precision=precision, tol=TOLS[dtype],
               machine=machine_info(peers),
               options=_jsonable(opts), cells=[], scaling=[], notes=[])
    out["machine"]["loadavg_start"] = _loadavg()
    progress.say("measuring this machine's multiply-add peak and read bandwidth")
    out["limits"] = (lowprec.measure_int8_limits(wls, threads) if int8 else
                     measure_limits(dtype, wls, threads, opts.get("peak_gflops")))
    what = "int8 (checked against float64)" if int8 else dtype
    progress.say(f"bench: {what}, workloads {''.join(wls)}, modes {','.join(modes)}, threads "
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
                base = lowprec.baseline_float64(d) if int8 else baseline_of(d, mode, peers)
                for nt in threads:
                    key = ("cell", wl, mode, nt)
                    label = (f"{wl}) {sizes['B']},{sizes['T']},{sizes['I']},{sizes['H']} "
                             f"{mode} {nt}thr")
                    progress.begin(key)
                    res = run_cell(d, mode, nt, systems, base, peers, opts, progress, label,
                                   makers, check)
                    progress.end(key)
                    out["cells"].append(dict(workload=wl, mode=mode, threads=nt,
                                             dtype="int8" if int8 else dtype,
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
