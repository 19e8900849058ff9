"""How a cell measures its systems: each result checked against the baseline (compare), then
the systems timed in interleaved rounds (time_interleaved) and summarized."""
import gc
import math
import statistics
import time

import numpy as np

from .workloads import TARGET_ROUND, TOL


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
