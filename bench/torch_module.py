"""A training step through fastlstm.torch.LSTM against torch.nn.LSTM, with fastlstm's kernels'
own ratio beside it and the share of the step spent repacking the weights (issue 20).

Per workload of ``python -m fastlstm bench`` (fastlstm/_benchmark/workloads.py), one training
step is the bench's fwd+bwd: x requiring grad, ``out.sum().backward()`` (workload f: state in);
parameter gradients cleared before each step.

- ``nn.LSTM``: torch's module (oneDNN for float32, as shipped);
- ``module``: fastlstm.torch.LSTM in train() mode: repack + forward_train + backprop, autograd;
- ``kernels``: fastlstm.LSTM.forward_train + backprop on NumPy arrays, no repack (the kernels'
  own step, what ``python -m fastlstm bench`` times);
- ``repack``: the module's in-place repack alone.

The calls run interleaved (one of each, round after round, each round in a rotated order) for
``--budget`` seconds per workload, so a noisy neighbour slows all of them alike; medians are reported. Ratios are
nn.LSTM's time over ours (> 1: faster than torch); keep = module ratio / kernels ratio.

    python bench/torch_module.py                     # workloads abcdef, 1 thread, 4 s each
    python bench/torch_module.py --workloads acf --threads 2 --budget 2
"""
import argparse
import time

import numpy as np
import torch

import fastlstm.torch as ft
from fastlstm._benchmark.systems import make_data
from fastlstm._benchmark.workloads import WORKLOADS

SYSTEMS = ("nn.LSTM", "module", "kernels", "repack")


def make_steps(workload, threads):
    """{system: step()} for one workload; each step returns what `check` compares."""
    s = WORKLOADS[workload]
    d = make_data(s["B"], s["T"], s["I"], s["H"], s.get("state", False))
    model, x = d["model"], d["x"]
    hx_np = None if d["h0"] is None else (d["h0"][None], d["c0"][None])
    ref = nn_lstm = torch.nn.LSTM(s["I"], s["H"])
    nn_lstm.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in d["params"].items()})
    ours = ft.LSTM(s["I"], s["H"])
    ours.load_state_dict(ref.state_dict())
    ours.num_threads = threads
    hx = None if hx_np is None else tuple(torch.from_numpy(h) for h in hx_np)
    xt = torch.from_numpy(x)
    dy = d["dy"]

    def torch_step(module):
        params = list(module.parameters())
        xg = xt.clone().requires_grad_(True)

        def step():
            for p in params:
                p.grad = None
            xg.grad = None
            out, _ = module(xg, hx)
            out.sum().backward()
            return out.detach(), xg.grad, module.weight_hh_l0.grad
        return step

    def kernels():
        y, _, backprop = model.forward_train(x, hx_np, num_threads=threads)
        g = backprop(grad_output=dy, num_threads=threads)
        return torch.from_numpy(y), torch.from_numpy(g["x"]), torch.from_numpy(g["weight_hh_l0"])

    ours(xt[:1])  # builds the packed copy
    params = ours._fastlstm_params()

    def repack():
        ours._fastlstm_packed.refresh(params, force=True)

    return {"nn.LSTM": torch_step(nn_lstm), "module": torch_step(ours), "kernels": kernels,
            "repack": repack}


def check(steps):
    """The three training steps agree (output, dx, dW_hh); returns the largest relative error."""
    results = [steps[k]() for k in ("nn.LSTM", "module", "kernels")]
    worst = 0.0
    for got in results[1:]:
        for a, b in zip(got, results[0]):
            worst = max(worst, ((a - b).abs().max() / b.abs().max()).item())
    assert worst < 1e-4, f"fastlstm.torch differs from nn.LSTM by {worst:.2e}"
    return worst


def measure(workload, threads, budget):
    """Median seconds per call of each system, interleaved for `budget` seconds."""
    torch.set_num_threads(threads)
    steps = make_steps(workload, threads)
    check(steps)
    for f in steps.values():  # warm-up: packing, page faults, oneDNN primitives
        f()
    times = {k: [] for k in steps}
    order = list(steps)
    end = time.perf_counter() + budget
    while time.perf_counter() < end or len(times["module"]) < 3:
        # a new order each round: whichever call follows nn.LSTM finds the caches it emptied
        order = order[1:] + order[:1]
        for k in order:
            t = time.perf_counter()
            steps[k]()
            times[k].append(time.perf_counter() - t)
    return {k: float(np.median(v)) for k, v in times.items()}, len(times["module"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default="abcdef")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--budget", type=float, default=4.0, help="seconds per workload")
    args = ap.parse_args(argv)
    print(f"threads={args.threads}; medians of interleaved calls; ratio = nn.LSTM / ours")
    print("| workload | nn.LSTM ms | module ms | kernels ms | repack ms | repack share | "
          "module ratio | kernels ratio | keep | rounds |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for w in args.workloads:
        med, rounds = measure(w, args.threads, args.budget)
        r_mod, r_ker = med["nn.LSTM"] / med["module"], med["nn.LSTM"] / med["kernels"]
        print(f"| {w} | {med['nn.LSTM'] * 1e3:.3f} | {med['module'] * 1e3:.3f} | "
              f"{med['kernels'] * 1e3:.3f} | {med['repack'] * 1e3:.3f} | "
              f"{med['repack'] / med['module']:.1%} | {r_mod:.2f}x | {r_ker:.2f}x | "
              f"{r_mod / r_ker:.0%} | {rounds} |", flush=True)


if __name__ == "__main__":
    main()
