"""LSTMCell: torch.nn.LSTMCell's parameters, call and gradients, on the LSTM kernels."""
import numpy as np
import pytest

import fastlstm
from fastlstm import LSTMCell
from helpers import scaled_err

I, H, B = 4, 6, 3
TOL = {np.float32: 2e-5, np.float64: 1e-12}


def _torch_cell(torch, bias, dtype):
    torch.manual_seed(0)
    cell = torch.nn.LSTMCell(I, H, bias=bias)
    return cell.double() if dtype == np.float64 else cell


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
def test_matches_torch_forward_and_backward(dtype, bias, batched):
    torch = pytest.importorskip("torch")
    tcell = _torch_cell(torch, bias, dtype)
    cell = LSTMCell.from_torch(tcell)
    assert cell.dtype == np.dtype(dtype) and cell.bias == bias
    rng = np.random.default_rng(1)
    lead = (B,) if batched else ()
    x = rng.standard_normal(lead + (I,)).astype(dtype)
    h = rng.standard_normal(lead + (H,)).astype(dtype)
    c = rng.standard_normal(lead + (H,)).astype(dtype)
    (h1, c1), backprop = cell.forward_train(x, (h, c))
    assert h1.shape == c1.shape == lead + (H,)
    gh, gc = rng.standard_normal(h1.shape).astype(dtype), rng.standard_normal(c1.shape).astype(dtype)
    grads = backprop(gh, gc)

    xt, ht, ct = (torch.tensor(a, requires_grad=True) for a in (x, h, c))
    th, tc = tcell(xt, (ht, ct))
    torch.autograd.backward([th, tc], [torch.tensor(gh), torch.tensor(gc)])
    tol = TOL[dtype]
    assert scaled_err(h1, th.detach().numpy()) <= tol
    assert scaled_err(c1, tc.detach().numpy()) <= tol
    assert scaled_err(grads["x"], xt.grad.numpy()) <= tol
    assert scaled_err(grads["h"], ht.grad.numpy()) <= tol
    assert scaled_err(grads["c"], ct.grad.numpy()) <= tol
    names = {name for name, _ in tcell.named_parameters()}
    assert set(grads) - {"x", "h", "c"} == names
    for name, p in tcell.named_parameters():
        assert scaled_err(grads[name], p.grad.numpy()) <= tol, name
    # inference gives the training forward's values
    h2, c2 = cell(x, (h, c))
    assert np.array_equal(h2, h1) and np.array_equal(c2, c1)


def test_cell_steps_equal_the_lstm():
    """Stepping a cell over a sequence is the one-layer LSTM with the same weights, bitwise."""
    lstm = fastlstm.LSTM(I, H, seed=3)
    cell = LSTMCell(I, H)
    cell.set_parameters(**{k[:-3]: v for k, v in lstm.parameters().items()})
    x = np.random.default_rng(2).standard_normal((5, B, I)).astype(np.float32)
    y, (h_n, c_n) = lstm(x)
    h = c = np.zeros((B, H), np.float32)
    for t in range(5):
        h, c = cell(x[t], (h, c))
        assert np.array_equal(h, y[t])
    assert np.array_equal(h, h_n[0]) and np.array_equal(c, c_n[0])


def test_hx_none_is_zeros_and_parameters_are_torch_names():
    cell = LSTMCell(I, H, seed=0)
    assert set(cell.parameters()) == {"weight_ih", "weight_hh", "bias_ih", "bias_hh"}
    assert cell.parameters()["weight_ih"].shape == (4 * H, I)
    x = np.ones((B, I), np.float32)
    zeros = np.zeros((B, H), np.float32)
    assert all(np.array_equal(a, b) for a, b in zip(cell(x), cell(x, (zeros, zeros))))
    with pytest.raises(ValueError):
        cell.parameters()["weight_ih"][0, 0] = 1.0


def test_state_dict_round_trip_and_from_state_dict():
    cell = LSTMCell(I, H, bias=False, dtype=np.float64, seed=4)
    copy = LSTMCell.from_state_dict(cell.state_dict())
    assert copy.dtype == np.float64 and not copy.bias
    for k, v in cell.state_dict().items():
        assert np.array_equal(copy.state_dict()[k], v)
    with pytest.raises(KeyError, match="unexpected keys"):
        copy.load_state_dict({**cell.state_dict(), "bias_ih": np.zeros(4 * H)})


def test_lstm_from_torch_cell_is_the_one_layer_lstm():
    torch = pytest.importorskip("torch")
    tcell = _torch_cell(torch, True, np.float32)
    lstm = fastlstm.LSTM.from_torch(tcell)
    assert (lstm.num_layers, lstm.hidden_size) == (1, H)
    x = np.random.default_rng(5).standard_normal((1, B, I)).astype(np.float32)
    y, _ = lstm(x)
    th, _ = tcell(torch.tensor(x[0]))
    assert scaled_err(y[0], th.detach().numpy()) <= 2e-5


@pytest.mark.parametrize("x_shape,h_shape,match", [
    ((B, I + 1), (B, H), r"x must have shape \(batch, input_size\) = \(batch, 4\)"),
    ((2, B, I), (B, H), "for a sequence use fastlstm.LSTM"),
    ((B, I), (1, B, H), r"no layer axis .*pass h\[0\]"),
    ((B, I), (B + 1, H), r"h must have shape \(3, 6\)"),
    ((I,), (B, H), r"h must have shape \(6,\)"),
])
def test_bad_shapes_say_what_was_expected(x_shape, h_shape, match):
    cell = LSTMCell(I, H)
    with pytest.raises(ValueError, match=match):
        cell(np.zeros(x_shape, np.float32), (np.zeros(h_shape, np.float32),
                                             np.zeros(h_shape, np.float32)))


def test_backprop_checks_its_inputs():
    cell = LSTMCell(I, H)
    (h, c), backprop = cell.forward_train(np.zeros((B, I), np.float32))
    with pytest.raises(ValueError, match="at least one"):
        backprop()
    with pytest.raises(ValueError, match=r"grad_h must have the shape"):
        backprop(np.zeros((B, H + 1)))
    g = backprop(grad_c=np.ones((B, H)))
    assert g["x"].shape == (B, I) and g["h"].shape == (B, H)


def test_parameter_errors_name_the_cells_parameters():
    """The cell's names (weight_ih, bias_hh), not those of the LSTM it runs on (weight_ih_l0),
    which its set_parameters would refuse as unknown."""
    cell = LSTMCell(3, 4)
    cases = [(lambda: cell.set_parameters(weight_ih=np.zeros((16, 2))), ValueError,
              r"^weight_ih must have shape \(16, 3\)"),
             (lambda: cell.set_parameters(bias_hh=np.zeros(15)), ValueError,
              r"^bias_hh must have shape \(16,\)"),
             (lambda: cell.set_parameters(weight_hh=np.zeros((16, 4), np.int32)), TypeError,
              r"^weight_hh must hold floating-point"),
             (lambda: LSTMCell.from_state_dict({"weight_ih": np.zeros((8, 3)),
                                                "weight_hh": np.zeros((8, 3))}), ValueError,
              r"^weight_hh must have shape \(8, 2\)")]
    for call, error, match in cases:
        with pytest.raises(error, match=match) as info:
            call()
        assert "_l0" not in str(info.value)
