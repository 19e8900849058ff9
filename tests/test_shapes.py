"""fastlstm.shapes: describe (checked against real models' shapes), the `shapes` command, trace
(checked against the model's forward and against torch.nn.LSTM) and docs/shapes.md's doctest."""
import doctest
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import scaled_err

import fastlstm
import fastlstm.shapes
from fastlstm.shapes import GATES, describe, describe_config, gate_weights, trace

ROOT = Path(__file__).resolve().parent.parent

# torch.nn.LSTM's keyword arguments; they cover layers, directions, projection, layout, bias.
CONFIGS = [
    dict(input_size=3, hidden_size=3),
    dict(input_size=1, hidden_size=32),
    dict(input_size=4, hidden_size=5, batch_first=True, bias=False),
    dict(input_size=3, hidden_size=5, num_layers=3),
    dict(input_size=3, hidden_size=4, bidirectional=True),
    dict(input_size=3, hidden_size=6, proj_size=2),
    dict(input_size=2, hidden_size=5, num_layers=2, bidirectional=True, proj_size=3,
         batch_first=True),
]
IDS = ["-".join(f"{k[:4]}{int(v)}" for k, v in c.items()) for c in CONFIGS]


def _param_rows(desc):
    """PyTorch-named parameter rows of a description, name -> shape."""
    return {r.name: r.shape for r in desc.rows if r.name.startswith(("weight_", "bias_"))}


def _states(cfg, B, rng, dtype=np.float64):
    S = cfg.get("num_layers", 1) * (2 if cfg.get("bidirectional") else 1)
    H = cfg["hidden_size"]
    return (rng.standard_normal((S, B, cfg.get("proj_size") or H)).astype(dtype),
            rng.standard_normal((S, B, H)).astype(dtype))


# -- describe ------------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_describe_parameters_match_torch(cfg):
    torch = pytest.importorskip("torch")
    module = torch.nn.LSTM(**cfg)
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    assert _param_rows(describe_config(**cfg)) == expected
    assert _param_rows(describe(module)) == expected  # a torch module's config works too


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_describe_matches_a_real_model(cfg, rng):
    T, B = 4, 2
    model = fastlstm.LSTM(**cfg, dtype=np.float64, seed=0)
    desc = model.describe(seq_len=T, batch=B)
    sd = model.state_dict()
    assert _param_rows(desc) == {k: v.shape for k, v in sd.items()}
    x = rng.standard_normal(desc["x"].shape)
    h0, c0 = _states(cfg, B, rng)
    assert desc["h0"].shape == h0.shape and desc["c0"].shape == c0.shape
    output, (h_n, c_n) = model(x, (h0, c0))
    assert (desc["output"].shape, desc["h_n"].shape, desc["c_n"].shape) == \
        (output.shape, h_n.shape, c_n.shape)
    # the one-matrix gate views: their shapes, and the blocks they are made of
    L, D = model.num_layers, model.num_directions
    H = model.hidden_size
    tr = model.trace(x, (h0, c0))
    for layer in range(L):
        for d in range(D):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            for j, g in enumerate(GATES):
                W, b = gate_weights(model, g, layer, d)
                assert desc[f"W_{g}{sfx}"].shape == W.shape
                np.testing.assert_array_equal(W[:, :sd[f"weight_ih{sfx}"].shape[1]],
                                              sd[f"weight_ih{sfx}"][j * H:(j + 1) * H])
                np.testing.assert_array_equal(W[:, sd[f"weight_ih{sfx}"].shape[1]:],
                                              sd[f"weight_hh{sfx}"][j * H:(j + 1) * H])
                if model.bias:
                    assert desc[f"b_{g}{sfx}"].shape == b.shape
                else:
                    assert f"b_{g}{sfx}" not in [r.name for r in desc.rows]
                    assert not b.any()
                # W @ [x_t, h_{t-1}] + b is the gate's pre-activation (first step, forward)
                if d == 0:
                    xh = np.concatenate([tr[layer, d]["x"][0], h0[layer * D + d]], axis=-1)
                    np.testing.assert_allclose(xh @ W.T + b, tr[layer, d][f"{g}_pre"][0],
                                               rtol=1e-12, atol=1e-12)
            step = tr.step(0, layer, d)
            for g in GATES:
                assert desc[f"{g}_t"].shape == step[g].shape
            assert desc["c_t"].shape == step["c"].shape
            assert desc["h_t"].shape == step["h"].shape


def test_describe_symbolic_sizes_and_layout():
    desc = describe_config(3, 5)
    assert desc["x"].shape == ("seq_len", "batch", 3)
    assert desc["output"].shape == ("seq_len", "batch", 5)
    assert desc["h_n"].shape == (1, "batch", 5)
    desc = describe_config(3, 5, num_layers=2, bidirectional=True, proj_size=2,
                           batch_first=True, batch=7)
    assert desc["x"].shape == (7, "seq_len", 3)
    assert desc["output"].shape == (7, "seq_len", 4)
    assert desc["h0"].shape == (4, 7, 2)  # states stay (L*D, batch, ·) with batch_first
    assert desc["c0"].shape == (4, 7, 5)
    assert desc["W_f_l1_reverse"].shape == (5, 4 + 2)
    assert "row layer*D + direction" in desc["h_n"].meaning
    assert "rows 5:10" in desc["weight_ih_l0"].meaning  # f's block with H = 5
    assert "[x_t, h_{t-1}]" in desc["W_f_l0"].meaning


def test_describe_takes_model_mapping_or_config():
    cfg = dict(input_size=3, hidden_size=4, num_layers=2, bidirectional=True, batch_first=True)
    want = describe_config(**cfg, seq_len=5).rows
    assert describe(cfg, seq_len=5).rows == want
    assert describe(fastlstm.LSTM(**cfg), seq_len=5).rows == want
    assert describe_config(**{**cfg, "num_layers": 1}, seq_len=5).rows != want


def test_description_prints_as_an_aligned_table():
    desc = describe_config(3, 5, proj_size=2, seq_len=4)
    text = str(desc)
    assert repr(desc) == text
    assert len(desc) == len(desc.rows) and list(desc) == desc.rows
    starts = set()
    for row in desc.rows:
        shape = "(" + ", ".join(map(str, row.shape)) + ("," if len(row.shape) == 1 else "") + ")"
        line = next(ln for ln in text.splitlines() if ln.startswith(f"  {row.name} "))
        starts.add(line.index(shape, len(row.name) + 2))
    assert len(starts) == 1  # every shape starts in the same column
    assert max(len(ln) for ln in desc.format(width=100).splitlines()[2:]
               if not ln.startswith(("layer", "every"))) <= 100


def test_describe_rejects_bad_configurations():
    with pytest.raises(ValueError, match="proj_size"):
        describe_config(3, 3, proj_size=3)
    with pytest.raises(ValueError, match="batch"):
        describe_config(3, 3, batch=-1)
    with pytest.raises(TypeError, match="seq_len"):
        describe_config(3, 3, seq_len=2.5)
    with pytest.raises(ValueError, match="hidden_size"):
        describe_config(3, 0)
    with pytest.raises(TypeError, match="input_size"):
        describe({"hidden_size": 3})
    with pytest.raises(KeyError, match="no row named"):
        describe_config(3, 3)["W_f_l1"]


# -- the command line ----------------------------------------------------------------------------

def _cli(*args):
    return subprocess.run([sys.executable, "-m", "fastlstm", "shapes", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_cli_prints_the_table():
    done = _cli("--input-size", "3", "--hidden-size", "3")
    assert done.returncode == 0, done.stderr
    assert done.stdout == str(describe_config(3, 3)) + "\n"
    assert "(seq_len, batch, 3)" in done.stdout and "(12, 3)" in done.stdout


def test_cli_options():
    done = _cli("--input-size", "3", "--hidden-size", "5", "--num-layers", "2",
                "--bidirectional", "--proj-size", "2", "--batch-first", "--seq-len", "7",
                "--batch", "4", "--no-bias")
    assert done.returncode == 0, done.stderr
    want = describe_config(3, 5, num_layers=2, bidirectional=True, proj_size=2,
                           batch_first=True, bias=False, seq_len=7, batch=4)
    assert done.stdout == str(want) + "\n"
    for text in ("(4, 7, 3)", "(4, 7, 4)", "(4, 4, 2)", "(4, 4, 5)", "weight_hr_l1_reverse"):
        assert text in done.stdout
    assert "bias_ih" not in done.stdout


def test_cli_refuses_a_bad_configuration():
    done = _cli("--input-size", "3", "--hidden-size", "3", "--proj-size", "3")
    assert done.returncode == 2
    assert "proj_size" in done.stderr and not done.stdout


# -- trace ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("unbatched", [False, True], ids=["batched", "unbatched"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_trace_equals_forward(cfg, dtype, unbatched, rng):
    T, B = 5, 3
    model = fastlstm.LSTM(**cfg, dtype=dtype, seed=1)
    shape = describe(model, seq_len=T, batch=B)["x"].shape
    x = rng.standard_normal(shape).astype(dtype)
    h0, c0 = _states(cfg, B, rng, dtype)
    if unbatched:
        x, h0, c0 = (x[0] if model.batch_first else x[:, 0]), h0[:, 0], c0[:, 0]
    output, (h_n, c_n) = model(x, (h0, c0))
    tr = model.trace(x, (h0, c0))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert scaled_err(tr.output, output) < tol
    assert scaled_err(tr.h_n, h_n) < tol and scaled_err(tr.c_n, c_n) < tol
    # the per-step arrays are what the model outputs: last layer, time-major
    Ho = model.proj_size or model.hidden_size
    y = output if unbatched or not model.batch_first else output.swapaxes(0, 1)
    assert scaled_err(tr[-1, 0]["h"], y[..., :Ho]) < tol
    if model.bidirectional:
        assert scaled_err(tr[-1, 1]["h"], y[..., Ho:]) < tol
        assert scaled_err(tr[-1, 1]["h"][0], h_n[-1]) < tol  # reverse ends at t = 0


@pytest.mark.parametrize("unbatched", [False, True], ids=["batched", "unbatched"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_trace_of_an_empty_sequence(cfg, unbatched, rng):
    """seq_len 0, which the model takes (empty output, h_n = h0): so does trace."""
    B = 3
    model = fastlstm.LSTM(**cfg, seed=1)
    x = np.zeros(describe(model, seq_len=0, batch=B)["x"].shape, np.float32)
    h0, c0 = _states(cfg, B, rng, np.float32)
    if unbatched:
        x, h0, c0 = (x[0] if model.batch_first else x[:, 0]), h0[:, 0], c0[:, 0]
    output, (h_n, c_n) = model(x, (h0, c0))
    tr = model.trace(x, (h0, c0))
    assert tr.output.shape == output.shape == x.shape[:-1] + (output.shape[-1],)
    assert np.allclose(tr.h_n, h0) and np.allclose(tr.c_n, c0) and tr.h_n.shape == h_n.shape


def test_trace_keys_mean_what_the_docs_say(rng):
    model = fastlstm.LSTM(3, 4, num_layers=2, bidirectional=True, dtype=np.float64, seed=2)
    x = rng.standard_normal((6, 2, 3))
    tr = model.trace(x)
    assert tr.keys() == [(0, 0), (0, 1), (1, 0), (1, 1)]
    sigmoid = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731 (the textbook form, as a check)
    for (layer, d) in tr.keys():
        v = tr[layer, d]
        assert set(v) == set(fastlstm.shapes.Trace.KEYS)
        for g in "ifo":
            np.testing.assert_allclose(v[g], sigmoid(v[f"{g}_pre"]), rtol=1e-14)
        np.testing.assert_allclose(v["g"], np.tanh(v["g_pre"]), rtol=1e-14)
        np.testing.assert_allclose(v["h"], v["o"] * np.tanh(v["c"]), rtol=1e-14)
        # c_t = f * c_{t-1} + i * g, with t-1 meaning the previous step in running order
        prev = (slice(0, -1), slice(1, None)) if d == 0 else (slice(1, None), slice(0, -1))
        np.testing.assert_allclose(v["c"][prev[1]], v["f"][prev[1]] * v["c"][prev[0]] +
                                   v["i"][prev[1]] * v["g"][prev[1]], rtol=1e-13)
        assert not v["h"].flags.writeable
    np.testing.assert_array_equal(tr[1, 0]["x"],
                                  np.concatenate([tr[0, 0]["h"], tr[0, 1]["h"]], axis=-1))
    assert tr.step(2, 1, 1)["f"].shape == (2, 4)
    with pytest.raises(KeyError, match="layer, direction"):
        tr[0]  # ambiguous with two directions
    with pytest.raises(KeyError, match="outside"):
        tr[2, 0]
    assert "t = 5" in str(tr) and "Trace(layers=2, directions=2" in repr(tr)


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_trace_equals_torch(cfg, rng):
    """trace follows torch.nn.LSTM itself (not only fastlstm's model)."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torch.nn.LSTM(**cfg).double()
    B = 3
    x = rng.standard_normal((B, 5, cfg["input_size"]) if cfg.get("batch_first") else
                            (5, B, cfg["input_size"]))
    h0, c0 = _states(cfg, B, rng)
    with torch.no_grad():
        out, (h_n, c_n) = module(torch.from_numpy(x), (torch.from_numpy(h0), torch.from_numpy(c0)))
    tr = trace(module, x, (h0, c0))
    assert scaled_err(tr.output, out.numpy()) < 1e-12
    assert scaled_err(tr.h_n, h_n.numpy()) < 1e-12 and scaled_err(tr.c_n, c_n.numpy()) < 1e-12


def test_trace_validates_like_the_model(rng):
    model = fastlstm.LSTM(3, 4, num_layers=2)
    x = rng.standard_normal((5, 2, 3))
    h0 = np.zeros((1, 2, 4))
    with pytest.raises(ValueError, match="h0") as traced:
        model.trace(x, (h0, h0))
    with pytest.raises(ValueError, match="h0") as ran:
        model(x, (h0, h0))
    assert str(traced.value) == str(ran.value)
    with pytest.raises(ValueError, match="input_size=3"):
        model.trace(rng.standard_normal((5, 2, 4)))


# -- docs ----------------------------------------------------------------------------------------

def test_docs_shapes_md_doctest():
    result = doctest.testfile(str(ROOT / "docs" / "shapes.md"), module_relative=False,
                              optionflags=doctest.ELLIPSIS)
    assert result.attempted > 10  # the examples were found at all
    assert result.failed == 0
    assert doctest.testmod(fastlstm.shapes).failed == 0  # the module docstring's example
