#!/usr/bin/env python3
"""Markdown table from a pytest-benchmark JSON of the bench/ suite.

Usage:
    python -m pytest bench --benchmark-json=/tmp/bench.json -q    # from the repository root
    python bench/report.py /tmp/bench.json [more.json ...]        # later files override earlier

One row per workload x mode x threads; columns: the median time (ms) of each system, each peer's
ratio peer/fastlstm (> 1: fastlstm is faster), fastlstm's achieved GFLOP/s (fwd FLOPs =
2*4H*(I+H)*B*T; fwd+bwd counts 3x), and the noisiest system of the row (largest IQR/median:
above ~0.2 that row's ratios are not to be trusted). Pure standard library.
"""
import json
import statistics
import sys

SYSTEMS = ("fastlstm", "numpy", "torch", "torch-native", "onnxruntime")
LABELS = {"fastlstm": "fastlstm", "numpy": "NumPy ref", "torch": "torch (oneDNN)",
          "torch-native": "torch native", "onnxruntime": "ONNX Runtime"}
SHORT = {"numpy": "numpy", "torch": "torch", "torch-native": "native", "onnxruntime": "ort"}
MODES = ("fwd", "fwd+bwd")


def fmt_ms(sec):
    ms = sec * 1e3
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    if ms >= 1:
        return f"{ms:.2f}"
    return f"{ms:.3f}"


def load(paths):
    """{(workload, mode, threads): {system: (median_s, rounds)}}, sizes, machine lines."""
    rows, sizes, machine = {}, {}, []
    for path in paths:
        with open(path) as fh:
            data = json.load(fh)
        mi = data.get("machine_info") or {}
        cpu = (mi.get("cpu") or {}).get("brand_raw") or mi.get("processor") or "?"
        commit = (data.get("commit_info") or {}).get("id", "?")
        machine.append(f"{path}: {data.get('datetime', '?')}, {cpu}, "
                       f"python {mi.get('python_version', '?')}, commit {str(commit)[:10]}")
        for b in data.get("benchmarks", []):
            ei = b.get("extra_info") or {}
            if "system" not in ei:
                continue
            st = b["stats"]
            med = st.get("median")
            if med is None and st.get("data"):
                med = statistics.median(st["data"])
            key = (ei["workload"], ei["mode"], int(ei["threads"]))
            iqr = st.get("iqr")
            rows.setdefault(key, {})[ei["system"]] = (med, st.get("rounds"),
                                                      iqr / med if iqr is not None and med else None)
            sizes[ei["workload"]] = (ei["B"], ei["T"], ei["I"], ei["H"], ei["fwd_flops"])
    return rows, sizes, machine


def table(rows, sizes):
    present = {s for cell in rows.values() for s in cell}
    systems = [s for s in SYSTEMS if s in present] + sorted(present - set(SYSTEMS))
    peers = [s for s in systems if s != "fastlstm"]
    head = (["workload (B,T,I,H)", "mode", "thr"]
            + [f"{LABELS.get(s, s)} ms" for s in systems]
            + [f"{SHORT.get(s, s)}/fl" for s in peers]
            + ["fastlstm GFLOP/s", "noisiest (IQR/median)"])
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    mode_rank = {m: i for i, m in enumerate(MODES)}
    for key in sorted(rows, key=lambda k: (k[0], mode_rank.get(k[1], 9), k[2])):
        wl, mode, nt = key
        cell = rows[key]
        B, T, I, H, ff = sizes[wl]
        line = [f"{wl}) {B},{T},{I},{H}", mode, str(nt)]
        line += [fmt_ms(cell[s][0]) if s in cell else "-" for s in systems]
        base = cell.get("fastlstm", (None,))[0]
        for s in peers:
            if base and s in cell:
                r = cell[s][0] / base
                line.append(f"**{r:.2f}**" if r < 1 else f"{r:.2f}")  # bold: fastlstm slower
            else:
                line.append("-")
        flops = ff * (3 if mode == "fwd+bwd" else 1)
        line.append(f"{flops / base / 1e9:.1f}" if base else "-")
        noise = [(v[2], s) for s, v in cell.items() if v[2] is not None]
        line.append(f"{max(noise)[1]} {max(noise)[0]:.2f}" if noise else "-")
        out.append("| " + " | ".join(line) + " |")
    return out


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if len(argv) >= 2 else 2
    rows, sizes, machine = load(argv[1:])
    if not rows:
        print("no bench/ benchmarks (with extra_info.system) in", ", ".join(argv[1:]))
        return 1
    print("Median time per call (ms); peer/fl = peer median / fastlstm median "
          "(> 1: fastlstm faster; **bold** < 1: fastlstm slower).")
    print("fastlstm GFLOP/s: fwd FLOPs 2*4H*(I+H)*B*T, fwd+bwd 3x.\n")
    print("\n".join(table(rows, sizes)))
    print()
    for m in machine:
        print(f"- {m}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
