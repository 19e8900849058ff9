"""The C entries for small calls (`SmallForward` for inference, `SmallTrain` for forward_train
and its backprop) give bitwise what the general path gives, and hand everything they do not take
(other layouts, dtypes, shapes, big calls) over."""
import weakref

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
        assert model._small_train(x, hx, nt, False) is None
    if expect_error:
        with pytest.raises((ValueError, TypeError), match=expect_error):
            model(x, hx, num_threads=nt)
        with pytest.raises((ValueError, TypeError), match=expect_error):
            model.forward_train(x, hx, num_threads=nt)
    else:
        y, (h, c) = model(x, hx, num_threads=nt)
        assert y.shape[-1] == (model.proj_size or model.hidden_size)
        y2, _, backprop = model.forward_train(x, hx, num_threads=nt)
        assert np.array_equal(y2, y)
        assert backprop(grad_output=np.ones_like(y2))["x"].shape == x.shape


GRADS = ["output", "h_n", "c_n", "all"]


def _upstream(which, y, h, rng):
    """backprop's keyword arguments for `which` upstream gradient(s)."""
    kw = {}
    if which in ("output", "all"):
        kw["grad_output"] = rng.standard_normal(y.shape).astype(y.dtype)
    if which in ("h_n", "all"):
        kw["grad_h_n"] = rng.standard_normal(h.shape).astype(h.dtype)
    if which in ("c_n", "all"):
        kw["grad_c_n"] = rng.standard_normal(h.shape).astype(h.dtype)
    return kw


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("T,B,I,H", [(1, 1, 4, 4), (3, 2, 5, 7), (7, 3, 16, 33), (2, 5, 40, 24),
                                     (1, 1, 16, 16)])
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_small_training_is_bitwise_the_general_path(dtype, batch_first, T, B, I, H, with_state,
                                                    bias):
    """Every output and every gradient, with each upstream gradient alone and all together;
    (1, 1, 16, 16) has no padding, so dx and the weight gradients go straight into the results."""
    model = fastlstm.LSTM(I, H, bias=bias, batch_first=batch_first, dtype=dtype, seed=T + H)
    rng = np.random.default_rng(B)
    x = rng.standard_normal((B, T, I) if batch_first else (T, B, I)).astype(dtype)
    hx = None
    if with_state:
        hx = tuple(rng.standard_normal((1, B, H)).astype(dtype) for _ in range(2))
    before = [a.copy() for a in ([x] + list(hx or ()))]
    assert model._small_train(x, hx, None, batch_first) is not None  # the small path takes it
    y, (h, c), backprop = model.forward_train(x, hx)
    gy, (gh, gc), general_backprop = model.forward_train(
        np.asfortranarray(x), None if hx is None else tuple(np.asfortranarray(a) for a in hx))
    assert y.shape == gy.shape and h.shape == (1, B, H) and c.shape == (1, B, H)
    assert np.array_equal(y, gy) and np.array_equal(h, gh) and np.array_equal(c, gc)
    for which in GRADS:
        kw = _upstream(which, y, h, rng)
        kept = {k: v.copy() for k, v in kw.items()}
        grads = backprop(**kw)
        expected = general_backprop(**kw)
        assert list(grads) == list(expected)
        for name in expected:
            assert grads[name].shape == expected[name].shape, name
            assert grads[name].dtype == np.dtype(dtype), name
            assert np.array_equal(grads[name], expected[name]), (which, name)
        assert all(np.array_equal(kw[k], kept[k]) for k in kw)
        for nt in (1, 2):  # any number of calls, any thread count: the same gradients
            again = backprop(**kw, num_threads=nt)
            assert all(np.array_equal(again[k], grads[k]) for k in grads)
            assert fastlstm.openmp_info()["last_num_threads"] >= 1
    assert all(np.array_equal(a, b) for a, b in zip(before, [x] + list(hx or ())))


def test_small_backprop_takes_what_the_general_one_takes():
    """Upstream gradients as lists, strided views or another dtype are converted, as the general
    path converts them; the results are fresh arrays."""
    model = fastlstm.LSTM(3, 4, seed=0)
    x = np.random.default_rng(0).standard_normal((2, 1, 3)).astype(np.float32)
    y, (h, c), backprop = model.forward_train(x)
    assert model._small_train(x, None, None, False) is not None
    gy = np.random.default_rng(1).standard_normal(y.shape)
    expected = backprop(grad_output=gy.astype(np.float32))
    wide = np.zeros(y.shape[:-1] + (2 * y.shape[-1],))
    wide[..., ::2] = gy
    for given in (gy, gy.tolist(), wide[..., ::2]):
        grads = backprop(grad_output=given)
        assert all(np.array_equal(grads[k], expected[k]) for k in expected)
    again = backprop(grad_output=gy)
    assert all(not np.shares_memory(again[k], grads[k]) for k in grads)
    assert all(grads[k].flags.writeable for k in grads)
    ref = weakref.ref(backprop)  # as the general path's backprop function
    del backprop
    assert ref() is None


@pytest.mark.parametrize("kw, error, match", [
    (dict(), ValueError, "at least one of grad_output"),
    (dict(grad_output=np.ones((2, 1, 5), np.float32)), ValueError,
     r"grad_output must have the shape of output, \(2, 1, 4\)"),
    (dict(grad_h_n=np.ones((1, 4), np.float32)), ValueError,
     r"grad_h_n must have the shape of h_n, \(1, 1, 4\)"),
    (dict(grad_c_n=np.ones((1, 2, 4), np.float32)), ValueError, "grad_c_n must have the shape"),
    (dict(grad_h_n=np.ones((1, 1, 4)), grad_c_n="x"), (ValueError, TypeError), "grad_c_n"),
    (dict(grad_output=np.ones((2, 1, 4)), num_threads=0), ValueError, "num_threads"),
    (dict(grad_output=np.ones((2, 1, 4)), num_threads=1.5), TypeError, "num_threads"),
])
def test_small_backprop_explains_bad_upstream_gradients(kw, error, match):
    """The general path's explained errors, from the small path's backprop too."""
    model = fastlstm.LSTM(3, 4, seed=0)
    x = np.ones((2, 1, 3), np.float32)
    small = model.forward_train(x)[2]
    general = model.forward_train(np.asfortranarray(x))[2]
    for backprop in (small, general):
        with pytest.raises(error, match=match):
            backprop(**kw)
    assert small(grad_output=np.ones((2, 1, 4)))["x"].shape == x.shape  # still usable


def test_small_backprop_uses_the_parameters_of_its_forward():
    """Setting parameters after forward_train leaves that forward's backprop as it was."""
    model = fastlstm.LSTM(3, 4, seed=0)
    x = np.random.default_rng(0).standard_normal((2, 1, 3)).astype(np.float32)
    y, _, backprop = model.forward_train(x)
    before = backprop(grad_output=np.ones_like(y))
    params = model.parameters()
    model.set_parameters(weight_hh_l0=params["weight_hh_l0"] * 2,
                         weight_ih_l0=params["weight_ih_l0"] * 3)
    after = backprop(grad_output=np.ones_like(y))
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert not np.array_equal(model.forward_train(x)[2](grad_output=np.ones_like(y))["x"],
                              before["x"])
