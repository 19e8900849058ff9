"""Threads, determinism and the process-level contract.

fastlstm promises results that are *bitwise* identical for any num_threads, from run to run, for
each batch row alone or in a batch, and for a sequence run in chunks while carrying (h, c). These
tests check each of those promises with np.array_equal (never allclose), on shapes chosen to hit
both work splits of the kernels:

- batch split: each thread owns whole batch rows, no barrier per step;
- unit split: each thread owns blocks of 16 (float32) / 8 (float64) hidden units, one barrier per
  step; H not a multiple of the block gives a partial last block.

The kernels choose the split and the team by the work (see test_team_size_follows_the_work); the
determinism tests run both that plan and one with its work thresholds at 0, under which tiny
shapes take the unit split on one thread per unit block.

They also check the team size really used (openmp_info()['last_num_threads']), that calls from
many Python threads on one shared model agree with serial calls, that forked children and
multiprocessing pools (spawn, forkserver, fork; workers in tests/mp_workers.py) started after a
team ran give the same bits, that no input is written to, and that importing/running fastlstm
leaves the floating-point environment (FTZ/DAZ) alone.
"""
import multiprocessing
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import fastlstm
import mp_workers
from fastlstm import _kernels

DTYPES = [np.float32, np.float64]
BLOCK = {np.dtype(np.float32): 16, np.dtype(np.float64): 8}
GRAD_KEYS = ("x", "h0", "c0", "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")

requires_openmp = pytest.mark.skipif(not fastlstm.openmp_enabled(),
                                     reason="built without OpenMP: every call runs on 1 thread")

# (T, B, I, H, why). Threads requested are 1..4 on each.
SHAPES = [
    (6, 1, 7, 100, "B=1: unit split for >1 thread, partial last unit block (100 = 6*16 + 4)"),
    (5, 3, 4, 100, "B=3: unit split (fewer rows than a register tile per thread)"),
    (3, 9, 5, 300, "B=9: batch split with uneven rows for 2 threads, unit split for 3 and 4"),
    (5, 3, 4, 5, "tiny H=5 (one partial block): at most B=3 threads, batch split"),
    (4, 17, 3, 5, "B=17: batch split with uneven rows for 2, 3 and 4 threads"),
    (3, 2, 33, 40, "I=33 > one panel, H=40 (2.5 float32 blocks, 5 float64 blocks)"),
    (3, 5, 2, 130, "H=130: many unit blocks, B=5 batch split"),
    (2, 2, 260, 300, "I=260, H=300 > 256: the GEMMs' K loop runs in two blocks"),
    (20, 17, 3, 24, "T*B=340 > 256: the weight-gradient GEMMs' K loop runs in two blocks"),
]


def _data(rng, T, B, I, H, dtype, batch_first):
    """Random x, hx and upstream gradients, in the model's dtype and the user's layout."""
    xs = (B, T, I) if batch_first else (T, B, I)
    ys = (B, T, H) if batch_first else (T, B, H)
    x = rng.standard_normal(xs).astype(dtype)
    h0 = rng.standard_normal((1, B, H)).astype(dtype)
    c0 = rng.standard_normal((1, B, H)).astype(dtype)
    gy = rng.standard_normal(ys).astype(dtype)
    gh = rng.standard_normal((1, B, H)).astype(dtype)
    gc = rng.standard_normal((1, B, H)).astype(dtype)
    return x, (h0, c0), (gy, gh, gc)


@pytest.fixture(params=["measured", "every_split"])
def split_policy(request):
    """The kernels' thread plan as shipped, and with its work thresholds at 0 (every shape that
    has the rows or unit blocks takes the split, however little work each thread gets)."""
    saved = _kernels.split_thresholds()
    if request.param == "every_split":
        _kernels.split_thresholds(0, 0)
    yield request.param
    _kernels.split_thresholds(*saved)


def _everything(model, x, hx, up, nt):
    """Every array a user can get from one inference, one training forward and one backward."""
    y, (h, c) = model(x, hx, num_threads=nt)
    y2, (h2, c2), backprop = model.forward_train(x, hx, num_threads=nt)
    grads = backprop(*up, num_threads=nt)
    out = {"infer.output": y, "infer.h_n": h, "infer.c_n": c,
           "train.output": y2, "train.h_n": h2, "train.c_n": c2}
    out.update({"grad." + k: grads[k] for k in GRAD_KEYS})
    return out


def _assert_bitwise(ref, got, context):
    assert ref.keys() == got.keys()
    bad = [k for k in ref if not (ref[k].dtype == got[k].dtype and np.array_equal(ref[k], got[k]))]
    assert not bad, f"{context}: not bitwise equal: {bad}"


# ------------------------------------------------------------------------------------------------
# Determinism across num_threads and run to run


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
def test_bitwise_identical_across_num_threads(isa, split_policy, dtype, batch_first):
    rng = np.random.default_rng(2024)
    for T, B, I, H, why in SHAPES:
        model = fastlstm.LSTM(I, H, batch_first=batch_first, dtype=dtype, seed=7)
        x, hx, up = _data(rng, T, B, I, H, dtype, batch_first)
        ref = _everything(model, x, hx, up, 1)
        # inference and training forward are the same computation
        assert np.array_equal(ref["infer.output"], ref["train.output"]), why
        assert np.array_equal(ref["infer.h_n"], ref["train.h_n"]), why
        assert np.array_equal(ref["infer.c_n"], ref["train.c_n"]), why
        for nt in (2, 3, 4, None):
            _assert_bitwise(ref, _everything(model, x, hx, up, nt),
                            f"isa={isa} {split_policy} {np.dtype(dtype).name} T,B,I,H={T, B, I, H} "
                            f"batch_first={batch_first} num_threads={nt} ({why})")


# (T, B, I, H, P, why): projected layers, whose steps also split the projection by output panels
PROJ_SHAPES = [
    (6, 1, 7, 100, 40, "B=1: units (7 float32 blocks) and projection panels (3) split"),
    (5, 3, 4, 100, 17, "B=3: unit split, P=17: a full and a 1-wide panel"),
    (3, 9, 5, 300, 70, "B=9: batch split for 2 threads, unit split for 3 and 4"),
    (20, 17, 3, 24, 5, "B=17: batch split; T*B=340 rows: dW_hr sums two K blocks"),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_bitwise_identical_across_num_threads_with_projection(isa, split_policy, dtype):
    rng = np.random.default_rng(77)
    for T, B, I, H, P, why in PROJ_SHAPES:
        model = fastlstm.LSTM(I, H, proj_size=P, dtype=dtype, seed=7)
        x = rng.standard_normal((T, B, I)).astype(dtype)
        hx = (rng.standard_normal((1, B, P)).astype(dtype),
              rng.standard_normal((1, B, H)).astype(dtype))
        up = tuple(rng.standard_normal(s).astype(dtype) for s in ((T, B, P), (1, B, P), (1, B, H)))
        ref = _everything(model, x, hx, up, 1)
        ref_hr = model.forward_train(x, hx, num_threads=1)[2](*up, num_threads=1)["weight_hr_l0"]
        assert np.array_equal(ref["infer.output"], ref["train.output"]), why
        assert np.array_equal(ref["infer.h_n"], ref["train.h_n"]), why
        for nt in (2, 3, 4, None):
            context = (f"isa={isa} {split_policy} {np.dtype(dtype).name} "
                       f"T,B,I,H,P={T, B, I, H, P} num_threads={nt} ({why})")
            _assert_bitwise(ref, _everything(model, x, hx, up, nt), context)
            g = model.forward_train(x, hx, num_threads=nt)[2](*up, num_threads=nt)
            assert np.array_equal(g["weight_hr_l0"], ref_hr), context

# (T, B, I, H, P): plain, batch-1, a partial unit block, a projection (its w_hh is P x G4)
SLAB_SHAPES = [(5, 7, 33, 40, 0), (6, 1, 7, 100, 0), (3, 9, 260, 300, 0), (4, 5, 6, 50, 20)]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_bitwise_identical_for_any_weight_slab_width(isa, dtype, monkeypatch):
    """The forward weights are packed in slabs as wide as the packing-time ISA's GEMM tile
    (_kernels.weight_group); a pack of another width (another ISA's, or one made before
    select_isa switched) must give the same bits on every path: inference, training, ragged."""
    rng = np.random.default_rng(31)
    native = _kernels.weight_group(dtype)
    for T, B, I, H, P in SLAB_SHAPES:
        x, hx, up = _data(rng, T, B, I, H, dtype, False)
        if P:
            hx = (hx[0][:, :, :P].copy(), hx[1])
            up = (up[0][:, :, :P].copy(), up[1][:, :, :P].copy(), up[2])
        lengths = rng.integers(0, T + 1, B)

        def run():
            model = fastlstm.LSTM(I, H, proj_size=P, dtype=dtype, seed=5)
            group = model._layers[0][0].packed.weight_group
            out = _everything(model, x, hx, up, 2)
            y, (h, c) = model(x, hx, lengths=lengths, num_threads=2)
            out.update({"ragged.output": y, "ragged.h_n": h, "ragged.c_n": c})
            return group, out

        group, ref = run()
        assert group == native
        for width in (1, 2, 4):
            monkeypatch.setattr(_kernels, "weight_group", lambda dtype, width=width: width)
            group, got = run()
            monkeypatch.undo()
            assert group == width  # the pack really took the width under test
            _assert_bitwise(ref, got, f"isa={isa} {np.dtype(dtype).name} T,B,I,H,P="
                                      f"{T, B, I, H, P} slab width {width} vs {native}")



@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_bitwise_identical_across_num_threads_no_bias_unbatched(split_policy, dtype):
    rng = np.random.default_rng(5)
    model = fastlstm.LSTM(3, 50, bias=False, dtype=dtype, seed=3)
    x = rng.standard_normal((7, 3)).astype(dtype)  # unbatched: B=1, unit split
    hx = (rng.standard_normal((1, 50)).astype(dtype), rng.standard_normal((1, 50)).astype(dtype))
    up = (rng.standard_normal((7, 50)).astype(dtype), None, None)
    y, (h, c) = model(x, hx, num_threads=1)
    _, _, bp = model.forward_train(x, hx, num_threads=1)
    g_ref = bp(*up, num_threads=1)
    assert "bias_ih_l0" not in g_ref
    for nt in (2, 3, 4):
        y2, (h2, c2) = model(x, hx, num_threads=nt)
        assert np.array_equal(y, y2) and np.array_equal(h, h2) and np.array_equal(c, c2)
        _, _, bp = model.forward_train(x, hx, num_threads=nt)
        g = bp(*up, num_threads=nt)
        for k in g_ref:
            assert np.array_equal(g_ref[k], g[k]), (nt, k)


@requires_openmp
@pytest.mark.parametrize("proj_size", [0, 20], ids=["plain", "projection"])
def test_bitwise_identical_through_many_barriers_on_more_threads_than_cores(proj_size):
    """The unit split meets at a barrier once per step (twice with a projection, and more in the
    backward); a barrier that let a thread read a slice of h before its owner wrote it, or let
    one thread run a step ahead, would change some value. 300 steps on up to 7 threads (more
    than CI's 2 cores: waiters must give their core back to the thread they wait for)."""
    rng = np.random.default_rng(8)
    T, B, I, H = 300, 1, 5, 112  # 7 float32 unit blocks: a team of up to 7
    model = fastlstm.LSTM(I, H, proj_size=proj_size, seed=4)
    Hout = proj_size or H
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    hx = (rng.standard_normal((1, B, Hout)).astype(np.float32),
          rng.standard_normal((1, B, H)).astype(np.float32))
    up = (rng.standard_normal((T, B, Hout)).astype(np.float32), None, None)
    saved = _kernels.split_thresholds()
    _kernels.split_thresholds(0, 0)  # a unit share for every thread, however small
    try:
        ref = _everything(model, x, hx, up, 1)
        for nt in (2, 3, 7):
            assert _team_after(lambda: model(x, hx, num_threads=nt)) == nt
            _assert_bitwise(ref, _everything(model, x, hx, up, nt), f"num_threads={nt}")
    finally:
        _kernels.split_thresholds(*saved)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(6, 1, 7, 100), (5, 3, 4, 100), (4, 17, 3, 5)],
                         ids=["B1_H100", "B3_H100", "B17_H5"])
def test_bitwise_identical_over_20_repeated_calls(split_policy, dtype, shape):
    T, B, I, H = shape
    rng = np.random.default_rng(99)
    model = fastlstm.LSTM(I, H, dtype=dtype, seed=11)
    x, hx, up = _data(rng, T, B, I, H, dtype, False)
    ref = _everything(model, x, hx, up, 2)
    _, _, backprop = model.forward_train(x, hx, num_threads=2)
    for k in range(20):
        nt = (1, 2, 3, 4)[k % 4]
        _assert_bitwise(ref, _everything(model, x, hx, up, nt), f"call {k}, num_threads={nt}")
        # one backprop closure called again and again gives the same gradients
        g = backprop(*up, num_threads=nt)
        for key in GRAD_KEYS:
            assert np.array_equal(ref["grad." + key], g[key]), (k, key)


# ------------------------------------------------------------------------------------------------
# The team size really used


def test_openmp_enabled():
    if os.environ.get("CI") == "true":
        assert fastlstm.openmp_enabled(), (
            "fastlstm was built without OpenMP on CI: the build silently lost it "
            "(see the warning from setup.py's OpenMP probe)")
    elif not fastlstm.openmp_enabled():
        pytest.skip("fastlstm was built without OpenMP (setup.py's probe failed): every call "
                    "runs on one thread; set CI=true to make this a failure")
    info = fastlstm.openmp_info()
    assert info["enabled"] is True
    assert info["max_threads"] >= 1


def _team_after(fn):
    fn()
    return fastlstm.openmp_info()["last_num_threads"]


@requires_openmp
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("B,H", [(2, 5), (4, 20), (1, 100), (3, 100)])
def test_team_size_two_and_one(dtype, B, H):
    """num_threads=2 on a shape with 2 rows, or enough weight per step for 2 unit shares, runs a
    team of 2; 1 runs 1."""
    rng = np.random.default_rng(0)
    model = fastlstm.LSTM(3, H, dtype=dtype, seed=0)
    x, hx, up = _data(rng, 4, B, 3, H, dtype, False)
    for nt in (2, 1, 2):
        assert _team_after(lambda: model(x, hx, num_threads=nt)) == nt
        _, _, backprop = model.forward_train(x, hx, num_threads=nt)
        assert fastlstm.openmp_info()["last_num_threads"] == nt
        assert _team_after(lambda: backprop(*up, num_threads=nt)) == nt
        # backprop's own num_threads, not the forward's, decides its team
        assert _team_after(lambda: backprop(*up, num_threads=3 - nt)) == 3 - nt


# The plan, by hand. Batch split when every thread gets >= 4 rows (a full register tile). Else
# the unit split, on one thread per 32 KiB of weight the step streams (4*Hp*H*itemsize bytes once
# per 4 rows), at most one per unit block, and on 1 thread below 128 KiB per step: a barrier per
# step costs ~1-2 us, more than a small step saves by splitting (on a 16-core Xeon, B=1 H=64 ran
# 0.11 ms on 1 thread and 0.15-0.16 ms on 2-16). Else the batch split on up to B threads, when
# that is more threads.
TEAMS = [  # (B, H, dtype, teams for num_threads = 1, 2, 3, 4, 64)
    (1, 64, np.float32, (1, 1, 1, 1, 1)),  # 64 KiB per step: not worth a barrier
    (1, 64, np.float64, (1, 2, 3, 4, 4)),  # 128 KiB per step: 4 shares of 32 KiB
    (1, 100, np.float32, (1, 2, 3, 4, 5)),  # 4*112*100*4 = 175 KiB per step: 5 shares
    (1, 100, np.float64, (1, 2, 3, 4, 10)),  # 4*104*100*8 = 325 KiB: 10 shares (13 blocks)
    (1, 512, np.float32, (1, 2, 3, 4, 32)),  # 4 MiB per step: one thread per unit block
    (3, 5, np.float32, (1, 2, 3, 3, 3)),  # tiny step: the batch split, one row each
    (17, 5, np.float32, (1, 2, 3, 4, 17)),  # >= 4 rows each up to 4 threads; then 1 row each
    (16, 256, np.float32, (1, 2, 3, 4, 16)),  # workload c: batch split to 4, then units
    (8, 512, np.float32, (1, 2, 3, 4, 32)),  # 3 and 4 threads: < 4 rows each, unit split
]


@requires_openmp
@pytest.mark.parametrize("B,H,dtype,teams", TEAMS,
                         ids=[f"B{b}_H{h}_{np.dtype(d).name}" for b, h, d, _ in TEAMS])
def test_team_size_follows_the_work(B, H, dtype, teams):
    """Threads that start for num_threads = 1, 2, 3, 4, 64: never more than the work pays for,
    so more threads than a shape can use never slow it down."""
    rng = np.random.default_rng(1)
    model = fastlstm.LSTM(2, H, dtype=dtype, seed=0)
    x, hx, up = _data(rng, 3, B, 2, H, dtype, False)
    for nt, expected in zip((1, 2, 3, 4, 64), teams):
        assert _team_after(lambda: model(x, hx, num_threads=nt)) == expected, nt
        _, _, backprop = model.forward_train(x, hx, num_threads=nt)
        assert fastlstm.openmp_info()["last_num_threads"] == expected, nt
        assert _team_after(lambda: backprop(*up, num_threads=nt)) == expected, nt


@requires_openmp
@pytest.mark.parametrize("P,teams", [(16, (1, 1, 1, 1, 1)), (64, (1, 2, 3, 4, 10))])
def test_team_size_counts_the_projected_step(P, teams):
    """With a projection a step streams W_hh (4H x P) and W_hr (P x H): B=1, H=256 (16 unit
    blocks) streams 80 KiB with P=16 (one thread) and 320 KiB with P=64 (10 shares)."""
    rng = np.random.default_rng(3)
    model = fastlstm.LSTM(2, 256, proj_size=P, seed=0)
    x = rng.standard_normal((3, 1, 2)).astype(np.float32)
    up = (rng.standard_normal((3, 1, P)).astype(np.float32), None, None)
    for nt, expected in zip((1, 2, 3, 4, 64), teams):
        assert _team_after(lambda: model(x, num_threads=nt)) == expected, nt
        _, _, backprop = model.forward_train(x, num_threads=nt)
        assert _team_after(lambda: backprop(*up, num_threads=nt)) == expected, nt


@requires_openmp
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_no_team_is_larger_than_the_cpus_it_may_run_on(dtype):
    """With more threads than CPUs every barrier waits for a thread that is not running (8x
    slower on 2 cores): the team stops at cpu_limit(), and the results keep their bits."""
    rng = np.random.default_rng(5)
    model = fastlstm.LSTM(3, 512, dtype=dtype, seed=0)  # B=1, H=512: a unit block per thread
    x, hx, up = _data(rng, 3, 1, 3, 512, dtype, False)
    y = model(x, hx, num_threads=1)[0]
    _, _, backprop = model.forward_train(x, hx, num_threads=1)
    grads = backprop(*up, num_threads=1)
    assert _team_after(lambda: model(x, hx, num_threads=8)) == 8  # conftest: no limit
    for cap in (3, 2, 1):
        _kernels.cpu_limit(cap)
        default = fastlstm.openmp_info()["max_threads"]  # what None means, capped
        assert 1 <= default <= cap
        for nt in (None, 2, 8, 2**40):
            team = default if nt is None else min(nt, cap)
            assert _team_after(lambda: model(x, hx, num_threads=nt)) == team
            assert np.array_equal(model(x, hx, num_threads=nt)[0], y)
            _, _, backprop = model.forward_train(x, hx, num_threads=nt)
            assert fastlstm.openmp_info()["last_num_threads"] == team
            got = backprop(*up, num_threads=nt)
            assert fastlstm.openmp_info()["last_num_threads"] == team
            assert all(np.array_equal(got[k], grads[k]) for k in grads)
    for bad in (-1, 1.5, "2", None.__class__):
        with pytest.raises(ValueError, match="cpu_limit"):
            _kernels.cpu_limit(bad)


def test_usable_cpus_reads_the_affinity_mask_and_the_cgroup_quota(tmp_path):
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert _kernels.usable_cpus(str(tmp_path)) == affinity  # no cgroup files: the mask
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert _kernels.usable_cpus(str(tmp_path)) == affinity
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # half a CPU: still one thread
    assert _kernels.usable_cpus(str(tmp_path)) == 1
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # --cpus=1.5: two threads
    assert _kernels.usable_cpus(str(tmp_path)) == min(2, affinity)
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")  # cgroup v1, no quota
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert _kernels.usable_cpus(str(tmp_path)) == affinity
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    assert _kernels.usable_cpus(str(tmp_path)) == 1
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("garbage\n")
    assert _kernels.usable_cpus(str(tmp_path)) == affinity


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no affinity masks here")
def test_the_limit_at_import_is_the_affinity_mask():
    """A process pinned to one CPU (taskset -c 0) runs every call on one thread."""
    code = ("import numpy as np, fastlstm; from fastlstm import _kernels as k;"
            "m = fastlstm.LSTM(3, 512, seed=0); m(np.ones((2, 1, 3), np.float32), num_threads=4);"
            "print(k.cpu_limit(), fastlstm.openmp_info()['last_num_threads'])")
    cpu = min(os.sched_getaffinity(0))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))
    assert out.stdout.split() == ["1", "1"]


FORK_CHILD = """
import os, signal, sys, numpy as np, fastlstm
from fastlstm import _kernels as k
k.cpu_limit(0); k.cold_teams(False); k.crowded(0, enabled=False)  # the teams asked for
m = fastlstm.LSTM(256, 512, seed=0)  # batch 1: a unit split, 2 threads
x = np.random.default_rng(0).standard_normal((20, 1, 256)).astype(np.float32)
y = m(x, num_threads={parent_threads})[0]
parent = fastlstm.openmp_info()["last_num_threads"]
yt, _, backprop = m.forward_train(x, num_threads=1)
g = backprop(np.ones_like(y), num_threads=1)
pid = os.fork()
if pid == 0:
    signal.alarm(60)  # a hang ends the child: the parent then sees a signal status
    for _ in range(20):  # a stream of calls (a lone one may slip through)
        assert np.array_equal(m(x, num_threads=2)[0], y)
        child = fastlstm.openmp_info()["last_num_threads"]
        y2, _, back2 = m.forward_train(x, num_threads=2)
        g2 = back2(np.ones_like(y2), num_threads=2)
        assert np.array_equal(y2, y) and all(np.array_equal(g[key], g2[key]) for key in g)
    print(parent, child, len(k.thread_fpmodes(2)))
    sys.stdout.flush()
    os._exit(0)
_, status = os.waitpid(pid, 0)
sys.exit(status)
"""


@requires_openmp
@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX-only")
@pytest.mark.parametrize("parent_threads", [2, 1])
def test_a_fork_child_runs_after_the_parent_ran_teams(parent_threads):
    """GNU libgomp's thread pool does not survive fork(): a child's team of 2+ threads, after
    the parent had run one, waited forever (multiprocessing's default start method on Linux).
    Such a child runs every call on one thread, with the same bits; a child forked before any
    team ran keeps its teams."""
    out = subprocess.run([sys.executable, "-c", FORK_CHILD.format(parent_threads=parent_threads)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    child = "1 1" if parent_threads == 2 else "2 2"  # the child's team, thread_fpmodes(2)'s
    assert out.stdout.split() == [str(parent_threads)] + child.split()


POOL_TIMEOUT = 120  # seconds: a hung worker fails the test instead of blocking the run


@pytest.mark.parametrize("method", ["spawn", "forkserver", "fork"])
def test_pools_by_every_start_method_give_the_parents_bits(method, monkeypatch):
    """A multiprocessing Pool started after the parent ran a 2-thread call: its workers'
    2-thread calls (inference, training forward, backward; the model pickled to them) give the
    parent's bits. spawn and forkserver workers are fresh processes and run teams of 2; fork
    workers run one thread (libgomp's pool does not survive fork), as docs/threads.md says."""
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method!r} start method here")
    jobs = mp_workers.jobs()
    expected = [mp_workers.run(*job, num_threads=2) for job in jobs]
    if fastlstm.openmp_enabled():
        assert expected[0]["teams"] == [2, 2, 2]  # an OpenMP team has run in this process
    # a spawned child rebuilds sys.path from its parent's, and the forkserver from its own at
    # its start; PYTHONPATH makes `mp_workers` and this fastlstm importable either way
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastlstm.__file__)))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [here, root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    ctx = multiprocessing.get_context(method)
    tasks = [job + (2,) for job in jobs] * 2  # each job twice, over 2 workers
    with ctx.Pool(2, initializer=mp_workers.init_worker) as pool:
        results = pool.starmap_async(mp_workers.run, tasks).get(timeout=POOL_TIMEOUT)
    assert {r["pid"] for r in results}.isdisjoint({os.getpid()})
    for k, got in enumerate(results):
        assert got["fastlstm"] == fastlstm.__file__
        _assert_bitwise(expected[k % len(jobs)]["arrays"], got["arrays"], f"{method} task {k}")
        if fastlstm.openmp_enabled() and k % len(jobs) == 0:
            assert got["teams"] == ([1, 1, 1] if method == "fork" else [2, 2, 2]), got["teams"]


@pytest.fixture
def cold_teams_on():
    """The cold-team policy on (conftest turns it off), with every setting restored after."""
    saved = _kernels.cold_teams()
    if not _kernels.cold_teams(True)[0]:
        pytest.skip("this build has no cold-team policy (MSVC: every team starts when asked)")
    yield
    _kernels.cold_teams(*saved)


@requires_openmp
@pytest.mark.parametrize("train", [False, True], ids=["inference", "training"])
def test_a_sleeping_team_starts_only_when_the_work_pays_for_its_wake_up(cold_teams_on, train):
    """After the calling thread's team has idled (> 1 ms), calls run on one thread until the
    work of their burst (calls in quick succession) reaches twice the wake-up measured for that
    idle time; with no measurement yet the team starts and measures; a team that just ran
    starts whatever it costs. Results are bitwise the same on every path."""
    rng = np.random.default_rng(0)
    model = fastlstm.LSTM(3, 100, seed=0)  # B=1: two unit shares at num_threads=2
    x, hx, up = _data(rng, 4, 1, 3, 100, np.float32, False)

    def run():
        if not train:
            return model(x, hx, num_threads=2)[0], fastlstm.openmp_info()["last_num_threads"]
        out, _, backprop = model.forward_train(x, hx, num_threads=2)
        teams = [fastlstm.openmp_info()["last_num_threads"]]
        grads = backprop(*up, num_threads=2)
        teams.append(fastlstm.openmp_info()["last_num_threads"])
        return np.concatenate([out.ravel()] + [g.ravel() for g in grads.values()]), max(teams)

    expected, _ = run()
    _kernels.cold_teams(wake_costs=[1.0] * 8)  # every wake-up "costs" a second
    time.sleep(0.02)
    for _ in range(2):  # no team ran, so the team stays asleep
        result, team = run()
        assert team == 1
        assert np.array_equal(result, expected)
    # after >= 20 ms idle the bucket is [16, 32) ms or later; unmeasured there: start, measure
    _kernels.cold_teams(wake_costs=[1.0] * 4 + [0.0] * 4)
    time.sleep(0.02)
    result, team = run()
    assert team == 2
    assert np.array_equal(result, expected)
    costs = _kernels.cold_teams()[1]
    assert costs[:4] == [1.0] * 4 and any(cost > 0 for cost in costs[4:])
    # and the bucket is the idle time's: the same sleep with only [1, 16) ms unmeasured stays 1
    _kernels.cold_teams(wake_costs=[0.0] * 4 + [1.0] * 4)
    time.sleep(0.02)
    assert run()[1] == 1
    # right after a team ran it is awake, whatever a wake-up costs (each try starts the team
    # first: a try that a pause > 1 ms made cold must not spoil the next)
    warm = []
    for _ in range(5):
        _kernels.cold_teams(wake_costs=[0.0] * 8)
        run()
        _kernels.cold_teams(wake_costs=[1.0] * 8)
        warm.append(run()[1])
    assert 2 in warm
    # a burst: each call's estimated work is ~11 us (forward) or ~33 us (training), so a 20 us
    # wake-up is paid for (40 us) by the burst's 4th or 2nd call, not its first
    _kernels.cold_teams(wake_costs=[20e-6] * 8)
    time.sleep(0.02)
    burst = [run() for _ in range(20)]
    assert burst[0][1] == 1
    assert any(team == 2 for _, team in burst)
    assert all(np.array_equal(result, expected) for result, _ in burst)
    for bad in ([0.0], [float("inf")] * 8, [-1.0] * 8):
        with pytest.raises(ValueError, match="8 values"):
            _kernels.cold_teams(wake_costs=bad)


@requires_openmp
def test_split_thresholds_at_zero_give_one_thread_per_unit_block(split_policy):
    """What the every_split determinism runs rely on: B=1 H=64 (4 unit blocks) runs 4 threads."""
    model = fastlstm.LSTM(2, 64, seed=0)
    x = np.ones((3, 1, 2), np.float32)
    team = _team_after(lambda: model(x, num_threads=64))
    assert team == (4 if split_policy == "every_split" else 1)


@requires_openmp
@pytest.mark.parametrize("B,H", [(4, 20), (1, 100), (1, 5), (8, 64)])
def test_num_threads_none_uses_max_threads(B, H):
    rng = np.random.default_rng(2)
    model = fastlstm.LSTM(2, H, seed=0)
    x, hx, up = _data(rng, 3, B, 2, H, np.float32, False)
    expected = _team_after(lambda: model(x, hx, num_threads=fastlstm.openmp_info()["max_threads"]))
    assert _team_after(lambda: model(x, hx)) == expected
    _, _, backprop = model.forward_train(x, hx)
    assert fastlstm.openmp_info()["last_num_threads"] == expected
    assert _team_after(lambda: backprop(*up)) == expected


def test_last_num_threads_is_per_python_thread():
    """A call in another Python thread does not change what this thread reports."""
    model = fastlstm.LSTM(2, 5, seed=0)
    model(np.zeros((2, 1, 2), np.float32), num_threads=1)
    assert fastlstm.openmp_info()["last_num_threads"] == 1
    seen = {}

    def other():
        seen["before"] = fastlstm.openmp_info()["last_num_threads"]
        model(np.zeros((2, 4, 2), np.float32), num_threads=4)
        seen["after"] = fastlstm.openmp_info()["last_num_threads"]

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert seen["before"] is None
    assert seen["after"] == (4 if fastlstm.openmp_enabled() else 1)
    assert fastlstm.openmp_info()["last_num_threads"] == 1


def test_without_openmp_every_call_is_one_thread():
    if fastlstm.openmp_enabled():
        pytest.skip("built with OpenMP")
    model = fastlstm.LSTM(2, 100, seed=0)
    model(np.zeros((2, 4, 2), np.float32), num_threads=4)
    assert fastlstm.openmp_info()["last_num_threads"] == 1


# ------------------------------------------------------------------------------------------------
# Batch independence: a row in a batch equals that sequence alone


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
@pytest.mark.parametrize("B,H", [(5, 100), (17, 5), (3, 40)])
def test_each_batch_row_equals_that_sequence_alone(dtype, batch_first, B, H):
    T, I = 6, 4
    rng = np.random.default_rng(31)
    model = fastlstm.LSTM(I, H, batch_first=batch_first, dtype=dtype, seed=4)
    x, (h0, c0), (gy, gh, gc) = _data(rng, T, B, I, H, dtype, batch_first)
    bax = 0 if batch_first else 1  # batch axis of x / output
    alone = []
    for b in range(B):
        xb = np.take(x, [b], axis=bax)
        hxb = (h0[:, b:b + 1], c0[:, b:b + 1])
        nt = 1 + b % 2  # B=1 runs the unit split with 2 threads when H > one block
        yb, (hb, cb) = model(xb, hxb, num_threads=nt)
        ybt, _, bpb = model.forward_train(xb, hxb, num_threads=nt)
        assert np.array_equal(yb, ybt)
        gb = bpb(np.take(gy, [b], axis=bax), gh[:, b:b + 1], gc[:, b:b + 1], num_threads=nt)
        alone.append((yb, hb, cb, gb))
    for nt in (1, 2, 4):
        y, (h, c) = model(x, (h0, c0), num_threads=nt)
        yt, _, backprop = model.forward_train(x, (h0, c0), num_threads=nt)
        assert np.array_equal(y, yt)
        g = backprop(gy, gh, gc, num_threads=nt)
        for b, (yb, hb, cb, gb) in enumerate(alone):
            where = f"row {b} of {B}, num_threads={nt}"
            assert np.array_equal(np.take(y, [b], axis=bax), yb), where
            assert np.array_equal(h[:, b:b + 1], hb), where
            assert np.array_equal(c[:, b:b + 1], cb), where
            assert np.array_equal(np.take(g["x"], [b], axis=bax), gb["x"]), where
            assert np.array_equal(g["h0"][:, b:b + 1], gb["h0"]), where
            assert np.array_equal(g["c0"][:, b:b + 1], gb["c0"]), where


def test_batch_row_equals_unbatched_run():
    rng = np.random.default_rng(8)
    model = fastlstm.LSTM(3, 24, seed=1)
    x = rng.standard_normal((5, 4, 3)).astype(np.float32)
    y, (h, c) = model(x, num_threads=2)
    for b in range(4):
        yb, (hb, cb) = model(x[:, b], num_threads=2)
        assert np.array_equal(y[:, b], yb)
        assert np.array_equal(h[:, b], hb) and np.array_equal(c[:, b], cb)


# ------------------------------------------------------------------------------------------------
# Streaming: a sequence in chunks, carrying (h_n, c_n), equals one run


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
@pytest.mark.parametrize("B,H", [(1, 100), (3, 20), (17, 5)])
def test_streaming_in_two_chunks_equals_one_run(dtype, batch_first, B, H):
    T, I = 9, 3
    rng = np.random.default_rng(17)
    model = fastlstm.LSTM(I, H, batch_first=batch_first, dtype=dtype, seed=2)
    x, hx, _ = _data(rng, T, B, I, H, dtype, batch_first)
    tax = 1 if batch_first else 0  # time axis

    def steps(a, lo, hi):
        return a[:, lo:hi] if batch_first else a[lo:hi]

    y, (h, c) = model(x, hx, num_threads=2)
    for k in (0, 1, 2, 4, 8, 9):
        for nt in (1, 2):
            y1, (h1, c1) = model(steps(x, 0, k), hx, num_threads=nt)
            assert np.array_equal(y1, steps(y, 0, k)), f"out(x)[:{k}] != out(x[:{k}])"
            y2, (h2, c2) = model(steps(x, k, T), (h1, c1), num_threads=3 - nt)
            assert np.array_equal(np.concatenate([y1, y2], axis=tax), y), k
            assert np.array_equal(h2, h) and np.array_equal(c2, c), k
            # the same with the training forward
            y1t, (h1t, c1t), _ = model.forward_train(steps(x, 0, k), hx, num_threads=nt)
            y2t, (h2t, c2t), _ = model.forward_train(steps(x, k, T), (h1t, c1t), num_threads=nt)
            assert np.array_equal(np.concatenate([y1t, y2t], axis=tax), y), k
            assert np.array_equal(h2t, h) and np.array_equal(c2t, c), k


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_streaming_one_step_at_a_time(dtype):
    rng = np.random.default_rng(3)
    model = fastlstm.LSTM(5, 33, dtype=dtype, seed=9)
    x, hx, _ = _data(rng, 12, 2, 5, 33, dtype, False)
    y, (h, c) = model(x, hx)
    state, outs = hx, []
    for t in range(12):
        yt, state = model(x[t:t + 1], state, num_threads=1 + t % 3)
        outs.append(yt)
    assert np.array_equal(np.concatenate(outs), y)
    assert np.array_equal(state[0], h) and np.array_equal(state[1], c)
    # and unbatched, one step at a time
    y0, (h0n, c0n) = model(x[:, 0], (hx[0][:, 0], hx[1][:, 0]))
    state, outs = (hx[0][:, 0], hx[1][:, 0]), []
    for t in range(12):
        yt, state = model(x[t:t + 1, 0], state)
        outs.append(yt)
    assert np.array_equal(np.concatenate(outs), y0) and np.array_equal(y0, y[:, 0])
    assert np.array_equal(state[0], h0n) and np.array_equal(state[1], c0n)


@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
def test_long_inference_chunks_equal_training_forward(batch_first):
    """Inference projects the input a chunk of steps at a time (bounded memory); training does all
    steps at once. Shapes big enough that inference runs several chunks (here 32 steps, and 1
    step with a wide batch) must still agree bitwise with training and with the streamed run."""
    rng = np.random.default_rng(4)
    for T, B, I, H in [(40, 64, 8, 256), (3, 4200, 2, 64)]:
        model = fastlstm.LSTM(I, H, batch_first=batch_first, seed=5)
        x, hx, _ = _data(rng, T, B, I, H, np.float32, batch_first)
        y, (h, c) = model(x, hx, num_threads=2)
        yt, (ht, ct), _ = model.forward_train(x, hx, num_threads=1)
        assert np.array_equal(y, yt), (T, B, I, H)
        assert np.array_equal(h, ht) and np.array_equal(c, ct), (T, B, I, H)


# ------------------------------------------------------------------------------------------------
# Many Python threads on one model


def _serial_and_threaded(model, jobs, n_threads=8, calls=20):
    """Run every job once serially, then n_threads x calls times concurrently (all threads
    released together by a barrier); returns a list of failures."""
    expected = [job() for job in jobs]
    barrier = threading.Barrier(n_threads)
    failures = []

    def worker(k):
        try:
            barrier.wait()
            for i in range(calls):
                j = (k + i) % len(jobs)
                got = jobs[j]()
                for key in expected[j]:
                    if not np.array_equal(expected[j][key], got[key]):
                        failures.append((k, i, j, key))
        except Exception as exc:  # reported below, never swallowed
            failures.append((k, repr(exc)))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a worker thread hung"
    return failures


@pytest.mark.parametrize("cpus", [0, 2], ids=["no_cpu_limit", "2_cpus_shared"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_concurrent_calls_on_one_shared_model(dtype, cpus):
    """With or without the CPU limit (concurrent calls then share the CPUs: teams shrink while
    others run), the same bits as serial calls; afterwards no call counts as running."""
    _kernels.cpu_limit(cpus)  # (conftest restores it)
    rng = np.random.default_rng(6)
    model = fastlstm.LSTM(4, 40, dtype=dtype, seed=12)
    jobs = []
    for T, B, nt in [(5, 1, 2), (4, 3, 2), (6, 6, 1), (3, 2, None)]:
        x, hx, up = _data(rng, T, B, 4, 40, dtype, False)

        def infer(x=x, hx=hx, nt=nt):
            y, (h, c) = model(x, hx, num_threads=nt)
            return {"y": y, "h": h, "c": c}

        def train(x=x, hx=hx, up=up, nt=nt):
            y, (h, c), backprop = model.forward_train(x, hx, num_threads=nt)
            g = backprop(*up, num_threads=nt)
            return dict(g, y=y, h=h, c=c)

        jobs += [infer, train]
    failures = _serial_and_threaded(model, jobs)
    assert not failures, failures[:10]
    assert _kernels.busy_threads() == 0


@requires_openmp
def test_calls_run_on_one_thread_while_the_cpus_are_crowded():
    """A barrier waiter that yields its core and sees another thread take it marks the CPUs
    crowded for 0.1 s (another process's team, a busy loop: 2-thread calls there ran 10-300x
    slower than 1 thread); meanwhile calls run on one thread, with the same bits. Stood in for
    by crowded(seconds). (The cold-team policy stays off, as conftest has it.)"""
    if not _kernels.crowded(enabled=True)[0]:
        pytest.skip("this build has no crowded-CPU policy (MSVC: every team starts when asked)")
    rng = np.random.default_rng(9)
    model = fastlstm.LSTM(3, 512, seed=0)  # B=1, H=512: a team of 2 for num_threads=2
    x, hx, up = _data(rng, 3, 1, 3, 512, np.float32, False)
    expected = model(x, hx, num_threads=1)[0]
    _kernels.crowded(0)  # (each team-of-2 assertion follows a reset: a real detection could
    assert _team_after(lambda: model(x, hx, num_threads=2)) == 2  # only move later calls)
    assert _kernels.crowded(10)[1] > 9
    assert _team_after(lambda: model(x, hx, num_threads=2)) == 1
    assert np.array_equal(model(x, hx, num_threads=2)[0], expected)
    _, _, backprop = model.forward_train(x, hx, num_threads=2)
    assert fastlstm.openmp_info()["last_num_threads"] == 1
    assert _team_after(lambda: backprop(*up, num_threads=2)) == 1
    _kernels.crowded(10, enabled=False)
    assert _team_after(lambda: model(x, hx, num_threads=2)) == 2
    assert _kernels.crowded(0, enabled=True) == (True, 0.0)
    assert _team_after(lambda: model(x, hx, num_threads=2)) == 2
    for bad in (-1, 1e4, float("nan")):
        with pytest.raises(ValueError, match="crowded"):
            _kernels.crowded(bad)


@requires_openmp
def test_calls_running_at_once_share_the_cpus():
    """Two Python threads calling with num_threads=2 on 2 CPUs ran 4 threads on 2 cores, each
    step's barrier waiting for a thread with no core (160 ms for a 0.5 ms call): a call takes at
    most the CPUs that running calls leave, and at least one. A running call is stood in for by
    busy_threads(+n)."""
    if _kernels.busy_threads() != 0 or not _kernels.cold_teams(True)[0]:
        pytest.skip("this build does not count running calls (MSVC)")
    _kernels.cold_teams(False)
    _kernels.cpu_limit(2)
    rng = np.random.default_rng(8)
    model = fastlstm.LSTM(3, 512, seed=0)  # B=1, H=512: a team of 2 for num_threads=2
    x, hx, up = _data(rng, 3, 1, 3, 512, np.float32, False)
    expected = model(x, hx, num_threads=1)[0]
    for others, team in [(0, 2), (1, 1), (2, 1), (5, 1), (0, 2)]:
        _kernels.busy_threads(others)
        try:
            assert _team_after(lambda: model(x, hx, num_threads=2)) == team, others
            assert np.array_equal(model(x, hx, num_threads=2)[0], expected)
            _, _, backprop = model.forward_train(x, hx, num_threads=2)
            assert fastlstm.openmp_info()["last_num_threads"] == team, others
            assert _team_after(lambda: backprop(*up, num_threads=2)) == team, others
            assert _kernels.busy_threads() == others  # every call gave its threads back
        finally:
            _kernels.busy_threads(-others)


def test_concurrent_backprop_of_one_forward():
    """One backprop closure called from many threads at once."""
    rng = np.random.default_rng(7)
    model = fastlstm.LSTM(3, 20, seed=1)
    x, hx, up = _data(rng, 5, 2, 3, 20, np.float32, False)
    _, _, backprop = model.forward_train(x, hx)
    jobs = [lambda: backprop(*up, num_threads=2), lambda: backprop(up[0], num_threads=1)]
    failures = _serial_and_threaded(model, jobs)
    assert not failures, failures[:10]


# ------------------------------------------------------------------------------------------------
# Inputs are never written to


def _snap(*arrays):
    return [(a.shape, a.dtype, a.tobytes()) for a in arrays]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
@pytest.mark.parametrize("B,H", [(1, 100), (3, 16), (5, 5)])
def test_inputs_and_parameters_untouched(dtype, batch_first, B, H):
    rng = np.random.default_rng(10)
    model = fastlstm.LSTM(3, H, batch_first=batch_first, dtype=dtype, seed=1)
    # inputs already in the model dtype and contiguous, so the library could use them in place
    x, (h0, c0), (gy, gh, gc) = _data(rng, 4, B, 3, H, dtype, batch_first)
    params = {k: v.copy() for k, v in model.parameters().items()}
    before = _snap(x, h0, c0, gy, gh, gc)
    for nt in (1, 2):
        model(x, (h0, c0), num_threads=nt)
        assert _snap(x, h0, c0, gy, gh, gc) == before
        _, _, backprop = model.forward_train(x, (h0, c0), num_threads=nt)
        assert _snap(x, h0, c0, gy, gh, gc) == before
        backprop(gy, gh, gc, num_threads=nt)
        backprop(gy, num_threads=nt)
        backprop(None, gh, num_threads=nt)
        backprop(None, None, gc, num_threads=nt)
        assert _snap(x, h0, c0, gy, gh, gc) == before
    after = model.parameters()
    assert after.keys() == params.keys()
    for k in params:
        assert after[k].dtype == params[k].dtype and np.array_equal(after[k], params[k]), k


def test_returned_state_fed_back_is_not_modified():
    """(h_n, c_n) of one call used as hx of the next stays what it was."""
    model = fastlstm.LSTM(2, 16, seed=0)  # H a multiple of the block: h_n may be a view
    x = np.random.default_rng(0).standard_normal((3, 2, 2)).astype(np.float32)
    _, (h, c) = model(x)
    snap = _snap(h, c)
    model(x, (h, c))
    _, _, bp = model.forward_train(x, (h, c))
    bp(grad_h_n=h, grad_c_n=c)
    assert _snap(h, c) == snap


# ------------------------------------------------------------------------------------------------
# The floating-point environment


def _assert_no_ftz_daz():
    assert np.float64(5e-324) != 0
    assert np.finfo(np.float32).smallest_subnormal > 0
    tiny = np.float32(1e-45)
    assert tiny != 0
    assert tiny * np.float32(1) != 0, "float32 subnormal flushed: FTZ/DAZ is on in this process"
    assert np.float64(5e-324) * np.float64(1) != 0
    assert np.array([1e-45], np.float32).sum() > 0
    assert np.float32(1e-38) / np.float32(1e4) > 0  # producing a subnormal, not flushing it


def test_no_ftz_daz_after_import_and_calls():
    import fastlstm._kernels  # noqa: F401  (the extension itself is loaded)

    _assert_no_ftz_daz()
    for dtype in DTYPES:
        model = fastlstm.LSTM(3, 20, dtype=dtype, seed=0)
        x = np.random.default_rng(0).standard_normal((4, 3, 3)).astype(dtype)
        for nt in (1, 2):
            y, _ = model(x, num_threads=nt)
            _, _, bp = model.forward_train(x, num_threads=nt)
            bp(np.ones_like(y), num_threads=nt)
            _assert_no_ftz_daz()
    # and in another Python thread (OpenMP workers are not this thread, but the caller is)
    errors = []

    def other():
        try:
            fastlstm.LSTM(3, 20, seed=0)(np.ones((2, 2, 3), np.float32), num_threads=2)
            _assert_no_ftz_daz()
        except AssertionError as exc:
            errors.append(exc)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert not errors, errors



def test_kernel_threads_restore_their_floating_point_mode():
    """The kernels flush denormals inside their own threads (workers and caller) and restore
    each thread's mode before leaving: no OpenMP worker keeps FTZ/DAZ after a call."""
    from fastlstm import _kernels
    assert _kernels.thread_fpmodes(2) == [0] * len(_kernels.thread_fpmodes(2))
    for dtype in DTYPES:
        model = fastlstm.LSTM(8, 40, dtype=dtype, seed=0)
        x = np.random.default_rng(0).standard_normal((6, 5, 8)).astype(dtype)
        for nt in (1, 2, 3):
            y, _ = model(x, num_threads=nt)
            _, _, bp = model.forward_train(x, lengths=[6, 2, 5, 1, 3], num_threads=nt)
            bp(np.ones_like(y), num_threads=nt)
            modes = _kernels.thread_fpmodes(nt)
            assert modes == [0] * len(modes), f"FTZ/DAZ left on in a kernel thread: {modes}"
    _assert_no_ftz_daz()


@pytest.mark.parametrize("dtype", DTYPES)
def test_cell_state_decaying_into_subnormals_stays_accurate(dtype):
    """Forget gates near 0.2 and input gates near 0 shrink c by ~5x a step: within a few hundred
    steps it is subnormal, where the kernels flush (FTZ/DAZ) and NumPy does not. The difference
    is below the smallest normal number, so every result still matches the reference."""
    from fastlstm import reference
    I, H, T = 2, 16, 600
    model = fastlstm.LSTM(I, H, dtype=dtype, seed=0)
    p = {k: np.zeros_like(v) for k, v in model.parameters().items()}
    bias = np.zeros(4 * H, dtype)
    bias[:H] = -30.0          # i ~ 0
    bias[H:2 * H] = -1.4      # f ~ 0.2
    bias[3 * H:] = 30.0       # o ~ 1
    p["bias_ih_l0"] = bias
    model.set_parameters(**p)
    x = np.zeros((T, 1, I), dtype)
    c0 = np.ones((1, 1, H), dtype)
    y, (h, c) = model(x, (np.zeros((1, 1, H), dtype), c0))
    ref_y, _, ref_c = reference.forward(x, p["weight_ih_l0"], p["weight_hh_l0"], bias,
                                        None, None, c0[0])
    # per element: c is a product of t forget gates, so a few ulps per step where the values
    # are normal; at most the smallest normal number where the reference is subnormal
    eps, tiny = np.finfo(dtype).eps, np.finfo(dtype).tiny
    steps = np.arange(1, T + 1)[:, None, None]
    assert np.all(np.abs(y - ref_y) <= 4 * eps * steps * np.abs(ref_y) + tiny)
    assert np.all(np.abs(c[0] - ref_c) <= 4 * eps * T * np.abs(ref_c) + tiny)
    assert 0 < np.abs(ref_y[ref_y != 0]).min() < tiny  # the reference did go subnormal
