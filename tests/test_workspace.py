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


def grads_of(model, x, gy):
    _, _, backprop = model.forward_train(x)
    return backprop(gy)


def test_results_reuse_memory_nothing_references(model, rng):
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    gy = rng.standard_normal((T, B, H)).astype(np.float32)
    first = grads_of(model, x, gy)
    expected = {k: v.copy() for k, v in first.items()}
    assert first["x"].nbytes >= _workspace._MIN_BYTES  # (the weight gradients are just below)
    address = first["x"].__array_interface__["data"][0]
    del first
    again = grads_of(model, x, gy)
    assert again["x"].__array_interface__["data"][0] == address, \
        "a dropped result's memory should serve the next one"
    for k, v in expected.items():
        assert np.array_equal(again[k], v)


def test_stale_result_memory_never_reaches_a_result(model, rng):
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    gy = rng.standard_normal((T, B, H)).astype(np.float32)
    expected = grads_of(model, x, gy)
    _workspace.release_memory()
    for k in range(_workspace._MAX_RESULTS):  # NaN buffers no one holds, 1 to ~40 MiB
        buf = np.empty(int((1 << 20) * 1.27**k), np.uint8)
        buf[...] = 0xFF
        _workspace._free.results.append(buf)
    del buf
    got = grads_of(model, x, gy)
    for k, v in expected.items():
        assert np.array_equal(got[k], v) and not np.isnan(got[k]).any()


def test_a_view_the_caller_keeps_keeps_its_memory(model, rng):
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    gy = rng.standard_normal((T, B, H)).astype(np.float32)
    grads = grads_of(model, x, gy)
    views = {k: v[1::3] for k, v in grads.items()}  # views only: the arrays themselves go
    kept = {k: v.copy() for k, v in views.items()}
    held = memoryview(grads.pop("x"))  # and a memoryview alone
    held_copy = np.array(held)
    del grads
    for _ in range(3):
        grads_of(model, rng.standard_normal((T, B, I)).astype(np.float32), gy * 2)
    for k, v in views.items():
        assert np.array_equal(v, kept[k])
    assert np.array_equal(np.asarray(held), held_copy)


def test_release_memory_forgets_result_buffers(model, rng):
    grads_of(model, rng.standard_normal((T, B, I)).astype(np.float32),
             np.ones((T, B, H), np.float32))
    assert _workspace._free.results
    _workspace.release_memory()
    assert not _workspace._free.results
