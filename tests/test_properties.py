"""Property-based checks (hypothesis) over random sizes, including the empty ones: the kernels
agree with the NumPy reference, forward and backward, and every batch row is the same sequence
run alone, bit for bit."""
import numpy as np
from hypothesis import given, settings, strategies as st

from fastlstm import LSTM, reference
from helpers import scaled_err

SIZES = st.tuples(st.integers(0, 6), st.integers(0, 4), st.integers(1, 20), st.integers(1, 20))


@settings(max_examples=40, deadline=None)
@given(sizes=SIZES, bias=st.booleans(), batch_first=st.booleans(), seed=st.integers(0, 2**16),
       threads=st.integers(1, 3))
def test_matches_reference_and_rows_are_independent(sizes, bias, batch_first, seed, threads):
    T, B, I, H = sizes
    rng = np.random.default_rng(seed)
    model = LSTM(I, H, bias=bias, batch_first=batch_first, dtype=np.float64, seed=seed)
    p = model.parameters()
    x = rng.standard_normal((T, B, I))
    h0, c0 = rng.standard_normal((2, 1, B, H))
    gy = rng.standard_normal((T, B, H))
    to_user = (lambda a: a.transpose(1, 0, 2)) if batch_first else (lambda a: a)

    out, (h_n, c_n), backprop = model.forward_train(to_user(x), (h0, c0), num_threads=threads)
    grads = backprop(to_user(gy), num_threads=threads)
    args = [p["weight_ih_l0"], p["weight_hh_l0"], p.get("bias_ih_l0"), p.get("bias_hh_l0")]
    r_out, r_h, r_c, cache = reference.forward_train(x, *args, h0=h0[0], c0=c0[0])
    r_grads = reference.backward(cache, grad_output=gy)
    assert scaled_err(to_user(out), r_out) <= 1e-12
    assert scaled_err(h_n[0], r_h) <= 1e-12 and scaled_err(c_n[0], r_c) <= 1e-12
    assert scaled_err(to_user(grads["x"]), r_grads["x"]) <= 1e-10
    for name in p:
        assert scaled_err(grads[name], r_grads[name.replace("_l0", "")]) <= 1e-10

    for b in range(B):  # each row alone: the same bits
        alone, (h1, c1) = model(to_user(x[:, b:b + 1]), (h0[:, b:b + 1], c0[:, b:b + 1]),
                                num_threads=threads)
        assert np.array_equal(to_user(alone)[:, 0], to_user(out)[:, b])
        assert np.array_equal(h1[0, 0], h_n[0, b]) and np.array_equal(c1[0, 0], c_n[0, b])


@settings(max_examples=40, deadline=None)
@given(sizes=SIZES.filter(lambda s: s[3] >= 2), proj=st.floats(0.0, 0.99), bias=st.booleans(),
       seed=st.integers(0, 2**16), threads=st.integers(1, 3))
def test_projection_matches_reference_and_rows_are_independent(sizes, proj, bias, seed, threads):
    """The same with proj_size in [1, H): the projected kernels against the reference."""
    T, B, I, H = sizes
    P = 1 + int(proj * (H - 1))
    rng = np.random.default_rng(seed)
    model = LSTM(I, H, bias=bias, proj_size=P, dtype=np.float64, seed=seed)
    p = model.parameters()
    x = rng.standard_normal((T, B, I))
    h0, c0 = rng.standard_normal((1, B, P)), rng.standard_normal((1, B, H))
    gy, gh = rng.standard_normal((T, B, P)), rng.standard_normal((B, P))

    out, (h_n, c_n), backprop = model.forward_train(x, (h0, c0), num_threads=threads)
    grads = backprop(gy, gh[None], num_threads=threads)
    args = [p["weight_ih_l0"], p["weight_hh_l0"], p.get("bias_ih_l0"), p.get("bias_hh_l0")]
    r_out, r_h, r_c, cache = reference.forward_train(x, *args, h0=h0[0], c0=c0[0],
                                                     weight_hr=p["weight_hr_l0"])
    r_grads = reference.backward(cache, grad_output=gy, grad_h_n=gh)
    assert scaled_err(out, r_out) <= 1e-12
    assert scaled_err(h_n[0], r_h) <= 1e-12 and scaled_err(c_n[0], r_c) <= 1e-12
    assert scaled_err(grads["x"], r_grads["x"]) <= 1e-10
    assert scaled_err(grads["h0"][0], r_grads["h0"]) <= 1e-10
    for name in p:
        assert scaled_err(grads[name], r_grads[name.replace("_l0", "")]) <= 1e-10, name

    for b in range(B):  # each row alone: the same bits
        alone, (h1, c1) = model(x[:, b:b + 1], (h0[:, b:b + 1], c0[:, b:b + 1]),
                                num_threads=threads)
        assert np.array_equal(alone[:, 0], out[:, b])
        assert np.array_equal(h1[0, 0], h_n[0, b]) and np.array_equal(c1[0, 0], c_n[0, b])
