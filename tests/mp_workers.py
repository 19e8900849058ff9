"""What the multiprocessing workers of tests/test_threads.py run.

A spawned or forkserver worker unpickles these functions by module name, so they live in a module
of their own (not a test file, which would import pytest's fixtures), importable as `mp_workers`:
the test puts tests/ and the fastlstm it imports on the workers' PYTHONPATH.
"""
import os

import numpy as np

import fastlstm
from fastlstm import _kernels


def init_worker():
    """The teams asked for, as conftest's autouse fixture sets them in the parent: no CPU limit
    (a 1-CPU runner would otherwise run one thread), no cold-team or crowded-CPU policy."""
    _kernels.cpu_limit(0)
    _kernels.cold_teams(False)
    _kernels.crowded(0, enabled=False)


def jobs():
    """[(model, x, hx, lengths, upstream)]: the first makes a team of 2 at num_threads=2 (batch
    1, H=512: the unit split); the others a stacked bidirectional float64 model in the batch
    split, and a ragged projected batch."""
    rng = np.random.default_rng(18)
    out = []
    for (I, H, T, B, kwargs, ragged) in [
            (256, 512, 20, 1, dict(), False),
            (8, 40, 6, 9, dict(num_layers=2, bidirectional=True, dtype=np.float64), False),
            (5, 33, 7, 6, dict(proj_size=7, batch_first=True), True)]:
        model = fastlstm.LSTM(I, H, seed=T, **kwargs)
        P, D = model.proj_size or H, model.num_directions
        S = model.num_layers * D
        shape = (B, T) if model.batch_first else (T, B)
        x = rng.standard_normal(shape + (I,)).astype(model.dtype)
        hx = (rng.standard_normal((S, B, P)).astype(model.dtype),
              rng.standard_normal((S, B, H)).astype(model.dtype))
        lengths = rng.integers(0, T + 1, B) if ragged else None
        up = (rng.standard_normal(shape + (D * P,)).astype(model.dtype),
              rng.standard_normal((S, B, P)).astype(model.dtype),
              rng.standard_normal((S, B, H)).astype(model.dtype))
        out.append((model, x, hx, lengths, up))
    return out


def run(model, x, hx, lengths, up, num_threads):
    """Inference, training forward and backward: every array, the team each call ran, and
    which process and fastlstm ran them."""
    teams = []
    y, (h, c) = model(x, hx, lengths=lengths, num_threads=num_threads)
    teams.append(fastlstm.openmp_info()["last_num_threads"])
    yt, (ht, ct), backprop = model.forward_train(x, hx, lengths=lengths, num_threads=num_threads)
    teams.append(fastlstm.openmp_info()["last_num_threads"])
    grads = backprop(*up, num_threads=num_threads)
    teams.append(fastlstm.openmp_info()["last_num_threads"])
    arrays = {"y": y, "h": h, "c": c, "train.y": yt, "train.h": ht, "train.c": ct}
    arrays.update({"grad." + k: v for k, v in grads.items()})
    return {"arrays": arrays, "teams": teams, "pid": os.getpid(), "fastlstm": fastlstm.__file__}
