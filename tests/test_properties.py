"""Property-based checks (hypothesis) over random sizes, including the empty ones: the kernels
agree with the NumPy reference, forward and backward, and every batch row is the same sequence
run alone, bit for bit. Then the fuzz harness (test_fuzz_*): the whole API, every argument drawn,
against the reference or the documented exception (docs/usage.md, "Defined behaviour"; see the
section's comment).

Hypothesis profiles (registered in conftest.py):

- "ci", the default: derandomized (the same examples every run, so a failure is reproducible and
  CI never flakes), 600 examples per fuzz test: 30-40 s for this file on a busy 2-core machine.
- "fuzz", for long runs by hand: 5,000 fresh random examples per test each run (about 4 minutes
  for the three fuzz tests on that machine), e.g.

      HYPOTHESIS_PROFILE=fuzz python -m pytest tests/test_properties.py -k fuzz
      python -m pytest tests/test_properties.py -k fuzz --hypothesis-profile=fuzz \\
          --hypothesis-show-statistics --hypothesis-seed=7   # a chosen seed, statistics

  A failure prints the shrunk example's draws and an @reproduce_failure blob, and is saved in
  .hypothesis/ (the example database), which replays it first on the next run. For more
  examples, loop the command. Tests that set max_examples themselves keep their number.
"""
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


# ================================================================================================
# The fuzz harness: the whole API against the NumPy reference or a documented exception
#
# Each example draws a model (sizes 1/odd/non-multiples of the 16- and 8-unit blocks, layers,
# directions, projection, bias, batch_first, dtype), a call (rank, T and B down to 0, the input's
# dtype, a memory layout per array, ragged lengths, hx, num_threads, NaN/inf/huge/subnormal values)
# and at most one fault from docs/usage.md's bad-input table. The oracle is fastlstm.reference run
# layer by layer and direction by direction (each ragged row alone, as docs/usage.md defines it), or
# the documented exception: TypeError/ValueError with a message naming the argument; anything else
# (another exception, a crash, a NaN where the reference has none, a written input) fails.
# ================================================================================================
import contextlib  # noqa: E402
import warnings  # noqa: E402

import pytest  # noqa: E402
from hypothesis import event, note  # noqa: E402

import fastlstm  # noqa: E402
from fastlstm import LSTMCell, _kernels  # noqa: E402

ISAS = fastlstm.openmp_info()["isas"]

INPUT_SIZES = st.one_of(st.integers(1, 9), st.sampled_from([16, 17, 33]))
HIDDEN_SIZES = st.one_of(st.sampled_from([1, 2, 3, 7, 8, 9, 15, 16, 17, 33]), st.integers(1, 40))
# NaN, infinities, values that saturate every gate, a float32 subnormal (flushed by the kernels:
# docs/threads.md allows a difference below the smallest normal), a negative zero
SPECIALS = (np.nan, np.inf, -np.inf, 1e4, -1e4, 1e-40, -0.0)
# documented: other float dtypes are cast to the model's dtype
OTHER_FLOATS = (np.float16, np.float32, np.float64, np.longdouble)
# documented: TypeError naming the argument
NON_FLOATS = (np.int64, np.int8, np.uint8, np.bool_, np.complex64, np.complex128, object, str)
LAYOUTS = ("C", "fortran", "transposed", "negative", "step", "read_only", "misaligned1",
           "misaligned4", "broadcast", "list")
FAULTS = ("x_dtype", "x_ragged", "x_rank", "x_features", "hx_shape", "hx_dtype", "hx_type",
          "lengths_value", "lengths_count", "lengths_dtype", "num_threads")
# documented: None, or a positive int, capped at the CPUs the process may use
NUM_THREADS = (None, 1, 2, 3, np.int64(2), 2**40)
BAD_NUM_THREADS = ((0, ValueError), (-1, ValueError), (-2**40, ValueError), (1.5, TypeError),
                   ("2", TypeError), (True, TypeError), (2.0, TypeError), ([2], TypeError))
TOL64 = {"forward": 1e-12, "backward": 1e-10}
TOL32 = 2e-5  # float32 vs the float64 truth; past it, at most 4x the float32 reference's error
# Errors are relative to the largest magnitude, but at least to 1: the reference's sigmoid,
# 0.5 * tanh(x / 2) + 0.5, is exact to eps absolute, not relative (sigmoid(-40) = 4e-18 comes out
# as 0), so where every output is tiny (saturated output gates) only an absolute bound holds.
MIN_SCALE = 1.0


@st.composite
def lstm_configs(draw):
    H = draw(HIDDEN_SIZES, label="hidden_size")
    return dict(input_size=draw(INPUT_SIZES, label="input_size"), hidden_size=H,
                num_layers=draw(st.integers(1, 3), label="num_layers"),
                bias=draw(st.booleans(), label="bias"),
                batch_first=draw(st.booleans(), label="batch_first"),
                bidirectional=draw(st.booleans(), label="bidirectional"),
                proj_size=draw(st.integers(0, H - 1), label="proj_size") if H > 1 else 0,
                dtype=draw(st.sampled_from(["float32", "float64"]), label="dtype"))


# -- memory layouts ------------------------------------------------------------------------------

def lay_out(a, kind, rng):
    """(view, backing): an array with a's values (a broadcast: a[:1]'s) in layout `kind`, and
    what owns its memory (a list for "list"), which must be byte for byte the same afterwards."""
    if kind == "list" and a.size and a.ndim:  # (an empty list has lost the shape)
        out = a.tolist()
        return out, out
    if a.ndim == 0 and kind in ("fortran", "transposed", "step", "negative", "broadcast"):
        kind = "C"
    if kind in ("C", "list") or (a.dtype == object and
                                 kind not in ("fortran", "transposed", "negative")):
        b = a.copy()
        return b, b
    if kind == "fortran":
        b = np.asfortranarray(a)
        return b, b
    if kind == "transposed":  # a transposed view of a C array holding the permuted axes
        perm = rng.permutation(a.ndim)
        buf = np.ascontiguousarray(a.transpose(perm))
        return buf.transpose(np.argsort(perm)), buf
    if kind == "negative":
        flip = (slice(None, None, -1),) * a.ndim
        buf = a[flip].copy()
        return buf[flip], buf
    if kind == "step":  # every other element, every axis, of a wider array filled with junk
        buf = np.full(tuple(2 * n + 1 for n in a.shape), 7, a.dtype)
        view = buf[(slice(1, None, 2),) * a.ndim]
        view[...] = a
        return view, buf
    if kind == "read_only":
        b = a.copy()
        b.flags.writeable = False
        return b, b
    if kind.startswith("misaligned"):  # a view of a byte buffer at an offset of 1 or 4 bytes
        off = int(kind[len("misaligned"):])
        raw = np.zeros(a.nbytes + off + 3, np.uint8)
        view = raw[off:off + a.nbytes].view(a.dtype).reshape(a.shape)
        view[...] = a
        return view, raw
    if kind == "broadcast":  # zero stride on the first axis: a[:1]'s values repeated
        if a.ndim == 0 or a.shape[0] == 0:
            b = a.copy()
            return b, b
        buf = a[:1].copy()
        return np.broadcast_to(buf, a.shape), buf
    raise AssertionError(kind)


def snapshot(view, backing):
    """Everything about an input that a call must leave as it was."""
    if isinstance(backing, list):
        return repr(backing)
    data = repr(backing.tolist()) if backing.dtype == object else backing.tobytes()
    return (view.shape, view.strides, view.dtype, view.flags.writeable, backing.flags.writeable,
            data)


class Inputs:
    """The user's arrays as laid out, and their snapshots."""

    def __init__(self):
        self.items = []

    def add(self, view, backing):
        self.items.append((view, backing, snapshot(view, backing)))
        return view

    def assert_untouched(self):
        for k, (view, backing, snap) in enumerate(self.items):
            assert snapshot(view, backing) == snap, f"input {k} was modified"

    def assert_not_shared(self, *outputs):
        """Outputs are fresh arrays: writable, sharing no memory with any input."""
        for out in outputs:
            assert isinstance(out, np.ndarray) and out.flags.writeable
            for view, backing, _ in self.items:
                if isinstance(backing, np.ndarray):
                    assert not np.shares_memory(out, backing), "an output shares an input's memory"


def user_array(draw, rng, a, inputs, label, dtypes=None):
    """a (in the model's dtype) as the user passes it: in another float dtype sometimes, in a
    layout drawn; recorded in `inputs`. dtypes=(): a's own dtype, a non-float one (which a list
    would lose: an object array of floats is a list of floats)."""
    if dtypes != ():
        dt = draw(st.sampled_from((a.dtype,) * 4 + OTHER_FLOATS if dtypes is None else dtypes),
                  label=f"{label} dtype")
        with np.errstate(over="ignore"):  # 1e30 padding in float16: inf, as the user has it
            a = a.astype(dt)
    kind = draw(st.sampled_from(LAYOUTS if dtypes != () else LAYOUTS[:-1]),
                label=f"{label} layout")
    view, backing = lay_out(a, kind, rng)
    return inputs.add(view, backing)


def non_float(a, dt):
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.nan_to_num(np.asarray(a, np.float64)).astype(dt)


def expect_error(fn, types, names):
    """fn() raises one of `types`, with a message that names one of `names`."""
    with pytest.raises(types) as info:
        fn()
    message = str(info.value)
    assert any(n in message for n in names), f"{type(info.value).__name__}: {message!r} " \
                                              f"names none of {names}"
    return info.value


# -- the reference, layer by layer and direction by direction ------------------------------------

def _suffix(k, d):
    return f"_l{k}" + ("_reverse" if d else "")


def reference_stack(params, cfg, x, h0, c0):
    """fastlstm.reference over the layers and directions: x (T, B, I) time-major, h0 (S, B, P),
    c0 (S, B, H) in the computation's dtype. Returns y, h_n, c_n and backward(gy, gh, gc)."""
    L, D = cfg["num_layers"], 1 + cfg["bidirectional"]
    P = cfg["proj_size"] or cfg["hidden_size"]
    inp, h_n, c_n, caches = x, [], [], []
    for k in range(L):
        outs = []
        for d in range(D):
            s = _suffix(k, d)
            xi = inp[::-1] if d else inp
            y, h, c, cache = reference.forward_train(
                np.ascontiguousarray(xi), params["weight_ih" + s], params["weight_hh" + s],
                params.get("bias_ih" + s), params.get("bias_hh" + s), h0[k * D + d],
                c0[k * D + d], weight_hr=params.get("weight_hr" + s))
            outs.append(y[::-1] if d else y)
            h_n.append(h)
            c_n.append(c)
            caches.append(cache)
        inp = np.concatenate(outs, axis=-1)

    def backward(gy, gh, gc):
        grads, g_in = {}, gy
        dh0, dc0 = [None] * (L * D), [None] * (L * D)
        for k in reversed(range(L)):
            dx = 0
            for d in range(D):
                g = g_in[..., d * P:(d + 1) * P]
                r = reference.backward(caches[k * D + d], grad_output=g[::-1] if d else g,
                                       grad_h_n=gh[k * D + d], grad_c_n=gc[k * D + d])
                dx = dx + (r["x"][::-1] if d else r["x"])
                dh0[k * D + d], dc0[k * D + d] = r["h0"], r["c0"]
                for base in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"):
                    if base in r:
                        grads[base + _suffix(k, d)] = r[base]
            g_in = dx
        grads.update(x=g_in, h0=np.stack(dh0), c0=np.stack(dc0))
        return grads

    return inp, np.stack(h_n), np.stack(c_n), backward


def reference_call(params, cfg, x, h0, c0, lengths):
    """reference_stack, or with lengths each row alone over its own steps (docs/usage.md's
    definition): padding is never read, its outputs and x gradients are 0."""
    if lengths is None:
        return reference_stack(params, cfg, x, h0, c0)
    T, B = x.shape[:2]
    F = (1 + cfg["bidirectional"]) * (cfg["proj_size"] or cfg["hidden_size"])
    y, h_n, c_n = np.zeros((T, B, F), x.dtype), np.empty_like(h0), np.empty_like(c0)
    rows = []
    for b, L in enumerate(lengths):
        yb, h_n[:, b:b + 1], c_n[:, b:b + 1], back = reference_stack(
            params, cfg, x[:L, b:b + 1], h0[:, b:b + 1], c0[:, b:b + 1])
        y[:L, b:b + 1] = yb
        rows.append(back)

    def backward(gy, gh, gc):
        grads = {"x": np.zeros_like(x), "h0": np.empty_like(h0), "c0": np.empty_like(c0)}
        grads.update({k: np.zeros(v.shape, x.dtype) for k, v in params.items()})
        for b, (L, back) in enumerate(zip(lengths, rows)):
            g = back(gy[:L, b:b + 1], gh[:, b:b + 1], gc[:, b:b + 1])
            grads["x"][:L, b:b + 1] = g.pop("x")
            grads["h0"][:, b:b + 1], grads["c0"][:, b:b + 1] = g.pop("h0"), g.pop("c0")
            for k, v in g.items():
                grads[k] += v
        return grads

    return y, h_n, c_n, backward


class Oracle:
    """The reference's answers for a call in float64: the truth. A float32 model within TOL32
    of it passes; past that, its error may be up to 4x the error level of the case, the larger
    of the float32 reference's error and the change of the truth when every input is perturbed
    by a relative float32 eps (what any backward-stable float32 LSTM may do: tests/test_kernels.py
    measures its levels the same way), both computed only then."""

    EPS32 = float(np.finfo(np.float32).eps)

    def __init__(self, params, cfg, x, h0, c0, lengths, model_dtype):
        self.args = params, cfg, x, h0, c0, lengths
        self.model_dtype = np.dtype(model_dtype)
        self.runs = {}
        # An infinite initial state (which docs/usage.md leaves undefined) meets gates that are 0
        # on one side and tiny on the other (the reference's sigmoid is 0 below -37, the
        # kernels' below -745; float32's tanh is 1 from 9, float64's from 19): 0 * inf is NaN,
        # tiny * inf is inf, and tanh(inf) is finite again. Then only the results finite on
        # both sides are compared. NaN anywhere, and inf in x, follow docs/usage.md exactly.
        self.strict_nonfinite = not (np.isinf(h0).any() or np.isinf(c0).any())

    def _perturb(self, a, key):
        rng = np.random.default_rng(key)
        return a * (1 + self.EPS32 * rng.uniform(-1, 1, np.shape(a)))

    def run(self, kind):
        """kind: a dtype, or an int k: float64 with the inputs perturbed (seed k)."""
        if kind not in self.runs:
            params, cfg, x, h0, c0, lengths = self.args
            dtype = np.float64 if isinstance(kind, int) else kind
            cast = (lambda a: np.asarray(a, dtype)) if not isinstance(kind, int) else (
                lambda a, n=iter(range(1000)): self._perturb(np.asarray(a, dtype),
                                                             (kind, next(n))))
            with np.errstate(all="ignore"):  # NaN and inf are part of the game
                self.runs[kind] = reference_call({k: cast(params[k]) for k in sorted(params)},
                                                 cfg, cast(x), cast(h0), cast(c0), lengths)
        return self.runs[kind]

    def forward(self, kind=np.dtype(np.float64)):
        y, h, c, _ = self.run(kind)
        return {"output": y, "h_n": h, "c_n": c}

    def backward(self, gy, gh, gc, kind=np.dtype(np.float64)):
        if isinstance(kind, int):
            gy, gh, gc = (self._perturb(a, (kind, 1000 + k))
                          for k, a in enumerate((gy, gh, gc)))
        dtype = np.float64 if isinstance(kind, int) else kind
        cast = lambda a: np.asarray(a, dtype)  # noqa: E731
        with np.errstate(all="ignore"):
            return self.run(kind)[3](cast(gy), cast(gh), cast(gc))

    def level(self, name, phase, upstream, ok, ref):
        """The error level of `name` (float32 models)."""
        def result(kind):
            out = (self.forward(kind) if phase == "forward" else
                   self.backward(*upstream, kind=kind))[name]
            return scaled_err(out[ok], ref[ok], MIN_SCALE)
        return max([result(np.dtype(np.float32))] + [result(k) for k in (1, 2)])

    def scale(self, name):
        """The magnitude that a float32 error in `name` is relative to, at least. A gate near
        saturation has s(1 - s) from s rounded to float32: a few ulps of 1 are a large relative
        error of 1 - s (any float32 LSTM has it, the reference by luck less or more), and
        weight_ih_l0's gradient multiplies it by x: huge x (1e4) make that error large next to
        gradients that saturation keeps small. Other gradients multiply by states (|h| <= 1)."""
        if not name.startswith("weight_ih_l0"):
            return MIN_SCALE
        x, lengths = self.args[2], self.args[5]
        if lengths is not None:
            x = x[np.arange(x.shape[0])[:, None] < lengths[None, :]]  # the padding is not read
        x = np.abs(x[np.isfinite(x)])
        return max(MIN_SCALE, float(x.max()) if x.size else 0.0)

    def check(self, got, phase, *upstream):
        """got: {name: array} time-major, batched; compared with the reference's arrays."""
        truth = self.forward() if phase == "forward" else self.backward(*upstream)
        bad = {}
        for name, value in got.items():
            ref = truth[name]
            assert value.dtype == self.model_dtype, (name, value.dtype)
            assert value.shape == ref.shape, (name, value.shape, ref.shape)
            ok = np.isfinite(ref)
            if self.strict_nonfinite:  # NaN and inf exactly where the reference has them
                assert np.array_equal(np.isfinite(value), ok), f"{name}: non-finite differ"
                assert np.array_equal(np.isnan(value), np.isnan(ref)), f"{name}: NaN differs"
                assert np.array_equal(value[np.isinf(ref)], ref[np.isinf(ref)]), \
                    f"{name}: infinities differ"
            else:
                ok &= np.isfinite(value)
            err = scaled_err(value[ok], ref[ok], MIN_SCALE)
            if self.model_dtype == np.float64:
                if not err <= TOL64[phase]:
                    bad[name] = err
            elif not err <= TOL32:
                level = self.level(name, phase, upstream, ok, ref)
                if not (err <= 4 * level or
                        scaled_err(value[ok], ref[ok], self.scale(name)) <= TOL32):
                    bad[name] = (err, level)
        assert not bad, f"{phase}: errors past the bound: {bad}"


# -- the LSTM ------------------------------------------------------------------------------------

def _to_user(a, batch_first, unbatched):
    """A time-major batched (T, B, F) array in the user's layout."""
    if unbatched:
        return a[:, 0]
    return a.transpose(1, 0, 2) if batch_first else a


def _to_tm(a, batch_first, unbatched):
    """The inverse of _to_user."""
    if unbatched:
        return a[:, None]
    return a.transpose(1, 0, 2) if batch_first else a


def _states_tm(a, unbatched):
    return a[:, None] if unbatched else a


@contextlib.contextmanager
def kernel_variant(draw):
    """One of the kernel variants this CPU runs (AVX-512, AVX2, portable), drawn, for the
    example: every variant gets fuzzed within one budget."""
    before = _kernels.isa()
    _kernels.select_isa(draw(st.sampled_from(ISAS), label="kernel variant"))
    try:
        yield
    finally:
        _kernels.select_isa(before)


@given(data=st.data())
def test_fuzz_lstm(data):
    """Any configuration, call and fault: forward, forward_train + backprop and step against the
    reference, or the documented exception; inputs never written; outputs fresh; results
    bitwise the same for num_threads=1 and for contiguous copies of the inputs."""
    with kernel_variant(data.draw):
        _fuzz_lstm(data.draw)


def _fuzz_lstm(draw):
    cfg = draw(lstm_configs(), label="config")
    seed = draw(st.integers(0, 2**16), label="seed")
    model = LSTM(**cfg, seed=seed)
    dt, bf = model.dtype, cfg["batch_first"]
    I, H = cfg["input_size"], cfg["hidden_size"]
    S = cfg["num_layers"] * (1 + cfg["bidirectional"])
    P = cfg["proj_size"] or H
    unbatched = draw(st.booleans(), label="unbatched")
    T = draw(st.integers(0, 6), label="seq_len")
    B = 1 if unbatched else draw(st.integers(0, 5), label="batch")
    fault = draw(st.one_of(st.none(), st.sampled_from(FAULTS)), label="fault")
    nt = draw(st.sampled_from(NUM_THREADS), label="num_threads")
    rng = np.random.default_rng(seed)
    inputs = Inputs()
    params = {k: v.copy() for k, v in model.parameters().items()}

    # x, time-major in float64: values at a drawn scale, a few special ones, padding fill
    x_tm = rng.standard_normal((T, B, I)) * draw(st.sampled_from([1.0, 1e-3, 30.0]), label="scale")
    for v in draw(st.lists(st.sampled_from(SPECIALS), max_size=3), label="specials in x"):
        if x_tm.size:
            x_tm[tuple(rng.integers(0, n) for n in x_tm.shape)] = v
    lengths_kind = draw(st.sampled_from([None, "int64", "int32", "uint8", "list"] +
                                        (["scalar"] if unbatched else [])), label="lengths")
    lengths = None
    if lengths_kind:
        lengths = rng.integers(0, T + 1, B)
        fill = draw(st.sampled_from([None, np.nan, np.inf, 1e30]), label="padding")
        if fill is not None:
            x_tm[np.arange(T)[:, None] >= lengths[None, :]] = fill

    x_model = _to_user(x_tm, bf, unbatched).astype(dt)
    if fault == "x_dtype":
        x = user_array(draw, rng, non_float(x_model, draw(st.sampled_from(NON_FLOATS))), inputs,
                       "x", dtypes=())
    elif fault == "x_ragged":
        x = [[0.0] * I, [0.0] * (I + 1)]
    elif fault == "x_rank":
        shape = draw(st.sampled_from([(), (I,), (1, T, B, I)]), label="bad x shape")
        x = inputs.add(*lay_out(np.zeros(shape, dt), "C", rng))
    elif fault == "x_features":
        x = inputs.add(*lay_out(np.zeros(x_model.shape[:-1] + (I + 1,), dt), "C", rng))
    else:
        x = user_array(draw, rng, x_model, inputs, "x")

    # hx: None or (h0, c0), each in its own dtype and layout
    hx, h0_tm, c0_tm = None, np.zeros((S, B, P)), np.zeros((S, B, H))
    if draw(st.booleans(), label="hx given") or fault in ("hx_shape", "hx_dtype", "hx_type"):
        h0_tm, c0_tm = rng.standard_normal((S, B, P)), rng.standard_normal((S, B, H))
        for v in draw(st.lists(st.sampled_from(SPECIALS), max_size=2), label="specials in hx"):
            a = (h0_tm, c0_tm)[int(rng.integers(0, 2))]
            if a.size:
                a[tuple(rng.integers(0, n) for n in a.shape)] = v
        states = [(a[:, 0] if unbatched else a).astype(dt) for a in (h0_tm, c0_tm)]
        which = draw(st.sampled_from([0, 1]), label="faulty state")
        if fault == "hx_shape":
            shape = list(states[which].shape)
            if draw(st.booleans(), label="drop the layer axis"):
                shape = shape[1:]
            else:
                shape[draw(st.integers(0, len(shape) - 1), label="axis")] += 1
            states[which] = np.zeros(shape, dt)
        elif fault == "hx_dtype":
            states[which] = non_float(states[which], draw(st.sampled_from(NON_FLOATS)))
        hx = tuple(user_array(draw, rng, a, inputs, name, dtypes=None if a.dtype.kind == "f"
                              else ()) for name, a in zip(("h0", "c0"), states))
        if fault == "hx_type":
            hx = draw(st.sampled_from([lambda h: np.asarray(h[0]), lambda h: h[:1],
                                       lambda h: h + h[:1], lambda h: {"h0": h[0], "c0": h[1]}]),
                      label="bad hx")(hx)
        elif draw(st.booleans(), label="hx as a list"):
            hx = list(hx)

    # lengths, in the drawn form, or broken
    if fault in ("lengths_value", "lengths_dtype") and B == 0:
        fault = "lengths_count"
    if fault in ("lengths_value", "lengths_count", "lengths_dtype") and lengths is None:
        lengths = rng.integers(0, T + 1, B)
        lengths_kind = "int64"
    if lengths is not None:
        user_lengths = lengths.copy()
        if fault == "lengths_value":
            user_lengths[rng.integers(0, B)] = draw(st.sampled_from(
                [T + 1, T + 7, -1, -2**31]), label="bad length")
        elif fault == "lengths_count":
            user_lengths = draw(st.sampled_from([
                np.append(user_lengths, 0), user_lengths[:-1] if B else np.zeros((0, 1), int),
                user_lengths[:, None]]), label="bad lengths shape")
            if unbatched and lengths_kind == "scalar" and user_lengths.size == 1:
                user_lengths = np.zeros(2, int)
        elif fault == "lengths_dtype":
            user_lengths = user_lengths.astype(draw(st.sampled_from([np.float64, np.float32,
                                                                     np.bool_])))
        if lengths_kind == "list" and np.shape(user_lengths.tolist()) == user_lengths.shape:
            user_lengths = user_lengths.tolist()
        elif lengths_kind == "scalar" and fault not in ("lengths_count",):
            user_lengths = user_lengths[0]
        elif lengths_kind in ("int32", "uint8") and fault is None:
            user_lengths = user_lengths.astype(lengths_kind)
        lengths_arg = user_lengths
    else:
        lengths_arg = None
    if fault == "num_threads":
        nt, nt_error = draw(st.sampled_from(BAD_NUM_THREADS), label="bad num_threads")
    note(f"fault={fault} T={T} B={B} unbatched={unbatched} lengths={lengths_arg!r}")
    event(f"fault: {fault}")

    expected = {None: None, "x_dtype": (TypeError, "x"), "x_ragged": (TypeError, "x"),
                "x_rank": (ValueError, "x"), "x_features": (ValueError, "x"),
                "hx_shape": (ValueError, ("h0", "c0")), "hx_dtype": (TypeError, ("h0", "c0")),
                "hx_type": (TypeError, "hx"), "lengths_value": (ValueError, "lengths"),
                "lengths_count": (ValueError, "lengths"), "lengths_dtype": (TypeError, "lengths"),
                "num_threads": (None, "num_threads")}[fault]
    if expected is not None:
        types, names = expected
        types = nt_error if fault == "num_threads" else types
        names = (names,) if isinstance(names, str) else names
        expect_error(lambda: model(x, hx, lengths=lengths_arg, num_threads=nt), types, names)
        expect_error(lambda: model.forward_train(x, hx, lengths=lengths_arg, num_threads=nt),
                     types, names)
        inputs.assert_untouched()
        return

    # the oracle sees exactly the values the model gets: cast, broadcast, flushed nothing
    x_o = _to_tm(np.array(x, dt), bf, unbatched)
    h0_o = h0_tm.astype(dt) if hx is None else _states_tm(np.array(hx[0], dt), unbatched)
    c0_o = c0_tm.astype(dt) if hx is None else _states_tm(np.array(hx[1], dt), unbatched)
    oracle = Oracle(params, cfg, x_o, h0_o, c0_o, lengths, dt)

    y, (h_n, c_n) = model(x, hx, lengths=lengths_arg, num_threads=nt)
    inputs.assert_not_shared(y, h_n, c_n)
    oracle.check({"output": _to_tm(y, bf, unbatched), "h_n": _states_tm(h_n, unbatched),
                  "c_n": _states_tm(c_n, unbatched)}, "forward")
    # bitwise: one thread, and contiguous copies of the inputs in the model's dtype
    plain_hx = None if hx is None else tuple(np.array(a, dt) for a in hx)
    y1, (h1, c1) = model(np.array(x, dt), plain_hx, lengths=lengths, num_threads=1)
    assert np.array_equal(y, y1, equal_nan=True)
    assert np.array_equal(h_n, h1, equal_nan=True) and np.array_equal(c_n, c1, equal_nan=True)

    # training: the same forward, bitwise, then the gradients of a random loss
    yt, (ht, ct), backprop = model.forward_train(x, hx, lengths=lengths_arg, num_threads=nt)
    assert np.array_equal(y, yt, equal_nan=True)
    assert np.array_equal(h_n, ht, equal_nan=True) and np.array_equal(c_n, ct, equal_nan=True)
    ups = [rng.standard_normal(a.shape).astype(dt) for a in (y, h_n, c_n)]
    given_ups = draw(st.sampled_from([(1, 1, 1), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0)]),
                     label="upstream given")
    up_fault = draw(st.sampled_from([None, None, None, "shape", "dtype", "none"]),
                    label="upstream fault")
    args = [user_array(draw, rng, u, inputs, name) if g else None
            for u, g, name in zip(ups, given_ups, ("grad_output", "grad_h_n", "grad_c_n"))]
    if up_fault == "none":
        expect_error(lambda: backprop(None, None, None, num_threads=nt), ValueError,
                     ("grad_output",))
    elif up_fault is not None:
        k = given_ups.index(1)
        name = ("grad_output", "grad_h_n", "grad_c_n")[k]
        bad = list(args)
        bad[k] = (np.zeros(ups[k].shape + (1,), dt) if up_fault == "shape"
                  else non_float(ups[k], draw(st.sampled_from(NON_FLOATS))))
        expect_error(lambda: backprop(*bad, num_threads=nt),
                     ValueError if up_fault == "shape" else TypeError, (name,))
    grads = backprop(*args, num_threads=nt)
    inputs.assert_not_shared(*grads.values())
    assert set(grads) == {"x", "h0", "c0"} | set(params)
    zeros_for_none = [np.zeros_like(u) if a is None else np.array(a, dt)  # as passed
                      for u, a in zip(ups, args)]
    upstream = [_to_tm(zeros_for_none[0], bf, unbatched)] + [
        _states_tm(u, unbatched) for u in zeros_for_none[1:]]
    got = {name: g for name, g in grads.items()}
    got.update(x=_to_tm(grads["x"], bf, unbatched), h0=_states_tm(grads["h0"], unbatched),
               c0=_states_tm(grads["c0"], unbatched))
    oracle.check(got, "backward", *upstream)
    event("backward checked against the reference")
    grads1 = backprop(*[None if a is None else np.array(a, dt) for a in args], num_threads=1)
    for k in grads:
        assert np.array_equal(grads[k], grads1[k], equal_nan=True), k

    # streaming: steps in a row are one call over the sequence, bitwise
    if lengths is None:
        step_t = (lambda a, t: a[:, t]) if bf and not unbatched else (lambda a, t: a[t])
        if cfg["bidirectional"]:
            if T:
                expect_error(lambda: model.step(step_t(x_model, 0), hx, num_threads=nt),
                             ValueError, ("bidirectional",))
        else:
            state = hx
            for t in range(T):
                out_t, state = model.step(step_t(np.array(x, dt), t), state, num_threads=nt)
                assert np.array_equal(out_t, step_t(y, t), equal_nan=True), t
            event("steps checked against the sequence")
            if T:
                assert np.array_equal(state[0], h_n, equal_nan=True)
                assert np.array_equal(state[1], c_n, equal_nan=True)

    inputs.assert_untouched()
    after = model.parameters()
    assert all(np.array_equal(after[k], params[k]) for k in params)


# -- LSTMCell ------------------------------------------------------------------------------------

CELL_FAULTS = ("x_dtype", "x_rank", "x_features", "hx_shape", "hx_dtype", "hx_type",
               "num_threads", "grad_shape", "grad_dtype", "grad_none")


@given(data=st.data())
def test_fuzz_lstm_cell(data):
    """LSTMCell: one step and its gradients against the reference, or the documented error."""
    with kernel_variant(data.draw):
        _fuzz_lstm_cell(data.draw)


def _fuzz_lstm_cell(draw):
    I, H = draw(INPUT_SIZES, label="input_size"), draw(HIDDEN_SIZES, label="hidden_size")
    bias = draw(st.booleans(), label="bias")
    dt = np.dtype(draw(st.sampled_from(["float32", "float64"]), label="dtype"))
    seed = draw(st.integers(0, 2**16), label="seed")
    cell = LSTMCell(I, H, bias=bias, dtype=dt, seed=seed)
    params = {k: v.copy() for k, v in cell.parameters().items()}
    unbatched = draw(st.booleans(), label="unbatched")
    B = 1 if unbatched else draw(st.integers(0, 5), label="batch")
    fault = draw(st.one_of(st.none(), st.sampled_from(CELL_FAULTS)), label="fault")
    nt = draw(st.sampled_from(NUM_THREADS), label="num_threads")
    rng = np.random.default_rng(seed)
    inputs = Inputs()

    x_b = rng.standard_normal((B, I)) * draw(st.sampled_from([1.0, 1e-3, 30.0]), label="scale")
    for v in draw(st.lists(st.sampled_from(SPECIALS), max_size=2), label="specials in x"):
        if x_b.size:
            x_b[tuple(rng.integers(0, n) for n in x_b.shape)] = v
    x_model = (x_b[0] if unbatched else x_b).astype(dt)
    if fault == "x_dtype":
        x = user_array(draw, rng, non_float(x_model, draw(st.sampled_from(NON_FLOATS))), inputs,
                       "x", dtypes=())
    elif fault == "x_rank":
        x = np.zeros(draw(st.sampled_from([(), (1, B, I)]), label="bad x shape"), dt)
    elif fault == "x_features":
        x = np.zeros(x_model.shape[:-1] + (I + 1,), dt)
    else:
        x = user_array(draw, rng, x_model, inputs, "x")

    hx, h0, c0 = None, np.zeros((B, H)), np.zeros((B, H))
    if draw(st.booleans(), label="hx given") or fault in ("hx_shape", "hx_dtype", "hx_type"):
        h0, c0 = rng.standard_normal((2, B, H))
        states = [(a[0] if unbatched else a).astype(dt) for a in (h0, c0)]
        which = draw(st.sampled_from([0, 1]), label="faulty state")
        if fault == "hx_shape":
            shape = states[which].shape
            states[which] = np.zeros(draw(st.sampled_from(
                [(1,) + shape, shape[:-1] + (H + 1,), shape[1:]]),
                label="bad state shape"), dt)
        elif fault == "hx_dtype":
            states[which] = non_float(states[which], draw(st.sampled_from(NON_FLOATS)))
        hx = tuple(user_array(draw, rng, a, inputs, name, dtypes=None if a.dtype.kind == "f"
                              else ()) for name, a in zip(("h", "c"), states))
        if fault == "hx_type":
            hx = draw(st.sampled_from([lambda h: np.asarray(h[0]), lambda h: h[:1],
                                       lambda h: h + h[:1]]))(hx)
    if fault == "num_threads":
        nt, nt_error = draw(st.sampled_from(BAD_NUM_THREADS), label="bad num_threads")
    event(f"fault: {fault}")

    expected = {"x_dtype": (TypeError, ("x",)), "x_rank": (ValueError, ("x",)),
                "x_features": (ValueError, ("x",)), "hx_shape": (ValueError, ("h", "c")),
                "hx_dtype": (TypeError, ("h", "c")), "hx_type": (TypeError, ("hx",))}
    if fault in expected or fault == "num_threads":
        types, names = (nt_error, ("num_threads",)) if fault == "num_threads" else expected[fault]
        expect_error(lambda: cell(x, hx, num_threads=nt), types, names)
        expect_error(lambda: cell.forward_train(x, hx, num_threads=nt), types, names)
        inputs.assert_untouched()
        return

    x_o = np.array(x, dt).reshape(1, B, I)
    h0_o = h0.astype(dt) if hx is None else np.array(hx[0], dt).reshape(B, H)
    c0_o = c0.astype(dt) if hx is None else np.array(hx[1], dt).reshape(B, H)
    oracle = Oracle({k + "_l0": v for k, v in params.items()},
                    dict(num_layers=1, bidirectional=False, proj_size=0, hidden_size=H),
                    x_o, h0_o[None], c0_o[None], None, dt)
    h, c = cell(x, hx, num_threads=nt)
    assert h.shape == c.shape == ((H,) if unbatched else (B, H))
    inputs.assert_not_shared(h, c)
    oracle.check({"h_n": h.reshape(1, B, H), "c_n": c.reshape(1, B, H)}, "forward")
    h1, c1 = cell(np.array(x, dt), None if hx is None else tuple(np.array(a, dt) for a in hx),
                  num_threads=1)
    assert np.array_equal(h, h1, equal_nan=True) and np.array_equal(c, c1, equal_nan=True)

    (ht, ct), backprop = cell.forward_train(x, hx, num_threads=nt)
    assert np.array_equal(h, ht, equal_nan=True) and np.array_equal(c, ct, equal_nan=True)
    given_ups = draw(st.sampled_from([(1, 1), (1, 0), (0, 1)]), label="upstream given")
    ups = [rng.standard_normal(h.shape).astype(dt) for _ in range(2)]
    args = [user_array(draw, rng, u, inputs, name) if g else None
            for u, g, name in zip(ups, given_ups, ("grad_h", "grad_c"))]
    if fault == "grad_none":
        expect_error(lambda: backprop(None, None, num_threads=nt), ValueError, ("grad_h",))
    elif fault in ("grad_shape", "grad_dtype"):
        k = given_ups.index(1)
        bad = list(args)
        bad[k] = (np.zeros(ups[k].shape + (1,), dt) if fault == "grad_shape"
                  else non_float(ups[k], draw(st.sampled_from(NON_FLOATS))))
        expect_error(lambda: backprop(*bad, num_threads=nt),
                     ValueError if fault == "grad_shape" else TypeError, (("grad_h", "grad_c")[k],))
    grads = backprop(*args, num_threads=nt)
    inputs.assert_not_shared(*grads.values())
    assert set(grads) == {"x", "h", "c"} | set(params)
    assert grads["x"].shape == np.shape(x_model)
    gh, gc = (np.zeros((1, B, H), dt) if a is None else np.array(a, dt).reshape(1, B, H)
              for a in args)
    got = {k + "_l0": v for k, v in grads.items() if k in params}
    got.update(x=grads["x"].reshape(1, B, I), h0=grads["h"].reshape(1, B, H),
               c0=grads["c"].reshape(1, B, H))
    oracle.check(got, "backward", np.zeros((1, B, H), dt), gh, gc)
    inputs.assert_untouched()
    after = cell.parameters()
    assert all(np.array_equal(after[k], params[k]) for k in params)


# -- constructors --------------------------------------------------------------------------------

GOOD_SIZES = st.one_of(st.integers(1, 9), st.sampled_from([np.int64(3), np.int32(2)]))
BAD_SIZES = st.sampled_from([0, -1, -2**63, 2.0, 2.5, True, "3", None, np.float64(3.0)])
HUGE_SIZES = st.sampled_from([2**31, 2**40, 2**62, 2**64, 10**30])


@given(data=st.data())
def test_fuzz_constructors(data):
    """Any argument values: a working model, or TypeError/ValueError (MemoryError for sizes too
    large to allocate) with a message; never another exception, never a crash."""
    draw = data.draw
    size = lambda label: draw(st.one_of(GOOD_SIZES, GOOD_SIZES, BAD_SIZES, HUGE_SIZES),  # noqa
                              label=label)
    kwargs = dict(input_size=size("input_size"), hidden_size=size("hidden_size"))
    if draw(st.booleans(), label="cell"):
        kwargs.update(bias=draw(st.sampled_from([True, False, 1, 0]), label="bias"),
                      dtype=draw(st.sampled_from(["float32", np.float64, np.float16, int, "x",
                                                  None]), label="dtype"))
        make = LSTMCell
    else:
        kwargs.update(num_layers=size("num_layers"),
                      dropout=draw(st.sampled_from([0.0, 0.5, 1, -0.1, 1.5, float("nan"), "0.1",
                                                    True]), label="dropout"),
                      bidirectional=draw(st.booleans(), label="bidirectional"),
                      proj_size=draw(st.sampled_from([0, 1, 2, -1, 2.0, 10**6, True]),
                                     label="proj_size"),
                      dtype=draw(st.sampled_from(["float32", np.float64, np.float16, int, "x",
                                                  None]), label="dtype"))
        make = LSTM
    try:
        model = make(**kwargs, seed=0)
    except (TypeError, ValueError, MemoryError) as exc:
        assert str(exc), f"{type(exc).__name__} without a message"
        event(f"{type(exc).__name__}")
        return
    event("built")
    assert model.dtype in (np.float32, np.float64)
    x = np.ones((2, model.input_size) if make is LSTMCell else (1, 2, model.input_size))
    out = model(x)
    assert all(np.all(np.isfinite(a)) for a in (out if make is LSTMCell else (out[0], *out[1])))
