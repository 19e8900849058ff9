"""The LSTM object's API: parameters (read-only copies, repacking, state dicts, PyTorch
interchange, initialisation), fresh outputs, and the equivalences between call forms (unbatched vs
batch of one, hx=None vs zeros, batch_first vs time-major) and dtypes.
"""
import copy

import numpy as np
import pytest

import fastlstm

I, H = 3, 5
NAMES = ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
DTYPES = [np.float32, np.float64]


def _rand_params(rng, I_, H_, dtype=np.float32, bias=True):
    p = {"weight_ih_l0": rng.standard_normal((4 * H_, I_)) * 0.5,
         "weight_hh_l0": rng.standard_normal((4 * H_, H_)) * 0.5}
    if bias:
        p["bias_ih_l0"] = rng.standard_normal(4 * H_) * 0.5
        p["bias_hh_l0"] = rng.standard_normal(4 * H_) * 0.5
    return {k: v.astype(dtype) for k, v in p.items()}


def _run(model, x, hx=None, up=None, nt=None):
    """Inference, training forward and (if up) backward results, as one flat dict."""
    y, (h, c) = model(x, hx, num_threads=nt)
    yt, (ht, ct), backprop = model.forward_train(x, hx, num_threads=nt)
    out = {"y": y, "h": h, "c": c, "yt": yt, "ht": ht, "ct": ct}
    if up is not None:
        out.update({"g." + k: v for k, v in backprop(*up, num_threads=nt).items()})
    return out


def _assert_same(a, b, context=""):
    assert a.keys() == b.keys(), context
    for k in a:
        assert a[k].shape == b[k].shape and a[k].dtype == b[k].dtype, (context, k)
        assert np.array_equal(a[k], b[k]), (context, k)


@pytest.fixture
def rng():
    return np.random.default_rng(123)


def _data(rng, T, B, I_, H_, dtype=np.float32, batch_first=False):
    xs = (B, T, I_) if batch_first else (T, B, I_)
    ys = (B, T, H_) if batch_first else (T, B, H_)
    x = rng.standard_normal(xs).astype(dtype)
    hx = (rng.standard_normal((1, B, H_)).astype(dtype),
          rng.standard_normal((1, B, H_)).astype(dtype))
    up = (rng.standard_normal(ys).astype(dtype), rng.standard_normal((1, B, H_)).astype(dtype),
          rng.standard_normal((1, B, H_)).astype(dtype))
    return x, hx, up


# ------------------------------------------------------------------------------------------------
# parameters(): read-only copies


@pytest.mark.parametrize("getter", ["parameters", "state_dict"])
def test_parameters_are_read_only(getter):
    m = fastlstm.LSTM(I, H, seed=0)
    params = getattr(m, getter)()
    assert sorted(params) == sorted(NAMES)
    for name, arr in params.items():
        assert isinstance(arr, np.ndarray) and not arr.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            arr[0] = 1
        with pytest.raises(ValueError):
            arr += 1
        with pytest.raises(ValueError):
            np.copyto(arr, 0)
    # the dict itself is the caller's: changing it changes nothing in the model
    params.clear()
    assert sorted(getattr(m, getter)()) == sorted(NAMES)


def test_parameters_cannot_be_made_writeable_again():
    m = fastlstm.LSTM(I, H, seed=0)
    arr = m.parameters()["weight_ih_l0"]
    with pytest.raises(ValueError):
        arr.flags.writeable = True


@pytest.mark.parametrize("cls", ["LSTM", "LSTMCell"])
def test_no_base_of_a_parameter_can_be_made_writeable(cls, rng):
    """An array that owns its memory can be made writable again; a parameter's memory is bytes,
    so what parameters() shows, what copies and saves carry and what the model runs stay one."""
    m = getattr(fastlstm, cls)(I, H, seed=0)
    x = rng.standard_normal((4, 2, I) if cls == "LSTM" else (2, I)).astype(np.float32)
    y_before = np.array(m(x)[0])
    for name, arr in m.parameters().items():
        base = arr
        while isinstance(base, np.ndarray):
            with pytest.raises(ValueError):
                base.flags.writeable = True
            base = base.base
    assert np.array_equal(m(x)[0], y_before)
    assert np.array_equal(copy.deepcopy(m)(x)[0], y_before)


def test_parameters_are_copies_of_what_was_passed(rng):
    m = fastlstm.LSTM(I, H, seed=0)
    given = _rand_params(rng, I, H)
    m.set_parameters(**given)
    x = rng.standard_normal((4, 2, I)).astype(np.float32)
    y_before = m(x)[0]
    for name, arr in given.items():
        assert not np.shares_memory(arr, m.parameters()[name])
        arr[...] = 0  # mutate what was passed
    assert np.array_equal(m(x)[0], y_before)
    for name in NAMES:
        assert np.any(m.parameters()[name])
    # the same for from_state_dict and load_state_dict
    sd = _rand_params(rng, I, H)
    m2 = fastlstm.LSTM.from_state_dict(sd)
    m3 = fastlstm.LSTM(I, H)
    m3.load_state_dict(sd)
    y2, y3 = m2(x)[0], m3(x)[0]
    for arr in sd.values():
        arr[...] = 0
    assert np.array_equal(m2(x)[0], y2) and np.array_equal(m3(x)[0], y3)


def test_parameters_keep_pytorch_shapes_and_dtype():
    for dtype in DTYPES:
        m = fastlstm.LSTM(I, H, dtype=dtype)
        p = m.parameters()
        assert p["weight_ih_l0"].shape == (4 * H, I)
        assert p["weight_hh_l0"].shape == (4 * H, H)
        assert p["bias_ih_l0"].shape == p["bias_hh_l0"].shape == (4 * H,)
        assert all(v.dtype == np.dtype(dtype) for v in p.values())
    assert sorted(fastlstm.LSTM(I, H, bias=False).parameters()) == ["weight_hh_l0",
                                                                     "weight_ih_l0"]


# ------------------------------------------------------------------------------------------------
# set_parameters repacks


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("hidden", [5, 16, 40])
def test_set_parameters_repacks(rng, dtype, hidden):
    m = fastlstm.LSTM(I, hidden, dtype=dtype, seed=0)
    x, hx, up = _data(rng, 5, 3, I, hidden, dtype)
    before = _run(m, x, hx, up)
    new = _rand_params(rng, I, hidden, dtype)
    m.set_parameters(**new)
    after = _run(m, x, hx, up)
    assert not np.array_equal(before["y"], after["y"])
    _assert_same(after, _run(fastlstm.LSTM.from_state_dict(new), x, hx, up), "all at once")
    # one parameter at a time, each change visible, ending at the same model
    m = fastlstm.LSTM(I, hidden, dtype=dtype, seed=0)
    last = m(x, hx)[0]
    for name in NAMES:
        m.set_parameters(**{name: new[name]})
        y = m(x, hx)[0]
        assert not np.array_equal(y, last), name
        last = y
    _assert_same(_run(m, x, hx, up), after, "one at a time")


def test_set_parameters_each_gate_block_lands_in_its_gate(rng):
    """Move PyTorch rows around and compare with the NumPy reference: the gate order i, f, g, o
    of weight rows survives the repacking (against fastlstm.reference)."""
    m = fastlstm.LSTM(I, H, dtype=np.float64, seed=0)
    x, hx, _ = _data(rng, 4, 2, I, H, np.float64)
    for perm in ([1, 0, 2, 3], [0, 1, 3, 2], [3, 2, 1, 0]):
        p = _rand_params(rng, I, H, np.float64)
        p = {k: v.reshape(4, H, *v.shape[1:])[perm].reshape(v.shape) for k, v in p.items()}
        m.set_parameters(**p)
        y, (h, c) = m(x, hx)
        # the reference, written directly from PyTorch's equations
        ht, ct = hx[0][0], hx[1][0]
        for t in range(x.shape[0]):
            gates = (x[t] @ p["weight_ih_l0"].T + p["bias_ih_l0"] + ht @ p["weight_hh_l0"].T
                     + p["bias_hh_l0"])
            i, f, g, o = np.split(gates, 4, axis=1)
            sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
            ct = sig(f) * ct + sig(i) * np.tanh(g)
            ht = sig(o) * np.tanh(ct)
            np.testing.assert_allclose(y[t], ht, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(c[0], ct, rtol=1e-12, atol=1e-13)


def test_backprop_uses_the_parameters_of_its_forward(rng):
    m = fastlstm.LSTM(I, H, seed=0)
    x, hx, up = _data(rng, 4, 2, I, H)
    _, _, backprop = m.forward_train(x, hx)
    g_before = backprop(*up)
    m.set_parameters(**_rand_params(rng, I, H))
    g_after = backprop(*up)
    for k in g_before:
        assert np.array_equal(g_before[k], g_after[k]), k


# ------------------------------------------------------------------------------------------------
# state dicts


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch_first", [False, True])
def test_state_dict_round_trip(rng, dtype, bias, batch_first):
    m = fastlstm.LSTM(I, 20, bias=bias, batch_first=batch_first, dtype=dtype, seed=4)
    x, hx, up = _data(rng, 5, 3, I, 20, dtype, batch_first)
    ref = _run(m, x, hx, up)
    sd = m.state_dict()
    m2 = fastlstm.LSTM.from_state_dict(sd, batch_first=batch_first)
    assert (m2.input_size, m2.hidden_size, m2.bias, m2.batch_first, m2.dtype) == (
        I, 20, bias, batch_first, np.dtype(dtype))
    _assert_same(ref, _run(m2, x, hx, up), "from_state_dict")
    m3 = fastlstm.LSTM(I, 20, bias=bias, batch_first=batch_first, dtype=dtype, seed=99)
    assert not np.array_equal(m3(x, hx)[0], ref["y"])
    m3.load_state_dict(sd)
    _assert_same(ref, _run(m3, x, hx, up), "load_state_dict")
    for k, v in m3.state_dict().items():
        assert np.array_equal(v, sd[k]) and not np.shares_memory(v, sd[k])


def test_from_state_dict_infers_sizes_bias_and_dtype(rng):
    for I_, H_, bias in [(1, 1, True), (7, 33, True), (4, 16, False)]:
        for dtype in DTYPES:
            sd = _rand_params(rng, I_, H_, dtype, bias)
            m = fastlstm.LSTM.from_state_dict(sd)
            assert (m.input_size, m.hidden_size, m.bias, m.dtype) == (I_, H_, bias,
                                                                       np.dtype(dtype))
            assert m.batch_first is False
            assert fastlstm.LSTM.from_state_dict(sd, batch_first=True).batch_first is True
            for k, v in m.state_dict().items():
                assert v.dtype == np.dtype(dtype) and np.array_equal(v, sd[k])
    # float16 weights give a float32 model; an explicit dtype wins
    sd16 = _rand_params(rng, I, H, np.float16)
    assert fastlstm.LSTM.from_state_dict(sd16).dtype == np.float32
    sd32 = _rand_params(rng, I, H, np.float32)
    m = fastlstm.LSTM.from_state_dict(sd32, dtype=np.float64)
    assert m.dtype == np.float64
    assert all(v.dtype == np.float64 for v in m.state_dict().values())
    assert np.array_equal(m.state_dict()["weight_ih_l0"], sd32["weight_ih_l0"].astype(np.float64))


def test_state_dicts_accept_torch_tensors(rng):
    torch = pytest.importorskip("torch")
    for dtype in DTYPES:
        sd = _rand_params(rng, I, H, dtype)
        tsd = {k: torch.from_numpy(v.copy()).requires_grad_() for k, v in sd.items()}
        m = fastlstm.LSTM.from_state_dict(tsd)
        assert m.dtype == np.dtype(dtype)
        ref = fastlstm.LSTM.from_state_dict(sd)
        x, hx, up = _data(rng, 4, 2, I, H, dtype)
        _assert_same(_run(ref, x, hx, up), _run(m, x, hx, up))
        m2 = fastlstm.LSTM(I, H, dtype=dtype)
        m2.load_state_dict(tsd)
        _assert_same(_run(ref, x, hx, up), _run(m2, x, hx, up))
        m3 = fastlstm.LSTM(I, H, dtype=dtype)
        m3.set_parameters(**{k: t.detach() for k, t in tsd.items()})
        _assert_same(_run(ref, x, hx, up), _run(m3, x, hx, up))
        # the torch tensors are not tied to the model
        with torch.no_grad():
            for t in tsd.values():
                t.zero_()
        _assert_same(_run(ref, x, hx, up), _run(m, x, hx, up))


# ------------------------------------------------------------------------------------------------
# from_torch


@pytest.mark.parametrize("tdtype", ["float32", "float64"])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_from_torch_matches_torch(tdtype, batch_first, bias):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    dt = getattr(torch, tdtype)
    tm = torch.nn.LSTM(I, 20, bias=bias, batch_first=batch_first).to(dt)
    m = fastlstm.LSTM.from_torch(tm)
    assert (m.input_size, m.hidden_size, m.bias, m.batch_first) == (I, 20, bias, batch_first)
    assert m.dtype == np.dtype(tdtype)
    for k, v in tm.state_dict().items():
        assert np.array_equal(m.state_dict()[k], v.numpy()), k
    rng = np.random.default_rng(1)
    x, (h0, c0), (gy, gh, gc) = _data(rng, 6, 3, I, 20, np.dtype(tdtype), batch_first)
    tol = dict(rtol=1e-5, atol=1e-6) if tdtype == "float32" else dict(rtol=1e-11, atol=1e-12)
    tx, th0, tc0 = (torch.from_numpy(a.copy()).requires_grad_() for a in (x, h0, c0))
    ty, (thn, tcn) = tm(tx, (th0, tc0))
    (ty * torch.from_numpy(gy)).sum().add_((thn * torch.from_numpy(gh)).sum()).add_(
        (tcn * torch.from_numpy(gc)).sum()).backward()
    y, (h, c), backprop = m.forward_train(x, (h0, c0))
    np.testing.assert_allclose(y, ty.detach().numpy(), **tol)
    np.testing.assert_allclose(h, thn.detach().numpy(), **tol)
    np.testing.assert_allclose(c, tcn.detach().numpy(), **tol)
    g = backprop(gy, gh, gc)
    np.testing.assert_allclose(g["x"], tx.grad.numpy(), **tol)
    np.testing.assert_allclose(g["h0"], th0.grad.numpy(), **tol)
    np.testing.assert_allclose(g["c0"], tc0.grad.numpy(), **tol)
    for name, p in tm.named_parameters():
        np.testing.assert_allclose(g[name], p.grad.numpy(), **tol, err_msg=name)
    # the torch module is not tied to the model
    y_before = m(x, (h0, c0))[0]
    with torch.no_grad():
        for p in tm.parameters():
            p.zero_()
    assert np.array_equal(m(x, (h0, c0))[0], y_before)


def test_from_torch_half_precision_becomes_float32():
    torch = pytest.importorskip("torch")
    tm = torch.nn.LSTM(I, H).to(torch.bfloat16)
    m = fastlstm.LSTM.from_torch(tm)
    assert m.dtype == np.float32
    assert np.array_equal(m.state_dict()["weight_hh_l0"],
                          tm.weight_hh_l0.detach().float().numpy())


# ------------------------------------------------------------------------------------------------
# initialisation


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("hidden", [1, 5, 64, 300])
def test_initialisation_uniform_within_bounds(dtype, hidden):
    m = fastlstm.LSTM(7, hidden, dtype=dtype, seed=0)
    bound = 1.0 / np.sqrt(hidden)
    bound_in_dtype = np.asarray(bound, dtype)  # the bound as the model's dtype rounds it
    allv = []
    for name, v in m.parameters().items():
        assert v.dtype == np.dtype(dtype)
        assert np.all(np.abs(v) <= bound_in_dtype), name
        allv.append(v.ravel())
    allv = np.concatenate(allv).astype(np.float64)
    assert len(np.unique(allv)) > 0.9 * allv.size
    if allv.size >= 1000:  # it looks uniform over the whole interval
        assert allv.min() < -0.9 * bound and allv.max() > 0.9 * bound
        assert abs(allv.mean()) < 0.1 * bound
        np.testing.assert_allclose(allv.std(), bound / np.sqrt(3), rtol=0.1)


def test_initialisation_seeded():
    a = fastlstm.LSTM(I, H, seed=1).parameters()
    b = fastlstm.LSTM(I, H, seed=1).parameters()
    c = fastlstm.LSTM(I, H, seed=2).parameters()
    for k in NAMES:
        assert np.array_equal(a[k], b[k]), k
        assert not np.array_equal(a[k], c[k]), k
    # the four parameters are not the same draw
    assert not np.array_equal(a["bias_ih_l0"], a["bias_hh_l0"])
    # no seed: different each time
    d = fastlstm.LSTM(I, H).parameters()
    e = fastlstm.LSTM(I, H).parameters()
    assert not np.array_equal(d["weight_ih_l0"], e["weight_ih_l0"])
    # a numpy Generator as seed is reproducible too
    g1 = fastlstm.LSTM(I, H, seed=np.random.default_rng(5)).parameters()
    g2 = fastlstm.LSTM(I, H, seed=np.random.default_rng(5)).parameters()
    assert np.array_equal(g1["weight_hh_l0"], g2["weight_hh_l0"])


# ------------------------------------------------------------------------------------------------
# outputs are fresh arrays


@pytest.mark.parametrize("hidden", [5, 16, 32])  # 16, 32: H a whole number of blocks
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_outputs_are_fresh_arrays(rng, hidden, dtype):
    m = fastlstm.LSTM(I, hidden, dtype=dtype, seed=0)
    x, hx, up = _data(rng, 4, 3, I, hidden, dtype)
    ref = _run(m, x, hx, up)
    keep = {k: v.copy() for k, v in ref.items()}
    first = _run(m, x, hx, up)
    for k, v in first.items():  # scribble over everything a call returned
        assert v.flags.writeable, k
        v[...] = np.nan
    second = _run(m, x, hx, up)
    _assert_same(keep, second)
    # nothing returned shares memory with the inputs, the parameters or another output
    arrays = list(second.items())
    inputs = [x, *hx, *up, *m.parameters().values()]
    for i, (k, v) in enumerate(arrays):
        for a in inputs:
            assert not np.shares_memory(v, a), k
        for k2, v2 in arrays[i + 1:]:
            assert not np.shares_memory(v, v2), (k, k2)
    # bias_ih_l0 and bias_hh_l0 have equal gradients, as separate arrays
    assert np.array_equal(second["g.bias_ih_l0"], second["g.bias_hh_l0"])
    assert not np.shares_memory(second["g.bias_ih_l0"], second["g.bias_hh_l0"])


def test_scribbling_over_a_forward_does_not_change_its_backprop(rng):
    m = fastlstm.LSTM(I, 16, seed=0)
    x, hx, up = _data(rng, 4, 2, I, 16)
    y, (h, c), backprop = m.forward_train(x, hx)
    g_ref = backprop(*up)
    for a in (y, h, c):
        a[...] = 1e6
    g = backprop(*up)
    for k in g_ref:
        assert np.array_equal(g[k], g_ref[k]), k


# ------------------------------------------------------------------------------------------------
# equivalent call forms


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_unbatched_equals_batch_of_one(rng, dtype, batch_first):
    m = fastlstm.LSTM(I, 20, batch_first=batch_first, dtype=dtype, seed=1)
    x = rng.standard_normal((6, I)).astype(dtype)
    h0 = rng.standard_normal((1, 20)).astype(dtype)
    c0 = rng.standard_normal((1, 20)).astype(dtype)
    gy = rng.standard_normal((6, 20)).astype(dtype)
    gh = rng.standard_normal((1, 20)).astype(dtype)
    x3 = x[None] if batch_first else x[:, None]
    gy3 = gy[None] if batch_first else gy[:, None]
    y, (h, c) = m(x, (h0, c0))
    y3, (h3, c3) = m(x3, (h0[:, None], c0[:, None]))
    assert y.shape == (6, 20) and h.shape == c.shape == (1, 20)
    assert np.array_equal(y, y3[0] if batch_first else y3[:, 0])
    assert np.array_equal(h, h3[:, 0]) and np.array_equal(c, c3[:, 0])
    yt, (ht, ct), backprop = m.forward_train(x, (h0, c0))
    assert np.array_equal(yt, y) and ht.shape == (1, 20)
    g = backprop(gy, gh, gh)
    _, _, bp3 = m.forward_train(x3, (h0[:, None], c0[:, None]))
    g3 = bp3(gy3, gh[:, None], gh[:, None])
    assert g["x"].shape == (6, I) and g["h0"].shape == g["c0"].shape == (1, 20)
    assert np.array_equal(g["x"], g3["x"][0] if batch_first else g3["x"][:, 0])
    assert np.array_equal(g["h0"], g3["h0"][:, 0]) and np.array_equal(g["c0"], g3["c0"][:, 0])
    for k in NAMES:
        assert np.array_equal(g[k], g3[k]), k
    # hx=None for unbatched too
    y0, (h0n, _) = m(x)
    assert np.array_equal(y0, m(x, (np.zeros((1, 20)), np.zeros((1, 20))))[0])
    assert h0n.shape == (1, 20)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_hx_none_equals_zeros(rng, dtype):
    m = fastlstm.LSTM(I, H, dtype=dtype, seed=2)
    x, _, up = _data(rng, 5, 3, I, H, dtype)
    zeros = (np.zeros((1, 3, H), dtype), np.zeros((1, 3, H), dtype))
    _assert_same(_run(m, x, None, up), _run(m, x, zeros, up))
    y, _, backprop = m.forward_train(x)
    g = backprop(*up)
    assert g["h0"].shape == g["c0"].shape == (1, 3, H)  # gradients of the implicit zeros


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("B,hidden", [(1, 100), (3, 5), (17, 20)])
def test_batch_first_equals_transposed_time_major(rng, dtype, B, hidden):
    tm = fastlstm.LSTM(I, hidden, dtype=dtype, seed=3)
    bf = fastlstm.LSTM.from_state_dict(tm.state_dict(), batch_first=True)
    assert bf.batch_first and bf.dtype == np.dtype(dtype)
    x, hx, (gy, gh, gc) = _data(rng, 7, B, I, hidden, dtype)
    for nt in (1, 2):
        a = _run(tm, x, hx, (gy, gh, gc), nt)
        b = _run(bf, x.transpose(1, 0, 2), hx, (gy.transpose(1, 0, 2), gh, gc), nt)
        for k in ("y", "yt", "g.x"):
            assert b[k].shape == a[k].shape[1::-1] + a[k].shape[2:], k
            b[k] = b[k].transpose(1, 0, 2)
        _assert_same(a, b, f"num_threads={nt}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("bias", [True, False])
def test_every_output_has_the_model_dtype(rng, dtype, bias):
    m = fastlstm.LSTM(I, H, bias=bias, dtype=dtype, seed=0)
    other = np.float64 if dtype == np.float32 else np.float32
    for in_dtype in (dtype, other):
        x, hx, up = _data(rng, 3, 2, I, H, in_dtype)
        out = _run(m, x, hx, up)
        for k, v in out.items():
            assert v.dtype == np.dtype(dtype), (k, v.dtype)
        assert sorted(k[2:] for k in out if k.startswith("g.")) == sorted(
            ["x", "h0", "c0"] + list(m.parameters()))
        y, (h, c) = m(x[:, 0])  # unbatched
        assert y.dtype == h.dtype == c.dtype == np.dtype(dtype)


def test_repr_mentions_sizes():
    r = repr(fastlstm.LSTM(3, 17))
    assert r.startswith("LSTM(") and "3" in r and "17" in r
    assert "float32" in r
    r = repr(fastlstm.LSTM(11, 29, bias=False, batch_first=True, dtype=np.float64))
    for part in ("11", "29", "bias=False", "batch_first=True", "float64"):
        assert part in r, (part, r)


def test_attributes():
    m = fastlstm.LSTM(3, 7, bias=False, batch_first=True, dtype=np.float64)
    assert (m.input_size, m.hidden_size, m.num_layers, m.bias, m.batch_first) == (
        3, 7, 1, False, True)
    assert m.dtype == np.float64
    assert m.forward == type(m).__call__ or m.forward.__func__ is type(m).__call__


def test_module_surface():
    assert {"LSTM", "openmp_enabled", "openmp_info"} <= set(fastlstm.__all__)
    info = fastlstm.openmp_info()
    assert set(info) == {"enabled", "max_threads", "last_num_threads", "isa", "isas", "isa_int8"}
    assert info["isa"] in info["isas"] and "generic" in info["isas"]
    assert info["isa_int8"] in ("avx512vnni", "avx2", "generic")
    assert isinstance(fastlstm.__version__, str)
