"""Parity with ``torch.nn.LSTM`` over the whole configuration surface: num_layers, bidirectional,
proj_size, batch_first, bias, given or omitted (h0, c0), ragged lengths (against PyTorch's
pack_padded_sequence / pad_packed_sequence), float32 and float64, and unbatched input.

Each case compares output, h_n, c_n and every gradient (x, h0 and c0 when given, each parameter
by name) for random upstream gradients on all three results; errors are
``max|ours - torch| / max|torch|`` per array, <= 2e-5 in float32 and <= 1e-10 in float64.
Lengths of 0, which PyTorch refuses, are checked against their definition instead.
"""
import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

from fastlstm import LSTM  # noqa: E402
from helpers import scaled_err  # noqa: E402

TOL = {np.float32: 2e-5, np.float64: 1e-10}
TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}
T, B, I, H, P = 5, 3, 4, 6, 2
# unsorted, includes a full-length row and the shortest possible one (PyTorch refuses 0)
LENGTHS = np.array([2, T, 1])


@pytest.fixture(autouse=True, scope="module")
def torch_single_thread():
    """One torch thread for these tiny problems: faster, and a busy 2-core machine does not
    slow the 500 cases by 50x while torch's threads wait for a core."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def torch_module(num_layers, bidirectional, proj_size, batch_first, bias, dtype, seed):
    torch.manual_seed(seed)
    return torch.nn.LSTM(I, H, num_layers, bias=bias, batch_first=batch_first,
                         bidirectional=bidirectional, proj_size=proj_size,
                         dtype=TORCH_DTYPE[dtype])


def torch_run(module, x, hx, lengths, gy, gh, gc):
    """PyTorch's forward and backward (through a PackedSequence when lengths are given); the
    results and gradients as NumPy arrays keyed like fastlstm's backprop."""
    dtype = module.weight_ih_l0.dtype
    module.zero_grad()
    xt = torch.tensor(x, dtype=dtype, requires_grad=True)
    leaves = {"x": xt}
    if hx is not None:
        leaves["h0"] = torch.tensor(hx[0], dtype=dtype, requires_grad=True)
        leaves["c0"] = torch.tensor(hx[1], dtype=dtype, requires_grad=True)
    state = None if hx is None else (leaves["h0"], leaves["c0"])
    if lengths is None:
        y, (h_n, c_n) = module(xt, state)
    else:
        packed = pack_padded_sequence(xt, torch.tensor(lengths), batch_first=module.batch_first,
                                      enforce_sorted=False)
        y_packed, (h_n, c_n) = module(packed, state)
        y, _ = pad_packed_sequence(y_packed, batch_first=module.batch_first,
                                   total_length=x.shape[1 if module.batch_first else 0])
    torch.autograd.backward([y, h_n, c_n], [torch.tensor(g, dtype=dtype) for g in (gy, gh, gc)])
    out = {"output": y, "h_n": h_n, "c_n": c_n}
    out.update({k: v.grad for k, v in leaves.items()})
    out.update({name: p.grad for name, p in module.named_parameters()})
    return {k: v.detach().numpy() for k, v in out.items()}


def check_parity(module, model, x, hx, lengths, rng, dtype):
    y, (h_n, c_n), backprop = model.forward_train(x, hx, lengths=lengths)
    gy = rng.standard_normal(y.shape).astype(dtype)
    gh = rng.standard_normal(h_n.shape).astype(dtype)
    gc = rng.standard_normal(c_n.shape).astype(dtype)
    grads = backprop(gy, gh, gc)
    ref = torch_run(module, x, hx, lengths, gy, gh, gc)
    names = [name for name, _ in module.named_parameters()]
    assert set(grads) - {"x", "h0", "c0"} == set(names)
    ours = {"output": y, "h_n": h_n, "c_n": c_n, "x": grads["x"]}
    if hx is not None:
        ours.update(h0=grads["h0"], c0=grads["c0"])
    ours.update({name: grads[name] for name in names})
    assert set(ours) == set(ref)
    errors = {k: scaled_err(ours[k], ref[k]) for k in ref}
    bad = {k: e for k, e in errors.items() if not e <= TOL[dtype]}
    assert not bad, f"scaled errors above {TOL[dtype]}: {bad}"
    # the inference path gives the forward_train results
    y2, (h2, c2) = model(x, hx, lengths=lengths)
    assert np.array_equal(y2, y) and np.array_equal(h2, h_n) and np.array_equal(c2, c_n)


# The full product: 3 * 2 * 2 * 2 * 2 * 2 * 2 * 2 = 384 cases, about 10 ms each.
GRID = list(itertools.product([1, 2, 3], [False, True], [0, P], [False, True], [True, False],
                              [True, False], [False, True], [np.float32, np.float64]))


def grid_id(c):
    L, bidir, proj, bf, bias, hx, lens, dtype = c
    return (f"L{L}" + ("-bi" if bidir else "") + (f"-P{proj}" if proj else "")
            + ("-bf" if bf else "") + ("" if bias else "-nobias") + ("-hx" if hx else "-nohx")
            + ("-lengths" if lens else "") + ("-f64" if dtype is np.float64 else "-f32"))


@pytest.mark.parametrize("case", GRID, ids=[grid_id(c) for c in GRID])
def test_matches_torch(case):
    L, bidir, proj, bf, bias, given, lens, dtype = case
    seed = GRID.index(case)
    rng = np.random.default_rng(seed)
    module = torch_module(L, bidir, proj, bf, bias, dtype, seed)
    model = LSTM.from_torch(module)
    assert (model.num_layers, model.bidirectional, model.proj_size, model.bias,
            model.batch_first, model.dtype) == (L, bidir, proj, bias, bf, np.dtype(dtype))
    D = 2 if bidir else 1
    x = rng.standard_normal((B, T, I) if bf else (T, B, I)).astype(dtype)
    hx = None
    if given:
        hx = (rng.standard_normal((D * L, B, proj or H)).astype(dtype),
              rng.standard_normal((D * L, B, H)).astype(dtype))
    check_parity(module, model, x, hx, LENGTHS if lens else None, rng, dtype)


UNBATCHED = list(itertools.product([1, 2, 3], [False, True], [0, P], [False, True],
                                   [np.float32, np.float64]))


@pytest.mark.parametrize("case", UNBATCHED, ids=[
    f"L{c[0]}" + ("-bi" if c[1] else "") + (f"-P{c[2]}" if c[2] else "") + ("-bf" if c[3] else "")
    + ("-f64" if c[4] is np.float64 else "-f32") for c in UNBATCHED])
def test_unbatched_matches_torch(case):
    """2-D x (seq_len, input_size) and 2-D states (num_layers * num_directions, H)."""
    L, bidir, proj, bf, dtype = case
    seed = 1000 + UNBATCHED.index(case)
    rng = np.random.default_rng(seed)
    module = torch_module(L, bidir, proj, bf, True, dtype, seed)
    model = LSTM.from_torch(module)
    D = 2 if bidir else 1
    x = rng.standard_normal((T, I)).astype(dtype)
    hx = (rng.standard_normal((D * L, proj or H)).astype(dtype),
          rng.standard_normal((D * L, H)).astype(dtype))
    y, (h_n, c_n) = model(x, hx)
    assert y.shape == (T, D * (proj or H)) and h_n.shape == hx[0].shape
    assert c_n.shape == hx[1].shape
    check_parity(module, model, x, hx, None, rng, dtype)


CONFIGS = list(itertools.product([1, 2, 3], [False, True], [0, P], [True, False],
                                 [np.float32, np.float64]))


@pytest.mark.parametrize("case", CONFIGS, ids=[
    f"L{c[0]}" + ("-bi" if c[1] else "") + (f"-P{c[2]}" if c[2] else "")
    + ("" if c[3] else "-nobias") + ("-f64" if c[4] is np.float64 else "-f32") for c in CONFIGS])
def test_state_dict_round_trip(case):
    """from_torch reproduces torch's state_dict exactly (names, order, shapes, values), and
    from_state_dict of torch's state_dict infers the same configuration."""
    L, bidir, proj, bias, dtype = case
    module = torch_module(L, bidir, proj, False, bias, dtype, 7)
    ref = {k: v.detach().numpy() for k, v in module.state_dict().items()}
    for model in (LSTM.from_torch(module), LSTM.from_state_dict(module.state_dict())):
        assert (model.input_size, model.hidden_size, model.num_layers, model.bidirectional,
                model.proj_size, model.bias) == (I, H, L, bidir, proj, bias)
        assert model.dtype == np.dtype(dtype)
        sd = model.state_dict()
        assert list(sd) == list(ref)
        for k in ref:
            assert sd[k].dtype == np.dtype(dtype) and sd[k].shape == ref[k].shape, k
            assert np.array_equal(sd[k], ref[k]), k


# -- length 0 (PyTorch refuses it): checked against its definition ----------------------------

ZERO = list(itertools.product([1, 2], [False, True], [0, P], [False, True],
                              [np.float32, np.float64]))


@pytest.mark.parametrize("case", ZERO, ids=[
    f"L{c[0]}" + ("-bi" if c[1] else "") + (f"-P{c[2]}" if c[2] else "") + ("-bf" if c[3] else "")
    + ("-f64" if c[4] is np.float64 else "-f32") for c in ZERO])
def test_length_zero(case):
    """A row of length 0: output 0, h_n/c_n = h0/c0 for every layer and direction, dh0 = grad_h_n,
    dc0 = grad_c_n, dx 0; the other rows (results and their gradients; the parameter gradients)
    equal the batch without that row."""
    L, bidir, proj, bf, dtype = case
    seed = 2000 + ZERO.index(case)
    rng = np.random.default_rng(seed)
    model = LSTM(I, H, L, batch_first=bf, bidirectional=bidir, proj_size=proj, dtype=dtype,
                 seed=seed)
    D, Ho = (2 if bidir else 1), proj or H
    lengths = np.array([3, 0, T, 2])
    z = 1  # the row of length 0
    Bz = len(lengths)
    bax = 0 if bf else 1  # the batch axis of x and output
    x = rng.standard_normal((Bz, T, I) if bf else (T, Bz, I)).astype(dtype)
    h0 = rng.standard_normal((D * L, Bz, Ho)).astype(dtype)
    c0 = rng.standard_normal((D * L, Bz, H)).astype(dtype)
    y, (h_n, c_n), backprop = model.forward_train(x, (h0, c0), lengths=lengths)
    gy = rng.standard_normal(y.shape).astype(dtype)
    gh = rng.standard_normal(h_n.shape).astype(dtype)
    gc = rng.standard_normal(c_n.shape).astype(dtype)
    g = backprop(gy, gh, gc)

    assert np.all(np.take(y, z, axis=bax) == 0)
    assert np.array_equal(h_n[:, z], h0[:, z]) and np.array_equal(c_n[:, z], c0[:, z])
    assert np.array_equal(g["h0"][:, z], gh[:, z]) and np.array_equal(g["c0"][:, z], gc[:, z])
    assert np.all(np.take(g["x"], z, axis=bax) == 0)

    keep = [b for b in range(Bz) if b != z]
    y2, (h2, c2), backprop2 = model.forward_train(
        np.take(x, keep, axis=bax), (h0[:, keep], c0[:, keep]), lengths=lengths[keep])
    g2 = backprop2(np.take(gy, keep, axis=bax), gh[:, keep], gc[:, keep])
    assert np.array_equal(np.take(y, keep, axis=bax), y2)
    assert np.array_equal(h_n[:, keep], h2) and np.array_equal(c_n[:, keep], c2)
    assert np.array_equal(np.take(g["x"], keep, axis=bax), g2["x"])
    assert np.array_equal(g["h0"][:, keep], g2["h0"]) and np.array_equal(g["c0"][:, keep],
                                                                         g2["c0"])
    for name in model.state_dict():
        assert np.array_equal(g[name], g2[name]), name
