"""Parity with ``torch.nn.LSTM``: same weights (through ``LSTM.from_torch``), same inputs, same
upstream gradients -> same output, h_n, c_n and gradients of x, h0, c0 and every parameter.

Errors are ``max|ours - torch| / max|torch|`` per array: <= 2e-5 in float32 (both sides round
independently; observed ~1e-6) and <= 1e-10 in float64. This checks the conventions (gate order
i, f, g, o, parameter names and shapes, both biases, layouts, state shapes), not rounding.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fastlstm import LSTM  # noqa: E402
from helpers import scaled_err, user_shapes  # noqa: E402

TOL = {np.float32: 2e-5, np.float64: 1e-10}
TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}


def torch_run(module, x, hx, gy, gh, gc):
    """Forward and backward in torch; returns outputs and gradients as NumPy arrays, keyed like
    fastlstm's backprop. With hx None, h0 / c0 gradients come from explicit zero states (the
    same forward)."""
    dtype = module.weight_ih_l0.dtype
    xt = torch.tensor(x, dtype=dtype, requires_grad=True)
    if hx is None:
        s_shape = gh.shape
        h0 = torch.zeros(s_shape, dtype=dtype, requires_grad=True)
        c0 = torch.zeros(s_shape, dtype=dtype, requires_grad=True)
    else:
        h0 = torch.tensor(hx[0], dtype=dtype, requires_grad=True)
        c0 = torch.tensor(hx[1], dtype=dtype, requires_grad=True)
    module.zero_grad()
    y, (h_n, c_n) = module(xt, (h0, c0))
    if hx is None:  # the forward without hx agrees with the zero-state one
        y_none, (h_none, c_none) = module(xt)
        assert torch.equal(y_none, y) and torch.equal(h_none, h_n) and torch.equal(c_none, c_n)
    total = ((y * torch.tensor(gy, dtype=dtype)).sum() + (h_n * torch.tensor(gh, dtype=dtype)).sum()
             + (c_n * torch.tensor(gc, dtype=dtype)).sum())
    total.backward()
    out = {"output": y, "h_n": h_n, "c_n": c_n, "x": xt.grad, "h0": h0.grad, "c0": c0.grad}
    out.update({name: p.grad for name, p in module.named_parameters()})
    return {k: v.detach().numpy() for k, v in out.items()}


CASES = [
    # T, B, I, H, bias, batch_first, hx, unbatched
    (5, 3, 4, 7, True, False, True, False),
    (9, 2, 10, 17, True, True, True, False),
    (6, 4, 3, 16, False, False, False, False),
    (1, 1, 3, 5, True, True, False, False),
    (8, 5, 33, 40, False, True, True, False),
    (6, 1, 3, 9, True, False, True, True),
    (4, 1, 5, 20, False, True, False, True),
]


def case_id(c):
    T, B, I, H, bias, bf, hx, unb = c
    return (f"T{T}-B{B}-I{I}-H{H}" + ("" if bias else "-nobias") + ("-bf" if bf else "")
            + ("-hx" if hx else "-nohx") + ("-unbatched" if unb else ""))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_matches_torch(case, dtype):
    """Outputs, final states and every gradient equal torch.nn.LSTM's within TOL."""
    T, B, I, H, bias, batch_first, hx, unbatched = case
    rng = np.random.default_rng(T * 1000 + H)
    torch.manual_seed(T * 100 + H)
    module = torch.nn.LSTM(I, H, bias=bias, batch_first=batch_first,
                           dtype=TORCH_DTYPE[dtype])
    model = LSTM.from_torch(module)
    assert model.dtype == np.dtype(dtype) and model.batch_first == batch_first
    assert model.bias == bias and (model.input_size, model.hidden_size) == (I, H)
    x_shape, y_shape, s_shape = user_shapes(T, B, I, H, batch_first, unbatched)
    x = rng.standard_normal(x_shape).astype(dtype)
    state = tuple(rng.standard_normal((2,) + s_shape).astype(dtype)) if hx else None
    gy = rng.standard_normal(y_shape).astype(dtype)
    gh, gc = rng.standard_normal((2,) + s_shape).astype(dtype)

    expected = torch_run(module, x, state, gy, gh, gc)
    y, (h_n, c_n), backprop = model.forward_train(x, state)
    y_inf, (h_inf, c_inf) = model(x, state)
    ours = {"output": y, "h_n": h_n, "c_n": c_n}
    ours.update(backprop(gy, gh, gc))
    assert set(ours) == set(expected)
    for name, value in list(ours.items()) + [("output", y_inf), ("h_n", h_inf), ("c_n", c_inf)]:
        assert value.dtype == np.dtype(dtype), name
        err = scaled_err(value, expected[name])
        assert err <= TOL[dtype], f"{name}: error {err:.3g} vs torch > {TOL[dtype]}"


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("torch_dtype,np_dtype", [("float32", np.float32),
                                                  ("float64", np.float64),
                                                  ("float16", np.float32),
                                                  ("bfloat16", np.float32)])
def test_from_torch_keeps_dtype_and_layout(torch_dtype, np_dtype, batch_first):
    """from_torch: float64 stays float64, float32 stays float32, other float dtypes become
    float32; batch_first, sizes, bias and the parameter values are kept."""
    torch.manual_seed(0)
    module = torch.nn.LSTM(3, 6, batch_first=batch_first).to(getattr(torch, torch_dtype))
    model = LSTM.from_torch(module)
    assert model.dtype == np.dtype(np_dtype)
    assert model.batch_first is batch_first
    assert (model.input_size, model.hidden_size, model.bias) == (3, 6, True)
    params = model.parameters()
    assert set(params) == {name for name, _ in module.named_parameters()}
    for name, p in module.named_parameters():
        assert params[name].dtype == np.dtype(np_dtype)
        assert np.array_equal(params[name], p.detach().double().numpy().astype(np_dtype)), name


def test_from_torch_without_bias():
    """A bias-free torch LSTM gives a bias-free model with only the two weights."""
    module = torch.nn.LSTM(2, 4, bias=False, dtype=torch.float64)
    model = LSTM.from_torch(module)
    assert model.bias is False and model.dtype == np.float64
    assert set(model.parameters()) == {"weight_ih_l0", "weight_hh_l0"}


PROJ_CASES = [  # T, B, I, H, P, num_threads: several unit blocks and output panels, both splits
    (7, 1, 20, 100, 40, 4),
    (5, 3, 12, 300, 70, 3),
    (4, 17, 9, 64, 33, 2),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", PROJ_CASES, ids=[f"T{c[0]}-B{c[1]}-H{c[3]}-P{c[4]}-t{c[5]}"
                                                 for c in PROJ_CASES])
def test_projection_matches_torch(case, dtype):
    """A projected layer (proj_size) larger than test_layers' grid: outputs, states and every
    gradient, weight_hr's included, equal torch's within TOL, on several threads."""
    T, B, I, H, P, nt = case
    rng = np.random.default_rng(T * 1000 + H + P)
    torch.manual_seed(H + P)
    module = torch.nn.LSTM(I, H, proj_size=P, dtype=TORCH_DTYPE[dtype])
    model = LSTM.from_torch(module)
    assert model.proj_size == P
    x = rng.standard_normal((T, B, I)).astype(dtype)
    state = (rng.standard_normal((1, B, P)).astype(dtype),
             rng.standard_normal((1, B, H)).astype(dtype))
    gy = rng.standard_normal((T, B, P)).astype(dtype)
    gh = rng.standard_normal((1, B, P)).astype(dtype)
    gc = rng.standard_normal((1, B, H)).astype(dtype)
    expected = torch_run(module, x, state, gy, gh, gc)
    y, (h_n, c_n), backprop = model.forward_train(x, state, num_threads=nt)
    ours = {"output": y, "h_n": h_n, "c_n": c_n, **backprop(gy, gh, gc, num_threads=nt)}
    assert set(ours) == set(expected)
    errors = {name: scaled_err(value, expected[name]) for name, value in ours.items()}
    assert max(errors.values()) <= TOL[dtype], errors
