"""Scratch reuse (fastlstm/_workspace.py): internal buffers of >= 1 MiB are reused from call to
call. These shapes are big enough to go through it; stale contents, including NaN, must never
reach a result, and nothing a caller holds may change when the memory is reused."""
import numpy as np
import pytest

from fastlstm import LSTM, _workspace

# every buffer is >= 1 MiB here (states 64*32*256*4 bytes = 2 MiB); H, I not multiples of 16
T, B, I, H = 64, 32, 250, 250


@pytest.fixture
def model():
    _workspace.release_memory()
    yield LSTM(I, H, seed=3)
    _workspace.release_memory()


def poison_free_list():
    """Replace this thread's free list by NaN-filled buffers, sizes 1 MiB to 40 MiB in steps of
    1.4x, so every request of these shapes is served stale NaN."""
    _workspace.release_memory()
    for k in range(_workspace._MAX_KEPT):
        buf = np.empty(int((1 << 20) * 1.4**k), np.uint8)
        buf.view(np.uint8)[...] = 0xFF  # all-ones bytes: NaN as float32 and float64
        _workspace.give(buf)


def run_all(model, x, hx, gy):
    out, (h_n, c_n) = model(x, hx)
    t_out, (t_h, t_c), backprop = model.forward_train(x, hx)
    grads = backprop(gy, t_h, t_c)
    return [out, h_n, c_n, t_out, t_h, t_c] + [grads[k] for k in sorted(grads)]


def test_stale_scratch_never_reaches_a_result(model, rng):
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    hx = tuple(rng.standard_normal((2, 1, B, H)).astype(np.float32))
    gy = rng.standard_normal((T, B, H)).astype(np.float32)
    fresh = run_all(model, x, hx, gy)
    assert _workspace._free.buffers, "these shapes should go through the free list"
    poison_free_list()
    reused = run_all(model, x, hx, gy)
    for a, b in zip(fresh, reused):
        assert np.array_equal(a, b) and not np.isnan(b).any()


def test_results_held_by_the_caller_do_not_change(model, rng):
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    gy = np.ones((T, B, H), np.float32)
    out, (h_n, c_n), backprop = model.forward_train(x)
    grads = backprop(gy)
    kept = [a.copy() for a in [out, h_n, c_n] + list(grads.values())]
    for _ in range(3):  # other calls, other data, through the same memory
        other = rng.standard_normal((T, B, I)).astype(np.float32)
        o, _, bp = model.forward_train(other)
        bp(gy)
        model(other)
    for a, b in zip(kept, [out, h_n, c_n] + list(grads.values())):
        assert np.array_equal(a, b)
    # and this forward's backprop still sees its own forward
    assert all(np.array_equal(grads[k], v) for k, v in backprop(gy).items())


def test_release_memory_empties_the_free_list(model, rng):
    model(rng.standard_normal((T, B, I)).astype(np.float32))
    assert _workspace._free.buffers
    _workspace.release_memory()
    assert not _workspace._free.buffers
