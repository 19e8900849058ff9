"""fastlstm against its peers, in one command: ``python -m fastlstm bench``.

Peers: the NumPy reference (``fastlstm.reference``), PyTorch's ``nn.LSTM`` with oneDNN (its
default) and with its native kernels (``torch.backends.mkldnn.flags(enabled=False)``), and ONNX
Runtime's ``LSTM`` op (a hand-built node, forward only). Each peer is imported only when it runs
and is left out, with a note, when it is not installed: this module needs only NumPy.

Method:

- Workloads (B, T, I, H), one layer, time-major: a 1,100,128,128; b 1,100,512,512;
  c 16,100,256,256; d 64,50,512,512; e 256,25,1024,1024; f 1,1,256,256 (one step, random h0/c0
  in, h_n/c_n out). The weights are a seeded ``fastlstm.LSTM``'s, copied into every peer.
- Dtype: ``--dtype float32`` (default) or ``float64``: data, weights and every system in that
  dtype (torch: the module ``.double()``; ONNX Runtime: a DOUBLE model). oneDNN's LSTM is
  float32/bfloat16 only, so in float64 torch's default path runs its native kernels, as
  "torch native" does: both columns are kept (the same kernels timed twice; the first is
  labelled "torch (default: native in f64)").
  ONNX Runtime's CPU LSTM kernel does not implement float64: it is skipped with a note.
- Modes: ``fwd`` (inference) and ``fwd+bwd`` (forward keeping what the backward needs, then
  the gradients of x and of all four parameters for grad_output = ones; torch:
  ``out.sum().backward()``).
- Threads: fastlstm ``num_threads=``; every thread pool threadpoolctl knows (NumPy's BLAS, the
  OpenMP runtimes) limited with ``threadpool_limits``; ``torch.set_num_threads``; ONNX Runtime
  ``intra_op_num_threads`` with ``inter_op_num_threads = 1``.
- Checks before timing: every system's result (fastlstm's own at each thread count included) is
  compared with fastlstm's at 1 thread: outputs and states within tol absolute, gradients within
  tol * max(1, max|g|); tol = 1e-4 in float32, 1e-9 in float64. A system that fails is reported
  in the table and not timed. That first call is also its warm-up.
- Timing: per (workload, mode, threads) cell, the systems run in interleaved rounds (round r runs
  every system once, starting from a different one each round, ``inner`` back-to-back calls so a
  round lasts >= ~40 ms; ``inner`` comes from one timed call, or the faster of two when the
  first took 1-4 rounds' worth), so machine noise hits them alike; the number of rounds fits
  the cell's time budget (within a minimum and maximum). With more than one thread each
  system's round follows an idle gap: every library's worker pool spins for a while after a
  call (OpenBLAS up to ~0.1 s) and would otherwise steal a core from the next system.
  Reported: the median over rounds of the per-call time; results.json keeps every sample.
- FLOPs: fwd = 2 * 4H * (I + H) * B * T (the two matrix products; gate math not counted),
  fwd+bwd = 3x.
- % of limit, against this machine's limits measured at the start of the run (``limits`` in
  results.json): one core's multiply-add peak in the run's dtype (``--peak-gflops`` replaces it)
  and its read bandwidth at the sizes that matter. Batch-1 forward cells (a, b, f) stream their
  weights: their limit is the time to read each thread's share of W_hh once per step, plus the
  input projection (the larger of its FLOPs at peak and one read of W_ih), over fastlstm's time
  ("% read"). Every other cell: GFLOP/s / (peak * threads) ("% FMA").
- Precision: ``--precision int8`` (forward only; data float32; ``_benchmark/lowprec.py``) times
  ``model.quantize("int8")``, the "fastlstm" of every ratio and % of limit, against the same
  model in float32 ("fastlstm-float32"), ONNX Runtime int8 (``quantize_dynamic(...,
  weight_type=QuantType.QInt8)`` of ``model.to_onnx()``: DynamicQuantizeLSTM), torch dynamic
  int8 (``torch.ao.quantization.quantize_dynamic`` of ``nn.Sequential(lstm)``: it swaps child
  modules only) and torch bfloat16 (``.to(torch.bfloat16)``, bf16 inputs), at 1 and 2 threads.
  Checks: every result against fastlstm's float64 model on the same weights, x and state
  widened to float64, within a bound per system on the max absolute error (output, h_n, c_n)
  and the RMS error (output) (``lowprec.BOUNDS``: wide enough for each system's rounding,
  ONNX Runtime's saturating AVX2 kernel included; a wrong model or a NaN fails); both errors
  are reported beside each time. % of limit: the larger of every multiply-add at this core's
  int8 rate (fastlstm's int8 GEMM on cache-resident operands, measured at the start: "% MAC")
  and reading the int8 weights as above ("% read"). No scaling sweep. Without AVX512-BF16,
  torch bfloat16 is slow (e: ~30 s a call on an AVX2 Zen 3): ``--workloads abcdf`` keeps the
  run to a few minutes.
"""
import math
import os
import sys

# Re-exported: what tests, bench/ and users reach as fastlstm.benchmark.<name>. main() looks
# run_benchmark up in this module, so a test that replaces it here replaces the run.
from ._benchmark import lowprec
from ._benchmark.limits import limit_fraction, measure_limits, peak_for, streamed_bytes
from ._benchmark.machine import machine_info, versions
from ._benchmark.measure import STATE_NAMES, compare, summarize, time_interleaved
from ._benchmark.peers import Peers, Unavailable
from ._benchmark.progress import Progress
from ._benchmark.report import labels, markdown, notes, plot_scaling, table, write_outputs
from ._benchmark.run import baseline_of, run_benchmark, run_cell
from ._benchmark.systems import (GRAD_NAMES, MAKERS, System, make_data, make_fastlstm,
                                 make_numpy, make_onnxruntime, make_torch, make_torch_native,
                                 onnx_lstm_model)
from ._benchmark.workloads import (DEFAULTS, DTYPES, FWD_ONLY, GAP, LABELS, MODES,
                                   PEAK_GFLOPS_REFERENCE, PRECISIONS, QUICK, SCALING_B, SCALING_H,
                                   SCALING_T, SEED, SHORT, SYSTEMS, TARGET_ROUND, TOL, TOLS,
                                   WORKLOADS, fwd_flops, mode_flops)


def add_arguments(p):
    p.add_argument("--workloads", default=None,
                   help="workload letters, e.g. acf (default abcdef; --quick: acf). "
                        + "; ".join(f"{k}: B,T,I,H = {w['B']},{w['T']},{w['I']},{w['H']}"
                                    for k, w in WORKLOADS.items()))
    p.add_argument("--threads", default=None, help="comma-separated thread counts (default 1,2)")
    p.add_argument("--precision", default="float32", choices=PRECISIONS,
                   help="float32 (default: the float systems in --dtype) or int8: fastlstm's "
                        "quantized model against fastlstm float32, ONNX Runtime int8, torch "
                        "dynamic int8 and torch bfloat16, forward only, every result checked "
                        "against float64 with its errors reported")
    p.add_argument("--systems", default=None,
                   help=f"comma-separated systems (default {','.join(SYSTEMS)}; --precision "
                        f"int8: {','.join(lowprec.SYSTEMS)}); fastlstm always runs (it is the "
                        "reference of every ratio)")
    p.add_argument("--modes", default=None,
                   help="fwd, fwd+bwd or both (default; --precision int8: fwd only)")
    p.add_argument("--dtype", default="float32", choices=DTYPES,
                   help="data, weights and every system in this dtype (default float32); "
                        "float64: torch has no oneDNN path (both torch columns run native), "
                        "ONNX Runtime is skipped, checks within 1e-9, %% peak of half the "
                        "float32 peak")
    p.add_argument("--quick", action="store_true",
                   help="workloads a,c,f, a 1 s budget and 3-7 rounds per cell (about a minute "
                        "on 2 cores)")
    p.add_argument("--rounds", type=int, default=None,
                   help="timed rounds per cell (default: as many as the budget allows, 5-25; "
                        "--quick 3-7)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds of timing per (workload, mode, threads) cell (default 3; "
                        "--quick 1)")
    p.add_argument("--gap", type=float, default=GAP,
                   help=f"idle seconds before each system's round when threads > 1 (default "
                        f"{GAP}), so the previous library's spinning worker threads sleep")
    p.add_argument("--out", default="bench-results", help="output folder (default ./bench-results)")
    p.add_argument("--peak-gflops", type=float, default=None,
                   help="one core's float32 FMA peak in GFLOP/s for %% of limit (float64 uses "
                        "half); default: measured at the start of the run (the reference "
                        f"machine of peers/RESULTS.md had {PEAK_GFLOPS_REFERENCE:g})")
    p.add_argument("--no-plot", action="store_true",
                   help="skip the scaling sweep and scaling.png")


def options_from_args(args, error):
    """The run's options from parsed arguments; error(msg) reports a bad value (and exits)."""
    base = QUICK if args.quick else DEFAULTS
    given = base["workloads"] if args.workloads is None else args.workloads
    wls = given.replace(",", "").strip().lower()  # ("" is an error, not the default)
    bad = sorted(set(wls) - set(WORKLOADS))
    if bad or not wls:
        error(f"--workloads: letters from {''.join(WORKLOADS)}, got {args.workloads!r}")
    wls = [w for w in WORKLOADS if w in wls]
    try:
        threads = sorted({int(t) for t in (args.threads or base["threads"]).split(",")
                          if t.strip()})
    except ValueError:
        error(f"--threads: comma-separated positive ints, got {args.threads!r}")
    if not threads or threads[0] < 1:
        error(f"--threads: comma-separated positive ints, got {args.threads!r}")
    precision = getattr(args, "precision", "float32")
    int8 = precision == "int8"
    known = lowprec.SYSTEMS if int8 else SYSTEMS
    systems = [s.strip() for s in (args.systems or ",".join(known)).split(",") if s.strip()]
    unknown = [s for s in systems if s not in known]
    if unknown:
        error(f"--systems: unknown {', '.join(unknown)}"
              + (" with --precision int8" if int8 else "")
              + f"; choose from {', '.join(known)}")
    systems = ["fastlstm"] + [s for s in dict.fromkeys(systems) if s != "fastlstm"]
    aliases = {"fwd": "fwd", "fwd+bwd": "fwd+bwd", "fwdbwd": "fwd+bwd", "bwd": "fwd+bwd",
               "train": "fwd+bwd"}
    modes = []
    for m in (args.modes or ("fwd" if int8 else ",".join(MODES))).split(","):
        m = m.strip().lower()
        if m not in aliases:
            error(f"--modes: fwd and/or fwd+bwd, got {m!r}")
        modes.append(aliases[m])
    modes = [m for m in MODES if m in modes]
    if int8 and modes != ["fwd"]:
        error("--modes: --precision int8 is inference only (fwd): a quantized model has no "
              "backward (train the float model, then quantize it)")
    if int8 and args.dtype != "float32":
        error("--dtype: --precision int8 quantizes a float32 model and checks every system "
              "against float64 itself; --dtype applies to --precision float32")
    if int8 and args.peak_gflops is not None:
        error("--peak-gflops is the float32 FMA peak; --precision int8 measures its int8 "
              "multiply-add peak")
    if args.rounds is not None and args.rounds < 1:
        error("--rounds must be >= 1")
    budget = base["budget"] if args.budget is None else args.budget
    finite = all(math.isfinite(v) for v in (budget, args.gap, args.peak_gflops or 1.0))
    if (not finite or budget < 0 or args.gap < 0
            or (args.peak_gflops is not None and args.peak_gflops <= 0)):
        error(f"--budget and --gap must be finite numbers >= 0, --peak-gflops finite > 0; got "
              f"{budget}, {args.gap}, {args.peak_gflops}")
    # the folder is made now, so a bad --out stops the run before it times anything
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as exc:
        error(f"--out: cannot make the output folder {args.out!r}: {exc.strerror}")
    if not os.access(args.out, os.W_OK | os.X_OK):
        error(f"--out: the output folder {args.out!r} is not writable")
    return dict(workloads=wls, threads=threads, systems=systems, modes=modes, dtype=args.dtype,
                precision=precision,
                rounds=args.rounds, budget=budget, min_rounds=base["min_rounds"],
                max_rounds=base["max_rounds"], scaling_budget=base["scaling_budget"],
                gap=args.gap, quick=args.quick, scaling=not (args.no_plot or int8),
                out=args.out, peak_gflops=args.peak_gflops)


def main(args, error=None, stdout=None, stderr=None):
    """`python -m fastlstm bench`: returns 0, or 1 when a system failed its check."""
    stdout = stdout or sys.stdout

    def _error(msg):
        raise SystemExit(f"bench: {msg}")
    opts = options_from_args(args, error or _error)
    progress = Progress(stderr or sys.stderr)
    out_dir = opts["out"]
    results = run_benchmark(opts, progress)
    md = write_outputs(results, out_dir, plot=opts["scaling"])
    print(md, file=stdout)
    print(f"wrote {os.path.join(out_dir, 'results.md')}, results.json"
          + (", scaling.png" if os.path.exists(os.path.join(out_dir, "scaling.png"))
             and opts["scaling"] else "") + f" in {results['wall_s']:.0f} s",
          file=progress.stream, flush=True)
    failed = any(v["status"] in ("check failed", "error")
                 for c in results["cells"] for v in c["systems"].values())
    return 1 if failed else 0
