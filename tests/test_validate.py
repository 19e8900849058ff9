"""The bad-input battery: every wrong argument raises the right exception type, with a message that
names the argument, the shape it expected and the shape it got; every odd-but-valid input (other
float dtypes, lists, strided/Fortran/negative-stride/broadcast/read-only/misaligned arrays) is
accepted and gives bitwise the result of a plain contiguous copy; edge sizes (B=0, T=0, huge)
behave.
"""
import os
import re
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import fastlstm

T, B, I, H = 4, 2, 3, 5


@pytest.fixture
def model():
    return fastlstm.LSTM(I, H, seed=0)


@pytest.fixture
def data():
    rng = np.random.default_rng(42)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    h0 = rng.standard_normal((1, B, H)).astype(np.float32)
    c0 = rng.standard_normal((1, B, H)).astype(np.float32)
    return x, h0, c0


def _msg(excinfo):
    return str(excinfo.value)


def assert_mentions(excinfo, *fragments):
    """The message contains every fragment (literally)."""
    msg = _msg(excinfo)
    missing = [f for f in fragments if f not in msg]
    assert not missing, f"message {msg!r} lacks {missing}"


# ------------------------------------------------------------------------------------------------
# x: rank and features


@pytest.mark.parametrize("shape", [(3,), (2, 2, 2, 3), (2, 2, 2, 2, 3), (1,), (5,)])
def test_x_wrong_rank(model, shape):
    x = np.zeros(shape, np.float32)
    with pytest.raises(ValueError, match=r"^x must be 3-D") as ei:
        model(x)
    assert_mentions(ei, "(seq_len, batch, input_size)", "input_size=3", f"{len(shape)}-D",
                    f"shape {shape}")
    with pytest.raises(ValueError, match=r"^x must be 3-D"):
        model.forward_train(x)


def test_x_wrong_rank_batch_first_names_that_layout():
    m = fastlstm.LSTM(I, H, batch_first=True)
    with pytest.raises(ValueError) as ei:
        m(np.zeros((2, 2, 2, 3), np.float32))
    assert_mentions(ei, "x must be 3-D", "(batch, seq_len, input_size)", "batch_first=True",
                    "(2, 2, 2, 3)")


def test_x_rank_1_suggests_a_time_axis(model):
    with pytest.raises(ValueError) as ei:
        model(np.zeros(3, np.float32))
    assert_mentions(ei, "x[None]")


@pytest.mark.parametrize("x", [np.float32(1.0), np.zeros((), np.float32), 1.0],
                         ids=["np_scalar", "0d_array", "python_float"])
def test_x_rank_0_reports_the_received_shape(model, x):
    with pytest.raises(ValueError) as ei:
        model(x)
    assert_mentions(ei, "x must be 3-D", "0-D", "shape ()")


def test_x_rank_0_is_refused(model):
    """Whatever the message says, a scalar x is a ValueError naming x (the part that works)."""
    for x in (np.float32(1.0), np.zeros((), np.float32), 1.0):
        with pytest.raises(ValueError, match=r"^x must be 3-D"):
            model(x)


@pytest.mark.parametrize("batch_first", [False, True])
def test_x_wrong_feature_count(batch_first):
    m = fastlstm.LSTM(I, H, batch_first=batch_first)
    for shape in [(4, 2, 4), (4, 2, 1), (4, 2, 7), (4, 7)]:
        with pytest.raises(ValueError) as ei:
            m(np.zeros(shape, np.float32))
        layout = "(batch, seq_len, 3)" if batch_first else "(seq_len, batch, 3)"
        assert_mentions(ei, "x has", f"{shape[-1]} features", "input_size=3", layout,
                        "(seq_len, 3) unbatched", f"got {shape}")
        assert "moveaxis" not in _msg(ei)


@pytest.mark.parametrize("shape,axis", [((3, 2, 4), 0), ((4, 3, 7), 1), ((3, 4), 0)])
def test_x_features_on_another_axis_suggests_moveaxis(model, shape, axis):
    with pytest.raises(ValueError) as ei:
        model(np.zeros(shape, np.float32))
    assert_mentions(ei, f"got {shape}", f"Axis {axis} has size 3", f"np.moveaxis(x, {axis}, -1)")


# ------------------------------------------------------------------------------------------------
# hx = (h0, c0)


def _hx(slot, bad, good):
    return (bad, good) if slot == "h0" else (good, bad)


SLOTS = ["h0", "c0"]


@pytest.mark.parametrize("slot", SLOTS)
def test_state_missing_layer_axis(model, data, slot):
    x, h0, c0 = data
    with pytest.raises(ValueError) as ei:
        model(x, _hx(slot, np.zeros((B, H), np.float32), h0))
    assert_mentions(ei, f"{slot} must have shape", "(1, 2, 5)", "got (2, 5)", f"{slot}[None]")
    assert _msg(ei).startswith(slot)


@pytest.mark.parametrize("slot", SLOTS)
@pytest.mark.parametrize("bad", [(1, 3, 5), (1, 1, 5), (1, 7, 5)])
def test_state_wrong_batch(model, data, slot, bad):
    x, h0, _ = data
    with pytest.raises(ValueError) as ei:
        model(x, _hx(slot, np.zeros(bad, np.float32), h0))
    assert_mentions(ei, f"{slot} must have shape", "(1, 2, 5)", f"got {bad}", "batch")
    assert _msg(ei).startswith(slot)


@pytest.mark.parametrize("slot", SLOTS)
@pytest.mark.parametrize("bad", [(1, 2, 4), (1, 2, 6), (1, 2, 7)])
def test_state_wrong_hidden_size(model, data, slot, bad):
    x, h0, _ = data
    with pytest.raises(ValueError) as ei:
        model(x, _hx(slot, np.zeros(bad, np.float32), h0))
    assert_mentions(ei, f"{slot} must have shape", "hidden_size", "(1, 2, 5)", f"got {bad}")


@pytest.mark.parametrize("slot", SLOTS)
@pytest.mark.parametrize("dim", [0, 1, 2])
@pytest.mark.parametrize("batch_first", [False, True])
def test_state_each_dim_set_to_seven(slot, dim, batch_first):
    m = fastlstm.LSTM(I, H, batch_first=batch_first)
    x = np.zeros((B, T, I) if batch_first else (T, B, I), np.float32)
    good = np.zeros((1, B, H), np.float32)
    shape = [1, B, H]
    shape[dim] = 7
    bad = np.zeros(shape, np.float32)
    for call in (m, m.forward_train):
        with pytest.raises(ValueError) as ei:
            call(x, _hx(slot, bad, good))
        assert_mentions(ei, f"{slot} must have shape", "(1, 2, 5)", f"got {tuple(shape)}")
        assert _msg(ei).startswith(slot)


@pytest.mark.parametrize("slot", SLOTS)
@pytest.mark.parametrize("batch_first", [False, True])
def test_state_batch_first_confusion(slot, batch_first):
    """(B, 1, H) is what someone who thinks states follow batch_first passes."""
    m = fastlstm.LSTM(I, H, batch_first=batch_first)
    Bb = 3
    x = np.zeros((Bb, T, I) if batch_first else (T, Bb, I), np.float32)
    good = np.zeros((1, Bb, H), np.float32)
    with pytest.raises(ValueError) as ei:
        m(x, _hx(slot, np.zeros((Bb, 1, H), np.float32), good))
    assert_mentions(ei, f"{slot} must have shape", "(1, 3, 5)", "got (3, 1, 5)",
                    f"{slot}.transpose(1, 0, 2)", "(num_layers * num_directions, batch, ")


@pytest.mark.parametrize("slot", SLOTS)
def test_unbatched_x_with_3d_states(model, slot):
    x = np.zeros((T, I), np.float32)
    good = np.zeros((1, H), np.float32)
    with pytest.raises(ValueError) as ei:
        model(x, _hx(slot, np.zeros((1, 1, H), np.float32), good))
    assert_mentions(ei, f"{slot} must have shape", "(1, 5)", "unbatched", "got (1, 1, 5)")
    # and the reverse: 2-D states with a 3-D x
    with pytest.raises(ValueError) as ei:
        model(np.zeros((T, 1, I), np.float32), _hx(slot, good, np.zeros((1, 1, H), np.float32)))
    assert_mentions(ei, f"{slot} must have shape", "(1, 1, 5)", "got (1, 5)")


def test_unbatched_x_state_missing_layer_axis(model):
    with pytest.raises(ValueError) as ei:
        model(np.zeros((T, I), np.float32), (np.zeros(H, np.float32), np.zeros((1, H))))
    assert_mentions(ei, "h0 must have shape", "(1, 5)", "got (5,)", "h0[None]")


@pytest.mark.parametrize("hx", [
    np.zeros((1, B, H), np.float32),
    np.zeros((2, 1, B, H), np.float32),
    (np.zeros((1, B, H), np.float32),),
    (np.zeros((1, B, H), np.float32),) * 3,
    [np.zeros((1, B, H), np.float32)] * 3,
    {"h0": 0, "c0": 0},
    "h0c0",
    5,
], ids=["array", "stacked_array", "len1", "len3", "list_len3", "dict", "str", "int"])
def test_hx_not_a_pair(model, data, hx):
    x = data[0]
    for call in (model, model.forward_train):
        with pytest.raises(TypeError, match=r"^hx must be a tuple \(h0, c0\)") as ei:
            call(x, hx)
        assert type(hx).__name__ in _msg(ei)


def test_hx_as_a_list_pair_is_accepted(model, data):
    x, h0, c0 = data
    assert np.array_equal(model(x, [h0, c0])[0], model(x, (h0, c0))[0])


# ------------------------------------------------------------------------------------------------
# dtypes


BAD_DTYPES = {
    "int": lambda a: a.astype(np.int64),
    "int8": lambda a: a.astype(np.int8),
    "bool": lambda a: a.astype(bool),
    "complex": lambda a: a.astype(np.complex128),
    "object": lambda a: a.astype(object),
    "str": lambda a: a.astype(str),
}


@pytest.mark.parametrize("kind", sorted(BAD_DTYPES))
def test_non_float_dtypes_are_type_errors_naming_the_argument(model, data, kind):
    x, h0, c0 = data
    bad = BAD_DTYPES[kind]
    with pytest.raises(TypeError, match=r"^x must hold floating-point numbers") as ei:
        model(bad(x), (h0, c0))
    assert_mentions(ei, "float32", "got dtype")
    with pytest.raises(TypeError, match=r"^x must hold floating-point"):
        model.forward_train(bad(x), (h0, c0))
    with pytest.raises(TypeError, match=r"^h0 must hold floating-point"):
        model(x, (bad(h0), c0))
    with pytest.raises(TypeError, match=r"^c0 must hold floating-point"):
        model(x, (h0, bad(c0)))
    y, (h, c), backprop = model.forward_train(x, (h0, c0))
    with pytest.raises(TypeError, match=r"^grad_output must hold floating-point"):
        backprop(bad(y))
    with pytest.raises(TypeError, match=r"^grad_h_n must hold floating-point"):
        backprop(None, bad(h))
    with pytest.raises(TypeError, match=r"^grad_c_n must hold floating-point"):
        backprop(None, None, bad(c))
    w = model.parameters()["weight_hh_l0"]
    with pytest.raises(TypeError, match=r"^weight_hh_l0 must hold floating-point"):
        model.set_parameters(weight_hh_l0=bad(w))


def test_ragged_lists_are_type_errors_naming_the_argument(model):
    ragged = [[[1.0, 2.0, 3.0]], [[1.0, 2.0]]]
    with pytest.raises(TypeError, match=r"^x must be an array of floats") as ei:
        model(ragged)
    assert_mentions(ei, "list")
    x = np.zeros((T, 1, I), np.float32)
    with pytest.raises(TypeError, match=r"^h0 must be an array of floats"):
        model(x, ([[[0.0] * H], [[0.0]]], np.zeros((1, 1, H))))
    with pytest.raises(TypeError, match=r"^c0 must be an array of floats"):
        model(x, (np.zeros((1, 1, H)), [[[0.0] * H], [[0.0]]]))
    _, _, backprop = model.forward_train(x)
    with pytest.raises(TypeError, match=r"^grad_h_n must be an array of floats"):
        backprop(grad_h_n=[[[0.0] * H], [[0.0]]])


@pytest.mark.parametrize("other", [np.float16, np.float64, np.longdouble])
def test_other_float_dtypes_cast_like_a_float32_copy(other):
    m = fastlstm.LSTM(I, H, seed=1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, I)).astype(other)
    h0 = rng.standard_normal((1, B, H)).astype(other)
    c0 = rng.standard_normal((1, B, H)).astype(other)
    f32 = [a.astype(np.float32) for a in (x, h0, c0)]
    y, (h, c) = m(x, (h0, c0))
    y32, (h32, c32) = m(f32[0], (f32[1], f32[2]))
    for got, ref in ((y, y32), (h, h32), (c, c32)):
        assert got.dtype == np.float32
        assert np.array_equal(got, ref)
    yt, _, backprop = m.forward_train(x, (h0, c0))
    assert yt.dtype == np.float32 and np.array_equal(yt, y32)
    gy = rng.standard_normal(y.shape).astype(other)
    g = backprop(gy, h0, c0)
    _, _, bp32 = m.forward_train(*[f32[0], (f32[1], f32[2])])
    g32 = bp32(gy.astype(np.float32), f32[1], f32[2])
    for k in g32:
        assert g[k].dtype == np.float32 and np.array_equal(g[k], g32[k]), k


@pytest.mark.parametrize("other", [np.float16, np.float32, np.longdouble])
def test_other_float_dtypes_on_a_float64_model(other):
    m = fastlstm.LSTM(I, H, dtype=np.float64, seed=1)
    x = np.random.default_rng(0).standard_normal((T, B, I)).astype(other)
    y, (h, c) = m(x)
    y64, (h64, c64) = m(x.astype(np.float64))
    assert y.dtype == h.dtype == c.dtype == np.float64
    assert np.array_equal(y, y64) and np.array_equal(h, h64) and np.array_equal(c, c64)


def test_python_nested_lists_are_accepted(model, data):
    x, h0, c0 = data
    y, (h, c) = model(x.tolist(), (h0.tolist(), c0.tolist()))
    y_ref, (h_ref, c_ref) = model(x, (h0, c0))
    assert np.array_equal(y, y_ref) and np.array_equal(h, h_ref) and np.array_equal(c, c_ref)
    yt, _, backprop = model.forward_train(x.tolist(), [h0.tolist(), c0.tolist()])
    assert np.array_equal(yt, y_ref)
    g = backprop(y_ref.tolist(), h_ref.tolist(), c_ref.tolist())
    _, _, bp_ref = model.forward_train(x, (h0, c0))
    g_ref = bp_ref(y_ref, h_ref, c_ref)
    for k in g_ref:
        assert np.array_equal(g[k], g_ref[k]), k
    # unbatched, as lists
    y1, (h1, c1) = model(x[:, 0].tolist(), (h0[:, 0].tolist(), c0[:, 0].tolist()))
    assert np.array_equal(y1, y_ref[:, 0])


def test_torch_tensors_are_accepted(model, data):
    torch = pytest.importorskip("torch")
    x, h0, c0 = data
    y_ref, (h_ref, c_ref) = model(x, (h0, c0))
    y, (h, c) = model(torch.from_numpy(x).requires_grad_(),
                      (torch.from_numpy(h0), torch.from_numpy(c0).double()))
    assert isinstance(y, np.ndarray)
    assert np.array_equal(y, y_ref) and np.array_equal(h, h_ref) and np.array_equal(c, c_ref)


def test_bfloat16_torch_tensor_is_cast_like_float16(model, data):
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(data[0]).to(torch.bfloat16)
    y, _ = model(x)
    assert np.array_equal(y, model(x.float().numpy())[0])


def test_bfloat16_torch_tensor_is_refused_with_a_type_error(model, data):
    """What works today: a TypeError (whatever it says), not a crash or a silent wrong result."""
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(data[0]).to(torch.bfloat16)
    try:
        y, _ = model(x)
    except TypeError:
        pass
    else:
        assert np.array_equal(y, model(x.float().numpy())[0])


# ------------------------------------------------------------------------------------------------
# Memory layouts: accepted, and bitwise the result of a contiguous copy


def _strided(a):
    """A non-contiguous view with a's values (every other element of a wider array)."""
    return np.stack([np.zeros_like(a), a], -1)[..., 1]


def _fortran(a):
    return np.asfortranarray(a)


def _negative_stride(a):
    return a[::-1].copy()[::-1]


def _zero_stride(a):
    return np.broadcast_to(a[:1], a.shape)  # same shape, values of a[0] broadcast


def _read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def _misaligned(a):
    buf = bytes(1) + np.ascontiguousarray(a).tobytes()
    out = np.frombuffer(buf, a.dtype, count=a.size, offset=1).reshape(a.shape)
    assert not out.flags.aligned
    return out


LAYOUTS = {"strided": _strided, "fortran": _fortran, "negative_stride": _negative_stride,
           "zero_stride": _zero_stride, "read_only": _read_only, "misaligned": _misaligned}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_odd_layouts_give_bitwise_the_contiguous_result(layout, batch_first, dtype):
    make = LAYOUTS[layout]
    m = fastlstm.LSTM(I, 20, batch_first=batch_first, dtype=dtype, seed=3)
    rng = np.random.default_rng(5)
    xs = (3, 6, I) if batch_first else (6, 3, I)
    x = rng.standard_normal(xs).astype(dtype)
    h0 = rng.standard_normal((1, 3, 20)).astype(dtype)
    c0 = rng.standard_normal((1, 3, 20)).astype(dtype)
    gy = rng.standard_normal(xs[:2] + (20,)).astype(dtype)
    gh = rng.standard_normal((1, 3, 20)).astype(dtype)
    odd = [make(a) for a in (x, h0, c0, gy, gh)]
    plain = [np.ascontiguousarray(a) for a in odd]
    if layout != "zero_stride":
        assert all(np.array_equal(o, a) for o, a in zip(odd, (x, h0, c0, gy, gh)))
    for flip in range(3):  # the odd array as x only, as the states only, as everything
        use = [odd[k] if (flip == 2 or (flip == 0 and k == 0) or (flip == 1 and k in (1, 2)))
               else plain[k] for k in range(5)]
        y, (h, c) = m(use[0], (use[1], use[2]), num_threads=2)
        y_ref, (h_ref, c_ref) = m(plain[0], (plain[1], plain[2]), num_threads=2)
        assert np.array_equal(y, y_ref) and np.array_equal(h, h_ref) and np.array_equal(c, c_ref)
        yt, _, backprop = m.forward_train(use[0], (use[1], use[2]))
        assert np.array_equal(yt, y_ref)
        g = backprop(use[3], use[4], use[4])
        _, _, bp_ref = m.forward_train(plain[0], (plain[1], plain[2]))
        g_ref = bp_ref(plain[3], plain[4], plain[4])
        for k in g_ref:
            assert np.array_equal(g[k], g_ref[k]), (flip, k)
    # unbatched x in that layout
    xu = make(x[:, 0] if not batch_first else x[0])
    assert np.array_equal(m(xu)[0], m(np.ascontiguousarray(xu))[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_misaligned_arrays_reach_the_kernels_aligned(dtype):
    # x86 loads a misaligned double without complaint, so only UBSan (.ci/sanitize) saw the
    # kernels read one; what the validation hands them is checked here too.
    from fastlstm._validate import as_float_array

    x = _misaligned(np.arange(12, dtype=dtype).reshape(3, 4))
    got = as_float_array("x", x, dtype)
    assert got.flags.aligned and got.flags.c_contiguous and np.array_equal(got, x)
    assert as_float_array("x", got, dtype) is got  # an aligned array is not copied again


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_odd_layouts_for_parameters(layout):
    rng = np.random.default_rng(6)
    ref = fastlstm.LSTM(I, H, seed=0)
    params = {k: rng.standard_normal(v.shape).astype(np.float32)
              for k, v in ref.parameters().items()}
    odd = fastlstm.LSTM(I, H, seed=0)
    odd.set_parameters(**{k: LAYOUTS[layout](v) for k, v in params.items()})
    ref.set_parameters(**{k: np.ascontiguousarray(LAYOUTS[layout](v)) for k, v in params.items()})
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    assert np.array_equal(odd(x)[0], ref(x)[0])


# ------------------------------------------------------------------------------------------------
# Constructor and num_threads


@pytest.mark.parametrize("name", ["input_size", "hidden_size"])
@pytest.mark.parametrize("value", [3.0, "3", True, None, 2.5, np.float32(3)],
                         ids=["float", "str", "bool", "None", "float2.5", "np_float"])
def test_constructor_non_int_sizes_are_type_errors(name, value):
    kwargs = {"input_size": 3, "hidden_size": 5, name: value}
    with pytest.raises(TypeError, match=rf"^{name} must be an int") as ei:
        fastlstm.LSTM(**kwargs)
    assert repr(value) in _msg(ei)


@pytest.mark.parametrize("name", ["input_size", "hidden_size", "num_layers"])
@pytest.mark.parametrize("value", [0, -1, -7])
def test_constructor_non_positive_sizes_are_value_errors(name, value):
    kwargs = {"input_size": 3, "hidden_size": 5, name: value}
    with pytest.raises(ValueError, match=rf"^{name} must be a positive int, got {value}$"):
        fastlstm.LSTM(**kwargs)


def test_constructor_numpy_int_sizes_are_accepted():
    m = fastlstm.LSTM(np.int64(3), np.int32(5))
    assert (m.input_size, m.hidden_size) == (3, 5)
    assert type(m.input_size) is int


@pytest.mark.parametrize("kwargs,match", [
    (dict(proj_size=5), r"proj_size must be 0 \(no projection\) or in \[1, hidden_size\)"),
    (dict(proj_size=-1), "proj_size must be 0"),
    (dict(dropout=1.5), r"dropout must be in \[0, 1\]"),
    (dict(dropout=-0.1), r"dropout must be in \[0, 1\]"),
    (dict(num_layers=0), "num_layers must be a positive int"),
])
def test_constructor_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fastlstm.LSTM(3, 5, **kwargs)


@pytest.mark.parametrize("kwargs", [dict(proj_size=1.0), dict(dropout="0.1"),
                                    dict(proj_size=True), dict(num_layers=2.0)])
def test_constructor_bad_option_types(kwargs):
    with pytest.raises(TypeError, match=next(iter(kwargs))):
        fastlstm.LSTM(3, 5, **kwargs)


@pytest.mark.parametrize("dtype", [np.float16, int, np.int32, np.complex64, "banana", object,
                                   np.longdouble, bool],
                         ids=["float16", "int", "int32", "complex64", "banana", "object",
                              "longdouble", "bool"])
def test_constructor_bad_dtype(dtype):
    with pytest.raises(TypeError, match=r"^dtype must be float32 or float64, got"):
        fastlstm.LSTM(3, 5, dtype=dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, "float32", "float64", "f4", float])
def test_constructor_good_dtypes(dtype):
    assert fastlstm.LSTM(3, 5, dtype=dtype).dtype == np.dtype(dtype)


@pytest.mark.parametrize("nt,exc", [(0, ValueError), (-1, ValueError), (-8, ValueError),
                                    (1.5, TypeError), ("2", TypeError), (2.0, TypeError),
                                    (True, TypeError), ([2], TypeError)],
                         ids=["0", "-1", "-8", "1.5", "str2", "2.0", "True", "list"])
def test_bad_num_threads(model, data, nt, exc):
    x = data[0]
    with pytest.raises(exc, match=r"^num_threads must be None or a positive int, got"):
        model(x, num_threads=nt)
    with pytest.raises(exc, match=r"^num_threads must be None or a positive int, got"):
        model.forward_train(x, num_threads=nt)
    _, _, backprop = model.forward_train(x)
    with pytest.raises(exc, match=r"^num_threads must be None or a positive int, got"):
        backprop(grad_h_n=np.ones((1, B, H)), num_threads=nt)


def test_numpy_int_num_threads_accepted(model, data):
    x = data[0]
    assert np.array_equal(model(x, num_threads=np.int64(2))[0], model(x, num_threads=1)[0])


def test_huge_num_threads_is_capped_or_named(model, data):
    x = data[0]
    try:
        y, _ = model(x, num_threads=2 ** 31)
    except (ValueError, OverflowError) as exc:
        assert "num_threads" in str(exc)
    else:
        assert np.array_equal(y, model(x, num_threads=1)[0])


def test_num_threads_int_max_is_fine(model, data):
    x = data[0]
    assert np.array_equal(model(x, num_threads=2 ** 31 - 1)[0], model(x, num_threads=1)[0])


# ------------------------------------------------------------------------------------------------
# backprop's upstream gradients


@pytest.mark.parametrize("unbatched", [False, True])
def test_upstream_wrong_shapes(model, data, unbatched):
    x, h0, c0 = data
    if unbatched:
        x, h0, c0 = x[:, 0], h0[:, 0], c0[:, 0]
    y, (h, c), backprop = model.forward_train(x, (h0, c0))
    cases = [
        ("grad_output", "output", y.shape, (T, B + 1, H)),
        ("grad_output", "output", y.shape, y.shape[:-1] + (H + 1,)),
        ("grad_output", "output", y.shape, y.shape[::-1]),
        ("grad_output", "output", y.shape, (T - 1,) + y.shape[1:]),
        ("grad_h_n", "h_n", h.shape, (B, H)),
        ("grad_h_n", "h_n", h.shape, (1, 7, H)),
        ("grad_c_n", "c_n", c.shape, (1, 1, 1, H)),
        ("grad_c_n", "c_n", c.shape, (H,)),
    ]
    for name, of, expected, got in cases:
        if got == expected:
            continue
        with pytest.raises(ValueError) as ei:
            backprop(**{name: np.zeros(got, np.float32)})
        assert_mentions(ei, f"{name} must have the shape of {of}", str(tuple(expected)),
                        f"got {tuple(got)}")
        assert _msg(ei).startswith(name)


def test_no_upstream_gradient(model, data):
    _, _, backprop = model.forward_train(data[0])
    with pytest.raises(ValueError, match="grad_output, grad_h_n, grad_c_n"):
        backprop()
    with pytest.raises(ValueError, match="at least one"):
        backprop(None, None, None)


def test_each_upstream_gradient_alone_is_enough(model, data):
    x, h0, c0 = data
    y, (h, c), backprop = model.forward_train(x, (h0, c0))
    g_all = backprop(np.ones_like(y), np.ones_like(h), np.ones_like(c))
    parts = [backprop(np.ones_like(y)), backprop(grad_h_n=np.ones_like(h)),
             backprop(grad_c_n=np.ones_like(c))]
    for k in g_all:  # linear in the upstream gradients
        np.testing.assert_allclose(sum(p[k].astype(np.float64) for p in parts), g_all[k],
                                   rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# set_parameters / load_state_dict


@pytest.mark.parametrize("name,bad", [
    ("weight_ih_l0", (20, 4)), ("weight_ih_l0", (21, 3)), ("weight_ih_l0", (20,)),
    ("weight_hh_l0", (20, 4)), ("weight_hh_l0", (20, 5, 1)), ("weight_hh_l0", (5, 5)),
    ("bias_ih_l0", (21,)), ("bias_ih_l0", (1, 20)), ("bias_hh_l0", (5,)), ("bias_hh_l0", ()),
])
def test_set_parameters_wrong_shape(model, data, name, bad):
    before = model(data[0])[0]
    expected = model.parameters()[name].shape
    with pytest.raises(ValueError) as ei:
        model.set_parameters(**{name: np.zeros(bad, np.float32)})
    assert _msg(ei).startswith(f"{name} must have shape {expected}")
    if bad != ():  # see test_set_parameters_scalar_reports_its_shape
        assert_mentions(ei, f"got {bad}")
    assert "transposed" not in _msg(ei)
    assert np.array_equal(model(data[0])[0], before)  # nothing changed


def test_set_parameters_scalar_reports_its_shape(model):
    with pytest.raises(ValueError) as ei:
        model.set_parameters(bias_ih_l0=np.float32(0))
    assert_mentions(ei, "got ()")


@pytest.mark.parametrize("name", ["weight_ih_l0", "weight_hh_l0"])
def test_set_parameters_transposed_weight_gets_the_hint(model, name):
    shape = model.parameters()[name].shape
    with pytest.raises(ValueError) as ei:
        model.set_parameters(**{name: np.zeros(shape[::-1], np.float32)})
    assert_mentions(ei, f"{name} must have shape {shape}", f"got {shape[::-1]}", "transposed",
                    f"{name}.T")


def test_set_parameters_is_all_or_nothing(model, data):
    """A bad array anywhere leaves every parameter as it was."""
    before = {k: v.copy() for k, v in model.parameters().items()}
    y_before = model(data[0])[0]
    with pytest.raises(ValueError):
        model.set_parameters(weight_ih_l0=np.ones((20, 3)), weight_hh_l0=np.ones((20, 4)))
    with pytest.raises(TypeError):
        model.set_parameters(weight_ih_l0=np.ones((20, 3)), weight_hh_l0=np.ones((20, 5), int))
    with pytest.raises(TypeError):
        model.set_parameters(weight_ih_l0=np.ones((20, 3)), nonsense=np.ones(3))
    for k, v in model.parameters().items():
        assert np.array_equal(v, before[k]), k
    assert np.array_equal(model(data[0])[0], y_before)


@pytest.mark.parametrize("names", [["weight"], ["weight_ih_l1"], ["bias_ih_l0_reverse"],
                                   ["weight_ih"]])
def test_set_parameters_unknown_name(model, names):
    with pytest.raises(TypeError, match="unknown parameter name") as ei:
        model.set_parameters(**{n: np.zeros(3) for n in names})
    assert_mentions(ei, *names, "weight_ih_l0", "weight_hh_l0")


def test_set_parameters_bias_on_a_model_without_bias():
    m = fastlstm.LSTM(I, H, bias=False)
    with pytest.raises(TypeError, match="unknown parameter name") as ei:
        m.set_parameters(bias_ih_l0=np.zeros(20))
    assert_mentions(ei, "bias_ih_l0")


def test_load_state_dict_missing_and_unexpected_keys(model):
    sd = dict(model.state_dict())
    missing = {k: v for k, v in sd.items() if k != "bias_hh_l0"}
    with pytest.raises(KeyError) as ei:
        model.load_state_dict(missing)
    assert_mentions(ei, "missing keys ['bias_hh_l0']", "unexpected keys []")
    with pytest.raises(KeyError) as ei:
        model.load_state_dict(dict(sd, weight_hr_l0=np.zeros((5, 5))))
    assert_mentions(ei, "missing keys []", "unexpected keys ['weight_hr_l0']")
    with pytest.raises(KeyError):
        model.load_state_dict({})
    # without strict, both are fine
    model.load_state_dict(missing, strict=False)
    model.load_state_dict(dict(sd, extra=np.zeros(3)), strict=False)
    # a present key with a bad shape is still a ValueError
    with pytest.raises(ValueError, match="^weight_hh_l0 must have shape"):
        model.load_state_dict(dict(sd, weight_hh_l0=np.zeros((20, 4))))


def test_from_state_dict_bad_input():
    with pytest.raises(KeyError, match="weight_hh_l0"):
        fastlstm.LSTM.from_state_dict({"weight_ih_l0": np.zeros((20, 3))})
    with pytest.raises(ValueError, match=r"weight_ih_l0 must have shape \(4\*hidden_size"):
        fastlstm.LSTM.from_state_dict({"weight_ih_l0": np.zeros((19, 3)),
                                       "weight_hh_l0": np.zeros((19, 5))})
    with pytest.raises(KeyError, match=r"missing keys \['weight_hh_l0_reverse'\]"):
        fastlstm.LSTM.from_state_dict({"weight_ih_l0": np.zeros((20, 3)),
                                       "weight_hh_l0": np.zeros((20, 5)),
                                       "weight_ih_l0_reverse": np.zeros((20, 3))})
    with pytest.raises(KeyError, match=r"unexpected keys \['weight_ih_l7'\]"):
        fastlstm.LSTM.from_state_dict({"weight_ih_l0": np.zeros((20, 3)),
                                       "weight_hh_l0": np.zeros((20, 5)),
                                       "weight_ih_l7": np.zeros((20, 5))})


# ------------------------------------------------------------------------------------------------
# Edge sizes


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
def test_empty_batch(dtype, batch_first):
    m = fastlstm.LSTM(I, H, batch_first=batch_first, dtype=dtype, seed=0)
    x = np.zeros((0, T, I) if batch_first else (T, 0, I), dtype)
    yshape = (0, T, H) if batch_first else (T, 0, H)
    for nt in (None, 1, 2):
        y, (h, c) = m(x, num_threads=nt)
        assert y.shape == yshape and h.shape == (1, 0, H) and c.shape == (1, 0, H)
        assert y.dtype == h.dtype == c.dtype == np.dtype(dtype)
        y, (h, c) = m(x, (np.zeros((1, 0, H)), np.zeros((1, 0, H))), num_threads=nt)
        assert y.shape == yshape
        y, (h, c), backprop = m.forward_train(x, num_threads=nt)
        assert y.shape == yshape and h.shape == (1, 0, H)
        g = backprop(np.zeros(yshape, dtype), num_threads=nt)
        assert g["x"].shape == x.shape and g["h0"].shape == (1, 0, H)
        assert g["c0"].shape == (1, 0, H)
        for k, v in m.parameters().items():
            assert g[k].shape == v.shape and g[k].dtype == np.dtype(dtype)
            assert not np.any(g[k]), k  # a sum over no rows is zero
        g = backprop(grad_h_n=np.zeros((1, 0, H)), num_threads=nt)
        assert not np.any(g["weight_hh_l0"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
def test_empty_sequence(dtype, batch_first):
    m = fastlstm.LSTM(I, H, batch_first=batch_first, dtype=dtype, seed=0)
    rng = np.random.default_rng(0)
    x = np.zeros((B, 0, I) if batch_first else (0, B, I), dtype)
    yshape = (B, 0, H) if batch_first else (0, B, H)
    h0 = rng.standard_normal((1, B, H)).astype(dtype)
    c0 = rng.standard_normal((1, B, H)).astype(dtype)
    for nt in (None, 1, 2):
        y, (h, c) = m(x, (h0, c0), num_threads=nt)
        assert y.shape == yshape and y.dtype == np.dtype(dtype)
        assert np.array_equal(h, h0) and np.array_equal(c, c0)
        assert not np.shares_memory(h, h0) and not np.shares_memory(c, c0)
        y, (h, c) = m(x, num_threads=nt)  # zeros in, zeros out
        assert not np.any(h) and not np.any(c)
        y, (h, c), backprop = m.forward_train(x, (h0, c0), num_threads=nt)
        assert y.shape == yshape and np.array_equal(h, h0) and np.array_equal(c, c0)
        gh = rng.standard_normal((1, B, H)).astype(dtype)
        gc = rng.standard_normal((1, B, H)).astype(dtype)
        g = backprop(np.zeros(yshape, dtype), gh, gc, num_threads=nt)
        assert g["x"].shape == x.shape
        assert np.array_equal(g["h0"], gh) and np.array_equal(g["c0"], gc)
        for k, v in m.parameters().items():
            assert g[k].shape == v.shape and not np.any(g[k]), k
        g = backprop(grad_h_n=gh, num_threads=nt)
        assert np.array_equal(g["h0"], gh) and not np.any(g["c0"])


def test_empty_unbatched_sequence(model):
    h0 = np.full((1, H), 0.5, np.float32)
    y, (h, c) = model(np.zeros((0, I), np.float32), (h0, -h0))
    assert y.shape == (0, H) and h.shape == (1, H)
    assert np.array_equal(h, h0) and np.array_equal(c, -h0)


@pytest.mark.parametrize("proj,layers,bidir", [(0, 1, False), (2, 1, False), (0, 2, True)],
                         ids=["plain", "projected", "stacked-bidirectional"])
def test_empty_unbatched_sequence_trains(proj, layers, bidir):
    """(0, input_size): backprop used to fail reshaping an empty grad_output to (0, 1, -1)."""
    m = fastlstm.LSTM(I, H, num_layers=layers, bidirectional=bidir, proj_size=proj, seed=0)
    S = layers * (2 if bidir else 1)
    rng = np.random.default_rng(0)
    h0 = rng.standard_normal((S, proj or H)).astype(np.float32)
    c0 = rng.standard_normal((S, H)).astype(np.float32)
    y, (h, c), backprop = m.forward_train(np.zeros((0, I), np.float32), (h0, c0))
    assert y.shape == (0, S // layers * (proj or H)) and np.array_equal(h, h0)
    gh, gc = rng.standard_normal(h.shape).astype(np.float32), np.ones(c.shape, np.float32)
    g = backprop(np.zeros(y.shape, np.float32), gh, gc)
    assert g["x"].shape == (0, I)
    assert np.array_equal(g["h0"], gh) and np.array_equal(g["c0"], gc)
    for k, v in m.parameters().items():
        assert g[k].shape == v.shape and not np.any(g[k]), k
    g = backprop(grad_output=np.zeros(y.shape, np.float32))
    assert not np.any(g["h0"]) and not np.any(g["c0"])


@pytest.mark.parametrize("lengths", [[], (), np.array([]), np.zeros(0, np.int32)],
                         ids=["list", "tuple", "float-array", "int-array"])
def test_empty_lengths_on_an_empty_batch(lengths):
    """[] is float64 to NumPy; for an empty batch it is the only lengths there are."""
    m = fastlstm.LSTM(I, H, seed=0)
    x = np.zeros((T, 0, I), np.float32)
    y, (h, c) = m(x, lengths=lengths)
    assert y.shape == (T, 0, H) and h.shape == c.shape == (1, 0, H)
    y, (h, c), backprop = m.forward_train(x, lengths=lengths)
    g = backprop(np.zeros(y.shape, np.float32))
    assert g["x"].shape == x.shape and not np.any(g["weight_ih_l0"])
    with pytest.raises(TypeError, match="integers"):  # floats for a real batch still refused
        m(np.zeros((T, 1, I), np.float32), lengths=[1.0])


def test_cell_memory_error_names_the_cell():
    with pytest.raises(MemoryError, match=r"^the parameters of LSTMCell\(1099511627776, "):
        fastlstm.LSTMCell(2 ** 40, 2 ** 40)


def test_huge_sizes_fail_before_any_work():
    """A 2**40-step (or 2**40-row) broadcast x, no memory behind it, and a constructor whose
    parameters cannot fit must raise MemoryError or ValueError at once, not start computing,
    copy, or crash. Run in a child process with an address-space limit, so that a regression
    cannot take the test session down with it."""
    code = textwrap.dedent("""
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (16 << 30, 16 << 30))
        import numpy as np, fastlstm

        def attempt(call):
            try:
                call()
            except (MemoryError, ValueError) as exc:
                print("raised", type(exc).__name__, repr(str(exc)[:200]))
            else:
                print("returned")
            assert fastlstm.openmp_info()["last_num_threads"] is None, "a kernel ran"
        for batch_first in (False, True):
            m = fastlstm.LSTM(1, 4, batch_first=batch_first, seed=0)
            shape = (1, 2 ** 40, 1) if batch_first else (2 ** 40, 1, 1)
            x = np.broadcast_to(np.zeros((1, 1, 1), np.float32), shape)
            for call in (m, m.forward_train, m.quantize("int8")):
                attempt(lambda: call(x))
        # one step of 2**40 rows: step and LSTMCell used to copy x first (4 TiB)
        x_t = np.broadcast_to(np.zeros((1, 1), np.float32), (2 ** 40, 1))
        cell = fastlstm.LSTMCell(1, 4)
        for call in (fastlstm.LSTM(1, 4).step, cell, cell.forward_train,
                     fastlstm.LSTM(1, 4).quantize("int8").step, cell.quantize("int8")):
            attempt(lambda: call(x_t))
        # a constructor: the layers are counted in O(1), not listed (10**10 of them used to
        # grow memory for minutes); the packed copies' padding counts (16x at hidden_size 1)
        attempt(lambda: fastlstm.LSTM(4, 4, num_layers=10 ** 10))
        fastlstm.model._MAX_BYTES = 1 << 30
        attempt(lambda: fastlstm.LSTM(2_000_000, 1))  # ~2.5 GiB with its packs, 92 MiB without
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(fastlstm.__file__))] +
        [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr[-2000:])
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 13 and all(line.startswith("raised") for line in lines), lines
    for line in lines:  # fastlstm's refusal from the sizes, not NumPy's failed copy (or the
        assert "would need" in line, line  # limit hit after minutes of growth)


@pytest.mark.parametrize("proj", [0, 24], ids=["plain", "projected"])
def test_nan_in_x_stays_in_its_row(proj):
    for B_, H_ in [(4, 5), (3, 100), (2, 40)]:  # batch split; unit split; one row per thread
        m = fastlstm.LSTM(I, H_, proj_size=proj if proj < H_ else 0, seed=2)
        x = np.random.default_rng(1).standard_normal((6, B_, I)).astype(np.float32)
        x[2, 1, 0] = np.nan
        for nt in (1, 2, 4):
            for y, (h, c) in (m(x, num_threads=nt), m.forward_train(x, num_threads=nt)[:2]):
                assert np.all(np.isfinite(y[:2])), "steps before the NaN"
                assert np.all(np.isnan(y[2:, 1])), "the NaN's row, from its step on"
                rows = [b for b in range(B_) if b != 1]
                assert np.all(np.isfinite(y[:, rows])), (B_, H_, nt)
                assert np.all(np.isfinite(h[:, rows])) and np.all(np.isfinite(c[:, rows]))
                assert np.all(np.isnan(h[:, 1])) and np.all(np.isnan(c[:, 1]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_inf_in_x_gives_bounded_outputs(dtype):
    m = fastlstm.LSTM(I, 20, dtype=dtype, seed=3)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((8, 3, I)).astype(dtype)
    # one infinite feature per (t, b) row, so x @ W_ih^T has no inf - inf
    x[1, 0, 0] = np.inf
    x[2, 1, 2] = -np.inf
    x[3:, 2, 1] = np.inf
    x[5, 0, 1] = -np.inf
    for nt in (1, 2):
        for y, (h, c) in (m(x, num_threads=nt), m.forward_train(x, num_threads=nt)[:2]):
            assert np.all(np.isfinite(y)) and np.all(np.isfinite(h)) and np.all(np.isfinite(c))
            assert np.all(np.abs(y) <= 1) and np.all(np.abs(h) <= 1)
    # an all-inf input with a single feature is the same
    m1 = fastlstm.LSTM(1, 20, dtype=dtype, seed=3)
    y, (h, c) = m1(np.array([np.inf, -np.inf, np.inf], dtype).reshape(3, 1, 1))
    assert np.all(np.isfinite(y)) and np.all(np.abs(y) <= 1) and np.all(np.isfinite(c))


@pytest.mark.parametrize("proj", [0, 3], ids=["plain", "proj"])
@pytest.mark.parametrize("H_", [5, 20, 32])  # 5, 20: a padded last unit block; 32: none
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_inf_in_x_gives_the_gradients_of_saturated_gates(dtype, H_, proj):
    """A saturated gate passes no gradient: with an inf in x, only the weight_ih columns of that
    feature are NaN (0 * inf), as in the NumPy reference (and torch). The padding units' gates,
    x @ 0 = NaN there, must not spread NaN into dx, dh0, dc0 or the other weights."""
    rng = np.random.default_rng(H_)
    m = fastlstm.LSTM(I, H_, proj_size=proj, dtype=dtype, seed=3)
    x = rng.standard_normal((6, 3, I))
    x[1, 0, 2] = np.inf
    x[3, 2, 0] = -np.inf
    gy = rng.standard_normal((6, 3, proj or H_))
    p = {k: v.astype(np.float64) for k, v in m.parameters().items()}
    cache = fastlstm.reference.forward_train(
        x, p["weight_ih_l0"], p["weight_hh_l0"], p["bias_ih_l0"], p["bias_hh_l0"],
        weight_hr=p.get("weight_hr_l0"))[3]
    with np.errstate(invalid="ignore"):  # the reference's 0 * inf, on purpose
        expected = fastlstm.reference.backward(cache, grad_output=gy)
    for nt in (1, 2):
        y, _, backprop = m.forward_train(x.astype(dtype), num_threads=nt)
        got = backprop(gy.astype(dtype), num_threads=nt)
        for name, want in expected.items():
            have = got[name if name in ("x", "h0", "c0") else name + "_l0"]
            assert np.array_equal(np.isnan(have.reshape(want.shape)), np.isnan(want)), (name, nt)
            np.testing.assert_allclose(np.nan_to_num(have.reshape(want.shape)),
                                       np.nan_to_num(want), rtol=1e-4, atol=1e-5,
                                       err_msg=f"{name} nt={nt}")
    assert np.isnan(expected["weight_ih"]).any()  # the case is the one described


def test_messages_name_the_argument_first(model, data):
    """Every input error starts with the argument's name, so it can be grepped for."""
    x, h0, c0 = data
    cases = [
        (lambda: model(x[..., :2]), "x"),
        (lambda: model(x, (h0[0], c0)), "h0"),
        (lambda: model(x, (h0, c0[0])), "c0"),
        (lambda: model(x, h0), "hx"),
        (lambda: model(x, num_threads=0), "num_threads"),
        (lambda: model.set_parameters(weight_ih_l0=np.zeros(3)), "weight_ih_l0"),
        (lambda: fastlstm.LSTM(0, 3), "input_size"),
        (lambda: fastlstm.LSTM(3, 0), "hidden_size"),
        (lambda: fastlstm.LSTM(3, 3, dtype=int), "dtype"),
    ]
    for call, name in cases:
        with pytest.raises((ValueError, TypeError)) as ei:
            call()
        assert re.match(rf"^{name}\b", _msg(ei)), (name, _msg(ei))


def test_infinite_states_of_both_signs_warn_nothing():
    """A bidirectional stack's backward adds the directions' dx: +inf and -inf meet there as in
    the kernels, which give NaN without a NumPy RuntimeWarning; so must the sum."""
    m = fastlstm.LSTM(2, 3, num_layers=2, bidirectional=True, dtype=np.float64, seed=0)
    c0 = np.zeros((4, 1, 3))
    c0[2, 0, 0], c0[3, 0, 0] = np.inf, -np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, _, backprop = m.forward_train(np.zeros((1, 1, 2)), (np.zeros((4, 1, 3)), c0))
        g = backprop(grad_c_n=np.ones((4, 1, 3)))
    assert np.isnan(g["x"]).any()
