"""QuantizedLSTM and QuantizedLSTMCell (issue 19): ``model.quantize("int8")``.

The quantized models run the int8 scheme of `fastlstm.reference` (``forward_int8``) on the
compiled int8 kernels through `_stack`, so every option (layers, directions, proj_size,
batch_first, unbatched x, ragged lengths, given states, float64 models) is checked against the
reference composed by hand (close: the kernels' sigmoid and tanh are not NumPy's, see `_close`),
and bitwise against itself where the scheme promises it (threads, ISAs, batch position, chunks,
streaming); then files and copies, the float model's validation and messages, every refusal, and
what the quantized model shows of itself.
"""
import copy
import io
import itertools
import json
import pickle

import numpy as np
import pytest

import fastlstm
from fastlstm import LSTM, LSTMCell, QuantizedLSTM, QuantizedLSTMCell
from fastlstm import reference as ref

I, H, P, T, B = 3, 5, 2, 4, 3
DTYPES = [np.float32, np.float64]
CONFIGS = [dict(num_layers=L, bidirectional=bi, proj_size=p, batch_first=bf)
           for L, bi, p, bf in itertools.product([1, 2], [False, True], [0, P], [False, True])]


def _id(cfg):
    return "-".join(f"{k}={v}" for k, v in cfg.items())


def _reference_layers(m):
    """layers[l][d]: reference.quantize_lstm of the float model's parameters."""
    p = m.parameters()
    return [[ref.quantize_lstm(*(p.get(f"{base}_l{k}{sfx}") for base in
                                 ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")))
             for sfx in ("", "_reverse")[:m.num_directions]] for k in range(m.num_layers)]


def _states(rng, m, batch, dtype):
    S = m.num_layers * m.num_directions
    return (rng.standard_normal((S, batch, m.proj_size or m.hidden_size)).astype(dtype),
            rng.standard_normal((S, batch, m.hidden_size)).astype(dtype))


def _user(x_tm, batch_first):
    """A time-major array in the user's layout."""
    return np.ascontiguousarray(x_tm.transpose(1, 0, 2)) if batch_first else x_tm


def _equal(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
    assert np.array_equal(a, b, equal_nan=True), np.abs(a.astype(float) - b).max()


def _close(got, want):
    """The compiled int8 model against the NumPy definition: the integer sums and the
    dequantization are the same bits, but the kernels' sigmoid and tanh differ from NumPy's by
    ulps, and a difference that moves h across a rounding point of its quantization changes one
    int8 value, one quantization step (1/127 of the row's max). So: NaN in the same places, most
    values within a few float32 ulps, every value within two quantization steps."""
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    err = np.abs(got[ok].astype(np.float64) - want[ok])
    if err.size:
        assert err.max() <= 2 / 127 * max(1.0, np.abs(want[ok]).max()), err.max()
        assert np.median(err) <= 1e-6 and np.mean(err <= 1e-5) >= 0.99, (np.median(err), err.max())


# -- against the reference, every option ------------------------------------------------

@pytest.mark.parametrize("cfg", CONFIGS, ids=_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_matches_the_reference(cfg, dtype):
    rng = np.random.default_rng(1)
    m = LSTM(I, H, **cfg, dtype=dtype, seed=3)
    q = m.quantize("int8")
    layers = _reference_layers(m)
    x_tm = rng.standard_normal((T, B, I)).astype(dtype)
    x = _user(x_tm, m.batch_first)
    for hx in (None, _states(rng, m, B, dtype)):
        y, (h, c) = q(x, hx)
        y_ref, h_ref, c_ref = ref.forward_int8_layers(x_tm, layers, *(hx or (None, None)))
        _close(y, _user(y_ref, m.batch_first))
        _close(h, h_ref)
        _close(c, c_ref)
        # one unbatched sequence: (T, I) and 2-D states
        hx1 = None if hx is None else (hx[0][:, 1], hx[1][:, 1])
        y1, (h1, c1) = q(x_tm[:, 1], hx1)
        y_ref, h_ref, c_ref = ref.forward_int8_layers(
            x_tm[:, 1:2], layers, *((None, None) if hx is None else (hx[0][:, 1:2], hx[1][:, 1:2])))
        _close(y1, y_ref[:, 0])
        _close(h1, h_ref[:, 0])
        _close(c1, c_ref[:, 0])


@pytest.mark.parametrize("cfg", [CONFIGS[0], CONFIGS[-1], CONFIGS[5], CONFIGS[10]], ids=_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_ragged_lengths_equal_each_sequence_alone(cfg, dtype):
    """lengths in any order, 0 and seq_len included: each row is, bitwise, its sequence run alone by
    the quantized model, and close to the same run by the (a zero-length row keeps its initial state, rounded to float32 as the scheme
    rounds every input), padding reads as nothing and outputs 0 there."""
    rng = np.random.default_rng(2)
    m = LSTM(I, H, **cfg, dtype=dtype, seed=4)
    q = m.quantize()
    layers = _reference_layers(m)
    T6, lengths = 6, np.array([3, 0, 6, 1, 6])
    x_tm = rng.standard_normal((T6, len(lengths), I)).astype(dtype)
    for t, b in np.ndindex(T6, len(lengths)):
        if t >= lengths[b]:
            x_tm[t, b] = np.nan  # padding is never read
    h0, c0 = _states(rng, m, len(lengths), dtype)
    for hx in (None, (h0, c0)):
        y, (h, c) = q(_user(x_tm, m.batch_first), hx, lengths=lengths)
        y_tm = y.transpose(1, 0, 2) if m.batch_first else y
        for b, n in enumerate(lengths):
            y_ref, h_ref, c_ref = ref.forward_int8_layers(
                x_tm[:n, b:b + 1], layers,
                *((None, None) if hx is None else (h0[:, b:b + 1], c0[:, b:b + 1])))
            _close(y_tm[:n, b], y_ref[:, 0])
            assert not y_tm[n:, b].any()
            _close(h[:, b], h_ref[:, 0])
            _close(c[:, b], c_ref[:, 0])
            if n:
                alone = _user(x_tm[:n, b:b + 1], m.batch_first)
                ya, (ha, ca) = q(alone, None if hx is None else (h0[:, b:b + 1], c0[:, b:b + 1]))
                _equal(y_tm[:n, b], (ya[0] if m.batch_first else ya[:, 0]))
                _equal(h[:, b], ha[:, 0])
                _equal(c[:, b], ca[:, 0])


def test_float64_model_computes_in_float32():
    """Inputs rounded to float32, outputs the float32 results widened: a float32 model of the
    same (rounded) weights gives the same numbers."""
    rng = np.random.default_rng(3)
    m64 = LSTM(I, H, num_layers=2, dtype=np.float64, seed=5)
    m32 = LSTM.from_state_dict(m64.state_dict(), dtype=np.float32)
    x = rng.standard_normal((T, B, I))
    y64, (h64, c64) = m64.quantize()(x)
    y32, (h32, c32) = m32.quantize()(x.astype(np.float32))
    assert y64.dtype == h64.dtype == c64.dtype == np.float64
    for a64, a32 in ((y64, y32), (h64, h32), (c64, c32)):
        _equal(a64, a32.astype(np.float64))


def test_close_to_the_float_model():
    """Within two quantization steps (1/127 of the range) of the float model."""
    rng = np.random.default_rng(4)
    for cfg, dtype in itertools.product(CONFIGS[::3], DTYPES):
        m = LSTM(I, H, **cfg, dtype=dtype, seed=6)
        x = rng.standard_normal((B, T, I) if m.batch_first else (T, B, I)).astype(dtype)
        y_q, (h_q, c_q) = m.quantize()(x)
        y_f, (h_f, c_f) = m(x)
        for got, want in ((y_q, y_f), (h_q, h_f), (c_q, c_f)):
            bound = 2 / 127 * max(1.0, np.abs(want).max())
            assert np.abs(got - want).max() <= bound, (cfg, dtype)


def test_rows_are_independent_and_nan_stays_in_its_row():
    """A row's result does not depend on the batch: a NaN in row 1 leaves row 0 as alone."""
    rng = np.random.default_rng(5)
    q = LSTM(I, H, num_layers=2, bidirectional=True, seed=7).quantize()
    x = rng.standard_normal((T, 2, I)).astype(np.float32)
    x[2, 1, 0] = np.nan
    y, (h, c) = q(x)
    y0, (h0, c0) = q(x[:, :1])
    _equal(y[:, :1], y0)
    _equal(h[:, :1], h0)
    assert np.isnan(y[:, 1]).any() and not np.isnan(y[:, 0]).any()


@pytest.mark.parametrize("proj", [0, 3], ids=["plain", "projected"])
def test_inf_makes_its_row_nan_from_its_step_on_and_zero_rows_are_exact(proj):
    """An inf in x_t gives its row the scale NaN (docs/int8.md): that row is NaN from step t on,
    in every unit, and no other row changes. An all-zero row quantizes with scale 0: its
    results equal the NumPy definition's like any other."""
    rng = np.random.default_rng(8)
    m = LSTM(I, H, proj_size=proj, seed=9)
    q = m.quantize()
    x = rng.standard_normal((T, 3, I)).astype(np.float32)
    x[:, 2] = 0.0
    clean = q(x)[0]
    x[2, 1, 0] = np.inf
    for nt in (1, 2):
        y = q(x, num_threads=nt)[0]
        assert np.all(np.isfinite(y[:2, 1])) and np.all(np.isnan(y[2:, 1]))
        _equal(y[:, 0::2], clean[:, 0::2])
    want = ref.forward_int8(x[:, 2:], **_reference_layers(m)[0][0])[0]
    _close(clean[:, 2:], want)


@pytest.mark.parametrize("B2,H2,P2", [(1, 200, 0), (1, 200, 150), (8, 40, 0), (8, 40, 23), (2, 130, 0)],
                         ids=["unit-split", "unit-split-projected", "batch-split",
                              "batch-split-projected", "two-rows"])
def test_kernel_sizes_threads_isas_and_chunks(B2, H2, P2, monkeypatch):
    """Sizes past one unit block and team splits: against the reference, and bitwise the same for
    any thread count, for each kernel variant whose float cell is shared (AVX-512 and AVX2), and
    for a sequence cut into chunks of a few steps."""
    from fastlstm import _int8_direction, _kernels
    rng = np.random.default_rng(11)
    m = LSTM(37, H2, proj_size=P2, seed=12)
    q = m.quantize()
    T2 = 25
    x = rng.standard_normal((T2, B2, 37)).astype(np.float32)
    hx = _states(rng, m, B2, np.float32)
    y, (h, c) = q(x, hx, num_threads=1)
    y_ref, h_ref, c_ref = ref.forward_int8_layers(x, _reference_layers(m), *hx)
    _close(y, y_ref)
    _close(h, h_ref)
    _close(c, c_ref)
    for nt in (2, 3):
        _equal(q(x, hx, num_threads=nt)[0], y)
        assert fastlstm.openmp_info()["last_num_threads"] > 1 or not fastlstm.openmp_enabled()
    monkeypatch.setattr(_int8_direction, "CHUNK_VALUES", 3 * B2 * 4 * 16 * (H2 // 16 + 1))
    _equal(q(x, hx, num_threads=2)[0], y)
    monkeypatch.undo()
    active = _kernels.isa()
    try:
        for isa in ("avx512", "avx2"):
            if _kernels.isa_supported(isa):
                _kernels.select_isa(isa)
                _equal(q(x, hx, num_threads=2)[0], y)
    finally:
        _kernels.select_isa(active)


@pytest.mark.parametrize("num_threads", [None, 1, 3])
def test_num_threads_does_not_change_a_bit(num_threads):
    rng = np.random.default_rng(6)
    q = LSTM(I, H, proj_size=P, seed=8).quantize()
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    _equal(q(x, num_threads=num_threads)[0], q(x)[0])


def test_empty_calls():
    q = LSTM(I, H, num_layers=2, dtype=np.float64, seed=1).quantize()
    h0 = np.full((2, 2, H), 0.1)
    y, (h, c) = q(np.zeros((0, 2, I)), (h0, h0))
    assert y.shape == (0, 2, H) and y.dtype == np.float64
    _equal(h, h0.astype(np.float32).astype(np.float64))  # rounded, as the scheme's inputs are
    y, (h, c) = q(np.zeros((T, 0, I)))
    assert y.shape == (T, 0, H) and h.shape == (2, 0, H)


# -- streaming --------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", [dict(), dict(num_layers=2, proj_size=P, batch_first=True)],
                         ids=_id)
def test_step_by_step_and_split_calls_equal_one_call(cfg):
    rng = np.random.default_rng(7)
    q = LSTM(I, H, **cfg, seed=9).quantize()
    x_tm = rng.standard_normal((T, B, I)).astype(np.float32)
    y, (h, c) = q(_user(x_tm, q.batch_first))
    state, outs = None, []
    for t in range(T):
        y_t, state = q.step(x_tm[t], state)
        outs.append(y_t)
    _equal(np.stack(outs, axis=1 if q.batch_first else 0), y)
    _equal(state[0], h)
    _equal(state[1], c)
    # unbatched steps, and a sequence in two calls carrying the states
    state = None
    for t in range(T):
        y_t, state = q.step(x_tm[t, 0], state)
    _equal(y_t, (y[0, -1] if q.batch_first else y[-1, 0]))
    first, hx = q(_user(x_tm[:1], q.batch_first))
    rest, (h2, c2) = q(_user(x_tm[1:], q.batch_first), hx)
    _equal(np.concatenate([first, rest], axis=1 if q.batch_first else 0), y)
    _equal(h2, h)


def test_quantized_cell_is_one_step_of_the_quantized_lstm():
    rng = np.random.default_rng(8)
    for dtype, bias in itertools.product(DTYPES, [True, False]):
        cell = LSTMCell(I, H, bias=bias, dtype=dtype, seed=2)
        qc = cell.quantize("int8")
        assert isinstance(qc, QuantizedLSTMCell)
        x = rng.standard_normal((B, I)).astype(dtype)
        hx = tuple(rng.standard_normal((B, H)).astype(dtype) for _ in range(2))
        p = cell.parameters()
        params = ref.quantize_lstm(p["weight_ih"], p["weight_hh"], p.get("bias_ih"),
                                   p.get("bias_hh"))
        for states in (None, hx):
            h, c = qc(x, states)
            _, h_ref, c_ref = ref.forward_int8(x[None], **params,
                                               **({} if states is None else
                                                  dict(h0=states[0], c0=states[1])))
            _close(h, h_ref)
            _close(c, c_ref)
            h1, c1 = qc(x[1], None if states is None else (states[0][1], states[1][1]))
            _equal(h1, h[1])
            _equal(c1, c[1])
        qp = qc.parameters()
        assert list(qp) == ["weight_ih", "weight_ih_scale", "weight_hh", "weight_hh_scale"] + \
            (["bias"] if bias else [])
        _equal(qp["weight_ih"], params["weight_ih"][0])
        assert qc.nbytes == sum(v.nbytes for v in qp.values())


# -- files and copies -------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", [CONFIGS[0], CONFIGS[-1], dict(bias=False, proj_size=P)], ids=_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_save_load_round_trip(tmp_path, cfg, dtype):
    q = LSTM(I, H, **cfg, dropout=0.0, dtype=dtype, seed=10).quantize()
    path = tmp_path / "q.weights"
    q.save(path)
    with np.load(path, allow_pickle=False) as data:  # NumPy alone reads it, no pickle
        assert int(data["fastlstm_format"]) == 2
        config = json.loads(str(data["fastlstm_config"]))
        assert config == q.config() and config["mode"] == "int8"
        assert set(data.files) - {"fastlstm_format", "fastlstm_config"} == set(q.parameters())
        for name, value in q.parameters().items():
            _equal(data[name], value)
    for loaded in (LSTM.load(path), QuantizedLSTM.load(path), QuantizedLSTM.load(str(path))):
        assert type(loaded) is QuantizedLSTM and loaded.config() == q.config()
        assert list(loaded.parameters()) == list(q.parameters())
        for name, value in q.parameters().items():
            _equal(loaded.parameters()[name], value)
    buffer = io.BytesIO()
    q.save(buffer)
    buffer.seek(0)
    loaded = LSTM.load(buffer)
    x = np.random.default_rng(0).standard_normal((B, T, I) if q.batch_first else (T, B, I))
    y, (h, c) = q(x)
    y2, (h2, c2) = loaded(x)
    _equal(y2, y)
    _equal(h2, h)


def test_float_files_keep_format_1_and_load_as_before(tmp_path):
    m = LSTM(I, H, num_layers=2, seed=1)
    path = tmp_path / "float.npz"
    m.save(path)
    with np.load(path, allow_pickle=False) as data:
        assert int(data["fastlstm_format"]) == 1
        assert "mode" not in json.loads(str(data["fastlstm_config"]))
    loaded = LSTM.load(path)
    assert type(loaded) is LSTM and loaded.config() == m.config()
    # a version 1 file written by hand, as an older fastlstm wrote them
    old = tmp_path / "old.npz"
    np.savez(old, fastlstm_format=np.array(1), fastlstm_config=np.array(json.dumps(m.config())),
             **m.state_dict())
    x = np.ones((T, B, I), np.float32)
    _equal(LSTM.load(old)(x)[0], m(x)[0])
    with pytest.raises(ValueError, match=r"holds a float LSTM\(3, 5, num_layers=2.*quantize"):
        QuantizedLSTM.load(path)


def test_load_checks_the_int8_arrays(tmp_path):
    q = LSTM(I, H, seed=1).quantize()
    good = dict(q.parameters())
    config = q.config()

    def write(name, version=2, **arrays):
        path = tmp_path / name
        np.savez(path, fastlstm_format=np.array(version),
                 fastlstm_config=np.array(json.dumps(config)), **{**good, **arrays})
        return path

    with pytest.raises(ValueError, match=r"weight_hh_l0 must be int8 of shape \(20, 5\) "
                                         r".*got float32 of shape \(20, 5\)"):
        LSTM.load(write("a.npz", weight_hh_l0=good["weight_hh_l0"].astype(np.float32)))
    with pytest.raises(ValueError, match=r"weight_ih_scale_l0 must be float32 of shape \(20,\)"):
        LSTM.load(write("b.npz", weight_ih_scale_l0=np.ones(19, np.float32)))
    bad = good["weight_ih_l0"].copy()
    bad[0, 0] = -128
    with pytest.raises(ValueError, match="weight_ih_l0 holds -128"):
        LSTM.load(write("c.npz", weight_ih_l0=bad))
    with pytest.raises(KeyError, match=r"unexpected \['bias_hh_l0'\]"):
        LSTM.load(write("d.npz", bias_hh_l0=np.zeros(20, np.float32)))
    with pytest.raises(ValueError, match="format 3"):
        LSTM.load(write("e.npz", version=3))
    config = {**q.config(), "input_size": ref.INT8_MAX_K + 1}  # refused before its arrays
    with pytest.raises(ValueError, match=r"weight_ih_l0 sums over input_size = 133145"):
        LSTM.load(write("f.npz"))
    config = {**q.config(), "mode": "int4"}
    with pytest.raises(ValueError, match="unknown quantization mode 'int4'; the modes are 'int8'"):
        LSTM.load(write("g.npz"))


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_deepcopy_and_pickle(how):
    dup = copy.deepcopy if how == "deepcopy" else (lambda o: pickle.loads(pickle.dumps(o)))
    q = LSTM(I, H, num_layers=2, bidirectional=True, proj_size=P, batch_first=True,
             dtype=np.float64, seed=4).quantize()
    c = dup(q)
    assert type(c) is QuantizedLSTM and c.config() == q.config() and repr(c) == repr(q)
    x = np.random.default_rng(0).standard_normal((B, T, I))
    _equal(c(x)[0], q(x)[0])
    for name, value in q.parameters().items():
        _equal(c.parameters()[name], value)
        assert not c.parameters()[name].flags.writeable
    cell = LSTMCell(I, H, seed=1).quantize()
    twin = dup(cell)
    assert type(twin) is QuantizedLSTMCell and repr(twin) == repr(cell)
    _equal(twin(x[0, 0])[0], cell(x[0, 0])[0])


# -- the float model's validation, unchanged --------------------------------------------------

def _outcome(call):
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - the point is to compare them
        return type(exc), str(exc)
    return None


def test_bad_inputs_get_the_float_models_errors():
    f32 = np.float32
    for cfg in (dict(), dict(num_layers=2, bidirectional=True, proj_size=P, batch_first=True)):
        m = LSTM(I, H, **cfg, seed=0)
        q = m.quantize()
        S, H_out = m.num_layers * m.num_directions, m.proj_size or H
        x = np.zeros((B, T, I) if m.batch_first else (T, B, I), f32)
        calls = [
            lambda f: f(np.zeros((T, B, I + 1), f32)),
            lambda f: f(np.zeros((T, B, I), np.int32)),
            lambda f: f(np.zeros(I, f32)),
            lambda f: f(np.zeros((T, B, B, I), f32)),
            lambda f: f([[1.0, 2.0], [3.0]]),
            lambda f: f(x, np.zeros((S, B, H), f32)),
            lambda f: f(x, (np.zeros((S, B, H_out), f32),)),
            lambda f: f(x, (np.zeros((B, H_out), f32), np.zeros((S, B, H), f32))),
            lambda f: f(x, (np.zeros((S, B, H_out), f32), np.zeros((S, B, H + 1), f32))),
            *([lambda f: f(x, (np.zeros((S, B, H), f32), np.zeros((S, B, H), f32)))]
              if m.proj_size else []),  # h0 hidden_size wide, with a projection
            lambda f: f(x, lengths=[1.0] * B),
            lambda f: f(x, lengths=[1] * (B + 1)),
            lambda f: f(x, lengths=[T + 1] * B),
            lambda f: f(x, num_threads=0),
            lambda f: f(x, num_threads=True),
            lambda f: f(x, num_threads=1.5),
            lambda f: f.step(np.zeros((T, B, I), f32)),
            lambda f: f.step(np.zeros((B, I + 1), f32)),
            lambda f: f.step(np.zeros((B, I), f32), (np.zeros((1, B + 1, H_out), f32),) * 2),
        ]
        for i, call in enumerate(calls):
            want = _outcome(lambda: call(m))
            assert want is not None, (cfg, i)
            assert _outcome(lambda: call(q)) == want, want
    cell = LSTMCell(I, H)
    qc = cell.quantize()
    for x_shape, h_shape in [((B, I + 1), (B, H)), ((2, B, I), (B, H)), ((B, I), (1, B, H)),
                             ((I,), (B, H))]:
        args = (np.zeros(x_shape, f32), (np.zeros(h_shape, f32),) * 2)
        want = _outcome(lambda: cell(*args))
        assert want is not None and _outcome(lambda: qc(*args)) == want


def test_inputs_are_not_mutated_and_may_be_read_only():
    rng = np.random.default_rng(9)
    q = LSTM(I, H, num_layers=2, bidirectional=True, seed=0).quantize()
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    hx = _states(rng, q, B, np.float32)
    lengths = np.array([2, 4, 0])
    saved = [a.copy() for a in (x, *hx, lengths)]
    for a in (x, *hx, lengths):
        a.flags.writeable = False
    q(x, hx, lengths=lengths)
    q(x, hx)
    for a, b in zip((x, *hx, lengths), saved):
        _equal(a, b)


# -- refusals ---------------------------------------------------------------------------------

def test_training_and_setting_are_refused_with_what_to_do():
    m = LSTM(I, H, seed=0)
    q = m.quantize()
    x = np.zeros((T, B, I), np.float32)
    advice = r"Train \(or change\) the float LSTM and quantize it again: model.quantize\('int8'\)"
    with pytest.raises(TypeError, match=r"^forward_train \(and its backprop\) is not available "
                                        r"on a QuantizedLSTM: its int8 weights are for inference "
                                        r"only\. " + advice):
        q.forward_train(x)
    with pytest.raises(TypeError, match=r"^set_parameters is not available.*" + advice):
        q.set_parameters(weight_ih_l0=np.zeros((20, 3)))
    with pytest.raises(TypeError, match=r"^load_state_dict is not available.*" + advice):
        q.load_state_dict(m.state_dict())
    qc = LSTMCell(I, H).quantize()
    cell_advice = r"the float LSTMCell and quantize it again: cell.quantize\('int8'\)"
    for call in (lambda: qc.forward_train(x[0]), lambda: qc.set_parameters(),
                 lambda: qc.load_state_dict({})):
        with pytest.raises(TypeError, match=r"on a QuantizedLSTMCell.*" + cell_advice):
            call()


def test_trace_and_onnx_are_refused_with_the_way_round():
    q = LSTM(I, H, seed=0).quantize()
    with pytest.raises(NotImplementedError, match=r"^trace\(x\) follows the float computation.*"
                                                  r"int8 sums.*model\.trace\(x\)"):
        q.trace(np.zeros((T, I), np.float32))
    with pytest.raises(NotImplementedError, match=r"gate_weights"):
        fastlstm.shapes.gate_weights(q, "f")
    with pytest.raises(NotImplementedError, match=r"^to_onnx\(\) writes float LSTMs.*"
                                                  r"model\.to_onnx\(path\).*quantize_dynamic"):
        q.to_onnx("never-written.onnx")


@pytest.mark.parametrize("mode", ["int4", "INT8", "qint8", 8, np.int8, None])
def test_unknown_mode_lists_the_modes(mode):
    for model in (LSTM(I, H), LSTMCell(I, H)):
        with pytest.raises(ValueError, match=r"^unknown quantization mode .*; the modes are "
                                             r"'int8': int8 weights"):
            model.quantize(mode)


def test_sums_longer_than_int8_max_k_are_refused_when_quantizing():
    K = ref.INT8_MAX_K + 1
    with pytest.raises(ValueError, match=r"^cannot quantize LSTM\(133145, 1, dtype=float32\) to "
                                         r"int8: weight_ih_l0 sums over input_size = 133145 "
                                         r"products, more than fastlstm.reference.INT8_MAX_K = "
                                         r"133144 \(127\^2 \* K must fit the int32 sum\)"):
        LSTM(K, 1).quantize()
    with pytest.raises(ValueError, match=r"^cannot quantize LSTMCell\(133145, 1, dtype=float32\) "
                                         r"to int8: weight_ih sums over input_size"):
        LSTMCell(K, 1).quantize()
    assert LSTM(ref.INT8_MAX_K, 1).quantize().input_size == ref.INT8_MAX_K  # the limit itself


def test_constructors_take_fastlstm_models_only():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"fastlstm.LSTM, got torch.nn.modules.rnn.LSTM: "
                                        r"fastlstm.LSTM.from_torch\(module\).quantize"):
        QuantizedLSTM(torch.nn.LSTM(I, H))
    with pytest.raises(TypeError, match="quantizes a fastlstm.LSTMCell, got fastlstm.model.LSTM"):
        QuantizedLSTMCell(LSTM(I, H))
    assert QuantizedLSTM(LSTM(I, H, seed=0)).config() == LSTM(I, H).quantize().config()


# -- what it shows of itself ------------------------------------------------------------------

def test_repr_says_int8():
    assert repr(LSTM(3, 4, 2, bidirectional=True, proj_size=2).quantize()) == \
        "QuantizedLSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2, mode=int8, " \
        "dtype=float32)"
    assert repr(LSTM(3, 4, batch_first=True, dtype=np.float64).quantize("int8")) == \
        "QuantizedLSTM(3, 4, batch_first=True, mode=int8, dtype=float64)"
    assert repr(LSTMCell(3, 4, bias=False).quantize()) == \
        "QuantizedLSTMCell(3, 4, bias=False, mode=int8, dtype=float32)"


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_parameters_are_the_int8_weights_scales_and_biases_read_only(dtype):
    m = LSTM(I, H, num_layers=2, bidirectional=True, proj_size=P, dtype=dtype, seed=11)
    q = m.quantize()
    params = q.parameters()
    assert q.state_dict().keys() == params.keys()
    assert list(params)[:7] == ["weight_ih_l0", "weight_ih_scale_l0", "weight_hh_l0",
                                "weight_hh_scale_l0", "bias_l0", "weight_hr_l0",
                                "weight_hr_scale_l0"]
    assert len(params) == 2 * 2 * 7 and "weight_hr_scale_l1_reverse" in params
    fp = m.parameters()
    for k, sfx in itertools.product(range(2), ("", "_reverse")):
        want = ref.quantize_lstm(fp[f"weight_ih_l{k}{sfx}"], fp[f"weight_hh_l{k}{sfx}"],
                                 fp[f"bias_ih_l{k}{sfx}"], fp[f"bias_hh_l{k}{sfx}"],
                                 fp[f"weight_hr_l{k}{sfx}"])
        for base in ("weight_ih", "weight_hh", "weight_hr"):
            _equal(params[f"{base}_l{k}{sfx}"], want[base][0])
            _equal(params[f"{base}_scale_l{k}{sfx}"], want[base][1])
        _equal(params[f"bias_l{k}{sfx}"], want["bias"])
    for name, value in params.items():
        assert value.dtype == (np.int8 if "weight" in name and "scale" not in name
                               else np.float32)
        assert not value.flags.writeable
        with pytest.raises(ValueError):
            value.flags.writeable = True
        with pytest.raises(ValueError):
            value[...] = 0
        assert not any(np.shares_memory(value, f) for f in fp.values())
    params.clear()  # the model keeps its own
    assert len(q.parameters()) == 28
    assert q.nbytes == sum(v.nbytes for v in q.parameters().values())
    assert "bias_l0" not in LSTM(I, H, bias=False).quantize().parameters()


def test_quantize_leaves_the_float_model_as_it_was():
    m = LSTM(I, H, num_layers=2, seed=12)
    before = {k: v.copy() for k, v in m.parameters().items()}
    x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
    y = m(x)[0]
    m.quantize()
    for k, v in m.parameters().items():
        _equal(v, before[k])
    _equal(m(x)[0], y)
    q = m.quantize()
    m.set_parameters(weight_ih_l0=np.zeros((4 * H, I)))  # and the quantized one keeps its own
    assert q.parameters()["weight_ih_l0"].any()


@pytest.mark.parametrize("cfg", [dict(), dict(num_layers=2, bidirectional=True, proj_size=P),
                                 dict(bias=False)], ids=_id)
def test_describe_says_int8_and_shows_the_weight_memory(cfg):
    q = LSTM(I, H, **cfg, seed=0).quantize()
    desc = q.describe(seq_len=T, batch=B)
    text = str(desc)
    assert text.startswith("QuantizedLSTM(input_size=3, hidden_size=5, ") and "mode=int8)" in \
        text.splitlines()[0]
    assert desc.config["mode"] == "int8"
    mem = desc.memory
    params = q.parameters()
    int8 = sum(v.nbytes for v in params.values() if v.dtype == np.int8)
    assert mem["int8"] == int8 and mem["total"] == q.nbytes
    assert mem["scales"] + mem["bias"] == q.nbytes - int8
    assert mem["float32"] == 4 * sum(v.size for v in LSTM(I, H, **cfg).parameters().values())
    assert f"{mem['int8']:,} B int8 weights" in text and f"= {mem['total']:,} B" in text
    for name, value in params.items():  # every parameter, with its shape
        assert desc[name].shape == value.shape
        assert ("int8" if value.dtype == np.int8 else "float32") in desc[name].meaning
    assert desc["output"].shape == q(np.zeros((T, B, I), np.float32))[0].shape
    assert fastlstm.shapes.describe(q.config(), seq_len=T, batch=B).rows == desc.rows
    assert LSTM(I, H, **cfg).describe().memory is None  # the float model's is as it was


@pytest.mark.parametrize("batch_first", [False, True])
def test_small_calls_equal_the_general_path(batch_first):
    """One-layer float32 calls skip the stack (`_small_call`); lengths=[T]*B takes the general
    path: the same bits, with and without states, and the states' own arrays untouched."""
    rng = np.random.default_rng(13)
    q = LSTM(I, H, batch_first=batch_first, seed=14).quantize()
    for T1, B1 in ((1, 1), (4, 3)):
        x = rng.standard_normal((B1, T1, I) if batch_first else (T1, B1, I)).astype(np.float32)
        hx = _states(rng, q, B1, np.float32)
        saved = [a.copy() for a in hx]
        for states in (None, hx):
            assert q._small_call(x, states, 0) is not None  # (the path under test)
            y, (h, c) = q(x, states)
            y2, (h2, c2) = q(x, states, lengths=[T1] * B1)
            _equal(y, y2)
            _equal(h, h2)
            _equal(c, c2)
        assert all(np.array_equal(a, b) for a, b in zip(hx, saved))


def test_small_calls_decline_what_they_do_not_take():
    """The C small path takes float32 C-contiguous calls of a one-layer model without projection
    and declines the rest (float64, a projection, a strided x, a wrong state shape, a bad
    num_threads), which the general path then runs or explains."""
    rng = np.random.default_rng(15)
    q = LSTM(I, H, seed=16).quantize()
    x = rng.standard_normal((3, 2, I)).astype(np.float32)
    assert q._small_call(x, None, 2) is not None
    y1 = q(x, num_threads=1)[0]
    _equal(q(x, num_threads=2)[0], y1)
    assert q._small_call(x.astype(np.float64), None, 0) is None
    assert q._small_call(np.asfortranarray(x), None, 0) is None
    _equal(q(np.asfortranarray(x))[0], y1)
    bad = (np.zeros((1, 3, H), np.float32), np.zeros((1, 2, H), np.float32))
    assert q._small_call(x, bad, 0) is None
    with pytest.raises(ValueError, match="h0"):
        q(x, bad)
    with pytest.raises(ValueError, match="num_threads"):
        q(x, num_threads=-1)
    assert LSTM(I, H, proj_size=3, seed=16).quantize()._layers[0][0].small is None
    q64 = LSTM(I, H, seed=16, dtype=np.float64).quantize()
    assert q64._small_call(x, None, 0) is None  # its outputs are float64, whatever x is
    assert q64(x)[0].dtype == np.float64
