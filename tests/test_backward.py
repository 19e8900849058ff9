"""Backward pass (``forward_train`` + ``backprop``) against central finite differences in float64.

Loss = sum(gy * output) + sum(gh * h_n) + sum(gc * c_n) with fixed random upstream gradients
(a missing one counts as zero), so backprop(gy, gh, gc) must be its exact gradient. Each entry of
x, h0, c0 and of every parameter is moved by +-STEP (parameters through ``set_parameters``) and
``(L(+) - L(-)) / (2 STEP)`` compared with the returned gradient:
``max|grad - fd| / max|grad| <= RTOL`` for every gradient. With STEP = 1e-6 the truncation
error is ~1e-12 and the rounding error ~1e-10 relative, far below RTOL; a wrong term (a missed
first step, a gate swapped, a panel boundary mishandled) is off by O(1).

Sizes are small (T in {1, 3}, B in {1, 2}, I in {1, 3}, H in {1, 2, 17}): H = 17 spans three
float64 panels of 8 (the last one padded), H = 1 and 2 one mostly padded panel.
"""
import itertools

import numpy as np
import pytest

from fastlstm import LSTM, _kernels
from helpers import scaled_err, user_shapes

STEP = 1e-6
RTOL = 1e-6
PARAMS = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")


def make_problem(T, B, I, H, bias, *, hx=True, batch_first=False, unbatched=False, seed=0,
                 upstream=("gy", "gh", "gc")):
    """A float64 model, input, state and upstream gradients in the user's layout."""
    rng = np.random.default_rng(seed)
    model = LSTM(I, H, bias=bias, batch_first=batch_first, dtype=np.float64, seed=seed + 1)
    x_shape, y_shape, s_shape = user_shapes(T, B, I, H, batch_first, unbatched)
    x = rng.standard_normal(x_shape)
    state = (rng.standard_normal(s_shape), rng.standard_normal(s_shape)) if hx else None
    up = {"gy": rng.standard_normal(y_shape), "gh": rng.standard_normal(s_shape),
          "gc": rng.standard_normal(s_shape)}
    up = {k: (v if k in upstream else None) for k, v in up.items()}
    return model, x, state, up, s_shape


def loss(model, x, state, up):
    """The scalar loss whose gradient backprop(**up) returns."""
    y, (h_n, c_n) = model(x, state, num_threads=1)
    total = 0.0
    for g, v in ((up["gy"], y), (up["gh"], h_n), (up["gc"], c_n)):
        if g is not None:
            total += float(np.sum(g * v))
    return total


def finite_differences(model, x, state, up, s_shape):
    """Central differences of `loss` w.r.t. x, h0, c0 and every parameter (model restored)."""
    h0, c0 = state if state is not None else (np.zeros(s_shape), np.zeros(s_shape))
    fd = {}

    def sweep(name, base, evaluate):
        out = np.empty(base.shape)
        for idx in np.ndindex(base.shape):
            plus, minus = base.copy(), base.copy()
            plus[idx] += STEP
            minus[idx] -= STEP
            out[idx] = (evaluate(plus) - evaluate(minus)) / (2 * STEP)
        fd[name] = out

    sweep("x", x, lambda v: loss(model, v, (h0, c0), up))
    sweep("h0", h0, lambda v: loss(model, x, (v, c0), up))
    sweep("c0", c0, lambda v: loss(model, x, (h0, v), up))
    original = model.parameters()
    try:
        for name, value in original.items():
            sweep(name, value, lambda v, n=name: (model.set_parameters(**{n: v}),
                                                  loss(model, x, (h0, c0), up))[1])
            model.set_parameters(**{name: value})
    finally:
        model.set_parameters(**original)
    return fd


def check_against_fd(model, x, state, up, s_shape, num_threads=None):
    """backprop's gradients, every key, match central differences; returns the errors."""
    _, _, backprop = model.forward_train(x, state)
    grads = backprop(up["gy"], up["gh"], up["gc"], num_threads=num_threads)
    expected_keys = {"x", "h0", "c0", "weight_ih_l0", "weight_hh_l0"}
    if model.bias:
        expected_keys |= {"bias_ih_l0", "bias_hh_l0"}
    assert set(grads) == expected_keys
    fd = finite_differences(model, x, state, up, s_shape)
    errors = {}
    for name, g in grads.items():
        assert g.shape == fd[name].shape, name
        assert np.all(np.isfinite(g)), name
        errors[name] = scaled_err(g, fd[name])
        assert errors[name] <= RTOL, (f"d loss / d {name}: relative error {errors[name]:.3g} vs "
                                      f"finite differences (isa={_kernels.isa()})")
    # Both biases enter the gates the same way: equal gradients, but separate arrays.
    if model.bias:
        assert np.array_equal(grads["bias_ih_l0"], grads["bias_hh_l0"])
        assert not np.shares_memory(grads["bias_ih_l0"], grads["bias_hh_l0"])
    return errors


SHAPES = list(itertools.product((1, 3), (1, 2), (1, 3), (1, 2, 17)))


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("T,B,I,H", SHAPES, ids=[f"T{t}-B{b}-I{i}-H{h}" for t, b, i, h in SHAPES])
def test_all_upstream_grid(T, B, I, H, bias):
    """Every gradient matches finite differences with upstream gradient on output, h_n and c_n
    together, h0 and c0 given, on every small shape, with and without bias."""
    model, x, state, up, s_shape = make_problem(T, B, I, H, bias, seed=T + 10 * B + 100 * I + H)
    check_against_fd(model, x, state, up, s_shape)


@pytest.mark.parametrize("only", ["gy", "gh", "gc"])
@pytest.mark.parametrize("T,B,I,H,bias", [(3, 2, 3, 17, True), (1, 1, 1, 1, False),
                                          (3, 1, 3, 2, True)])
def test_each_upstream_alone(T, B, I, H, bias, only):
    """Upstream gradient on output alone, h_n alone and c_n alone (the others None) each give
    the gradient of that term only."""
    model, x, state, up, s_shape = make_problem(T, B, I, H, bias, seed=7, upstream=(only,))
    check_against_fd(model, x, state, up, s_shape)


@pytest.mark.parametrize("T,B,I,H,bias", [(3, 2, 3, 17, True), (1, 2, 1, 2, False)])
def test_batch_first(T, B, I, H, bias):
    """batch_first: x and its gradient are (B, T, I); states stay (1, B, H)."""
    model, x, state, up, s_shape = make_problem(T, B, I, H, bias, batch_first=True, seed=3)
    check_against_fd(model, x, state, up, s_shape)


@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
@pytest.mark.parametrize("hx", [True, False], ids=["hx", "no_hx"])
@pytest.mark.parametrize("T,I,H", [(3, 3, 17), (1, 1, 2)])
def test_unbatched(T, I, H, hx, batch_first):
    """Unbatched (T, I) input: gradients of x (T, I), h0 and c0 (1, H) match."""
    model, x, state, up, s_shape = make_problem(T, 1, I, H, True, hx=hx, unbatched=True,
                                                batch_first=batch_first, seed=4)
    check_against_fd(model, x, state, up, s_shape)


@pytest.mark.parametrize("T,B,I,H,bias", [(3, 2, 3, 17, False), (1, 1, 3, 2, True)])
def test_hx_omitted(T, B, I, H, bias):
    """Without hx, h0 = c0 = 0 and their gradients are still returned, and correct."""
    model, x, state, up, s_shape = make_problem(T, B, I, H, bias, hx=False, seed=5)
    check_against_fd(model, x, state, up, s_shape)


@pytest.mark.parametrize("only", [None, "gc"])
def test_every_isa(isa, only):
    """Every kernel variant: all gradients match finite differences (H = 17 crosses float64
    panels; B = 2 rows), with all upstream gradients and with c_n's alone."""
    upstream = ("gy", "gh", "gc") if only is None else (only,)
    model, x, state, up, s_shape = make_problem(3, 2, 3, 17, True, seed=6, upstream=upstream)
    check_against_fd(model, x, state, up, s_shape)
    model, x, state, up, s_shape = make_problem(3, 2, 1, 2, False, batch_first=True, seed=8,
                                                upstream=upstream)
    check_against_fd(model, x, state, up, s_shape)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_backprop_twice_is_identical(dtype):
    """backprop can be called again and gives bitwise the same gradients (its saved state is
    not consumed or overwritten), also after a different upstream gradient in between."""
    rng = np.random.default_rng(9)
    model = LSTM(3, 17, dtype=dtype, seed=2)
    x = rng.standard_normal((4, 2, 3))
    hx = tuple(rng.standard_normal((2, 1, 2, 17)))
    y, (h_n, c_n), backprop = model.forward_train(x, hx)
    gy = rng.standard_normal(y.shape)
    gh, gc = rng.standard_normal((2,) + h_n.shape)
    first = backprop(gy, gh, gc)
    other = backprop(None, gh, None)
    second = backprop(gy, gh, gc)
    assert set(first) == set(second)
    for k in first:
        assert np.array_equal(first[k], second[k]), k
    assert not np.array_equal(first["x"], other["x"])  # the call in between really differed


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_backprop_uses_parameters_of_forward(dtype):
    """Gradients use the parameters as they were at forward_train, even after set_parameters:
    bitwise the same as before the change, and different from a fresh forward_train."""
    rng = np.random.default_rng(10)
    model = LSTM(3, 5, dtype=dtype, seed=3)
    x = rng.standard_normal((4, 2, 3))
    y, _, backprop = model.forward_train(x)
    gy = rng.standard_normal(y.shape)
    before = backprop(gy)
    model.set_parameters(**{k: 2 * v + 0.1 for k, v in model.parameters().items()})
    after = backprop(gy)
    _, _, fresh_backprop = model.forward_train(x)
    fresh = fresh_backprop(gy)
    for k in before:
        assert np.array_equal(before[k], after[k]), k
    assert not np.allclose(before["x"], fresh["x"])
    assert not np.allclose(before["weight_hh_l0"], fresh["weight_hh_l0"])


def test_backprop_without_upstream_raises():
    """backprop needs at least one upstream gradient: none (or all None) is a ValueError."""
    model = LSTM(2, 3, dtype=np.float64, seed=0)
    _, _, backprop = model.forward_train(np.ones((2, 1, 2)))
    with pytest.raises(ValueError):
        backprop()
    with pytest.raises(ValueError):
        backprop(None, None, None)
    with pytest.raises(ValueError):
        backprop(grad_output=None, grad_h_n=None, grad_c_n=None, num_threads=1)
    assert set(backprop(grad_h_n=np.ones((1, 1, 3)))) >= {"x", "h0", "c0"}  # still usable


# ------------------------------------------------------------------------------------------------
# Projection (proj_size): h_t = W_hr (o * tanh(c_t)), the recurrence reads h_t (P wide)

PROJ_SHAPES = [(3, 2, 3, 17, 9), (3, 1, 1, 2, 1), (1, 2, 3, 17, 16)]


@pytest.mark.parametrize("T,B,I,H,P", PROJ_SHAPES,
                         ids=[f"T{t}-B{b}-I{i}-H{h}-P{p}" for t, b, i, h, p in PROJ_SHAPES])
def test_projection_against_fd(T, B, I, H, P):
    """Every gradient of a projected layer, weight_hr's included, against central differences.
    P = 9 spans a full and a padded float64 panel of 8, P = 16 two full ones, P = 1 one lane."""
    rng = np.random.default_rng(T * 100 + H + P)
    model = LSTM(I, H, proj_size=P, dtype=np.float64, seed=3)
    x = rng.standard_normal((T, B, I))
    state = (rng.standard_normal((1, B, P)), rng.standard_normal((1, B, H)))
    up = {"gy": rng.standard_normal((T, B, P)), "gh": rng.standard_normal((1, B, P)),
          "gc": rng.standard_normal((1, B, H))}
    _, _, backprop = model.forward_train(x, state)
    grads = backprop(up["gy"], up["gh"], up["gc"])
    assert set(grads) == {"x", "h0", "c0", "weight_ih_l0", "weight_hh_l0", "bias_ih_l0",
                          "bias_hh_l0", "weight_hr_l0"}
    fd = finite_differences(model, x, state, up, None)
    for name, g in grads.items():
        assert g.shape == fd[name].shape, name
        assert scaled_err(g, fd[name]) <= RTOL, (name, scaled_err(g, fd[name]))


@pytest.mark.parametrize("num_threads", [1, 3])
@pytest.mark.parametrize("B", [1, 5, 16])
def test_projection_matches_reference_float64(B, num_threads):
    """The projected kernels against the NumPy reference (plain float64 matmuls) to 1e-12, on
    several unit blocks and output panels (H = 100: 13 float64 blocks; P = 40: 5 panels), in
    both work splits (B = 1 and 5: units; 16: rows)."""
    from fastlstm import reference
    T, I, H, P = 6, 20, 100, 40
    rng = np.random.default_rng(B)
    model = LSTM(I, H, proj_size=P, dtype=np.float64, seed=5)
    w = {k[:-3]: v for k, v in model.parameters().items()}
    x = rng.standard_normal((T, B, I))
    h0, c0 = rng.standard_normal((1, B, P)), rng.standard_normal((1, B, H))
    gy, gh, gc = (rng.standard_normal(s) for s in ((T, B, P), (B, P), (B, H)))
    y, (h_n, c_n), backprop = model.forward_train(x, (h0, c0), num_threads=num_threads)
    grads = backprop(gy, gh[None], gc[None], num_threads=num_threads)
    ry, rh, rc, cache = reference.forward_train(
        x, w["weight_ih"], w["weight_hh"], w["bias_ih"], w["bias_hh"], h0[0], c0[0],
        weight_hr=w["weight_hr"])
    ref = reference.backward(cache, gy, gh, gc)
    ours = {"output": y, "h_n": h_n[0], "c_n": c_n[0], "x": grads["x"], "h0": grads["h0"][0],
            "c0": grads["c0"][0], **{k: grads[k + "_l0"] for k in w}}
    theirs = {"output": ry, "h_n": rh, "c_n": rc, **ref}
    errors = {k: scaled_err(ours[k], theirs[k]) for k in ours}
    assert max(errors.values()) <= 1e-12, errors
