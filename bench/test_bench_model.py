"""fastlstm vs torch on the model options: bidirectional, two layers, projection, ragged batches.

Workloads (float32, sizes of workload c: B=16, T=100, I=H=256):
  bi      one bidirectional layer
  2layer  two stacked layers
  proj    proj_size = 128 (oneDNN has no projection: torch runs its native kernels either way)
  ragged  lengths drawn uniformly from [1, T]. Systems: fastlstm with lengths=, torch on a
          PackedSequence (PyTorch's ragged path), and both on the padded batch ("-padded"), the
          cost a ragged batch should stay well under (fastlstm: <= 0.7x).
  subnormal  forward only: input gates shut, forget gates ~0.2, tiny inputs, so the cell state
          decays into subnormals within ~60 steps (where a CPU without flush-to-zero can slow
          down many times); compare with the other workloads' fwd times of the same sizes.

Modes and threads as in test_bench.py (--bench-threads); every system's result is checked against
fastlstm's before timing (outputs within 1e-4, gradients within 1e-4 * max(1, max|g|)); with
--benchmark-disable each case runs once, checked. `python bench/report.py` tabulates these rows
too (fastlstm GFLOP/s counts the real work: valid steps only for ragged).
"""
import numpy as np
import pytest

import fastlstm
from test_bench import _check, _skip_unavailable

B, T, I, H = 16, 100, 256, 256
SEED = 99
WORKLOADS = {
    "bi": dict(bidirectional=True),
    "2layer": dict(num_layers=2),
    "proj": dict(proj_size=128),
    "ragged": dict(),
    "subnormal": dict(),
}
SYSTEMS = {
    "bi": ("fastlstm", "torch", "torch-native"),
    "2layer": ("fastlstm", "torch", "torch-native"),
    "proj": ("fastlstm", "torch"),
    "ragged": ("fastlstm", "fastlstm-padded", "torch", "torch-padded"),
    "subnormal": ("fastlstm", "torch", "torch-native"),
}
MODES = {"subnormal": ("fwd",)}
_cache = {}


def _data(wl):
    if wl not in _cache:
        _cache.clear()
        rng = np.random.default_rng(SEED)
        model = fastlstm.LSTM(I, H, seed=SEED, **WORKLOADS[wl])
        x = rng.standard_normal((T, B, I)).astype(np.float32)
        lengths = rng.integers(1, T + 1, B) if wl == "ragged" else None
        hx = None
        if wl == "subnormal":
            p = {k: np.array(v) for k, v in model.state_dict().items()}
            bias = np.zeros(4 * H, np.float32)
            bias[:H], bias[H:2 * H], bias[3 * H:] = -30.0, -1.4, 30.0  # i ~ 0, f ~ 0.2, o ~ 1
            model.set_parameters(weight_ih_l0=p["weight_ih_l0"] * 1e-3,
                                 weight_hh_l0=p["weight_hh_l0"] * 1e-3, bias_ih_l0=bias,
                                 bias_hh_l0=np.zeros_like(bias))
            x *= 1e-30
            hx = (np.zeros((1, B, H), np.float32), np.ones((1, B, H), np.float32))
        _cache[wl] = dict(model=model, x=x, lengths=lengths, hx=hx, results={})
    return _cache[wl]


def _flops(wl, d):
    D = 2 if wl == "bi" else 1
    steps = int(d["lengths"].sum()) if wl == "ragged" else B * T
    P = WORKLOADS[wl].get("proj_size", 0)
    per_row_step = 2 * 4 * H * (I + (P or H)) * D + 2 * P * H
    if wl == "2layer":
        per_row_step += 2 * 4 * H * (H + H)
    return per_row_step * steps


def _fastlstm(d, mode, nt, padded):
    model, x, hx = d["model"], d["x"], d["hx"]
    lengths = None if padded else d["lengths"]

    def fn():
        if mode == "fwd":
            y, (h, c) = model(x, hx, lengths=lengths, num_threads=nt)
            return {"output": y, "h_n": h, "c_n": c}
        y, (h, c), backprop = model.forward_train(x, lengths=lengths, num_threads=nt)
        g = backprop(np.ones_like(y), num_threads=nt)
        return {"output": y, "x": g["x"], **{k: g[k] for k in model.state_dict()}}
    return fn


def _torch(d, mode, nt, native, packed, peers):
    torch = _skip_unavailable(peers.module, "torch")  # a peers.pinned(nt) sets its threads
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    model = d["model"]
    tm = torch.nn.LSTM(I, H, num_layers=model.num_layers, bidirectional=model.bidirectional,
                       proj_size=model.proj_size)
    tm.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()})
    x = torch.from_numpy(d["x"])
    lengths = torch.from_numpy(d["lengths"]) if packed else None
    hx = None if d["hx"] is None else tuple(torch.from_numpy(a) for a in d["hx"])

    def run(xt):
        if lengths is None:
            return tm(xt, hx)
        y, hc = tm(pack_padded_sequence(xt, lengths, enforce_sorted=False))
        return pad_packed_sequence(y, total_length=T)[0], hc

    def fn():
        with torch.backends.mkldnn.flags(enabled=not native):
            if mode == "fwd":
                with torch.no_grad():
                    y, (h, c) = run(x)
                return {"output": y.numpy(), "h_n": h.numpy(), "c_n": c.numpy()}
            tm.zero_grad()
            xg = x.clone().requires_grad_(True)
            y, _ = run(xg)
            y.sum().backward()
            return {"output": y.detach().numpy(), "x": xg.grad.numpy(),
                    **{k: p.grad.numpy() for k, p in tm.named_parameters()}}
    return fn


def _make(wl, system, mode, nt, peers):
    d = _data(wl)
    if system.startswith("fastlstm"):
        return _fastlstm(d, mode, nt, padded=system.endswith("-padded") or wl != "ragged")
    return _torch(d, mode, nt, native=system == "torch-native",
                  packed=wl == "ragged" and not system.endswith("-padded"), peers=peers)


def _reference(wl, system, mode, peers):
    """fastlstm's result (1 thread) for the same batch: padded or ragged."""
    key = (mode, system.endswith("-padded"))
    results = _data(wl)["results"]
    if key not in results:
        with peers.pinned(1):
            fn = _make(wl, "fastlstm-padded" if key[1] else "fastlstm", mode, 1, peers)
            results[key] = fn()
    return results[key]


def pytest_generate_tests(metafunc):
    if "model_case" not in metafunc.fixturenames:
        return
    threads = [int(t) for t in metafunc.config.getoption("--bench-threads").split(",") if t]
    params = [pytest.param((wl, system, mode, nt), id=f"{wl}-{mode.replace('+', '')}-t{nt}-{system}")
              for wl in WORKLOADS for mode in MODES.get(wl, ("fwd", "fwd+bwd")) for nt in threads
              for system in SYSTEMS[wl]]
    metafunc.parametrize("model_case", params)


def test_model_options(benchmark, model_case, peers):
    wl, system, mode, nt = model_case
    ref = _reference(wl, system, mode, peers)
    d = _data(wl)
    benchmark.group = f"{wl}-{mode}-t{nt}"
    benchmark.extra_info.update(system=system, workload=wl, mode=mode, threads=nt, B=B, T=T, I=I,
                                H=H, fwd_flops=_flops(wl, d), isa=fastlstm.openmp_info()["isa"])
    with peers.pinned(nt):
        fn = _make(wl, system, mode, nt, peers)
        got = fn()  # the check, and the warm-up
        benchmark.extra_info["check_err"] = _check(
            {k: np.reshape(v, np.shape(ref[k])) for k, v in got.items() if k in ref}, ref)
        if benchmark.disabled:
            benchmark(fn)
        else:
            benchmark.pedantic(fn, rounds=7 if mode == "fwd" else 5, iterations=1,
                               warmup_rounds=0)
