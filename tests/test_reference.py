"""Tests of the NumPy reference LSTM (``fastlstm/reference.py``), the oracle
of the rest of the test suite: finite differences, edge cases, and (when
torch is installed) agreement with ``torch.nn.LSTM``."""

import itertools

import numpy as np
import pytest

from fastlstm import reference as ref
from helpers import scaled_err

GRAD_KEYS = ("x", "h0", "c0", "weight_ih", "weight_hh", "bias_ih", "bias_hh")


def make_params(rng, T, B, I, H, dtype=np.float64, bias=True):
    """Random LSTM arguments; weights a bit larger than PyTorch's init so the
    gates are far from linear."""
    k = 1.5 / np.sqrt(H)
    p = dict(
        x=rng.standard_normal((T, B, I)),
        weight_ih=rng.uniform(-k, k, (4 * H, I)),
        weight_hh=rng.uniform(-k, k, (4 * H, H)),
        bias_ih=rng.uniform(-k, k, 4 * H) if bias else None,
        bias_hh=rng.uniform(-k, k, 4 * H) if bias else None,
        h0=0.5 * rng.standard_normal((B, H)),
        c0=0.5 * rng.standard_normal((B, H)),
    )
    return {k: (None if v is None else v.astype(dtype)) for k, v in p.items()}


def upstream(rng, T, B, H, which, dtype=np.float64):
    """Random upstream gradients; ``which`` names the ones given."""
    shapes = dict(grad_output=(T, B, H), grad_h_n=(B, H), grad_c_n=(B, H))
    return {k: (rng.standard_normal(s).astype(dtype) if k in which else None)
            for k, s in shapes.items()}


def loss(params, grads):
    """The scalar whose gradient backward() computes for these upstream grads."""
    out, h_n, c_n = ref.forward(**params)
    total = 0.0
    for g, v in zip((grads["grad_output"], grads["grad_h_n"], grads["grad_c_n"]),
                    (out, h_n, c_n)):
        if g is not None:
            total += float(np.sum(g * v))
    return total


def finite_diff(params, grads, name, eps=1e-6):
    """Central differences of ``loss`` w.r.t. every entry of params[name]."""
    base = params[name]
    fd = np.zeros_like(base)
    for idx in np.ndindex(base.shape):
        vals = []
        for sign in (1.0, -1.0):
            p = dict(params)
            p[name] = base.copy()
            p[name][idx] += sign * eps
            vals.append(loss(p, grads))
        fd[idx] = (vals[0] - vals[1]) / (2 * eps)
    return fd


UPSTREAMS = [("grad_output", "grad_h_n", "grad_c_n"),
             ("grad_output",), ("grad_h_n",), ("grad_c_n",)]


# ----------------------------------------------------------------------------
# gradients vs finite differences (float64)
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("T,B,I,H", list(itertools.product((1, 3), (1, 2), (1, 3), (1, 2, 4))))
def test_backward_matches_finite_differences(T, B, I, H):
    rng = np.random.default_rng(1000 * T + 100 * B + 10 * I + H)
    params = make_params(rng, T, B, I, H)
    _, _, _, cache = ref.forward_train(**params)
    for which in UPSTREAMS:
        grads_in = upstream(rng, T, B, H, which)
        grads = ref.backward(cache, **grads_in)
        assert set(grads) == set(GRAD_KEYS)
        for name in GRAD_KEYS:
            fd = finite_diff(params, grads_in, name)
            assert grads[name].shape == params[name].shape
            assert grads[name].dtype == np.float64
            scale = max(np.max(np.abs(fd)), 1e-12)
            err = np.max(np.abs(grads[name] - fd)) / scale
            assert err <= 1e-6, (which, name, err)


@pytest.mark.parametrize("T,B,I,H", [(1, 1, 1, 1), (3, 2, 3, 4)])
def test_backward_no_bias_matches_finite_differences(T, B, I, H):
    rng = np.random.default_rng(7)
    params = make_params(rng, T, B, I, H, bias=False)
    _, _, _, cache = ref.forward_train(**params)
    grads_in = upstream(rng, T, B, H, UPSTREAMS[0])
    grads = ref.backward(cache, **grads_in)
    assert set(grads) == {"x", "h0", "c0", "weight_ih", "weight_hh"}
    for name in grads:
        fd = finite_diff(params, grads_in, name)
        assert np.max(np.abs(grads[name] - fd)) <= 1e-6 * max(np.max(np.abs(fd)), 1e-12)


@pytest.mark.parametrize("given", ["bias_ih", "bias_hh"])
def test_single_bias_counts_other_as_zero(given):
    rng = np.random.default_rng(3)
    T, B, I, H = 4, 2, 3, 5
    params = make_params(rng, T, B, I, H)
    zero = [k for k in ("bias_ih", "bias_hh") if k != given][0]
    one = dict(params, **{zero: None})
    both = dict(params, **{zero: np.zeros(4 * H)})
    for a, b in zip(ref.forward(**one), ref.forward(**both)):
        np.testing.assert_array_equal(a, b)
    g_in = upstream(rng, T, B, H, UPSTREAMS[0])
    g1 = ref.backward(ref.forward_train(**one)[3], **g_in)
    g2 = ref.backward(ref.forward_train(**both)[3], **g_in)
    assert set(g1) == set(GRAD_KEYS)
    for k in GRAD_KEYS:
        np.testing.assert_array_equal(g1[k], g2[k])
    np.testing.assert_array_equal(g1["bias_ih"], g1["bias_hh"])


def test_long_sequence_uses_same_math():
    """Long enough for the transposed-weight copy path; compare against
    the step-by-step definition."""
    rng = np.random.default_rng(11)
    T, B, I, H = 20, 5, 3, 6
    p = make_params(rng, T, B, I, H)
    out, h_n, c_n = ref.forward(**p)
    h, c = p["h0"], p["c0"]
    sig = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    for t in range(T):
        z = p["x"][t] @ p["weight_ih"].T + p["bias_ih"] + h @ p["weight_hh"].T + p["bias_hh"]
        i, f, g, o = np.split(z, 4, axis=1)
        c = sig(f) * c + sig(i) * np.tanh(g)
        h = sig(o) * np.tanh(c)
        assert scaled_err(out[t], h) <= 1e-13
    assert scaled_err(h_n, h) <= 1e-13 and scaled_err(c_n, c) <= 1e-13
    # forward_train agrees with forward exactly
    out2, h2, c2, _ = ref.forward_train(**p)
    for a, b in ((out, out2), (h_n, h2), (c_n, c2)):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------
# dtypes, defaults, no mutation
# ----------------------------------------------------------------------------
def test_float32_forward_close_to_float64():
    rng = np.random.default_rng(5)
    p64 = make_params(rng, 30, 4, 16, 32)
    p32 = {k: v.astype(np.float32) for k, v in p64.items()}
    for a, b in zip(ref.forward(**p32), ref.forward(**p64)):
        assert a.dtype == np.float32
        assert scaled_err(a, b) <= 1e-5


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_output_dtype_follows_x_and_weights_are_cast(dtype):
    rng = np.random.default_rng(6)
    p = make_params(rng, 3, 2, 4, 5)  # float64 weights and states
    p["x"] = p["x"].astype(dtype)
    out, h_n, c_n, cache = ref.forward_train(**p)
    grads = ref.backward(cache, grad_output=np.ones(out.shape))
    for a in (out, h_n, c_n, *grads.values()):
        assert a.dtype == dtype


def test_rejects_other_dtypes_and_bad_shapes():
    rng = np.random.default_rng(8)
    p = make_params(rng, 2, 2, 3, 4)
    with pytest.raises(TypeError):
        ref.forward(**dict(p, x=p["x"].astype(np.float16)))
    with pytest.raises(ValueError):
        ref.forward(**dict(p, weight_ih=p["weight_ih"][:, :2]))
    with pytest.raises(ValueError):
        ref.forward(**dict(p, weight_hh=p["weight_hh"][:-1]))
    with pytest.raises(ValueError):
        ref.forward(**dict(p, bias_hh=p["bias_hh"][:-1]))
    with pytest.raises(ValueError):
        ref.forward(**dict(p, h0=p["h0"][:1]))
    with pytest.raises(ValueError):
        ref.forward(**dict(p, x=p["x"][0]))
    _, _, _, cache = ref.forward_train(**p)
    with pytest.raises(ValueError):
        ref.backward(cache)
    with pytest.raises(ValueError):
        ref.backward(cache, grad_output=np.ones((2, 2, 5)))


@pytest.mark.parametrize("T,B", [(3, 2), (40, 4)])
def test_non_contiguous_inputs(T, B):
    """Strided / Fortran-ordered arguments give the same results."""
    rng = np.random.default_rng(16)
    I, H = 3, 4
    p = make_params(rng, T, B, I, H)
    odd = dict(
        x=np.asfortranarray(p["x"]),
        weight_ih=np.asfortranarray(p["weight_ih"]),
        weight_hh=np.repeat(p["weight_hh"], 2, axis=1)[:, ::2],
        bias_ih=np.repeat(p["bias_ih"], 3)[::3],
        bias_hh=p["bias_hh"],
        h0=np.asfortranarray(p["h0"]),
        c0=np.repeat(p["c0"], 2, axis=0)[::2],
    )
    for k in p:
        np.testing.assert_array_equal(odd[k], p[k])
    g_in = upstream(rng, T, B, H, UPSTREAMS[0])
    out1, h1, c1, cache1 = ref.forward_train(**p)
    out2, h2, c2, cache2 = ref.forward_train(**odd)
    for a, b in ((out1, out2), (h1, h2), (c1, c2)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-14)
    g1 = ref.backward(cache1, **g_in)
    g2 = ref.backward(cache2, **{k: np.asfortranarray(v) for k, v in g_in.items()})
    for k in GRAD_KEYS:
        np.testing.assert_allclose(g1[k], g2[k], rtol=0, atol=1e-13)


def test_default_states_are_zeros():
    rng = np.random.default_rng(9)
    T, B, I, H = 4, 3, 2, 5
    p = make_params(rng, T, B, I, H)
    none = dict(p, h0=None, c0=None)
    zeros = dict(p, h0=np.zeros((B, H)), c0=np.zeros((B, H)))
    for a, b in zip(ref.forward(**none), ref.forward(**zeros)):
        np.testing.assert_array_equal(a, b)
    g_in = upstream(rng, T, B, H, UPSTREAMS[0])
    g1 = ref.backward(ref.forward_train(**none)[3], **g_in)
    g2 = ref.backward(ref.forward_train(**zeros)[3], **g_in)
    for k in GRAD_KEYS:
        np.testing.assert_array_equal(g1[k], g2[k])


@pytest.mark.parametrize("T,B", [(3, 2), (40, 4)])  # second one: transposed-copy path
def test_inputs_not_mutated_and_outputs_fresh(T, B):
    rng = np.random.default_rng(10)
    I, H = 3, 4
    p = make_params(rng, T, B, I, H, dtype=np.float32)
    g_in = upstream(rng, T, B, H, UPSTREAMS[0], dtype=np.float32)
    before = {k: v.tobytes() for k, v in {**p, **g_in}.items()}
    out, h_n, c_n = ref.forward(**p)
    out2, h_n2, c_n2, cache = ref.forward_train(**p)
    grads = ref.backward(cache, **g_in)
    after = {k: v.tobytes() for k, v in {**p, **g_in}.items()}
    assert before == after
    results = [out, h_n, c_n, out2, h_n2, c_n2, *grads.values()]
    for r in results:
        for v in {**p, **g_in}.values():
            assert not np.shares_memory(r, v)
    # h_n / c_n are independent of output and of each other
    assert not np.shares_memory(h_n, out) and not np.shares_memory(h_n2, out2)
    assert not np.shares_memory(grads["bias_ih"], grads["bias_hh"])


def test_backward_twice_gives_identical_results():
    rng = np.random.default_rng(12)
    T, B, I, H = 5, 3, 4, 6
    p = make_params(rng, T, B, I, H)
    _, _, _, cache = ref.forward_train(**p)
    g_in = upstream(rng, T, B, H, UPSTREAMS[0])
    g1 = ref.backward(cache, **g_in)
    g2 = ref.backward(cache, **g_in)
    for k in GRAD_KEYS:
        np.testing.assert_array_equal(g1[k], g2[k])
        assert not np.shares_memory(g1[k], g2[k])


# ----------------------------------------------------------------------------
# edge cases: empty sequence, empty batch, size-1 dimensions
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_empty_sequence(dtype):
    rng = np.random.default_rng(13)
    B, I, H = 3, 4, 5
    p = make_params(rng, 0, B, I, H, dtype=dtype)
    out, h_n, c_n, cache = ref.forward_train(**p)
    assert out.shape == (0, B, H) and out.dtype == dtype
    np.testing.assert_array_equal(h_n, p["h0"])
    np.testing.assert_array_equal(c_n, p["c0"])
    assert not np.shares_memory(h_n, p["h0"]) and not np.shares_memory(c_n, p["c0"])
    out_f, h_f, c_f = ref.forward(**p)
    assert out_f.shape == (0, B, H)
    np.testing.assert_array_equal(h_f, p["h0"])
    np.testing.assert_array_equal(c_f, p["c0"])

    g_in = upstream(rng, 0, B, H, UPSTREAMS[0], dtype=dtype)
    grads = ref.backward(cache, **g_in)
    assert grads["x"].shape == (0, B, I)
    for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        assert grads[k].shape == p[k].shape
        assert not np.any(grads[k])
    np.testing.assert_array_equal(grads["h0"], g_in["grad_h_n"])
    np.testing.assert_array_equal(grads["c0"], g_in["grad_c_n"])
    only_c = ref.backward(cache, grad_c_n=g_in["grad_c_n"])
    assert not np.any(only_c["h0"])
    np.testing.assert_array_equal(only_c["c0"], g_in["grad_c_n"])
    # the zero-state default also works with T == 0
    _, h0, c0 = ref.forward(**dict(p, h0=None, c0=None))
    assert h0.shape == c0.shape == (B, H) and not np.any(h0) and not np.any(c0)


def test_empty_batch():
    rng = np.random.default_rng(14)
    T, I, H = 3, 4, 5
    p = make_params(rng, T, 0, I, H)
    out, h_n, c_n, cache = ref.forward_train(**p)
    assert out.shape == (T, 0, H) and h_n.shape == (0, H) and c_n.shape == (0, H)
    grads = ref.backward(cache, grad_output=np.zeros((T, 0, H)))
    expect = dict(x=(T, 0, I), h0=(0, H), c0=(0, H), weight_ih=(4 * H, I),
                  weight_hh=(4 * H, H), bias_ih=(4 * H,), bias_hh=(4 * H,))
    for k, shape in expect.items():
        assert grads[k].shape == shape
        assert not np.any(grads[k])
    assert ref.forward(**p)[0].shape == (T, 0, H)


# ----------------------------------------------------------------------------
# agreement with torch.nn.LSTM
# ----------------------------------------------------------------------------
def _torch_run(torch, p, g_in, bias):
    """Forward + backward through torch.nn.LSTM with our weights."""
    T, B, I = p["x"].shape
    H = p["weight_hh"].shape[1]
    dtype = torch.float64 if p["x"].dtype == np.float64 else torch.float32
    lstm = torch.nn.LSTM(I, H, bias=bias)
    lstm = lstm.double() if dtype == torch.float64 else lstm.float()
    names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if bias else [])
    with torch.no_grad():
        for n in names:
            getattr(lstm, n + "_l0").copy_(torch.from_numpy(p[n]))
    x = torch.from_numpy(p["x"].copy()).requires_grad_(True)
    h0 = torch.from_numpy(p["h0"][None].copy()).requires_grad_(True)
    c0 = torch.from_numpy(p["c0"][None].copy()).requires_grad_(True)
    out, (h_n, c_n) = lstm(x, (h0, c0))
    total = ((out * torch.from_numpy(g_in["grad_output"])).sum()
             + (h_n[0] * torch.from_numpy(g_in["grad_h_n"])).sum()
             + (c_n[0] * torch.from_numpy(g_in["grad_c_n"])).sum())
    total.backward()
    fwd = [out.detach().numpy(), h_n[0].detach().numpy(), c_n[0].detach().numpy()]
    grads = dict(x=x.grad.numpy(), h0=h0.grad[0].numpy(), c0=c0.grad[0].numpy())
    for n in names:
        grads[n] = getattr(lstm, n + "_l0").grad.numpy()
    return fwd, grads


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 2e-5)])
@pytest.mark.parametrize("T,B,I,H,bias", [(1, 1, 1, 1, True), (7, 3, 5, 6, True),
                                          (12, 8, 9, 16, False), (1, 1, 256, 256, True)])
def test_matches_torch(dtype, tol, T, B, I, H, bias):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(15)
    p = make_params(rng, T, B, I, H, dtype=dtype, bias=bias)
    g_in = upstream(rng, T, B, H, UPSTREAMS[0], dtype=dtype)
    out, h_n, c_n, cache = ref.forward_train(**p)
    grads = ref.backward(cache, **g_in)
    t_fwd, t_grads = _torch_run(torch, p, g_in, bias)
    for name, a, b in zip(("output", "h_n", "c_n"), (out, h_n, c_n), t_fwd):
        assert a.dtype == dtype
        assert scaled_err(a, b) <= tol, name
    assert set(grads) == set(t_grads)
    for name in t_grads:
        assert grads[name].dtype == dtype
        assert scaled_err(grads[name], t_grads[name]) <= tol, name
