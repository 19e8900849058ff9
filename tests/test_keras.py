"""Keras import (from_keras) against real Keras 3 layers run on the torch backend.

Errors are max|ours - keras| / max|keras| <= 2e-5: Keras computes in float32.
"""
import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is first imported

import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")

import fastlstm  # noqa: E402
from fastlstm.interop.keras import from_keras  # noqa: E402
from helpers import scaled_err  # noqa: E402

TOL = 2e-5
B, T, I, H = 3, 5, 4, 6


def np_(value):
    return keras.ops.convert_to_numpy(value)


def randomize(layer, rng):
    """Nonzero random values (biases included) for every weight of a built layer."""
    layer.set_weights([rng.uniform(-0.6, 0.6, w.shape).astype(np.float32)
                       for w in layer.get_weights()])


def keras_lstm(rng, input_size=I, **kwargs):
    kwargs.setdefault("return_sequences", True)
    kwargs.setdefault("return_state", True)
    layer = keras.layers.LSTM(H, **kwargs)
    layer.build((None, None, input_size))
    randomize(layer, rng)
    return layer


def bidirectional(rng, **kwargs):
    merge_mode = kwargs.pop("merge_mode", "concat")
    layer = keras.layers.Bidirectional(
        keras.layers.LSTM(H, return_sequences=True, return_state=True, **kwargs),
        merge_mode=merge_mode)
    layer.build((None, None, I))
    randomize(layer, rng)
    return layer


def assert_close(ours, ref, what):
    for name, a, r in zip(("output", "h_n", "c_n"), ours, ref):
        err = scaled_err(a, r)
        assert err <= TOL, f"{what}: {name} scaled error {err:.2e} > {TOL}"


def run(model, x, hx=None):
    out, (h_n, c_n) = model(x, hx)
    return out, h_n, c_n


@pytest.mark.parametrize("use_bias", [True, False])
def test_single_layer(rng, use_bias):
    layer = keras_lstm(rng, use_bias=use_bias)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    y, h, c = (np_(v) for v in layer(x))
    model = from_keras(layer)
    assert (model.input_size, model.hidden_size, model.num_layers) == (I, H, 1)
    assert model.bias is use_bias and model.batch_first and model.dtype == np.float32
    if use_bias:  # Keras's one bias goes to bias_ih; bias_hh is zero
        sd = model.state_dict()
        np.testing.assert_array_equal(sd["bias_ih_l0"], layer.get_weights()[2])
        np.testing.assert_array_equal(sd["bias_hh_l0"], 0)
    assert_close(run(model, x), (y, h[None], c[None]), f"use_bias={use_bias}")
    # the classmethod the model delegates to
    assert_close(run(fastlstm.LSTM.from_keras(layer), x), (y, h[None], c[None]), "from_keras")


def test_initial_state(rng):
    layer = keras_lstm(rng)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    h0, c0 = (rng.standard_normal((B, H)).astype(np.float32) for _ in range(2))
    y, h, c = (np_(v) for v in layer(x, initial_state=[h0, c0]))
    model = from_keras(layer)
    assert_close(run(model, x, (h0[None], c0[None])), (y, h[None], c[None]), "initial_state")


@pytest.mark.parametrize("use_bias", [True, False])
def test_get_weights_arrays(rng, use_bias):
    layer = keras_lstm(rng, use_bias=use_bias)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    y, h, c = (np_(v) for v in layer(x))
    arrays = layer.get_weights()
    assert len(arrays) == (3 if use_bias else 2)
    assert_close(run(from_keras(arrays), x), (y, h[None], c[None]), "get_weights()")
    wide = from_keras([a.astype(np.float64) for a in arrays])  # dtype follows the kernel
    assert wide.dtype == np.float64
    assert_close(run(wide, x.astype(np.float64)), (y, h[None], c[None]), "float64 arrays")
    assert from_keras(arrays, dtype=np.float64, batch_first=False).dtype == np.float64


def test_rnn_of_lstm_cell(rng):
    layer = keras.layers.RNN(keras.layers.LSTMCell(H), return_sequences=True, return_state=True)
    layer.build((None, None, I))
    randomize(layer, rng)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    y, h, c = (np_(v) for v in layer(x))
    assert_close(run(from_keras(layer), x), (y, h[None], c[None]), "RNN(LSTMCell)")


def test_bidirectional(rng):
    layer = bidirectional(rng)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    h0 = [rng.standard_normal((B, H)).astype(np.float32) for _ in range(4)]
    model = from_keras(layer)
    assert model.bidirectional and model.num_layers == 1
    # Keras returns [output, h_fw, c_fw, h_bw, c_bw]; initial_state is in the same order.
    for init in (None, h0):
        y, h_fw, c_fw, h_bw, c_bw = (np_(v) for v in layer(x, initial_state=init))
        hx = None if init is None else (np.stack(init[0::2]), np.stack(init[1::2]))
        assert_close(run(model, x, hx), (y, np.stack([h_fw, h_bw]), np.stack([c_fw, c_bw])),
                     f"Bidirectional, initial_state={init is not None}")
    # Bidirectional.get_weights() is forward then backward: the backward layer is _reverse
    w = layer.get_weights()
    np.testing.assert_array_equal(model.state_dict()["weight_ih_l0_reverse"], w[3].T)


def test_stacked(rng):
    layers = [keras_lstm(rng), keras_lstm(rng, input_size=H, use_bias=False)]  # zero bias_l1
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    h0, c0 = (rng.standard_normal((2, B, H)).astype(np.float32) for _ in range(2))
    y0, h_a, c_a = layers[0](x, initial_state=[h0[0], c0[0]])
    y, h_b, c_b = (np_(v) for v in layers[1](y0, initial_state=[h0[1], c0[1]]))
    ref = (y, np.stack([np_(h_a), h_b]), np.stack([np_(c_a), c_b]))
    model = from_keras(layers)
    assert model.num_layers == 2
    assert_close(run(model, x, (h0, c0)), ref, "stacked layers")
    assert_close(run(from_keras([l.get_weights() for l in layers]), x, (h0, c0)), ref,
                 "stacked get_weights()")


def test_stacked_bidirectional(rng):
    first = bidirectional(rng)
    second = keras.layers.Bidirectional(
        keras.layers.LSTM(H, return_sequences=True, return_state=True))
    second.build((None, None, 2 * H))
    randomize(second, rng)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    r0 = [np_(v) for v in first(x)]
    r1 = [np_(v) for v in second(r0[0])]
    # rows = layer*2 + direction
    ref = (r1[0], np.stack([r0[1], r0[3], r1[1], r1[3]]), np.stack([r0[2], r0[4], r1[2], r1[4]]))
    assert_close(run(from_keras([first, second]), x), ref, "stacked Bidirectional")


# -- what cannot be imported -------------------------------------------------------------------

def test_activation_not_supported(rng):
    layer = keras_lstm(rng, activation="relu")
    with pytest.raises(NotImplementedError, match="activation='relu'") as info:
        from_keras(layer)
    assert f"(LSTM {layer.name!r})" in str(info.value)  # the layer, named in balanced quotes
    with pytest.raises(NotImplementedError, match="recurrent_activation='hard_sigmoid'"):
        from_keras(keras_lstm(rng, recurrent_activation="hard_sigmoid"))


def test_merge_mode_not_supported(rng):
    with pytest.raises(NotImplementedError, match="merge_mode='sum'"):
        from_keras(bidirectional(rng, merge_mode="sum"))


def test_go_backwards_not_supported(rng):
    with pytest.raises(NotImplementedError, match="go_backwards"):
        from_keras(keras_lstm(rng, go_backwards=True))


def test_unbuilt_layer():
    with pytest.raises(ValueError, match="not built"):
        from_keras(keras.layers.LSTM(H))


def test_not_an_lstm(rng):
    layer = keras.layers.GRU(H)
    layer.build((None, None, I))
    with pytest.raises(NotImplementedError, match="GRUCell"):
        from_keras(layer)
    with pytest.raises(ValueError, match="GRU"):  # its arrays: 3 gate blocks
        from_keras(layer.get_weights()[:2])
    with pytest.raises(TypeError, match="keras.layers.LSTM"):
        from_keras(keras.layers.Dense(H))


def test_bad_array_shapes(rng):
    kernel, recurrent, bias = keras_lstm(rng).get_weights()
    with pytest.raises(ValueError, match=r"kernel \(the 1st array\).*\(input_size, 24\)"):
        from_keras([kernel[:, :-1], recurrent, bias])
    with pytest.raises(ValueError, match=r"recurrent_kernel.*\(units, 4\*units\)"):
        from_keras([kernel, recurrent[:-1], bias])
    with pytest.raises(ValueError, match="transposed"):  # PyTorch layout
        from_keras([kernel.T, recurrent.T, bias])
    with pytest.raises(ValueError, match=r"bias \(the 3rd array\).*\(24,\)"):
        from_keras([kernel, recurrent, bias[:-1]])
    with pytest.raises(ValueError, match="flat list of 6 arrays"):  # ambiguous layout
        from_keras([kernel, recurrent, bias] * 2)
    with pytest.raises(ValueError, match="got 1 arrays"):
        from_keras([[kernel]])


def test_stack_mismatch(rng):
    a = keras_lstm(rng)
    with pytest.raises(ValueError, match="input_size=4.*outputs num_directions\\*units = 6"):
        from_keras([a, keras_lstm(rng)])
    with pytest.raises(ValueError, match="return_sequences=False"):
        from_keras([keras_lstm(rng, return_sequences=False), keras_lstm(rng, input_size=H)])
    with pytest.raises(ValueError, match="bidirectional flag"):
        b = keras.layers.Bidirectional(keras.layers.LSTM(H, return_sequences=True))
        b.build((None, None, H))
        from_keras([a, b])
