"""fastlstm.torch: the modules equal torch.nn.LSTM / nn.LSTMCell with the same weights, forward
and every gradient, for every option; gradcheck in float64; training keeps both models equal;
convert/revert; what torch users do with modules (state_dict, save, copy, hooks, modes).

Errors are max|ours - torch| / max|torch| per tensor: float32 rounds differently on each side
(observed ~1e-6), float64 agrees to ~1e-15.
"""
import copy
import io
import subprocess
import sys
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fastlstm  # noqa: E402
import fastlstm.torch as ft  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence  # noqa: E402

TOL = {torch.float32: 3e-5, torch.float64: 1e-11}


def err(a, b):
    a, b = a.detach().double(), b.detach().double()
    assert a.shape == b.shape, (a.shape, b.shape)
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item() if a.numel() else 0.0


def twins(dtype=torch.float32, seed=0, **config):
    """(nn.LSTM, fastlstm.torch.LSTM) with the same weights."""
    torch.manual_seed(seed)
    ref = nn.LSTM(**config, dtype=dtype)
    ours = ft.LSTM(**config, dtype=dtype)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def run_both(ref, ours, make_inputs):
    """Forward and backward of both on the same inputs (fresh leaves each), with fixed random
    upstream gradients on every output; returns [(name, ours, torch)] to compare."""
    results = []
    for module in (ref, ours):
        module.zero_grad()
        x, hx = make_inputs()
        y, (h, c) = module(x, hx)
        y_data = y.data if isinstance(y, nn.utils.rnn.PackedSequence) else y
        g = torch.Generator().manual_seed(7)
        total = sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum()
                    for t in (y_data, h, c))
        total.backward()
        got = {"output": y_data, "h_n": h, "c_n": c, "x": x.grad if not isinstance(
            x, nn.utils.rnn.PackedSequence) else None}
        if hx is not None:
            got.update(h0=hx[0].grad, c0=hx[1].grad)
        got.update({n: p.grad for n, p in module.named_parameters()})
        results.append((got, y))
    return results


CONFIGS = [
    dict(input_size=3, hidden_size=5),
    dict(input_size=4, hidden_size=7, num_layers=2),
    dict(input_size=5, hidden_size=6, bidirectional=True),
    dict(input_size=4, hidden_size=9, num_layers=2, bidirectional=True, bias=False),
    dict(input_size=3, hidden_size=8, proj_size=3),
    dict(input_size=6, hidden_size=17, num_layers=2, bidirectional=True, proj_size=5),
    dict(input_size=33, hidden_size=20, num_layers=3, batch_first=True),
]


def cfg_id(c):
    return "-".join(f"{k}{int(v) if isinstance(v, bool) else v}" for k, v in c.items())


# unbatched input has one layout whatever batch_first says: that pair runs with one config only
LAYOUTS = [(False, False), (False, True), (True, False)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("with_hx", [True, False], ids=["hx", "nohx"])
@pytest.mark.parametrize("config,unbatched,batch_first", [
    pytest.param(c, u, bf, id=f"{cfg_id(c)}-{'unbatched' if u else 'batched'}-"
                              f"{'bf' if bf else 'tm'}")
    for c in CONFIGS for u, bf in LAYOUTS + ([(True, True)] if c is CONFIGS[-1] else [])])
def test_forward_and_gradients_match_nn_lstm(config, unbatched, batch_first, with_hx, dtype):
    config = dict(config, batch_first=batch_first)
    ref, ours = twins(dtype, **config)
    T, B = 6, 3
    D = 2 if config.get("bidirectional") else 1
    S = config.get("num_layers", 1) * D
    H = config["hidden_size"]
    H_out = config.get("proj_size") or H
    data = torch.Generator().manual_seed(1)
    x0 = torch.randn((T, config["input_size"]) if unbatched else
                     ((B, T) if batch_first else (T, B)) + (config["input_size"],),
                     generator=data, dtype=dtype)
    h00 = torch.randn(((S,) if unbatched else (S, B)) + (H_out,), generator=data, dtype=dtype)
    c00 = torch.randn(((S,) if unbatched else (S, B)) + (H,), generator=data, dtype=dtype)

    def inputs():
        x = x0.clone().requires_grad_()
        hx = (h00.clone().requires_grad_(), c00.clone().requires_grad_()) if with_hx else None
        return x, hx

    (want, _), (got, y) = run_both(ref, ours, inputs)
    assert isinstance(y, torch.Tensor) and y.dtype == dtype and y.grad_fn is not None
    assert set(got) == set(want)
    for k in want:
        if want[k] is None:
            assert got[k] is None, k
            continue
        assert got[k].dtype == dtype and got[k].shape == want[k].shape, k
        assert err(got[k], want[k]) <= TOL[dtype], k


@pytest.mark.parametrize("enforce_sorted", [True, False], ids=["sorted", "unsorted"])
@pytest.mark.parametrize("with_hx", [True, False], ids=["hx", "nohx"])
@pytest.mark.parametrize("config", [CONFIGS[0], CONFIGS[3], CONFIGS[5]], ids=cfg_id)
def test_packed_sequence_matches_nn_lstm(config, with_hx, enforce_sorted):
    dtype = torch.float64
    ref, ours = twins(dtype, **config)
    lengths = torch.tensor([7, 5, 5, 2, 1] if enforce_sorted else [2, 7, 1, 5, 5])
    B, T = len(lengths), int(lengths.max())
    D = 2 if config.get("bidirectional") else 1
    S = config.get("num_layers", 1) * D
    H = config["hidden_size"]
    data = torch.Generator().manual_seed(2)
    padded = torch.randn(T, B, config["input_size"], generator=data, dtype=dtype)
    h00 = torch.randn(S, B, config.get("proj_size") or H, generator=data, dtype=dtype)
    c00 = torch.randn(S, B, H, generator=data, dtype=dtype)
    leaves = []

    def inputs():
        x = padded.clone().requires_grad_()
        leaves.append(x)
        hx = (h00.clone().requires_grad_(), c00.clone().requires_grad_()) if with_hx else None
        return pack_padded_sequence(x, lengths, enforce_sorted=enforce_sorted), hx

    (want, y_ref), (got, y) = run_both(ref, ours, inputs)
    assert isinstance(y, nn.utils.rnn.PackedSequence)
    assert torch.equal(y.batch_sizes, y_ref.batch_sizes)
    for a, b in ((y.sorted_indices, y_ref.sorted_indices),
                 (y.unsorted_indices, y_ref.unsorted_indices)):
        assert (a is None and b is None) or torch.equal(a, b)
    for k in want:
        if want[k] is not None:
            assert err(got[k], want[k]) <= TOL[dtype], k
    assert err(leaves[1].grad, leaves[0].grad) <= TOL[dtype]  # through the packing


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("unbatched", [False, True])
@pytest.mark.parametrize("with_hx", [True, False])
def test_cell_matches_nn_lstmcell(dtype, bias, unbatched, with_hx):
    torch.manual_seed(3)
    ref = nn.LSTMCell(6, 11, bias, dtype=dtype)
    ours = ft.LSTMCell(6, 11, bias, dtype=dtype)
    ours.load_state_dict(ref.state_dict())
    data = torch.Generator().manual_seed(4)
    shape = () if unbatched else (4,)
    x0 = torch.randn(shape + (6,), generator=data, dtype=dtype)
    s0 = [torch.randn(shape + (11,), generator=data, dtype=dtype) for _ in range(2)]
    out = []
    for m in (ref, ours):
        m.zero_grad()
        x = x0.clone().requires_grad_()
        hx = tuple(s.clone().requires_grad_() for s in s0) if with_hx else None
        h, c = m(x, hx)
        (h.sum() * 2 + (c * c).sum()).backward()
        out.append(dict(h=h, c=c, x=x.grad, **({"h0": hx[0].grad, "c0": hx[1].grad} if with_hx
                                                  else {}),
                        **{n: p.grad for n, p in m.named_parameters()}))
    for k in out[0]:
        assert err(out[1][k], out[0][k]) <= TOL[dtype], k


def test_gradcheck_float64():
    torch.manual_seed(5)
    m = ft.LSTM(2, 3, num_layers=2, bidirectional=True, proj_size=2, dtype=torch.float64)
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    names = [n for n, _ in m.named_parameters()]

    def f(x, h0, c0, *params):
        out = torch.func.functional_call(m, dict(zip(names, params)), (x, (h0, c0)))
        return out[0], out[1][0], out[1][1]

    assert torch.autograd.gradcheck(f, (x, h0, c0, *m.parameters()), fast_mode=True)

    cell = ft.LSTMCell(3, 5, dtype=torch.float64)
    xc = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    hc = tuple(torch.randn(2, 5, dtype=torch.float64, requires_grad=True) for _ in range(2))
    assert torch.autograd.gradcheck(lambda x, h, c, *p: cell(x, (h, c)), (xc, *hc))
    seq = ft.LSTM(3, 4, bidirectional=True, dtype=torch.float64)
    lengths = torch.tensor([3, 1, 4])
    xs = torch.randn(4, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x: seq(pack_padded_sequence(x, lengths, enforce_sorted=False))[0].data, (xs,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_optimizer_steps_keep_both_models_equal(dtype, opt):
    ref, ours = twins(dtype, input_size=5, hidden_size=8, num_layers=2, bidirectional=True)
    make = {"sgd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
            "adam": lambda p: torch.optim.Adam(p, lr=1e-2)}[opt]
    opts = [make(ref.parameters()), make(ours.parameters())]
    head = nn.Linear(16, 1, dtype=dtype)
    data = torch.Generator().manual_seed(6)
    for step in range(6):
        x = torch.randn(7, 3, 5, generator=data, dtype=dtype)
        target = torch.randn(7, 3, 1, generator=data, dtype=dtype)
        for m, o in zip((ref, ours), opts):
            o.zero_grad()
            loss = ((head(m(x)[0]) - target) ** 2).mean()
            loss.backward()
            o.step()
    tol = {torch.float32: 1e-4, torch.float64: 1e-10}[dtype]
    for (n, a), (_, b) in zip(ours.named_parameters(), ref.named_parameters()):
        assert err(a, b) <= tol, n
    with torch.no_grad():  # the inference kernels see the trained weights
        x = torch.randn(4, 2, 5, generator=data, dtype=dtype)
        assert err(ours(x)[0], ref(x)[0]) <= tol


def test_manual_sgd_through_data_is_seen_by_the_next_training_forward():
    ref, ours = twins(torch.float64, input_size=3, hidden_size=4)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    for _ in range(3):
        for m in (ref, ours):
            m.zero_grad()
            m(x)[0].pow(2).sum().backward()
            for p in m.parameters():
                p.data -= 0.1 * p.grad  # no version bump: the training forward repacks anyway
    assert err(ours(x)[0], ref(x)[0]) <= 1e-11


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_manual_sgd_reaches_eval_mode_training_and_the_inference_after_it(mode):
    """Manual updates through .data (no version bump) in either mode: every forward autograd
    records repacks, and a backward marks the pack for the next forward, so the inference after
    the loop sees the last update (found by a new-user round: eval() fine-tuning drifted)."""
    ref, ours = twins(torch.float64, input_size=5, hidden_size=6)
    x = torch.randn(7, 3, 5, dtype=torch.float64)
    for m in (ref, ours):
        getattr(m, mode)()
        for _ in range(3):
            m.zero_grad()
            (m(x)[0] ** 2).sum().backward()
            for p in m.parameters():
                p.data -= 0.5 * p.grad
    for (n, a), (_, b) in zip(ours.named_parameters(), ref.named_parameters()):
        assert err(a, b) <= 1e-11, n
    with torch.no_grad():
        assert err(ours(x)[0], ref(x)[0]) <= 1e-11


def test_updates_without_a_version_bump_reach_inference():
    """Found by a new-user round, each a stale inference before: a fused optimizer's step
    (moves no version counter) after a no-grad forward, and an EMA model updated through .data
    after each step, both read back under no_grad."""
    torch.manual_seed(0)
    ref = nn.LSTM(4, 8)
    x = torch.randn(5, 2, 4)
    got = []
    for m in (ref, ft.convert(ref)):
        opt = torch.optim.Adam(m.parameters(), 1e-2, fused=True)
        ema = copy.deepcopy(m)
        for _ in range(3):
            opt.zero_grad()
            m(x)[0].sum().backward()
            with torch.no_grad():
                m(x)  # a metric between backward and step
            opt.step()
            for e, p in zip(ema.parameters(), m.parameters()):
                e.data.mul_(0.9).add_(p.data, alpha=0.1)
            with torch.no_grad():
                got.append((m(x)[0], ema(x)[0]))
    n = len(got) // 2
    for (a, b), (c, d) in zip(got[n:], got[:n]):
        assert err(a, c) <= TOL[torch.float32] and err(b, d) <= TOL[torch.float32]


def test_parameters_in_shared_memory_are_read_at_every_call():
    """share_memory() (Hogwild, A3C): another process writes the values, which moves nothing
    this process can see; a write through another tensor on the same memory stands in for it."""
    ref, ours = twins(torch.float64, input_size=3, hidden_size=4)
    ours.share_memory()
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    with torch.no_grad():
        ours(x)  # packed
        for p, q in zip(ours.parameters(), ref.parameters()):
            torch.from_numpy(p.detach().numpy()).add_(0.25)  # its own version counter
            q.add_(0.25)
        assert err(ours(x)[0], ref(x)[0]) <= 1e-11


def test_autocast_activations_run_in_the_parameters_dtype():
    """Under CPU autocast a Linear hands the LSTM bfloat16 activations: they are cast up and
    the kernels run in float32 (float32 outputs), gradients flowing back through the cast."""
    torch.manual_seed(0)
    head = nn.Linear(8, 8)
    ref, ours = twins(torch.float32, input_size=8, hidden_size=16, batch_first=True)
    x = torch.randn(4, 10, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a = head(x)
        assert a.dtype == torch.bfloat16
        y, (h, c) = ours(a, (torch.zeros(1, 4, 16, dtype=torch.bfloat16),) * 2)
        cell_h, _ = ft.LSTMCell(8, 16)(a[:, 0])
    assert y.dtype == h.dtype == cell_h.dtype == torch.float32
    with torch.no_grad():
        want, _ = ref(a.detach().float())
    assert err(y, want) <= TOL[torch.float32]
    y.sum().backward()
    assert head.weight.grad is not None and ours.weight_ih_l0.grad is not None


def test_a_gradient_penalty_through_the_module_fails_loudly():
    """create_graph=True: the first-order gradient is torch's, and differentiating it again
    (a WGAN-GP penalty) raises instead of silently dropping the penalty's dependence on the
    weights (a plain y.sum() upstream used to slip past once_differentiable)."""
    ref, ours = twins(torch.float64, input_size=3, hidden_size=4)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    grads = []
    for m in (ref, ours):
        xx = x.clone().requires_grad_()
        y, _ = m(xx)
        g, = torch.autograd.grad(y.sum(), xx, create_graph=True)
        assert g.requires_grad
        grads.append((y, g))
    assert err(grads[1][1], grads[0][1]) <= 1e-11
    y, g = grads[1]
    with pytest.raises(RuntimeError, match="no double backward.*revert"):
        (y.mean() + (g.norm() - 1) ** 2).backward()


def test_cell_reads_its_weights_by_name():
    """A parametrized weight (weight_norm, old or new) runs as nn.LSTMCell's, and another
    Parameter on the cell is not taken for one of its weights."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, dtype=torch.float64)
    for parametrize in (torch.nn.utils.parametrizations.weight_norm,
                        torch.nn.utils.weight_norm):
        ref = nn.LSTMCell(3, 4, dtype=torch.float64)
        ours = ft.LSTMCell(3, 4, dtype=torch.float64)
        ours.load_state_dict(ref.state_dict())
        for m in (ref, ours):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # the old weight_norm's
                parametrize(m, "weight_hh")
        got = []
        for m in (ref, ours):
            h, c = m(x)
            (h.sum() + 2 * c.sum()).backward()
            got.append((h, c, {n: p.grad for n, p in m.named_parameters()}))
        for a, b in zip(got[1][:2], got[0][:2]):
            assert err(a, b) <= 1e-11
        assert got[1][2].keys() == got[0][2].keys()
        for n in got[0][2]:
            assert err(got[1][2][n], got[0][2][n]) <= 1e-11, n
    ref = nn.LSTMCell(3, 4, dtype=torch.float64)
    ref.temperature = nn.Parameter(torch.ones(1, dtype=torch.float64))
    ours = ft.convert(ref)
    assert err(ours(x)[0], ref(x)[0]) <= 1e-11


def test_torch_func_transforms_say_they_are_unsupported():
    m = ft.LSTM(3, 4).double()
    x = torch.randn(5, 2, 3, dtype=torch.float64)

    def loss(params):
        return (torch.func.functional_call(m, params, (x,))[0] ** 2).sum()

    with pytest.raises(RuntimeError, match="torch.func transforms"):
        torch.func.grad(loss)(dict(m.named_parameters()))


def test_inference_uses_inference_kernels_and_a_cached_pack(monkeypatch):
    ref, ours = twins(torch.float32, input_size=3, hidden_size=4, num_layers=2)
    x = torch.randn(5, 2, 3)
    ours(x)  # builds the packed copy
    packed = ours._fastlstm_packed
    monkeypatch.setattr(packed.model, "_forward_train", None)  # calling it would fail
    repacks = []
    real_refresh = packed.refresh
    monkeypatch.setattr(packed, "refresh", lambda p, force: repacks.append(force) or
                        real_refresh(p, force))
    with torch.no_grad():
        y, (h, c) = ours(x)
    with torch.inference_mode():
        y2, _ = ours(x)
    assert y.grad_fn is None and y2.grad_fn is None
    assert err(y, ref(x)[0]) <= TOL[torch.float32] and torch.equal(y, y2)
    assert repacks[:2] == [False, False]


def test_data_edits_need_repack_for_inference_and_version_bumps_do_not():
    ref, ours = twins(torch.float64, input_size=3, hidden_size=4)
    ours.eval()
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    with torch.no_grad():
        before = ours(x)[0]
        ours.weight_hh_l0.data.mul_(2)  # invisible to torch's version counter
        ref.weight_hh_l0.data.mul_(2)
        assert torch.equal(ours(x)[0], before)  # the documented stale cache
        ours.repack()
        assert err(ours(x)[0], ref(x)[0]) <= 1e-11
        ours.weight_ih_l0.add_(1)  # bumps the version: seen without repack()
        ref.weight_ih_l0.add_(1)
        assert err(ours(x)[0], ref(x)[0]) <= 1e-11
    ours.load_state_dict(ref.state_dict())
    ours.bias_hh_l0 = nn.Parameter(torch.ones(16, dtype=torch.float64))  # another tensor
    ref.bias_hh_l0 = nn.Parameter(torch.ones(16, dtype=torch.float64))
    ref._init_flat_weights()
    with torch.no_grad():
        assert err(ours(x)[0], ref(x)[0]) <= 1e-11


def test_in_place_change_before_backward_raises_as_in_torch():
    _, ours = twins(torch.float64, input_size=3, hidden_size=4)
    y = ours(torch.randn(5, 2, 3, dtype=torch.float64))[0]
    with torch.no_grad():
        ours.weight_ih_l0.add_(1)
    with pytest.raises(RuntimeError, match="inplace operation"):
        y.sum().backward()


def dropout_reference(ours, x, seed):
    """The stack as single-layer nn.LSTMs with masks drawn as fastlstm.torch draws them: one
    bernoulli_(keep) tensor per layer but the last, in layer order, from torch's generator."""
    keep = 1 - ours.dropout
    layers = []
    for k in range(ours.num_layers):  # (their init draws from the generator: before seeding)
        layers.append(nn.LSTM(ours.input_size if k == 0 else ours.hidden_size,
                              ours.hidden_size, dtype=x.dtype))
        layers[-1].load_state_dict({n[:-3] + "_l0": p for n, p in ours.state_dict().items()
                                    if n.endswith(f"_l{k}")})
    torch.manual_seed(seed)
    h = x
    for k, layer in enumerate(layers):
        h = layer(h)[0]
        if k < ours.num_layers - 1:
            h = h * (torch.empty(h.shape, dtype=x.dtype).bernoulli_(keep) / keep)
    return h


def test_dropout_uses_torch_generator_in_train_mode_only():
    torch.manual_seed(0)
    ours = ft.LSTM(4, 6, num_layers=3, dropout=0.4, dtype=torch.float64)
    x = torch.randn(5, 3, 4, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(11)
    y = ours(x)[0]
    y.sum().backward()
    gx = x.grad.clone()
    x.grad = None
    xr = x.detach().clone().requires_grad_()
    want = dropout_reference(ours, xr, 11)
    want.sum().backward()
    assert err(y, want) <= 1e-11 and err(gx, xr.grad) <= 1e-11
    torch.manual_seed(11)
    with torch.no_grad():  # the inference kernels draw the same masks
        assert err(ours(x)[0], want) <= 1e-11
    assert not torch.allclose(ours(x)[0], y)  # a fresh draw
    ours.eval()
    ref = nn.LSTM(4, 6, num_layers=3, dropout=0.4, dtype=torch.float64)
    ref.load_state_dict(ours.state_dict())
    ref.eval()
    assert err(ours(x)[0], ref(x)[0]) <= 1e-11


def test_module_behaviour_of_nn_lstm():
    ref, ours = twins(torch.float32, input_size=3, hidden_size=5, num_layers=2, proj_size=2,
                      batch_first=True)
    assert isinstance(ours, nn.LSTM) and repr(ours) == repr(ref)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
    assert all(isinstance(p, nn.Parameter) for p in ours.parameters())
    assert [[w.shape for w in ws] for ws in ours.all_weights] == \
        [[w.shape for w in ws] for ws in ref.all_weights]
    ours.flatten_parameters()
    x = torch.randn(2, 4, 3)
    back = nn.LSTM(3, 5, num_layers=2, proj_size=2, batch_first=True)
    back.load_state_dict(ours.state_dict())
    assert err(back(x)[0], ours(x)[0]) <= TOL[torch.float32]
    seen = []
    handle = ours.register_forward_hook(lambda m, inp, out: seen.append(out[0].shape))
    ours(x)
    assert seen == [(2, 4, 2)]
    handle.remove()  # (a lambda does not pickle)
    buf = io.BytesIO()
    torch.save(ours, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    assert type(loaded) is ft.LSTM and torch.equal(loaded(x)[0], ours(x)[0])
    clone = copy.deepcopy(ours)
    assert torch.equal(clone(x)[0], ours(x)[0])
    d = ours.double()
    xd = x.double()
    ref.double()
    assert d(xd)[0].dtype == torch.float64 and err(d(xd)[0], ref(xd)[0]) <= 1e-11
    d.float()
    assert d(x)[0].dtype == torch.float32
    assert not ours.train(False).training and ours.train().training


def test_threads_default_and_results_do_not_depend_on_them():
    _, ours = twins(torch.float32, input_size=8, hidden_size=32)
    x = torch.randn(10, 16, 8)
    assert ours.num_threads is None
    y_default = ours(x)[0]
    ours.num_threads = 1
    assert torch.equal(ours(x)[0], y_default)
    ours.num_threads = 2
    assert torch.equal(ours(x)[0], y_default)


def test_errors_name_what_was_expected_and_given():
    _, ours = twins(torch.float32, input_size=3, hidden_size=5)
    with pytest.raises(TypeError, match="dtype torch.float32.*got torch.float64"):
        ours(torch.randn(4, 2, 3, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="runs on the CPU.*meta"):
        ours(torch.empty(4, 2, 3, device="meta"))
    with pytest.raises(TypeError, match="tuple \\(h_0, c_0\\).*also needs c_0"):
        ours(torch.randn(4, 2, 3), torch.zeros(1, 2, 5))
    with pytest.raises(ValueError, match="input_size"):
        ours(torch.randn(4, 2, 7))
    with pytest.raises(TypeError, match="float32 or float64"):
        ours.half()(torch.randn(4, 2, 3).half())
    meta = ft.LSTM(3, 5, device="meta")
    with pytest.raises(RuntimeError, match="weight_ih_l0 is on meta.*revert"):
        meta(torch.randn(4, 2, 3))
    cell = ft.LSTMCell(3, 5)
    with pytest.raises(ValueError, match="for a sequence use fastlstm.torch.LSTM"):
        cell(torch.randn(4, 2, 3))
    with pytest.raises(ValueError, match=r"\(2, 5\)"):
        cell(torch.randn(2, 3), (torch.zeros(1, 2, 5), torch.zeros(1, 2, 5)))
    y = ours.float()(torch.randn(4, 2, 3, requires_grad=True))[0]
    g, = torch.autograd.grad(y.sum(), ours.weight_ih_l0, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward|once_differentiable|does not require"):
        g.sum().backward()


def test_inputs_are_not_mutated():
    _, ours = twins(torch.float32, input_size=3, hidden_size=5, num_layers=2, bidirectional=True)
    x = torch.randn(4, 2, 3, requires_grad=True)
    hx = (torch.randn(4, 2, 5, requires_grad=True), torch.randn(4, 2, 5, requires_grad=True))
    copies = [t.detach().clone() for t in (x, *hx)]
    params = [p.detach().clone() for p in ours.parameters()]
    y, (h, c) = ours(x, hx)
    (y.sum() + h.sum() + c.sum()).backward()
    assert all(torch.equal(a, b) for a, b in zip((x, *hx), copies))
    assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), params))


class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(4, 6))
        self.body = nn.Module()
        self.body.lstm = nn.LSTM(6, 8, num_layers=2, batch_first=True, bidirectional=True)
        self.cells = nn.ModuleList([nn.LSTMCell(16, 5)])
        self.head = nn.Linear(5, 3)

    def forward(self, x):
        y, _ = self.body.lstm(self.encoder(x))
        h, _ = self.cells[0](y[:, -1])
        return self.head(h)


def test_convert_and_revert_a_model_tree():
    torch.manual_seed(8)
    model = Tagger()
    x = torch.randn(3, 5, 4)
    fast = ft.convert(model)
    assert type(model.body.lstm) is nn.LSTM  # not inplace: a copy
    assert type(fast.body.lstm) is ft.LSTM and type(fast.cells[0]) is ft.LSTMCell
    assert type(fast.head) is nn.Linear
    assert err(fast(x), model(x)) <= TOL[torch.float32]
    fast(x).sum().backward()
    model(x).sum().backward()
    for (n, a), (_, b) in zip(fast.named_parameters(), model.named_parameters()):
        assert err(a.grad, b.grad) <= TOL[torch.float32], n
    back = ft.revert(fast)
    assert type(back.body.lstm) is nn.LSTM and type(back.cells[0]) is nn.LSTMCell
    assert not hasattr(back.body.lstm, "_fastlstm_packed")
    assert err(back(x), model(x)) <= TOL[torch.float32]
    params = list(model.parameters())
    same = ft.convert(model, inplace=True)
    assert same is model and type(model.body.lstm) is ft.LSTM
    assert all(a is b for a, b in zip(model.parameters(), params))  # optimizers keep working
    lone = ft.convert(nn.LSTM(2, 3))
    assert type(lone) is ft.LSTM


def test_convert_says_what_it_left():
    class Custom(nn.LSTM):
        pass

    model = nn.Sequential(nn.LSTM(2, 3), Custom(2, 3), nn.LSTM(2, 3).half(), nn.GRU(2, 3))
    with pytest.warns(UserWarning) as record:
        out = ft.convert(model)
    text = str(record[0].message)
    assert "1: Custom subclasses LSTM" in text and "2: its parameter weight_ih_l0 is " \
        "torch.float16" in text and "GRU" not in text
    assert [type(m) for m in out] == [ft.LSTM, Custom, nn.LSTM, nn.GRU]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ft.convert(nn.LSTM(2, 3))
    with pytest.raises(TypeError, match="torch.nn.Module"):
        ft.convert(np.zeros(3))


def test_torch_compile_runs_with_a_graph_break():
    _, ours = twins(torch.float32, input_size=3, hidden_size=5)
    head = nn.Linear(5, 1)

    def step(x):
        return head(ours(x)[0]).sum()

    compiled = torch.compile(step, backend="aot_eager")
    x = torch.randn(4, 2, 3)
    assert err(compiled(x), step(x)) <= TOL[torch.float32]


def test_import_fastlstm_does_not_import_torch():
    code = "import sys, fastlstm; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_from_torch_names_what_it_got():
    with pytest.raises(TypeError, match="got torch.nn.modules.rnn.GRU: a GRU has 3 gate"):
        fastlstm.LSTM.from_torch(nn.GRU(3, 5))
    with pytest.raises(TypeError, match="an RNN has 1 gate block"):
        fastlstm.LSTM.from_torch(nn.RNN(3, 5))
    with pytest.raises(TypeError, match="GRUCell"):
        fastlstm.LSTMCell.from_torch(nn.GRUCell(3, 5))
    with pytest.raises(TypeError, match="fastlstm.torch.convert"):
        fastlstm.LSTM.from_torch(nn.Sequential(nn.LSTM(3, 5)))
    with pytest.raises(TypeError, match="use fastlstm.LSTM.from_torch"):
        fastlstm.LSTMCell.from_torch(nn.LSTM(3, 5))
    assert fastlstm.LSTM.from_torch(ft.LSTM(3, 5)).hidden_size == 5  # a subclass reads as one


def test_packed_sequence_to_numpy_lstm_points_to_lengths():
    packed = nn.utils.rnn.pack_sequence([torch.ones(3, 2), torch.ones(1, 2)])
    with pytest.raises(TypeError, match="lengths=lengths.*fastlstm.torch.LSTM"):
        fastlstm.LSTM(2, 4)(packed)
