"""The int8 C kernels (fl_ops_i8, issue 19) against the scheme's NumPy definition, bitwise, on
every int8 variant this CPU runs (the ``i8isa`` fixture): the GEMM's int32 sums against NumPy's
exact int64 products (and so against each other), row quantization against
``fastlstm.reference.quantize_rows``, dequantize-and-add against the reference's float32 ops,
and the three composed into one step's pre-activations against ``reference.int8_gates``.

The avx512vnni variant runs only on CPUs with AVX-512 VNNI and BW; tests/test_int8_vnni_emulated.py
runs its code on any x86-64, with the few AVX-512 instructions it uses emulated in C.
"""
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastlstm
from fastlstm import _kernels
from fastlstm import reference as ref

F32 = np.float32
MAX_K = ref.INT8_MAX_K
I8_ISAS = _kernels.int8_isas()


@pytest.fixture(params=I8_ISAS)
def i8isa(request):
    return request.param


def kpad(K):
    return (K + 3) // 4 * 4


def padded(a, width=None):
    """a (M, K) int8 -> (M, width or round_up(K, 4)), zeros after K."""
    M, K = a.shape
    out = np.zeros((M, width or kpad(K)), np.int8)
    out[:, :K] = a
    return out


def exact(a, w):
    """a (M, K) @ w (N, K).T in int64 (exact), as int32 (asserting it fits)."""
    r = a.astype(np.int64) @ w.astype(np.int64).T
    assert np.abs(r).max(initial=0) < 2**31
    return r.astype(np.int32)


def gemm(a, w, isa, width=None):
    packed, bsum = _kernels.int8_pack(w)
    return _kernels.int8_gemm(padded(a, width), packed, bsum, w.shape[0], a.shape[1], isa=isa)


def check_gemm(a, w, isa):
    got = gemm(a, w, isa)
    want = exact(a, w)
    assert got.dtype == np.int32 and got.shape == want.shape
    bad = np.argwhere(got != want)
    assert bad.size == 0, (f"{isa}: {len(bad)} wrong sums of {want.size} (M, N, K = {a.shape[0]}, "
                           f"{w.shape[0]}, {a.shape[1]}), first at {tuple(bad[0])}: "
                           f"{got[tuple(bad[0])]} != {want[tuple(bad[0])]}")
    return got


def rand_i8(rng, shape):
    return rng.integers(-127, 128, shape, dtype=np.int8)


# -- variants and dispatch ---------------------------------------------------------------------

def cpu_flags():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def test_variants_supported():
    assert I8_ISAS[-1] == "generic"
    assert set(I8_ISAS) <= set(_kernels.INT8_ISAS)
    assert _kernels.isa_int8() in I8_ISAS
    assert fastlstm.openmp_info()["isa_int8"] == _kernels.isa_int8()
    flags = cpu_flags()
    if flags is not None and sys.platform.startswith("linux") and "avx2" in flags:
        vnni = {"avx512_vnni", "avx512bw", "avx512f"} <= flags
        assert _kernels.int8_isa_supported("avx512vnni") == vnni
        assert _kernels.int8_isa_supported("avx2")
    assert not _kernels.int8_isa_supported("avx512")  # a float variant's name, not an int8 one
    with pytest.raises(ValueError, match="unknown int8"):
        _kernels.int8_quantize_rows(np.zeros((1, 4), F32), isa="sse9")
    for name in _kernels.INT8_ISAS:
        if name not in I8_ISAS:
            with pytest.raises(ValueError, match="not supported"):
                _kernels.int8_quantize_rows(np.zeros((1, 4), F32), isa=name)


def test_int8_variant_follows_float_variant():
    before = _kernels.isa()
    expected = {"generic": "generic", "avx2": "avx2",
                "avx512": "avx512vnni" if "avx512vnni" in I8_ISAS else "avx2"}
    try:
        for name in fastlstm.openmp_info()["isas"]:
            _kernels.select_isa(name)
            assert _kernels.isa_int8() == expected[name]
            assert fastlstm.openmp_info()["isa_int8"] == expected[name]
    finally:
        _kernels.select_isa(before)


def test_default_variant_is_the_active_one(rng):
    a, w = rand_i8(rng, (5, 37)), rand_i8(rng, (21, 37))
    packed, bsum = _kernels.int8_pack(w)
    got = _kernels.int8_gemm(padded(a), packed, bsum, 21, 37)
    np.testing.assert_array_equal(got, exact(a, w))


# -- packing -----------------------------------------------------------------------------------

@pytest.mark.parametrize("N, K", [(1, 1), (16, 4), (17, 5), (33, 63), (5, 0), (0, 7)])
def test_pack_layout(rng, N, K):
    w = rand_i8(rng, (N, K))
    packed, bsum = _kernels.int8_pack(w)
    P, KG = -(-N // 16), kpad(K) // 4
    assert packed.dtype == np.int8 and packed.shape == (P * KG * 64,)
    assert bsum.dtype == np.int32 and bsum.shape == (P * 16,)
    wp = np.zeros((P * 16, KG * 4), np.int8)
    wp[:N, :K] = w
    # byte ((p*KG + g)*64 + l*4 + j) = W[p*16 + l, g*4 + j]
    want = wp.reshape(P, 16, KG, 4).transpose(0, 2, 1, 3).reshape(-1)
    np.testing.assert_array_equal(packed, want)
    np.testing.assert_array_equal(bsum, 128 * wp.astype(np.int64).sum(axis=1))


def test_pack_bsum_wraps_modulo_2_32():
    K = MAX_K
    w = np.full((2, K), 127, np.int8)
    w[1] = -127
    _, bsum = _kernels.int8_pack(w)
    for n, sign in ((0, 1), (1, -1)):
        true = sign * 128 * 127 * K  # outside int32
        assert not -2**31 <= true < 2**31
        assert int(bsum[n]) == (true + 2**31) % 2**32 - 2**31
    assert not bsum[2:].any()


def test_arguments_checked(rng):
    w = rand_i8(rng, (3, 6))
    packed, bsum = _kernels.int8_pack(w)
    with pytest.raises(ValueError, match="round_up"):
        _kernels.int8_gemm(np.zeros((2, 6), np.int8), packed, bsum, 3, 6)  # needs 8 columns
    with pytest.raises(ValueError, match="smaller"):
        _kernels.int8_gemm(np.zeros((2, 8), np.int8), packed[:-1], bsum, 3, 6)
    with pytest.raises(ValueError, match="K <= 133144"):
        _kernels.int8_gemm(np.zeros((1, MAX_K + 4), np.int8), packed, bsum, 3, MAX_K + 1)
    with pytest.raises(ValueError, match="K <= 133144"):
        _kernels.int8_pack(np.zeros((1, MAX_K + 1), np.int8))
    with pytest.raises(TypeError):
        _kernels.int8_gemm(np.zeros((2, 8), np.uint8), packed, bsum, 3, 6)
    with pytest.raises(TypeError):
        _kernels.int8_pack(np.zeros((2, 8), np.int16))
    with pytest.raises(TypeError):
        _kernels.int8_quantize_rows(np.zeros((2, 8), np.float64))


# -- GEMM --------------------------------------------------------------------------------------

EDGES_M = [1, 2, 3, 4, 5, 15, 16, 17, 33]
EDGES_N = [1, 15, 16, 17, 33, 64, 65, 130]
EDGES_K = [1, 2, 3, 4, 5, 7, 8, 63, 64, 65, 257, 1023, 1024, 1025, 2051]


@pytest.mark.parametrize("M", EDGES_M)
def test_gemm_edges(rng, i8isa, M):
    for N in EDGES_N:
        for K in EDGES_K[::2] if M > 5 else EDGES_K:
            check_gemm(rand_i8(rng, (M, K)), rand_i8(rng, (N, K)), i8isa)


@pytest.mark.parametrize("M, N, K", [(64, 2048 // 8, 512), (48, 97, 700), (1, 4096 // 4, 1024),
                                     (7, 300, 3000)])
def test_gemm_random_larger(rng, i8isa, M, N, K):
    a, w = rand_i8(rng, (M, K)), rand_i8(rng, (N, K))
    got = check_gemm(a, w, i8isa)
    np.testing.assert_array_equal(got, gemm(a, w, "generic"))


@pytest.mark.parametrize("M, N, K", [(0, 5, 8), (3, 0, 8), (3, 5, 0), (0, 0, 0), (1, 17, 0)])
def test_gemm_empty(rng, i8isa, M, N, K):
    got = gemm(rand_i8(rng, (M, K)), rand_i8(rng, (N, K)), i8isa)
    assert got.shape == (M, N) and got.dtype == np.int32 and not got.any()


def extreme_pairs(M, N, K):
    """(a, w) pairs at the extremes: every product +127^2, every one -127^2, and alternating
    signs along k (sums cancel; each vpdpbusd / vpmaddubsw group sees mixed signs)."""
    alt = np.where(np.arange(K) % 2 == 0, 127, -127).astype(np.int8)
    alt3 = np.where(np.arange(K) % 3 == 0, -127, 127).astype(np.int8)
    full = lambda rows, v: np.full((rows, K), v, np.int8)  # noqa: E731
    return [
        (full(M, 127), full(N, 127)),
        (full(M, -127), full(N, -127)),
        (full(M, 127), full(N, -127)),
        (full(M, -127), full(N, 127)),
        (np.tile(alt, (M, 1)), np.tile(alt, (N, 1))),
        (np.tile(alt, (M, 1)), np.tile(-alt, (N, 1))),
        (np.tile(alt3, (M, 1)), np.tile(alt, (N, 1))),
        (np.tile(alt, (M, 1)), full(N, 127)),
    ]


@pytest.mark.parametrize("M, N, K", [(17, 33, 4096), (3, 16, 4097), (1, 17, 10001)])
def test_gemm_extremes(i8isa, M, N, K):
    for a, w in extreme_pairs(M, N, K):
        check_gemm(a, w, i8isa)


@pytest.mark.parametrize("M, N", [(1, 16), (2, 17)])
def test_gemm_largest_k(i8isa, M, N):
    """K = INT8_MAX_K: |sum| up to 127^2 * K = 2,147,479,576, just under 2^31; VNNI's
    (a+128)*b sums and bsum pass 2^31 and wrap."""
    K = MAX_K
    for a, w in extreme_pairs(M, N, K)[:5]:
        got = check_gemm(a, w, i8isa)
        assert np.abs(got.astype(np.int64)).max() == 127 * 127 * K


def test_gemm_row_stride_and_padding(rng, i8isa):
    """lda > round_up(K, 4) (a view of a wider array), and padding columns that are not zero:
    the packed weights are zero there, so they add nothing."""
    M, N, K = 9, 37, 1030
    a, w = rand_i8(rng, (M, K)), rand_i8(rng, (N, K))
    packed, bsum = _kernels.int8_pack(w)
    wide = rand_i8(rng, (M, kpad(K) + 100))
    wide[:, :K] = a
    view = wide[:, :kpad(K)]
    assert view.strides[0] == kpad(K) + 100
    np.testing.assert_array_equal(_kernels.int8_gemm(view, packed, bsum, N, K, isa=i8isa),
                                  exact(a, w))
    np.testing.assert_array_equal(_kernels.int8_gemm(wide, packed, bsum, N, K, isa=i8isa),
                                  exact(a, w))


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_gemm_hypothesis(data):
    M = data.draw(st.integers(1, 9), label="M")
    N = data.draw(st.integers(1, 40), label="N")
    K = data.draw(st.integers(0, 70), label="K")
    ints = st.integers(-127, 127)
    a = data.draw(hnp.arrays(np.int8, (M, K), elements=ints), label="a")
    w = data.draw(hnp.arrays(np.int8, (N, K), elements=ints), label="w")
    for isa in I8_ISAS:
        check_gemm(a, w, isa)


# -- quantize_row ------------------------------------------------------------------------------

def bits(x):
    return np.asarray(x, F32).view(np.uint32)


def check_quantize(x, isa):
    x = np.ascontiguousarray(x, F32)
    q, s = _kernels.int8_quantize_rows(x, isa=isa)
    rq, rs = ref.quantize_rows(x)
    K = x.shape[1]
    assert q.shape == (x.shape[0], kpad(K)) and q.dtype == np.int8
    assert s.shape == (x.shape[0],) and s.dtype == F32
    np.testing.assert_array_equal(q[:, :K], rq, err_msg=f"q ({isa})")
    assert not q[:, K:].any(), f"padding ({isa})"
    np.testing.assert_array_equal(bits(s), bits(rs), err_msg=f"scale bits ({isa})")
    return q, s


@pytest.mark.parametrize("K", list(range(0, 70)) + [255, 256, 257, 1000, 1027])
def test_quantize_random(rng, i8isa, K):
    x = rng.standard_normal((6, K)).astype(F32)
    x[1] *= F32(1e-30)
    x[2] *= F32(1e30)
    x[3] = np.round(x[3] * 4) / 4  # many quarter values
    if K:
        x[4, rng.integers(K)] = F32(-50)  # the max, negative, anywhere (a vector tail too)
        x[5, K - 1] = F32(9)  # the max in the last element
    check_quantize(x, i8isa)


@pytest.mark.parametrize("K", [1, 3, 4, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63])
def test_quantize_half_even(i8isa, K):
    """max = 127 gives inv = 1 exactly, so x*inv = x: the .5 points round to even (2.5 -> 2,
    -0.5 -> 0, 126.5 -> 126), wherever they sit in the row."""
    halves = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5, 126.5, -126.5, 125.5, 0.49999997],
                      F32)
    rows = []
    for shift in range(len(halves)):
        row = np.resize(np.roll(halves, shift), K).astype(F32)
        row[(shift * 7) % K] = F32(127) if shift % 2 else F32(-127)
        rows.append(row)
    q, _ = check_quantize(np.array(rows), i8isa)
    assert np.abs(q.astype(np.int16)).max() == 127


@pytest.mark.parametrize("K", [1, 5, 8, 13, 16, 29, 32, 40, 67])
def test_quantize_non_finite_and_zero_rows(i8isa, K):
    rows = []
    for pos in sorted({0, K // 2, K - 1}):
        for bad in (np.nan, np.inf, -np.inf, -np.nan):
            row = np.linspace(-3, 3, K).astype(F32)
            row[pos] = bad
            rows.append(row)
    rows.append(np.zeros(K, F32))
    rows.append(np.full(K, -0.0, F32))
    x = np.array(rows)
    q, s = check_quantize(x, i8isa)
    assert np.isnan(s[:-2]).all() and not q.any()
    assert (bits(s[-2:]) == 0).all()


@pytest.mark.parametrize("K", [1, 7, 16, 35])
def test_quantize_tiny_rows(i8isa, K):
    """127 / max overflows for max < 127/FLT_MAX (scale 0, q 0); just above, scale is a
    subnormal and q holds +-127 (subnormal inputs included: no DAZ/FTZ)."""
    fmax = np.finfo(F32).max
    thr = F32(127) / fmax
    rows = []
    for m in (thr, np.nextafter(thr, F32(0)), np.nextafter(thr, F32(1)), F32(1e-36), F32(1e-38),
              F32(1e-45), np.finfo(F32).tiny):
        row = np.linspace(-1, 1, K).astype(F32) * m
        row[K // 2] = m
        rows.append(row)
    # a normal max near the threshold beside subnormal elements, which quantize to nonzero q
    sub = np.resize(np.array([1e-38, -5e-39, 1e-39, 3e-40, -1e-44, 0.0], F32), K)
    sub[K // 2] = F32(4e-37)
    rows.append(sub)
    x = np.array(rows, F32)
    q, s = check_quantize(x, i8isa)
    if K > 1:
        assert np.count_nonzero(q[-1]) > 1 and 0 < s[-1] < np.finfo(F32).tiny


def test_quantize_strided_rows(rng, i8isa):
    x = rng.standard_normal((5, 40)).astype(F32)
    check_quantize(x[:, 3:33], i8isa)  # rows 40 apart
    q, s = _kernels.int8_quantize_rows(x[:, ::2], isa=i8isa)  # not unit stride: copied
    rq, rs = ref.quantize_rows(x[:, ::2])
    np.testing.assert_array_equal(q[:, :20], rq)
    np.testing.assert_array_equal(bits(s), bits(rs))


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_quantize_hypothesis(data):
    K = data.draw(st.integers(0, 70), label="K")
    M = data.draw(st.integers(1, 4), label="M")
    elements = st.floats(width=32, allow_nan=True, allow_infinity=True, allow_subnormal=True)
    if data.draw(st.booleans(), label="finite"):
        elements = st.floats(width=32, allow_nan=False, allow_infinity=False,
                             allow_subnormal=True)
    x = data.draw(hnp.arrays(F32, (M, K), elements=elements), label="x")
    for isa in I8_ISAS:
        check_quantize(x, isa)


# -- dequant_add -------------------------------------------------------------------------------

def same_floats(got, want):
    """Bitwise equal, a NaN matching any NaN (NaN payloads are not part of the contract)."""
    got, want = np.asarray(got, F32), np.asarray(want, F32)
    both_nan = np.isnan(got) & np.isnan(want)
    return bool(np.all(both_nan | (bits(got) == bits(want))))


def ref_dequant(acc, s_a, s_w, add):
    with np.errstate(over="ignore", invalid="ignore"):
        d = ref._dequantize(acc, s_a, s_w)
        return d if add is None else add + d


@pytest.mark.parametrize("N", [1, 7, 8, 9, 15, 16, 17, 33, 100])
def test_dequant_add(rng, i8isa, N):
    M = 6
    acc = rng.integers(-2**31, 2**31, (M, N), dtype=np.int64).astype(np.int32)
    acc[1] = rng.integers(-2**24 - 100, 2**24 + 100, N)  # near float32's exact integers
    acc[2, ::2] = 0
    acc[3] = -rng.integers(1, 1000, N)
    s_a = rng.uniform(1e-4, 1e-1, M).astype(F32)
    s_a[3] = 0  # negative sums times scale 0: -0.0, which an add of +0.0 would lose
    s_a[4] = np.nan
    s_a[5] = F32(3e38)  # overflow to +-inf
    s_w = rng.uniform(1e-4, 1e-1, N).astype(F32)
    s_w[0] = F32(1e-30)  # subnormal products
    add = rng.standard_normal((M, N)).astype(F32)
    add[2] = -0.0
    for a in (add, None):
        got = _kernels.int8_dequant_add(acc, s_a, s_w, a, isa=i8isa)
        assert same_floats(got, ref_dequant(acc, s_a, s_w, a)), f"{i8isa}, add={a is not None}"
    inplace = add.copy()
    out = _kernels.int8_dequant_add(acc, s_a, s_w, inplace, isa=i8isa, out=inplace)
    assert out is inplace and same_floats(inplace, ref_dequant(acc, s_a, s_w, add))


# -- one step, composed ------------------------------------------------------------------------

@pytest.mark.parametrize("B, I, H", [(1, 5, 8), (3, 37, 20), (16, 64, 32)])
def test_composed_step_matches_int8_gates(rng, i8isa, B, I, H):
    """The kernels chained as the time loop chains them give reference.int8_gates bitwise:
    gx = bias + deq(qx Q_ih), a = gx + deq(qh Q_hh)."""
    k = 1 / np.sqrt(H)
    w_ih = rng.uniform(-k, k, (4 * H, I)).astype(F32)
    w_hh = rng.uniform(-k, k, (4 * H, H)).astype(F32)
    p = ref.quantize_lstm(w_ih, w_hh, rng.uniform(-k, k, 4 * H), rng.uniform(-k, k, 4 * H))
    x = rng.standard_normal((B, I)).astype(F32)
    h = (rng.standard_normal((B, H)) * 0.3).astype(F32)
    h[0] = 0  # a zero row: scale 0
    want = ref.int8_gates(x, h, p["weight_ih"], p["weight_hh"], p["bias"])

    (q_ih, s_ih), (q_hh, s_hh) = p["weight_ih"], p["weight_hh"]
    pk_ih, bs_ih = _kernels.int8_pack(q_ih)
    pk_hh, bs_hh = _kernels.int8_pack(q_hh)
    qx, sx = _kernels.int8_quantize_rows(x, isa=i8isa)
    qh, sh = _kernels.int8_quantize_rows(h, isa=i8isa)
    gx = _kernels.int8_dequant_add(_kernels.int8_gemm(qx, pk_ih, bs_ih, 4 * H, I, isa=i8isa),
                                   sx, s_ih, np.tile(p["bias"], (B, 1)), isa=i8isa)
    a = _kernels.int8_dequant_add(_kernels.int8_gemm(qh, pk_hh, bs_hh, 4 * H, H, isa=i8isa),
                                  sh, s_hh, gx, isa=i8isa, out=gx)
    assert same_floats(a, want)

