"""The int8 scheme's NumPy definition (``fastlstm/reference.py``, issue 19): quantization, exact
integer sums, one step against an independent scalar recomputation, invariances, non-finite
values, and the accuracy contract against ONNX Runtime's int8 LSTM.

The accuracy contract (issue 19 item 4): on the bench workloads' shapes, with PyTorch's weight
initialisation and x ~ N(0, 1), the RMS error against a float64 run is no worse than ONNX
Runtime int8's on the same weights and inputs (1.1x allowed on f, one step, where ORT quantizes
the same single row as we do), and the max error no worse than 1.5x ORT's. "ORT int8" is
checked twice: ORT itself on this CPU, and `int8_workloads.ort_int8_emulated`, what ORT
computes where its u8 x s8 sums are exact (VNNI / AMX CPUs; without VNNI, ORT's AVX2 kernel
saturates int16 pair sums and is ~15x worse, which would make the first check toothless there).
The numbers are printed (``-s``); ``python tests/int8_workloads.py`` prints the table and the
drift over 10,000 steps.
"""
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fastlstm import LSTM
from fastlstm import reference as ref
import int8_workloads as wl

F32 = np.float32
MAX_K = ref.INT8_MAX_K


# -- independent scalar recomputation -----------------------------------------------------------

def scalar_quantize(row):
    """One row, element by element: float32 scalars, Python's round (half to even)."""
    row = [F32(v) for v in row]
    if any(not math.isfinite(float(v)) for v in row):
        return [0] * len(row), F32(np.nan)
    m = max((abs(v) for v in row), default=F32(0))
    with np.errstate(divide="ignore", over="ignore"):
        inv = F32(127) / m
    if not math.isfinite(float(inv)):  # m = 0, or 127 / m overflows
        return [0] * len(row), F32(0)
    return [int(round(float(v * inv))) for v in row], F32(m / F32(127))


def scalar_deq(q_a, s_a, q_w, s_w):
    acc = sum(int(a) * int(w) for a, w in zip(q_a, q_w))  # Python int: exact
    assert -2**31 <= acc < 2**31
    return F32(F32(acc) * F32(s_a * s_w))


def scalar_gates(x_t, h_prev, w_ih, w_hh, b_ih, b_hh):
    """The pre-activation gates of one step, (B, 4H), from float32 inputs and float weights."""
    qi = [scalar_quantize(r) for r in w_ih]
    qh = [scalar_quantize(r) for r in w_hh]
    out = np.empty((x_t.shape[0], w_ih.shape[0]), F32)
    for b in range(x_t.shape[0]):
        qx, sx = scalar_quantize(x_t[b])
        qhp, sh = scalar_quantize(h_prev[b])
        for j in range(w_ih.shape[0]):
            bias = F32(F32(b_ih[j]) + F32(b_hh[j]))
            gx = F32(scalar_deq(qx, sx, *qi[j]) + bias)
            out[b, j] = F32(gx + scalar_deq(qhp, sh, *qh[j]))
    return out


def float_cell(a, c_prev):
    """h-part of a step in float64 from float32 gates (for approximate comparisons)."""
    a = a.astype(np.float64)
    H = a.shape[1] // 4
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    i, f, g, o = sig(a[:, :H]), sig(a[:, H:2 * H]), np.tanh(a[:, 2 * H:3 * H]), sig(a[:, 3 * H:])
    c = f * c_prev + i * g
    return o * np.tanh(c), c


def params(rng, I, H, P=0, scale=1.0):
    k = scale / np.sqrt(H)
    p = dict(weight_ih=rng.uniform(-k, k, (4 * H, I)),
             weight_hh=rng.uniform(-k, k, (4 * H, P or H)),
             bias_ih=rng.uniform(-k, k, 4 * H), bias_hh=rng.uniform(-k, k, 4 * H))
    if P:
        p["weight_hr"] = rng.uniform(-k, k, (P, H))
    return {n: v.astype(F32) for n, v in p.items()}


def bits(a):
    return np.asarray(a).view(np.uint32 if np.asarray(a).dtype == F32 else np.uint64)


# -- quantize_rows ------------------------------------------------------------------------------

def test_rounding_is_half_to_even_at_exact_halves():
    # max 127 -> 127 / max = 1 exactly: a * inv is a itself, .5 points stay .5 points
    q, s = ref.quantize_rows(np.array([[127, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -126.5]], F32))
    assert q.tolist() == [[127, 0, 2, 2, 0, -2, -2, 126, -126]] and s.tolist() == [1.0]
    # max 63.5 -> inv = 2 exactly: 0.25 -> 0.5 -> 0, 0.75 -> 1.5 -> 2, 1.25 -> 2.5 -> 2
    q, s = ref.quantize_rows(np.array([[63.5, 0.25, 0.75, 1.25, -0.75, -63.25]], F32))
    assert q.tolist() == [[127, 0, 2, 2, -2, -126]]
    assert s[0] == F32(63.5) / F32(127)


def test_max_element_maps_to_127_and_never_minus_128(rng):
    magnitude = np.exp(rng.uniform(-60, 60, (2000, 1)))  # 1e-26 to 1e26
    a = (rng.standard_normal((2000, 37)) * magnitude).astype(F32)
    a[::3] *= -1
    a[1::7, 5] = -np.abs(a[1::7]).max(axis=1) * 1.0000001  # the negative extreme is the max
    q, s = ref.quantize_rows(a)
    assert q.dtype == np.int8 and s.dtype == F32
    assert q.min() >= -127 and q.max() <= 127
    arg = np.argmax(np.abs(a), axis=1)
    top = q[np.arange(len(a)), arg]
    np.testing.assert_array_equal(np.abs(top), 127)
    np.testing.assert_array_equal(np.sign(top), np.sign(a[np.arange(len(a)), arg]))
    m = np.abs(a).max(axis=1)
    np.testing.assert_array_equal(bits(s), bits(m / F32(127)))
    # q * scale is a to within half a step (and a hair for the rounded 127 / m)
    err = np.abs(q * s[:, None].astype(np.float64) - a)
    assert np.all(err <= s[:, None].astype(np.float64) * (0.5 + 1e-5))


def test_matches_the_scalar_definition(rng):
    a = rng.standard_normal((300, 11)).astype(F32)
    a[0] = 0
    a[1, 3] = 1e-38  # a lone tiny value: 127 / m overflows -> a zero row
    a[2] = 1e-30  # small, but 127 / m is finite
    q, s = ref.quantize_rows(a)
    for r in range(len(a)):
        q_r, s_r = scalar_quantize(a[r])
        assert q[r].tolist() == q_r and bits(s[r]) == bits(s_r), r


@settings(max_examples=300)
@given(hnp.arrays(np.float32, st.tuples(st.integers(1, 4), st.integers(0, 9)),
                  elements=st.floats(width=32, allow_nan=True, allow_infinity=True)))
def test_matches_the_scalar_definition_on_any_float32(a):
    """Any values: subnormals, extremes, +-0, NaN, inf."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        q, s = ref.quantize_rows(a)
    assert q.min(initial=0) >= -127 and q.max(initial=0) <= 127
    for r in range(len(a)):
        q_r, s_r = scalar_quantize(a[r])
        assert q[r].tolist() == q_r and bits(s[r]) == bits(s_r), (r, a[r])


def test_zero_and_tiny_rows_give_scale_0_without_warnings():
    a = np.zeros((5, 8), F32)
    a[1, 2] = np.float32(1e-45)  # the smallest subnormal
    a[2, 0] = -np.float32(3e-37)  # 127 / 3e-37 overflows float32
    a[3, 0] = np.float32(4e-37)  # 127 / 4e-37 does not: a usable row
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        q, s = ref.quantize_rows(a)
    assert s[:3].tolist() == [0, 0, 0] and not q[:3].any() and s[4] == 0 and not q[4].any()
    assert q[3, 0] == 127 and s[3] == F32(4e-37) / F32(127) and s[3] > 0
    q, s = ref.quantize_rows(np.zeros((3, 0), F32))  # K = 0: zero rows
    assert q.shape == (3, 0) and s.tolist() == [0, 0, 0]


def test_non_finite_rows_get_scale_nan_and_q_0_others_untouched(rng):
    a = rng.standard_normal((4, 6)).astype(F32)
    a[1, 2] = np.nan
    a[2, 0] = np.inf
    a[3, 5] = -np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        q, s = ref.quantize_rows(a)
    assert np.isnan(s[1:]).all() and not q[1:].any()
    q0, s0 = ref.quantize_rows(a[:1])
    np.testing.assert_array_equal(q[0], q0[0])
    assert s[0] == s0[0] and np.isfinite(s[0])


def test_float64_is_rounded_to_float32_first_and_rows_are_the_last_axis(rng):
    a = rng.standard_normal((3, 4, 9))
    q, s = ref.quantize_rows(a)
    q32, s32 = ref.quantize_rows(a.astype(F32).reshape(12, 9))
    assert q.shape == (3, 4, 9) and s.shape == (3, 4)
    np.testing.assert_array_equal(q.reshape(12, 9), q32)
    np.testing.assert_array_equal(bits(s.reshape(12)), bits(s32))
    with pytest.raises(TypeError):
        ref.quantize_rows(np.ones((2, 2), np.int32))


# -- exact int32 sums ---------------------------------------------------------------------------

def test_int8_max_k_is_the_largest_k_whose_sums_fit_int32():
    assert 127**2 * MAX_K <= 2**31 - 1 < 127**2 * (MAX_K + 1)
    assert MAX_K == 133_144


def test_int32_sums_are_exact_at_the_extremes_for_the_largest_k():
    K = MAX_K
    alt = np.where(np.arange(K) % 2, 127, -127).astype(np.int8)
    qa = np.stack([np.full(K, 127, np.int8), np.full(K, -127, np.int8), alt, -alt])
    qw = np.stack([np.full(K, 127, np.int8), np.full(K, -127, np.int8), alt, -alt,
                   np.roll(alt, 1)])
    acc = ref._int_sums(qa, ref._int_weights_t(qw))
    assert acc.dtype == np.int32
    np.testing.assert_array_equal(acc, qa.astype(np.int64) @ qw.astype(np.int64).T)
    assert int(acc[0, 0]) == 127 * 127 * K == 2_147_479_576
    assert int(acc[0, 1]) == int(acc[1, 0]) == -127 * 127 * K
    # Python ints, for one full-scale row pair
    assert int(acc[2, 2]) == sum(int(a) * int(a) for a in alt.tolist())
    with pytest.raises(ValueError, match="K = 133145"):
        ref._int_sums(np.zeros((1, K + 1), np.int8), np.zeros((K + 1, 1)))


def test_int32_sums_match_numpy_integer_matmul(rng):
    for K in (1, 7, 64, 1000):
        qa = rng.integers(-127, 128, (9, K)).astype(np.int8)
        qw = rng.integers(-127, 128, (13, K)).astype(np.int8)
        np.testing.assert_array_equal(ref._int_sums(qa, ref._int_weights_t(qw)),
                                      qa.astype(np.int64) @ qw.astype(np.int64).T)


def test_largest_k_end_to_end_and_larger_k_refused():
    K = MAX_K
    ones = np.ones((4, K), F32)  # H = 1; every weight row is all ones: q = 127, scale 1/127
    p = ref.quantize_lstm(ones, np.ones((4, 1), F32))
    x = np.ones((1, K), F32)
    a = ref.int8_gates(x, np.zeros((1, 1), F32), **p)
    s = F32(1) / F32(127)
    expect = F32(F32(127 * 127 * K) * F32(s * s)) + F32(0)
    np.testing.assert_array_equal(bits(a), bits(np.full((1, 4), expect, F32)))
    big = np.ones((4, K + 1), F32)
    with pytest.raises(ValueError, match="INT8_MAX_K"):
        ref.quantize_lstm(big, np.ones((4, 1), F32))


# -- one step against the scalar recomputation ---------------------------------------------------

def test_step_matches_independent_recomputation(rng):
    T, B, I, H = 4, 3, 5, 3
    p = params(rng, I, H, scale=2.0)
    x = rng.standard_normal((T, B, I)).astype(F32)
    x[1, 2] = 0  # a zero input row
    h0 = (0.5 * rng.standard_normal((B, H))).astype(F32)
    h0[1] = 0  # a zero state row
    c0 = rng.standard_normal((B, H)).astype(F32)
    q = ref.quantize_lstm(**p)
    y, h_n, c_n = ref.forward_int8(x, **q, h0=h0, c0=c0)
    h, c = h0, c0
    for t in range(T):  # one call per step, carrying (h, c): bitwise the one-call run
        y_t, h_t, c_t = ref.forward_int8(x[t:t + 1], **q, h0=h, c0=c)
        np.testing.assert_array_equal(bits(y_t[0]), bits(y[t]))
        a = scalar_gates(x[t], h, p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"])
        np.testing.assert_array_equal(bits(ref.int8_gates(x[t], h, **q)), bits(a))
        h_ex, c_ex = float_cell(a, c.astype(np.float64))
        np.testing.assert_allclose(h_t, h_ex, rtol=0, atol=2e-6)
        np.testing.assert_allclose(c_t, c_ex, rtol=2e-6, atol=2e-6)
        h, c = h_t, c_t
    np.testing.assert_array_equal(bits(h_n), bits(h))
    np.testing.assert_array_equal(bits(c_n), bits(c))


def test_projection_step_matches_independent_recomputation(rng):
    T, B, I, H, P = 3, 2, 4, 5, 2
    p = params(rng, I, H, P)
    q = ref.quantize_lstm(**p)
    assert q["weight_hr"][0].shape == (P, H)
    x = rng.standard_normal((T, B, I)).astype(F32)
    h = np.zeros((B, P), F32)
    c = np.zeros((B, H), F32)
    qhr = [scalar_quantize(r) for r in p["weight_hr"]]
    for t in range(T):
        y_t, h_t, c_t = ref.forward_int8(x[t:t + 1], **q, h0=h, c0=c)
        a = ref.int8_gates(x[t], h, **q)
        np.testing.assert_array_equal(
            bits(a), bits(scalar_gates(x[t], h, p["weight_ih"], p["weight_hh"],
                                       p["bias_ih"], p["bias_hh"])))
        # r = o * tanh(c_t) as the reference computes it, then the projection by hand
        gt = a.copy()
        ref._sigmoid_(gt[:, :2 * H])
        np.tanh(gt[:, 2 * H:3 * H], out=gt[:, 2 * H:3 * H])
        ref._sigmoid_(gt[:, 3 * H:])
        c_new = gt[:, H:2 * H] * c + gt[:, :H] * gt[:, 2 * H:3 * H]
        np.testing.assert_array_equal(bits(c_new), bits(c_t))
        r = gt[:, 3 * H:] * np.tanh(c_new)
        for b in range(B):
            qr, sr = scalar_quantize(r[b])
            expect = [scalar_deq(qr, sr, *qhr[k]) for k in range(P)]
            np.testing.assert_array_equal(bits(h_t[b]), bits(np.array(expect, F32)))
        h, c = h_t, c_t


# -- invariances, dtypes, non-finite values ------------------------------------------------------

def test_rows_are_independent_of_the_batch_and_chunking(rng):
    T, B, I, H = 6, 4, 7, 5
    q = ref.quantize_lstm(**params(rng, I, H))
    x = rng.standard_normal((T, B, I)).astype(F32)
    y, h_n, c_n = ref.forward_int8(x, **q)
    for b in range(B):
        yb, hb, cb = ref.forward_int8(x[:, b:b + 1], **q)
        np.testing.assert_array_equal(bits(yb[:, 0]), bits(y[:, b]))
    y1, h1, c1 = ref.forward_int8(x[:2], **q)
    y2, h2, c2 = ref.forward_int8(x[2:], **q, h0=h1, c0=c1)
    np.testing.assert_array_equal(bits(np.concatenate([y1, y2])), bits(y))
    np.testing.assert_array_equal(bits(c2), bits(c_n))


def test_float64_computes_in_float32_and_returns_float64(rng):
    T, B, I, H = 3, 2, 4, 3
    p64 = {k: v.astype(np.float64) + 1e-12 for k, v in params(rng, I, H).items()}
    x64 = rng.standard_normal((T, B, I))
    y, h, c = ref.forward_int8(x64, **ref.quantize_lstm(**p64))
    p32 = {k: v.astype(F32) for k, v in p64.items()}
    y32, h32, c32 = ref.forward_int8(x64.astype(F32), **ref.quantize_lstm(**p32))
    assert y.dtype == h.dtype == c.dtype == np.float64
    np.testing.assert_array_equal(y, y32.astype(np.float64))
    np.testing.assert_array_equal(c, c32.astype(np.float64))


def test_no_bias_adds_zeros(rng):
    p = params(rng, 4, 3)
    q = ref.quantize_lstm(p["weight_ih"], p["weight_hh"])
    assert q["bias"].dtype == F32 and not q["bias"].any()
    x = rng.standard_normal((2, 1, 4)).astype(F32)
    y, _, _ = ref.forward_int8(x, q["weight_ih"], q["weight_hh"])
    np.testing.assert_array_equal(bits(y), bits(ref.forward_int8(x, **q)[0]))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_gives_nan_where_the_float_model_does(rng, bad):
    T, B, I, H = 5, 3, 4, 6
    p = params(rng, I, H)
    x = rng.standard_normal((T, B, I)).astype(F32)
    x[2, 1, 3] = bad
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, h_n, c_n = ref.forward_int8(x, **ref.quantize_lstm(**p))
    nan = np.zeros((T, B, H), bool)
    nan[2:, 1] = True
    np.testing.assert_array_equal(np.isnan(y), nan)
    assert np.isnan(h_n[1]).all() and np.isnan(c_n[1]).all()
    assert np.isfinite(h_n[[0, 2]]).all() and np.isfinite(c_n[[0, 2]]).all()
    if bad != bad:  # NaN: the float model has NaN in exactly the same places
        with np.errstate(invalid="ignore"):
            yf = ref.forward(x, p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"])[0]
        np.testing.assert_array_equal(np.isnan(yf), nan)


def test_nan_weight_row_gives_nan_everywhere(rng):
    p = params(rng, 3, 2)
    p["weight_hh"][5, 1] = np.nan
    q = ref.quantize_lstm(**p)
    assert np.isnan(q["weight_hh"][1][5]) and not q["weight_hh"][0][5].any()
    y, _, _ = ref.forward_int8(rng.standard_normal((3, 2, 3)).astype(F32), **q)
    # step 0 has h0 = 0 (the recurrent sum is 0 * NaN = NaN): NaN from the first step on
    assert np.isnan(y[:, :, 1]).all()


def test_rejects_bad_arguments(rng):
    q = ref.quantize_lstm(**params(rng, 4, 3))
    x = np.zeros((2, 1, 4), F32)
    with pytest.raises(TypeError):
        ref.forward_int8(x.astype(np.int32), **q)
    with pytest.raises(ValueError):
        ref.forward_int8(np.zeros((2, 1, 5), F32), **q)
    with pytest.raises(TypeError):
        ref.forward_int8(x, q["weight_ih"][0].astype(F32), q["weight_hh"])  # not a pair
    with pytest.raises(TypeError):
        ref.forward_int8(x, (q["weight_ih"][0].astype(np.int16), q["weight_ih"][1]),
                         q["weight_hh"])
    bad = q["weight_ih"][0].copy()
    bad[0, 0] = -128
    with pytest.raises(ValueError, match="-128"):
        ref.forward_int8(x, (bad, q["weight_ih"][1]), q["weight_hh"])
    with pytest.raises(ValueError):
        ref.forward_int8(x, **q, h0=np.zeros((2, 3), F32))


# -- close to the float model, over layers, directions and a projection -------------------------

@pytest.mark.parametrize("num_layers,bidirectional,proj_size",
                         [(1, False, 0), (2, True, 0), (2, False, 3), (3, True, 4)])
def test_layers_and_directions_are_close_to_the_float_model(rng, num_layers, bidirectional,
                                                            proj_size):
    T, B, I, H = 12, 3, 10, 8
    model = LSTM(I, H, num_layers, bidirectional=bidirectional, proj_size=proj_size, seed=3)
    sd = model.state_dict()
    D = 2 if bidirectional else 1
    layers = []
    for k in range(num_layers):
        layers.append([])
        for d in range(D):
            sfx = f"_l{k}" + ("_reverse" if d else "")
            layers[-1].append(ref.quantize_lstm(
                sd["weight_ih" + sfx], sd["weight_hh" + sfx], sd["bias_ih" + sfx],
                sd["bias_hh" + sfx], sd.get("weight_hr" + sfx)))
    x = rng.standard_normal((T, B, I)).astype(F32)
    H_out = proj_size or H
    h0 = (0.3 * rng.standard_normal((num_layers * D, B, H_out))).astype(F32)
    c0 = (0.3 * rng.standard_normal((num_layers * D, B, H))).astype(F32)
    y, (h_n, c_n) = model(x, (h0, c0))
    y8, h8, c8 = ref.forward_int8_layers(x, layers, h0, c0)
    assert y8.shape == y.shape and h8.shape == h_n.shape and c8.shape == c_n.shape
    for got, want in ((y8, y), (h8, h_n), (c8, c_n)):
        d = got.astype(np.float64) - want
        assert np.sqrt(np.mean(d * d)) < 4e-3 and np.abs(d).max() < 3e-2
    # the reverse direction really runs backwards: its first output step is its last one
    if bidirectional:
        np.testing.assert_array_equal(h8[num_layers * D - 1], y8[0, :, H_out:])


# -- accuracy contract against ONNX Runtime int8 (issue 19 item 4) ------------------------------

@pytest.fixture(scope="module")
def onnxruntime_quantization():
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    return pytest.importorskip("onnxruntime.quantization")


def _report(name, e):
    r8, m8 = e["int8"]
    print(f"\n{name} {wl.WORKLOADS.get(name, '')}: ours RMS {r8:.3e} max {m8:.3e}; "
          + "; ".join(f"{k} RMS {r:.3e} ({r8 / r:.2f}x) max {m:.3e} ({m8 / m:.2f}x)"
                      for k, (r, m) in e.items() if k != "int8"))


@pytest.mark.parametrize("name", ["a", "f", pytest.param("b", marks=pytest.mark.slow),
                                  pytest.param("c", marks=pytest.mark.slow),
                                  pytest.param("d", marks=pytest.mark.slow)])
def test_accuracy_no_worse_than_onnxruntime_int8(onnxruntime_quantization, name):
    e = wl.compare(*wl.WORKLOADS[name])
    _report(name, e)
    rms_allowance = 1.1 if name == "f" else 1.0
    for ours in ("int8", "compiled"):  # the definition, and the product's kernels
        for peer in ("ort", "ort_exact"):
            assert e[ours][0] <= rms_allowance * e[peer][0], (ours, peer, e)
            assert e[ours][1] <= 1.5 * e[peer][1], (ours, peer, e)


def test_one_step_accuracy_over_many_draws(onnxruntime_quantization):
    """Workload f is one step: its error is one draw of x's rounding, so one seed is a coin flip
    (ours / ORT exact RMS is 0.86 to 1.16 over seeds 0-2). Pooled over 24 draws, the RMS is
    still within the 1.1x allowance (measured 1.066x over 100 draws: ORT quantizes the row with
    256 levels between its min and max, we with 255 between +-max|row|)."""
    sq, mx = {}, {}
    for seed in range(24):
        e = wl.compare(*wl.WORKLOADS["f"], seed=seed)
        for k, (r, m) in e.items():
            sq[k] = sq.get(k, 0.0) + r * r
            mx[k] = max(mx.get(k, 0.0), m)
    e = {k: (math.sqrt(sq[k] / 24), mx[k]) for k in sq}
    _report("f x 24 draws", e)
    for ours in ("int8", "compiled"):
        for peer in ("ort", "ort_exact"):
            assert e[ours][0] <= 1.1 * e[peer][0], (ours, peer, e)
            assert e[ours][1] <= 1.5 * e[peer][1], (ours, peer, e)


def test_ort_emulation_matches_onnxruntime(onnxruntime_quantization, tmp_path):
    """`ort_int8_emulated` is ORT's algorithm with exact sums. ORT's sums are exact on every CPU
    when the weights are 7-bit (reduce_range=True: 2 * 255 * 64 < 2^15, no int16 saturation), so
    on such a model the emulation must match ORT itself, here to 1% of ORT's error."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    for B, T, I, H in ((1, 60, 128, 128), (8, 20, 64, 96)):
        p, x = wl.make_case(B, T, I, H, seed=5)
        model = LSTM(I, H)
        model.load_state_dict({k + "_l0": v for k, v in p.items()})
        model.to_onnx(tmp_path / "m.onnx")
        quantize_dynamic(tmp_path / "m.onnx", tmp_path / "q.onnx", weight_type=QuantType.QInt8,
                         reduce_range=True)
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.log_severity_level = 3
        sess = ort.InferenceSession(str(tmp_path / "q.onnx"), so,
                                    providers=["CPUExecutionProvider"])
        y = sess.run(["output"], {"x": x})[0]
        y_emu = wl.ort_int8_emulated(str(tmp_path / "q.onnx"), x)
        ref64 = wl.float64_output(p, x)
        rms_ort = wl.errors(y, ref64)[0]
        rms_diff = wl.errors(y_emu, y.astype(np.float64))[0]
        assert rms_diff <= 0.01 * rms_ort, (B, T, I, H, rms_diff, rms_ort)
