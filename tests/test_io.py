"""Weights in and out: state_dict round trips for every configuration, save/load to .npz
(NumPy alone, no pickle), and the state-shape messages of stacked and projected models."""
import copy
import io
import itertools
import json
import os
import pickle

import numpy as np
import pytest

import fastlstm
from fastlstm import LSTM

CONFIGS = [dict(num_layers=L, bidirectional=bi, proj_size=P, bias=bias)
           for L, bi, P, bias in itertools.product([1, 2], [False, True], [0, 3], [True, False])]


def _id(cfg):
    return "-".join(f"{k}={v}" for k, v in cfg.items())


@pytest.mark.parametrize("cfg", CONFIGS, ids=_id)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_state_dict_round_trip(cfg, dtype):
    m = LSTM(4, 5, **cfg, dtype=dtype, seed=1)
    copy = LSTM.from_state_dict(m.state_dict())
    assert copy.config() == m.config()
    assert list(copy.state_dict()) == list(m.state_dict())  # PyTorch's order too
    for k, v in m.state_dict().items():
        assert copy.state_dict()[k].dtype == np.dtype(dtype)
        assert np.array_equal(copy.state_dict()[k], v)
    x = np.random.default_rng(0).standard_normal((3, 2, 4)).astype(dtype)
    assert np.array_equal(copy(x)[0], m(x)[0])


@pytest.mark.parametrize("cfg", CONFIGS, ids=_id)
def test_parameter_names_and_shapes_are_torchs(cfg):
    torch = pytest.importorskip("torch")
    t = torch.nn.LSTM(4, 5, **cfg)
    m = LSTM(4, 5, **cfg)
    assert {k: tuple(v.shape) for k, v in t.state_dict().items()} == \
        {k: v.shape for k, v in m.state_dict().items()}
    assert list(t.state_dict()) == list(m.state_dict())


@pytest.mark.parametrize("cfg", CONFIGS[::3], ids=_id)
def test_save_load_npz_without_pickle(tmp_path, cfg):
    m = LSTM(4, 5, **cfg, batch_first=True, dropout=0.25, dtype=np.float64, seed=2)
    path = tmp_path / "model.npz"
    m.save(path)
    with np.load(path, allow_pickle=False) as data:  # NumPy alone can read it
        assert int(data["fastlstm_format"]) == 1
        config = json.loads(str(data["fastlstm_config"]))
        assert config["batch_first"] is True and config["dropout"] == 0.25
        assert set(data.files) - {"fastlstm_format", "fastlstm_config"} == set(m.state_dict())
    loaded = LSTM.load(path)
    assert loaded.config() == m.config()
    for k, v in m.state_dict().items():
        assert np.array_equal(loaded.state_dict()[k], v)


@pytest.mark.parametrize("name", ["model", "model.weights", "model.npz"])
def test_save_writes_the_path_it_is_given(tmp_path, name):
    """As torch.save: the file is at the path given, whatever its suffix, and load reads it
    there (np.savez alone would write model.npz for "model"); str, Path and file objects."""
    m = LSTM(3, 5, seed=1)
    want = m.state_dict()["weight_hh_l0"]
    for path in (tmp_path / name, str(tmp_path / ("s" + name))):
        m.save(path)
        assert os.path.isfile(path)
        assert np.array_equal(LSTM.load(path).state_dict()["weight_hh_l0"], want)
    buffer = io.BytesIO()
    m.save(buffer)
    buffer.seek(0)
    assert np.array_equal(LSTM.load(buffer).state_dict()["weight_hh_l0"], want)
    assert sorted(os.listdir(tmp_path)) == sorted([name, "s" + name])


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_deepcopy_and_pickle_give_an_equal_independent_model(how):
    """What PyTorch users do with a module: keep a best checkpoint (deepcopy), send it to a
    worker (pickle). The copy computes the same bits, draws the same dropout masks from there
    on, and changing one leaves the other as it was."""
    m = LSTM(3, 5, num_layers=2, dropout=0.3, proj_size=2, bidirectional=True, batch_first=True,
             dtype=np.float64, seed=4)
    c = copy.deepcopy(m) if how == "deepcopy" else pickle.loads(pickle.dumps(m))
    assert type(c) is LSTM and c.config() == m.config()
    x = np.random.default_rng(0).standard_normal((2, 4, 3))
    assert np.array_equal(c(x)[0], m(x)[0])
    assert np.array_equal(c.forward_train(x)[0], m.forward_train(x)[0])  # same masks
    before = m.state_dict()["weight_hh_l0"].copy()
    c.set_parameters(weight_hh_l0=np.zeros((20, 2)))
    assert np.array_equal(m.state_dict()["weight_hh_l0"], before)
    cell = fastlstm.LSTMCell(3, 5, seed=1)
    twin = copy.deepcopy(cell)
    x0 = x[0].astype(np.float32)
    assert np.array_equal(twin(x0)[0], cell(x0)[0])


def test_load_refuses_other_files_and_newer_formats(tmp_path):
    other = tmp_path / "other.npz"
    np.savez(other, weight_ih_l0=np.zeros((20, 3)))
    with pytest.raises(ValueError, match="not a file written by fastlstm.LSTM.save"):
        LSTM.load(other)
    newer = tmp_path / "newer.npz"
    m = LSTM(3, 5)
    np.savez(newer, fastlstm_format=np.array(99),
             fastlstm_config=np.array(json.dumps(m.config())), **m.state_dict())
    with pytest.raises(ValueError, match="format 99"):
        LSTM.load(newer)


def test_load_state_dict_casts_to_the_model_dtype_and_from_state_dict_keeps_it():
    m64 = LSTM(3, 5, 2, dtype=np.float64, seed=0)
    m32 = LSTM(3, 5, 2, dtype=np.float32)
    m32.load_state_dict(m64.state_dict())
    assert all(v.dtype == np.float32 for v in m32.state_dict().values())
    assert LSTM.from_state_dict(m64.state_dict()).dtype == np.float64


def test_from_torch_keeps_every_option():
    torch = pytest.importorskip("torch")
    t = torch.nn.LSTM(4, 6, num_layers=3, bias=False, batch_first=True, dropout=0.5,
                      bidirectional=True, proj_size=2)
    m = LSTM.from_torch(t)
    assert m.config() == dict(input_size=4, hidden_size=6, num_layers=3, bias=False,
                              batch_first=True, dropout=0.5, bidirectional=True, proj_size=2,
                              dtype="float32")


# -- state shapes of stacked, bidirectional and projected models ---------------------------

def _call(m, h0, c0, B=2, T=3):
    x = np.zeros((T, B, m.input_size), np.float32)
    return m(x, (h0, c0))


def test_stacked_model_with_one_layer_state_says_how_many():
    m = LSTM(3, 5, num_layers=2, bidirectional=True)
    good = np.zeros((4, 2, 5), np.float32)
    with pytest.raises(ValueError) as ei:
        _call(m, np.zeros((1, 2, 5), np.float32), good)
    msg = str(ei.value)
    assert "(num_layers * num_directions = 2 * 2, batch, hidden_size) = (4, 2, 5)" in msg
    assert "layer*2 + direction" in msg
    with pytest.raises(ValueError, match=r"lacks the leading layer axis.*np.broadcast_to"):
        _call(m, np.zeros((2, 5), np.float32), good)


def test_projected_model_states_have_different_widths():
    m = LSTM(3, 5, proj_size=2)
    h0, c0 = np.zeros((1, 2, 2), np.float32), np.zeros((1, 2, 5), np.float32)
    y, (h, c) = _call(m, h0, c0)
    assert y.shape == (3, 2, 2) and h.shape == (1, 2, 2) and c.shape == (1, 2, 5)
    with pytest.raises(ValueError, match=r"h0 must have shape .*proj_size.*With proj_size=2"):
        _call(m, np.zeros((1, 2, 5), np.float32), c0)
    with pytest.raises(ValueError, match=r"c0 must have shape .*hidden_size.*With proj_size=2"):
        _call(m, h0, np.zeros((1, 2, 2), np.float32))


def test_bidirectional_output_layout_and_state_rows():
    """Output: forward half then reverse half; h_n rows layer*2 + direction, and the reverse
    direction's final state is its state after reading x[0]."""
    m = LSTM(3, 4, num_layers=2, bidirectional=True, seed=7)
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)
    y, (h, c) = m(x)
    assert y.shape == (5, 2, 8) and h.shape == (4, 2, 4)
    assert np.array_equal(y[-1, :, :4], h[2]) and np.array_equal(y[0, :, 4:], h[3])


def test_step_refuses_bidirectional_and_bad_shapes():
    with pytest.raises(ValueError, match="reverse direction"):
        LSTM(3, 4, bidirectional=True).step(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"x_t is one time step"):
        LSTM(3, 4).step(np.zeros((5, 2, 3), np.float32))


def test_unbatched_lengths_accept_a_scalar():
    m = LSTM(3, 4, seed=1)
    x = np.random.default_rng(0).standard_normal((6, 3)).astype(np.float32)
    y, (h, c) = m(x, lengths=4)
    assert np.array_equal(y[:4], m(x[:4])[0]) and not y[4:].any()
    assert np.array_equal(h, m(x[:4])[1][0])


def test_dropout_only_in_training():
    m = LSTM(3, 4, num_layers=2, dropout=0.5, seed=0)
    x = np.random.default_rng(0).standard_normal((4, 2, 3)).astype(np.float32)
    plain = LSTM.from_state_dict(m.state_dict())
    assert np.array_equal(m(x)[0], plain(x)[0])
    y1 = m.forward_train(x, seed=3)[0]
    assert np.array_equal(y1, m.forward_train(x, seed=3)[0])
    assert not np.array_equal(y1, m(x)[0])


def test_repr_names_the_options():
    assert repr(LSTM(3, 4, 2, bidirectional=True, proj_size=2)) == \
        "LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2, dtype=float32)"
    assert "LSTMCell(3, 4, bias=False" in repr(fastlstm.LSTMCell(3, 4, bias=False))
