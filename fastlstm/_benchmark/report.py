"""The report: results.md (the ratio table, notes and method), results.json, and the
scaling plot."""
import json
import math
import os

import numpy as np

from . import lowprec
from .limits import limit_fraction
from .workloads import LABELS, SCALING_T, SHORT, SYSTEMS, TOL


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


def _err_text(res):
    """max abs / RMS error vs float64 (--precision int8), beside the system's time."""
    if res is None or "check_rms" not in res:
        return "-"
    return f"{res['check_err']:.1e} / {res['check_rms']:.1e}"


def labels(dtype, precision="float32"):
    """Column labels; in float64 torch's default path is its native one (no oneDNN LSTM)."""
    if precision == "int8":
        return lowprec.LABELS
    if dtype == "float64":
        return dict(LABELS, torch="torch (default: native in f64)")
    return LABELS


def table(results):
    """The ratio table (markdown lines)."""
    cells = results["cells"]
    dtype = results.get("dtype", "float32")
    limits = results.get("limits")
    int8 = results.get("precision") == "int8"
    names = labels(dtype, results.get("precision", "float32"))
    order, short = (lowprec.SYSTEMS, lowprec.SHORT) if int8 else (SYSTEMS, SHORT)
    fraction = lowprec.int8_limit_fraction if int8 else limit_fraction
    # a system skipped in every cell (its package is not installed) is left out: the notes say why
    present = {s for c in cells for s, r in c["systems"].items() if r.get("status") != "skipped"}
    present |= {"fastlstm"} & {s for c in cells for s in c["systems"]}
    systems = [s for s in order if s in present] + sorted(present - set(order))
    peers = [s for s in systems if s != "fastlstm"]
    head = (["workload (B,T,I,H)", "mode", "thr", "dtype"]
            + [col for s in systems for col in (
                [f"{names.get(s, s)} ms", "max / RMS err"] if int8 else [f"{names.get(s, s)} ms"])]
            + ["best peer/fl"] + [f"{short.get(s, s)}/fl" for s in peers]
            + ["fastlstm GOP/s" if int8 else "fastlstm GFLOP/s", "% of limit", "noise"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in cells:
        res = c["systems"]
        line = [f"{c['workload']}) {c['B']},{c['T']},{c['I']},{c['H']}", c["mode"],
                str(c["threads"]), c.get("dtype", dtype)]
        for s in systems:
            line += [_cell_text(res.get(s))] + ([_err_text(res.get(s))] if int8 else [])
        fl = res.get("fastlstm")
        base = fl["median_ms"] if fl and fl["status"] == "ok" else None
        timed = {s: res[s]["median_ms"] for s in peers
                 if s in res and res[s]["status"] == "ok"}
        if base and timed:
            best = min(timed, key=timed.get)
            line.append(f"{_fmt_ratio(timed[best] / base)} ({short.get(best, best)})")
        else:
            line.append("-")
        line += [_fmt_ratio(timed[s] / base) if base and s in timed else "-" for s in peers]
        if base:
            reached = fraction(c, limits)
            line += [f"{c['flops'] / (base * 1e-3) / 1e9:.1f}",
                     f"{100 * reached[0]:.0f}% {reached[1]}" if reached else "-"]
        else:
            line += ["-", "-"]
        noisy = [(v["noise"], s) for s, v in res.items() if v.get("noise") is not None]
        if noisy:
            n, s = max(noisy)
            line.append(f"{n:.2f} ({short.get(s, s)})" + (" !" if n > 0.2 else ""))
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
            if v["status"] == "check failed" and "bound" in v:
                lines.append(f"- {where}: {s} CHECK FAILED (max {v['check_err']:.1e}, RMS "
                             f"{v['check_rms']:.1e} vs float64; its bound "
                             f"{v['bound'][0]:g} / {v['bound'][1]:g}); not timed")
            elif v["status"] == "check failed":
                errs = v.get("check_errs") or {}
                bad = ", ".join(f"{k} {e:.1e}" if isinstance(e, float) else f"{k} {e}"
                                for k, e in errs.items()
                                if not (isinstance(e, float) and e <= tol))
                lines.append(f"- {where}: {s} CHECK FAILED ({bad or v['check_err']}); not timed")
            elif (s, v["status"], v["note"]) not in seen:
                seen.add((s, v["status"], v["note"]))
                lines.append(f"- {s}: {v['status']}: {v['note']}")
    return lines


def _int8_method(results):
    """The method lines of a --precision int8 report."""
    limits = results.get("limits") or {}
    reads = ", ".join(f"{int(n) / 1024:g} KiB {v:.0f} GB/s"
                      for n, v in sorted(limits.get("read_gbs", {}).items(), key=lambda kv:
                                         int(kv[0])))
    bounds = ", ".join(f"{lowprec.LABELS[s]} {b[0]:g} / {b[1]:g}"
                       for s, b in lowprec.BOUNDS.items())
    return [
        "- Precision: int8. fastlstm int8 is `model.quantize(\"int8\")` of the seeded float32 "
        "model; its peers run the same weights: that model in float32, ONNX Runtime "
        "`quantize_dynamic(QInt8)` of `model.to_onnx()` (DynamicQuantizeLSTM), torch "
        "`torch.ao.quantization.quantize_dynamic(qint8)` of `nn.Sequential(nn.LSTM)`, and the "
        "`nn.LSTM` `.to(torch.bfloat16)` with bf16 inputs (outputs read back as float32). "
        "Forward only.",
        "- Checks before timing: every system against fastlstm's float64 model run on the same "
        "weights, x and state widened to float64. max / RMS err = the largest absolute error "
        "over output, h_n and c_n / the RMS error of output. A system over its bound (max / "
        f"RMS: {bounds}) or NaN is CHECK FAILED and not timed. The bounds leave room for each "
        "system's rounding (ONNX Runtime's AVX2 kernel without VNNI saturates int16 sums: "
        "max errors of 0.1-0.3 there) and reject a wrong model (permuted gates: max ~1, RMS "
        "~0.2).",
        "- best peer/fl = the fastest other system's median / fastlstm int8's (> 1: fastlstm "
        "int8 faster; **bold** < 1: slower); x/fl the same for each peer.",
        "- fastlstm GOP/s: 2*4H*(I+H)*B*T int8 operations (2 per multiply-add) per second.",
        f"- % of limit: the larger of two floors over fastlstm int8's time: MAC = every "
        f"multiply-add at {limits.get('int8_gops_per_core', 0):.0f} GOP/s per core x threads "
        f"(fastlstm's {results['machine'].get('fastlstm_isa_int8', '')} int8 GEMM kernel on "
        f"cache-resident operands, M,K,N = {','.join(map(str, lowprec.PEAK_SHAPE))}, measured at "
        "the start); read = each thread's share of the int8 W_hh read once per step plus the "
        "input projection (its multiply-adds at that peak, or one read of W_ih if longer), at "
        "the read bandwidth measured for that size" + (f" ({reads})" if reads else "") + ".",
    ]


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
    int8 = results.get("precision") == "int8"
    L = ([f"# fastlstm int8 vs low-precision peers (`python -m fastlstm bench --precision "
          f"int8`)", ""] if int8 else
         [f"# fastlstm vs peers (`python -m fastlstm bench`), {dtype}", "",
          f"- Dtype: {dtype} (data, weights and every system)"
          + ("; torch's oneDNN LSTM is float32/bf16 only, so torch's default path runs its "
             "native kernels, the same as \"torch native\"; ONNX Runtime's CPU LSTM has no "
             "float64 kernel (skipped)." if dtype == "float64" else ".")])
    L += [f"- Machine: {m['cpu']}, {m['usable_cpus']} usable CPUs of {m['cpus']}, "
          f"{m['platform']}; fastlstm kernels: {m['fastlstm_isa']}"
          + (f" (int8: {m.get('fastlstm_isa_int8')})" if int8 else "") + ", OpenMP "
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
          f"Every sample is in results.json."]
    if int8:
        L += _int8_method(results)
    else:
        L += ["- best peer/fl = the fastest other system's median / fastlstm's (> 1: fastlstm "
              "faster; **bold** < 1: fastlstm slower); x/fl the same for each peer.",
              "- fastlstm GFLOP/s: fwd FLOPs 2*4H*(I+H)*B*T, fwd+bwd 3x.",
              f"- % of limit: FMA = GFLOP/s / ({limits.get('fma_gflops_per_core', 0):.0f} "
              f"GFLOP/s {dtype} per core x threads, "
              + ("given by --peak-gflops" if limits.get("peak_given") else
                 "measured at the start")
              + "); read (batch-1 fwd: a, b, f) = the time to read each thread's share of W_hh "
              "once per step plus the input projection (its FLOPs at that peak, or one read of "
              "W_ih if longer), at the read bandwidth measured for that size"
              + (f" ({reads})" if reads else "") + ", over fastlstm's time."]
    L += ["- noise = the largest IQR/median of a system in the row (! above 0.2: the ratios of "
          "that row are not to be trusted)."]
    if not int8:
        L += [f"- Every system is checked against fastlstm (1 thread) before timing: outputs "
              f"within {tol:g} absolute, gradients within {tol:g} * max(1, max|g|); ONNX "
              f"Runtime is forward only."]
    L += ["", *table(results), ""]
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
    if results.get("precision") == "int8":
        plot_note = "No scaling plot: --precision int8 times the workloads only."
    elif plot:
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
