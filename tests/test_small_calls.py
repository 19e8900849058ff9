"""The C entry for small inference calls (`SmallForward`) gives bitwise what the general path
gives, and hands everything it does not take (other layouts, dtypes, shapes, big calls) over."""
import numpy as np
import pytest

import fastlstm

DTYPES = [np.float32, np.float64]


def _general(model, x, hx=None, **kw):
    """The same call through the general path: a Fortran-order copy is not C-contiguous."""
    x = np.asfortranarray(x)
    if hx is not None:
        hx = tuple(np.asfortranarray(a) for a in hx)
    return model(x, hx, **kw)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("T,B,I,H", [(1, 1, 4, 4), (3, 2, 5, 7), (7, 3, 16, 33), (2, 5, 40, 24)])
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_small_path_is_bitwise_the_general_path(dtype, batch_first, T, B, I, H, with_state,
                                                bias):
    model = fastlstm.LSTM(I, H, bias=bias, batch_first=batch_first, dtype=dtype, seed=T + H)
    rng = np.random.default_rng(B)
    x = rng.standard_normal((B, T, I) if batch_first else (T, B, I)).astype(dtype)
    hx = None
    if with_state:
        hx = tuple(rng.standard_normal((1, B, H)).astype(dtype) for _ in range(2))
    before = [a.copy() for a in ([x] + list(hx or ()))]
    assert model._small(x, hx, None, batch_first) is not None  # the small path takes it
    y, (h, c) = model(x, hx)
    gy, (gh, gc) = _general(model, x, hx)
    assert y.shape == gy.shape and h.shape == (1, B, H) and c.shape == (1, B, H)
    assert np.array_equal(y, gy) and np.array_equal(h, gh) and np.array_equal(c, gc)
    assert all(np.array_equal(a, b) for a, b in zip(before, [x] + list(hx or ())))
    for nt in (1, 2):
        assert np.array_equal(model(x, hx, num_threads=nt)[0], y)
        assert fastlstm.openmp_info()["last_num_threads"] >= 1


def test_outputs_are_fresh_writable_arrays():
    model = fastlstm.LSTM(3, 4, seed=0)
    x = np.ones((2, 1, 3), np.float32)
    y1, (h1, c1) = model(x)
    y2, _ = model(x)
    assert y1.flags.writeable and y1.flags.owndata and not np.shares_memory(y1, y2)
    y1[...] = 7
    assert np.array_equal(model(x)[0], y2)


@pytest.mark.parametrize("case", [
    "wrong dtype", "unbatched", "non-contiguous", "wrong features", "state shape", "list state",
    "bad threads", "big", "empty", "multi-layer", "projected", "read-only x",
])
def test_everything_else_goes_the_general_way(case):
    """Each of these returns None from the small entry; the call still works or raises the
    general path's explained error."""
    I, H = 3, 4
    model = fastlstm.LSTM(I, H, seed=0)
    x = np.ones((2, 1, I), np.float32)
    hx, nt, expect_error = None, None, None
    if case == "wrong dtype":
        x = x.astype(np.float64)
    elif case == "unbatched":
        x = x[:, 0]
    elif case == "non-contiguous":
        x = np.ones((2, 2, I), np.float32)[:, ::2]
    elif case == "wrong features":
        x, expect_error = np.ones((2, 1, I + 1), np.float32), "features"
    elif case == "state shape":
        hx, expect_error = (np.zeros((1, H), np.float32),) * 2, "h0 must have shape"
    elif case == "list state":
        hx = [np.zeros((1, 1, H), np.float32)] * 2
    elif case == "bad threads":
        nt, expect_error = 0, "num_threads"
    elif case == "big":  # every step's gates exceed the small scratch
        x = np.ones((400, 64, I), np.float32)
    elif case == "empty":
        x = np.ones((0, 1, I), np.float32)
    elif case == "multi-layer":
        model = fastlstm.LSTM(I, H, num_layers=2, seed=0)
    elif case == "projected":
        model = fastlstm.LSTM(I, H, proj_size=2, seed=0)
    elif case == "read-only x":
        x.flags.writeable = False  # read-only input is fine for the small path too
    if model._small is not None and case != "read-only x":
        assert model._small(x, hx, nt, False) is None
    if expect_error:
        with pytest.raises((ValueError, TypeError), match=expect_error):
            model(x, hx, num_threads=nt)
    else:
        y, (h, c) = model(x, hx, num_threads=nt)
        assert y.shape[-1] == (model.proj_size or model.hidden_size)
