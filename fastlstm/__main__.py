"""Command line: ``python -m fastlstm demo``, ``python -m fastlstm shapes`` and
``python -m fastlstm bench``; ``python -m fastlstm --version`` prints the installed version.

demo: builds an LSTM, runs it on a sample batch, prints the shape of every tensor in words,
checks the result against the NumPy reference (and PyTorch when installed), and times it against
both; then quantizes it to int8 and shows the time gained and the error it costs.

shapes: prints the shape and meaning of every tensor of an LSTM configuration (no weights are
made): input, states, PyTorch's stacked parameters and each gate's one-matrix view, per-step
gate values and outputs. E.g. ``python -m fastlstm shapes --input-size 3 --hidden-size 3``.

bench: times fastlstm against its peers (NumPy reference, PyTorch with and without oneDNN, ONNX
Runtime; each only when installed) on six workloads, forward and forward+backward, 1 and 2
threads, after checking every result; writes results.md (the ratio table), results.json (every
sample) and scaling.png into --out. ``python -m fastlstm bench --quick`` takes about a minute.
``--precision int8`` times the int8 model against its float32 self, ONNX Runtime int8, torch
dynamic int8 and torch bfloat16 (forward), with each one's error against float64.
"""
import argparse
import sys
import time

import numpy as np

import fastlstm
from fastlstm import benchmark, reference
from fastlstm.shapes import describe_config


def _median_ms(fn, budget=0.3, min_runs=5):
    fn()  # warm-up
    times, start = [], time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < budget:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def _positive_int(text):
    """argparse type of the demo's sizes and threads: a usage error (exit status 2) for 0,
    negatives and non-integers, before any model is built."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive int, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive int, got {value}")
    return value


def _scaled_error(a, ref):
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    return float(np.max(np.abs(a - ref)) / max(np.max(np.abs(ref)), 1e-300))


def demo(args):
    T, B, I, H = args.seq_len, args.batch, args.input_size, args.hidden_size
    lstm = fastlstm.LSTM(I, H, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    h0 = np.zeros((1, B, H), np.float32)
    c0 = np.zeros((1, B, H), np.float32)
    output, (h_n, c_n) = lstm(x, (h0, c0), num_threads=args.threads)
    info = fastlstm.openmp_info()

    print(f"fastlstm {fastlstm.__version__}: {lstm!r}")
    print(f"kernels: {info['isa']} variant, OpenMP {'on' if info['enabled'] else 'OFF'}, "
          f"{info['last_num_threads']} thread(s) ran\n")
    rows = [
        ("x", x.shape, "input: seq_len x batch x input_size (time-major; batch_first=True "
                       "takes batch x seq_len x input_size)"),
        ("h0", h0.shape, "initial hidden state: (num_layers * num_directions) x batch x "
                         "hidden_size"),
        ("c0", c0.shape, "initial cell state: same shape as h0"),
    ]
    for name, value in lstm.parameters().items():
        what = {"weight_ih_l0": "input-to-hidden weights: the four gates i, f, g, o stacked, "
                                "(4*hidden_size) x input_size",
                "weight_hh_l0": "hidden-to-hidden weights: gates i, f, g, o stacked, "
                                "(4*hidden_size) x hidden_size",
                "bias_ih_l0": "input bias: 4*hidden_size (gates i, f, g, o)",
                "bias_hh_l0": "hidden bias: 4*hidden_size (gates i, f, g, o)"}[name]
        rows.append((name, value.shape, what))
    rows += [
        ("output", output.shape, "h_t of every step: seq_len x batch x hidden_size"),
        ("h_n", h_n.shape, "hidden state after the last step: same shape as h0"),
        ("c_n", c_n.shape, "cell state after the last step: same shape as c0"),
    ]
    for name, shape, what in rows:
        print(f"  {name:<13} {str(shape):<16} {what}")

    p = lstm.parameters()
    weights = [p[k].astype(np.float64) for k in
               ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")]
    ref_out, ref_h, ref_c = reference.forward(x.astype(np.float64), *weights)
    err = max(_scaled_error(output, ref_out), _scaled_error(h_n[0], ref_h),
              _scaled_error(c_n[0], ref_c))
    print(f"\ncheck: max |fastlstm - float64 reference| / max |reference| = {err:.2e}"
          f" ({'ok' if err < 1e-5 else 'MISMATCH'})")
    ok = err < 1e-5

    weights32 = [w.astype(np.float32) for w in weights]
    t_fast = _median_ms(lambda: lstm(x, num_threads=args.threads))
    t_ref = _median_ms(lambda: reference.forward(x, *weights32))
    flops = 2 * 4 * H * (I + H) * B * T
    print(f"\nspeed (forward, float32, median):")
    print(f"  fastlstm         {t_fast:9.3f} ms  ({flops / t_fast / 1e6:6.1f} GFLOP/s)")
    print(f"  NumPy reference  {t_ref:9.3f} ms  (fastlstm is {t_ref / t_fast:.2f}x faster)")
    try:
        import torch
    except ImportError:
        print("  torch            not installed (pip install torch==2.13.0 to compare)")
    else:
        module = torch.nn.LSTM(I, H)
        with torch.no_grad():
            for name, value in p.items():
                getattr(module, name).copy_(torch.from_numpy(np.array(value)))
        tx = torch.from_numpy(x)
        if args.threads:
            torch.set_num_threads(args.threads)
        with torch.inference_mode():
            t_out = module(tx)[0].numpy()
            t_torch = _median_ms(lambda: module(tx))
        terr = _scaled_error(output, t_out)
        ok = ok and terr < 2e-5
        print(f"  torch {torch.__version__:<10} {t_torch:9.3f} ms  (fastlstm is "
              f"{t_torch / t_fast:.2f}x faster; outputs agree to {terr:.1e})")
    ok = _demo_int8(lstm, x, ref_out, t_fast, args.threads) and ok
    return 0 if ok else 1


def _demo_int8(lstm, x, ref_out, t_fast, threads):
    """What int8 gains (time, weight bytes) and costs (error against float64). True when the
    error is within bench --precision int8's bound for fastlstm int8."""
    q = lstm.quantize("int8")
    d = np.asarray(q(x, num_threads=threads)[0], np.float64) - ref_out
    err, rms = float(np.max(np.abs(d))), float(np.sqrt(np.mean(d * d)))
    err32 = float(np.max(np.abs(lstm(x, num_threads=threads)[0] - ref_out)))
    bound = benchmark.lowprec.BOUNDS["fastlstm"][0]
    t_q = _median_ms(lambda: q(x, num_threads=threads))
    print(f"\nint8 (lstm.quantize(\"int8\"), {fastlstm.openmp_info()['isa_int8']} kernels):")
    print(f"  fastlstm int8    {t_q:9.3f} ms  ({t_fast / t_q:.2f}x the float32 model's speed; "
          f"weights {sum(v.nbytes for v in lstm.parameters().values()) / 1024:.0f} -> "
          f"{q.nbytes / 1024:.0f} KiB)")
    print(f"  error vs float64: max {err:.1e}, RMS {rms:.1e} (float32: max {err32:.1e})"
          f" ({'ok' if err < bound else 'MISMATCH'})")
    return err < bound


def shapes(args, parser):
    try:
        desc = describe_config(args.input_size, args.hidden_size, num_layers=args.num_layers,
                               bidirectional=args.bidirectional, proj_size=args.proj_size,
                               batch_first=args.batch_first, bias=not args.no_bias,
                               seq_len=args.seq_len, batch=args.batch)
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))  # usage and the message on stderr, exit status 2
    print(desc)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastlstm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"fastlstm {fastlstm.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="run a model on a sample, show shapes, check and time it")
    d.add_argument("--seq-len", type=_positive_int, default=100)
    d.add_argument("--batch", type=_positive_int, default=16)
    d.add_argument("--input-size", type=_positive_int, default=256)
    d.add_argument("--hidden-size", type=_positive_int, default=256)
    d.add_argument("--threads", type=_positive_int, default=None,
                   help="OpenMP threads (default: OMP_NUM_THREADS or all cores)")
    s = sub.add_parser("shapes", help="every tensor's shape and meaning for a configuration",
                       description="Print the shape and meaning of every tensor of an LSTM "
                                   "with these torch.nn.LSTM arguments; seq_len and batch stay "
                                   "symbolic unless given.")
    s.add_argument("--input-size", type=int, required=True)
    s.add_argument("--hidden-size", type=int, required=True)
    s.add_argument("--num-layers", type=int, default=1)
    s.add_argument("--bidirectional", action="store_true")
    s.add_argument("--proj-size", type=int, default=0)
    s.add_argument("--batch-first", action="store_true")
    s.add_argument("--no-bias", action="store_true", help="bias=False")
    s.add_argument("--seq-len", type=int, default=None)
    s.add_argument("--batch", type=int, default=None)
    b = sub.add_parser("bench", help="time fastlstm against its peers, checked, into a table",
                       description=benchmark.__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    benchmark.add_arguments(b)
    args = parser.parse_args(argv)
    if args.command == "bench":
        return benchmark.main(args, error=b.error)
    if args.command == "shapes":
        return shapes(args, s)
    return demo(args)


if __name__ == "__main__":
    sys.exit(main())
