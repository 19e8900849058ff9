"""Ragged batches (``lengths=``), streaming, dropout, and finite-difference gradient checks.

The ragged contract: each row equals its sequence run alone, bitwise; output rows past a length
are exactly 0; padding (x, and grad_output at padded positions, as PyTorch ignores the gradient
of its constant-0 output there) never reaches a result or a gradient; lengths come in any order
and any integer container. Streaming: chunks carrying (h, c), and `step` in a loop, equal one run
bitwise. Gradients are checked against central differences of the forward in float64, for the
configurations that route data in less obvious ways (layers, reverse direction, projection,
ragged rows including a length 0, dropout with a fixed mask, batch_first, unbatched).
"""
import itertools

import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st

from fastlstm import LSTM

T, B, I, H = 9, 5, 7, 20  # H = 20: not a multiple of the kernels' panel, so padding is exercised
LENGTHS = np.array([4, 9, 0, 7, 1])  # unsorted, a full row, an empty row, a single step


def states(rng, model, batch, dtype=None):
    """Random (h0, c0) for `model` with `batch` rows (None: unbatched)."""
    dtype = dtype or model.dtype
    S = model.num_layers * model.num_directions
    lead = (S,) if batch is None else (S, batch)
    return (rng.standard_normal(lead + (model.proj_size or model.hidden_size,)).astype(dtype),
            rng.standard_normal(lead + (model.hidden_size,)).astype(dtype))


def upstream(rng, y, h, c):
    return tuple(rng.standard_normal(a.shape).astype(a.dtype) for a in (y, h, c))


def assert_all_equal(a, b, what=""):
    """Two dicts of arrays, bitwise."""
    assert a.keys() == b.keys(), what
    for k in a:
        assert a[k].shape == b[k].shape and a[k].dtype == b[k].dtype, (what, k)
        assert np.array_equal(a[k], b[k]), (what, k, np.max(np.abs(a[k] - b[k])))


# -- each row equals its sequence alone ------------------------------------------------------

@pytest.mark.parametrize("num_threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("proj", [0, 3])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_each_row_equals_its_sequence_alone(bidirectional, proj, num_layers, dtype, num_threads):
    """Forward outputs (__call__ and forward_train) and h_n, c_n, for every row, including
    one of length 0 (run alone: a sequence of no step, whose states are the initial ones)."""
    rng = np.random.default_rng(num_layers * 10 + bidirectional + proj)
    model = LSTM(I, H, num_layers, bidirectional=bidirectional, proj_size=proj, dtype=dtype,
                 seed=3)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0, c0 = states(rng, model, B)
    results = [model(x, (h0, c0), lengths=LENGTHS, num_threads=num_threads)]
    yt, st, _ = model.forward_train(x, (h0, c0), lengths=LENGTHS, num_threads=num_threads)
    results.append((yt, st))
    for y, (h_n, c_n) in results:
        for b, L in enumerate(LENGTHS):
            y1, (h1, c1) = model(x[:L, b:b + 1], (h0[:, b:b + 1], c0[:, b:b + 1]),
                                 num_threads=num_threads)
            assert np.array_equal(y[:L, b:b + 1], y1), (b, L)
            assert np.all(y[L:, b] == 0.0), (b, L)
            assert np.array_equal(h_n[:, b:b + 1], h1) and np.array_equal(c_n[:, b:b + 1], c1)


@settings(max_examples=60, deadline=None)
@example(lengths=[2, 1, 1], bidirectional=False, proj=0, seed=0)  # each once raised: a
@example(lengths=[2, 1, 1, 1], bidirectional=True, proj=0, seed=1)  # segment's last state
@example(lengths=[1, 1, 3, 0, 1, 1, 0], bidirectional=False, proj=0, seed=2)  # slot overran
@given(lengths=st.lists(st.integers(0, 6), min_size=1, max_size=7), bidirectional=st.booleans(),
       proj=st.sampled_from([0, 3]), seed=st.integers(0, 2**16))
def test_training_takes_any_lengths(lengths, bidirectional, proj, seed):
    """forward_train with any lengths: its outputs are __call__'s, each row's gradients (x, h0,
    c0) are its sequence's alone, bitwise, and the weight gradients are the rows' sums."""
    rng = np.random.default_rng(seed)
    lengths = np.array(lengths)
    T_, B_ = max(int(lengths.max()), 1), len(lengths)
    model = LSTM(3, 5, bidirectional=bidirectional, proj_size=proj, dtype=np.float64, seed=seed)
    x = rng.standard_normal((T_, B_, 3))
    h0, c0 = states(rng, model, B_)
    y, (h, c), backprop = model.forward_train(x, (h0, c0), lengths=lengths)
    y2, (h2, c2) = model(x, (h0, c0), lengths=lengths)
    assert np.array_equal(y, y2) and np.array_equal(h, h2) and np.array_equal(c, c2)
    gy, gh, gc = upstream(rng, y, h, c)
    grads = backprop(gy, gh, gc)
    sums = {}
    for b, L in enumerate(lengths):
        ya, _, back = model.forward_train(x[:L, b:b + 1], (h0[:, b:b + 1], c0[:, b:b + 1]))
        alone = back(gy[:L, b:b + 1], gh[:, b:b + 1], gc[:, b:b + 1])
        assert np.array_equal(grads["x"][:L, b:b + 1], alone["x"]), b
        assert np.all(grads["x"][L:, b] == 0.0), b
        for k in ("h0", "c0"):
            assert np.array_equal(grads[k][:, b:b + 1], alone[k]), (b, k)
        for k in model.parameters():
            sums[k] = sums.get(k, 0.0) + alone[k]
    for k in model.parameters():
        np.testing.assert_allclose(grads[k], sums[k], rtol=1e-12, atol=1e-12, err_msg=k)


# -- padding never reaches a result ----------------------------------------------------------

def _padding_mask(lengths, bf):
    """(T, B, 1) or (B, T, 1) True at the padded positions."""
    pad = np.arange(T)[:, None] >= lengths[None, :]
    return (pad.T if bf else pad)[..., None]


def _run_all(model, x, hx, lengths, up, seed):
    y, (h, c), backprop = model.forward_train(x, hx, lengths=lengths, seed=seed)
    out = {"y": y, "h": h, "c": c}
    out.update({"g." + k: v for k, v in backprop(*up).items()})
    y2, (h2, c2) = model(x, hx, lengths=lengths)
    out.update({"y.call": y2, "h.call": h2, "c.call": c2})
    return out


PADDING = list(itertools.product([np.nan, np.inf, -np.inf, 1e30, np.finfo(np.float32).max],
                                 [False, True], [0, 3]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("fill, bidirectional, proj", PADDING, ids=[
    f"{f}-{'bi' if b else 'uni'}" + (f"-P{p}" if p else "") for f, b, p in PADDING])
def test_padding_never_leaks(fill, bidirectional, proj, dtype):
    """x filled with NaN/inf/huge values past each length, and grad_output NaN there: every
    output, state and gradient is finite and bitwise that of zero padding (2 layers, dropout on
    in forward_train with a fixed seed, batch_first)."""
    rng = np.random.default_rng(5)
    model = LSTM(I, H, 2, batch_first=True, dropout=0.5, bidirectional=bidirectional,
                 proj_size=proj, dtype=dtype, seed=2)
    pad = _padding_mask(LENGTHS, True)
    x = np.where(pad, 0, rng.standard_normal((B, T, I))).astype(dtype)
    hx = states(rng, model, B)
    y, (h, c) = model(x, hx, lengths=LENGTHS)
    gy, gh, gc = upstream(rng, y, h, c)
    gy_clean = np.where(pad, 0, gy).astype(dtype)
    clean = _run_all(model, x, hx, LENGTHS, (gy_clean, gh, gc), seed=9)
    with np.errstate(over="ignore", invalid="ignore"):
        x_dirty = np.where(pad, dtype(fill), x)
    gy_dirty = np.where(pad, dtype(np.nan), gy)
    dirty = _run_all(model, x_dirty, hx, LENGTHS, (gy_dirty, gh, gc), seed=9)
    for k, v in dirty.items():
        assert np.all(np.isfinite(v)), k
    assert_all_equal(dirty, clean)
    assert np.all(dirty["y"][np.broadcast_to(pad, dirty["y"].shape)] == 0.0)
    assert np.all(dirty["g.x"][np.broadcast_to(pad, dirty["g.x"].shape)] == 0.0)


# -- lengths: containers, order, validation --------------------------------------------------

def _torch_lengths():
    torch = pytest.importorskip("torch")
    return [torch.tensor(LENGTHS), torch.tensor(LENGTHS, dtype=torch.int32)]


@pytest.mark.parametrize("kind", ["list", "int32", "int64", "uint8", "torch"])
def test_lengths_containers_agree(kind):
    rng = np.random.default_rng(8)
    model = LSTM(I, H, 2, bidirectional=True, seed=4)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    hx = states(rng, model, B)
    y, (h, c) = model(x, hx, lengths=LENGTHS)
    up = upstream(rng, y, h, c)
    ref = _run_all(model, x, hx, LENGTHS, up, None)
    given = {"list": [LENGTHS.tolist()], "int32": [LENGTHS.astype(np.int32)],
             "int64": [LENGTHS.astype(np.int64)], "uint8": [LENGTHS.astype(np.uint8)]}.get(kind)
    for lengths in given or _torch_lengths():
        assert_all_equal(_run_all(model, x, hx, lengths, up, None), ref, kind)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("proj", [0, 3])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_sorted_and_unsorted_agree(bidirectional, proj, dtype):
    """The same sequences in another batch order give the same rows, states and gradients
    (bitwise; the lengths are distinct, so the internal order is the same)."""
    rng = np.random.default_rng(9)
    model = LSTM(I, H, 2, bidirectional=bidirectional, proj_size=proj, dtype=dtype, seed=6)
    lengths = np.array([3, 9, 0, 6, 1])
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0, c0 = states(rng, model, B)
    y, (h, c) = model(x, (h0, c0), lengths=lengths)
    gy, gh, gc = upstream(rng, y, h, c)
    ref = _run_all(model, x, (h0, c0), lengths, (gy, gh, gc), None)
    order = np.argsort(-lengths, kind="stable")  # sorted, longest first, as PyTorch requires
    got = _run_all(model, x[:, order], (h0[:, order], c0[:, order]), lengths[order],
                   (gy[:, order], gh[:, order], gc[:, order]), None)
    inverse = np.argsort(order)
    for k, v in got.items():
        if k in ("y", "y.call", "g.x", "h", "c", "h.call", "c.call", "g.h0", "g.c0"):
            v = v[:, inverse]
        assert np.array_equal(v, ref[k]), k


BAD_LENGTHS = {
    "negative": ([3, -1, 2, 4, 1], ValueError),
    "too-long": ([3, T + 1, 2, 4, 1], ValueError),
    "too-few": ([3, 2, 4, 1], ValueError),
    "too-many": ([3, 2, 4, 1, 1, 1], ValueError),
    "float": (np.array([3.0, 2.0, 4.0, 1.0, 1.0]), TypeError),
    "float-list": ([3.0, 2.0, 4.0, 1.0, 1.0], TypeError),
    "2-D": (np.array([[3], [2], [4], [1], [1]]), ValueError),
    "scalar": (3, ValueError),
}


@pytest.mark.parametrize("name", list(BAD_LENGTHS))
def test_bad_lengths_raise_naming_lengths(name):
    lengths, error = BAD_LENGTHS[name]
    model = LSTM(I, H, 2, bidirectional=True, seed=1)
    x = np.zeros((T, B, I), np.float32)
    with pytest.raises(error, match="lengths"):
        model(x, lengths=lengths)
    with pytest.raises(error, match="lengths"):
        model.forward_train(x, lengths=lengths)


# -- streaming -------------------------------------------------------------------------------

CHUNKS = [(0, 2), (2, 3), (3, 3), (3, 7), (7, 9)]  # includes a chunk of one step and an empty one
STREAM = list(itertools.product([1, 2, 3], [0, 3], [False, True], [np.float32, np.float64]))


def _stream_id(c):
    L, proj, bf, dtype = c
    return (f"L{L}" + (f"-P{proj}" if proj else "") + ("-bf" if bf else "")
            + ("-f64" if dtype is np.float64 else "-f32"))


@pytest.mark.parametrize("case", STREAM, ids=[_stream_id(c) for c in STREAM])
def test_chunks_equal_one_run(case):
    L, proj, bf, dtype = case
    rng = np.random.default_rng(L * 7 + proj)
    model = LSTM(I, H, L, batch_first=bf, proj_size=proj, dtype=dtype, seed=L)
    x = rng.standard_normal((B, T, I) if bf else (T, B, I)).astype(dtype)
    hx = states(rng, model, B)
    y, (h, c) = model(x, hx)
    state, pieces = hx, []
    for t0, t1 in CHUNKS:
        piece, state = model(x[:, t0:t1] if bf else x[t0:t1], state)
        pieces.append(piece)
    assert np.array_equal(np.concatenate(pieces, axis=1 if bf else 0), y)
    assert np.array_equal(state[0], h) and np.array_equal(state[1], c)


@pytest.mark.parametrize("unbatched", [False, True], ids=["batched", "unbatched"])
@pytest.mark.parametrize("case", STREAM, ids=[_stream_id(c) for c in STREAM])
def test_steps_equal_one_run(case, unbatched):
    """step(x_t, state) in a loop, x_t (B, I) or (I,), from state None then carried."""
    L, proj, bf, dtype = case
    rng = np.random.default_rng(L * 11 + proj)
    model = LSTM(I, H, L, batch_first=bf, proj_size=proj, dtype=dtype, seed=L)
    if unbatched:
        x = rng.standard_normal((T, I)).astype(dtype)
        steps = list(x)
    else:
        x = rng.standard_normal((B, T, I) if bf else (T, B, I)).astype(dtype)
        steps = [x[:, t] if bf else x[t] for t in range(T)]
    y, (h, c) = model(x)
    state, outs = None, []
    for x_t in steps:
        out_t, state = model.step(x_t, state)
        outs.append(out_t)
    assert np.array_equal(np.stack(outs, axis=1 if (bf and not unbatched) else 0), y)
    assert np.array_equal(state[0], h) and np.array_equal(state[1], c)


def test_bidirectional_step_refuses():
    model = LSTM(I, H, 2, bidirectional=True, seed=1)
    with pytest.raises(ValueError, match=r"(?s)reverse direction.*(end of the sequence|future)"):
        model.step(np.zeros((B, I), np.float32))
    with pytest.raises(ValueError, match="reverse direction"):
        model.step(np.zeros(I, np.float32))


# -- finite differences ----------------------------------------------------------------------

GRADCHECK = {
    # name: constructor kwargs, call: lengths, hx given, unbatched, forward_train seed
    "2layers-bi-proj-lengths0": (dict(num_layers=2, bidirectional=True, proj_size=3),
                                 dict(lengths=[4, 0, 2, 5], hx=True)),
    "3layers-bi-dropout-lengths0-bf": (
        dict(num_layers=3, bidirectional=True, dropout=0.5, batch_first=True),
        dict(lengths=[2, 5, 0, 3], hx=True, seed=17)),
    "2layers-dropout-proj-bf": (dict(num_layers=2, dropout=0.5, proj_size=2, batch_first=True),
                                dict(hx=True, seed=3)),
    "1layer-nobias-bf-lengths0-nohx": (dict(bias=False, batch_first=True),
                                       dict(lengths=[0, 5, 3, 1], hx=False)),
    "2layers-bi-unbatched": (dict(num_layers=2, bidirectional=True),
                             dict(hx=True, unbatched=True)),
    "2layers-proj-unbatched-bf": (dict(num_layers=2, proj_size=4, batch_first=True),
                                  dict(hx=True, unbatched=True)),
}
Tg, Bg, Ig, Hg = 5, 4, 3, 6
EPS = 1e-6


@pytest.mark.parametrize("name", list(GRADCHECK))
def test_gradients_match_finite_differences(name):
    """Directional derivatives along random directions, for x, h0, c0 and each parameter:
    central differences (eps 1e-6) of sum(gy*y) + sum(gh*h_n) + sum(gc*c_n) in float64 agree
    with backprop within 1e-6 of max(1, sum|g * v|)."""
    kwargs, call = GRADCHECK[name]
    seed = call.get("seed")
    rng = np.random.default_rng(len(name))
    model = LSTM(Ig, Hg, dtype=np.float64, seed=21, **kwargs)
    lengths = None if "lengths" not in call else np.array(call["lengths"])
    unbatched = call.get("unbatched", False)
    x_shape = (Tg, Ig) if unbatched else ((Bg, Tg, Ig) if model.batch_first else (Tg, Bg, Ig))
    inputs = {"x": rng.standard_normal(x_shape)}
    if call["hx"]:
        inputs["h0"], inputs["c0"] = states(rng, model, None if unbatched else Bg)

    def forward(inp):
        hx = (inp["h0"], inp["c0"]) if "h0" in inp else None
        if seed is None:  # no dropout: the inference path must agree with forward_train
            out = model(inp["x"], hx, lengths=lengths)
        else:
            out = model.forward_train(inp["x"], hx, lengths=lengths, seed=seed)[:2]
        return out

    y, (h, c), backprop = model.forward_train(
        inputs["x"], (inputs["h0"], inputs["c0"]) if call["hx"] else None, lengths=lengths,
        seed=seed)
    gy, gh, gc = upstream(rng, y, h, c)
    grads = backprop(gy, gh, gc)

    def loss(inp):
        y, (h, c) = forward(inp)
        return float(np.sum(gy * y) + np.sum(gh * h) + np.sum(gc * c))

    params = model.state_dict()
    assert set(grads) == {"x", "h0", "c0"} | set(params)
    failures = {}
    for key in list(inputs) + list(params):
        is_param = key in params
        base = np.array(params[key] if is_param else inputs[key])
        v = rng.standard_normal(base.shape)
        values = []
        for sign in (1, -1):
            moved = base + sign * EPS * v
            if is_param:
                model.set_parameters(**{key: moved})
                values.append(loss(inputs))
            else:
                values.append(loss(dict(inputs, **{key: moved})))
        if is_param:
            model.set_parameters(**{key: base})
        fd = (values[0] - values[1]) / (2 * EPS)
        analytic = float(np.sum(grads[key] * v))
        scale = max(1.0, float(np.sum(np.abs(grads[key] * v))))
        if not abs(fd - analytic) <= 1e-6 * scale:
            failures[key] = (fd, analytic)
    assert not failures, failures


# -- dropout ---------------------------------------------------------------------------------

def _dropout_model(dropout=0.5, seed=5, **kwargs):
    return LSTM(I, H, 3, dropout=dropout, seed=seed, **kwargs)


def _train(model, x, hx, up, **kwargs):
    y, (h, c), backprop = model.forward_train(x, hx, **kwargs)
    out = {"y": y, "h": h, "c": c}
    out.update({"g." + k: v for k, v in backprop(*up).items()})
    return out


@pytest.fixture
def dropout_data():
    rng = np.random.default_rng(31)
    model = _dropout_model()
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    hx = states(rng, model, B)
    y, (h, c) = model(x, hx)
    return x, hx, upstream(rng, y, h, c)


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "ragged"])
def test_dropout_seeded_is_reproducible(dropout_data, lengths):
    x, hx, up = dropout_data
    model = _dropout_model(bidirectional=True)
    model.load_state_dict(_dropout_model(bidirectional=True, seed=8).state_dict())
    up = (np.concatenate([up[0]] * 2, axis=-1), np.concatenate([up[1]] * 2), np.concatenate(
        [up[2]] * 2))
    hx = (np.concatenate([hx[0]] * 2), np.concatenate([hx[1]] * 2))
    a = _train(model, x, hx, up, lengths=lengths, seed=1)
    model.forward_train(x, hx, lengths=lengths)  # unseeded calls in between change nothing
    b = _train(model, x, hx, up, lengths=lengths, seed=1)
    assert_all_equal(a, b)
    other = _train(model, x, hx, up, lengths=lengths, seed=2)
    for k in ("y", "h", "c", "g.x", "g.weight_ih_l1"):
        assert not np.array_equal(a[k], other[k]), k


def test_dropout_off_at_inference(dropout_data):
    """__call__ ignores dropout: it equals a dropout=0 model with the same weights, whose
    forward_train equals its __call__ bitwise."""
    x, hx, up = dropout_data
    model = _dropout_model()
    plain = LSTM.from_state_dict(model.state_dict(), dropout=0.0)
    assert plain.dropout == 0.0 and model.dropout == 0.5
    for lengths in (None, LENGTHS):
        y, (h, c) = model(x, hx, lengths=lengths)
        y0, (h0, c0) = plain(x, hx, lengths=lengths)
        assert np.array_equal(y, y0) and np.array_equal(h, h0) and np.array_equal(c, c0)
        yt, (ht, ct), _ = plain.forward_train(x, hx, lengths=lengths)
        assert np.array_equal(yt, y0) and np.array_equal(ht, h0) and np.array_equal(ct, c0)
        # with dropout on, training differs from inference
        yd, _, _ = model.forward_train(x, hx, lengths=lengths, seed=0)
        assert not np.array_equal(yd, y)


def test_dropout_one_feeds_zeros_to_the_next_layer():
    """dropout=1 zeroes each layer's output but the last (PyTorch's placement): the last layer
    then runs on zeros from its own initial state."""
    rng = np.random.default_rng(4)
    model = LSTM(I, H, 2, dropout=1.0, seed=3)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    h0, c0 = states(rng, model, B)
    y, (h, c), _ = model.forward_train(x, (h0, c0), seed=0)
    sd = model.state_dict()
    top = LSTM.from_state_dict({k.replace("_l1", "_l0"): v for k, v in sd.items() if "_l1" in k})
    y1, (h1, c1) = top(np.zeros((T, B, H), np.float32), (h0[1:], c0[1:]))
    assert np.array_equal(y, y1) and np.array_equal(h[1:], h1) and np.array_equal(c[1:], c1)
    assert np.any(y != 0)


def test_model_seed_makes_unseeded_dropout_reproducible(dropout_data):
    x, hx, up = dropout_data
    a, b = _dropout_model(seed=77), _dropout_model(seed=77)
    first = [_train(a, x, hx, up), _train(a, x, hx, up)]
    second = [_train(b, x, hx, up), _train(b, x, hx, up)]
    for u, v in zip(first, second):
        assert_all_equal(u, v)
    assert not np.array_equal(first[0]["y"], first[1]["y"])  # the generator moves on
