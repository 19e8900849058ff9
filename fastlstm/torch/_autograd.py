"""The bridge from torch tensors to fastlstm's kernels: a packed copy of a module's parameters
(`PackedCopy`) and the autograd function that runs `fastlstm.LSTM` forward and backward on it
(`run`).

Tensors cross as NumPy views (``Tensor.numpy()`` and ``torch.from_numpy`` share memory), so
nothing is copied on the way in or out beyond what the kernels' layouts need.
"""
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from .. import model as _model
from .._packing import repack

_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}

# Optimizer steps and backwards through these modules in this process. Not every update moves
# a version counter: fused optimizers (Adam(fused=True)) do not, nor do manual updates and EMA
# averages through .data, which follow a backward or a step. A packed copy made before the
# count moved is repacked before its next use.
_updates = [0]


def _count_update(*args: object, **kwargs: object) -> None:
    _updates[0] += 1


_optimizer_hook = register_optimizer_step_post_hook(_count_update)


def _np(t: torch.Tensor) -> np.ndarray:
    """A NumPy view of a CPU tensor (a negated view, as ``-y`` gives, is resolved first)."""
    try:
        return t.detach().resolve_neg().numpy()
    except RuntimeError as e:
        if _functorch_wrapped(t):  # torch.func.grad / vmap / jacrev: tensors without storage
            raise RuntimeError(
                "fastlstm.torch's modules do not support torch.func transforms (grad, vmap, "
                "jacrev...): they run NumPy and C kernels, with no functorch rules. Use "
                "torch.autograd (loss.backward(), torch.autograd.grad), or "
                "fastlstm.torch.revert(model) for torch's own modules") from e
        raise


def _functorch_wrapped(t: torch.Tensor) -> bool:
    check = getattr(getattr(torch._C, "_functorch", None), "is_functorch_wrapped_tensor", None)
    return bool(check is not None and check(t))


_NO_DOUBLE_BACKWARD = (
    b"fastlstm.torch's LSTM has no double backward: its backward is fastlstm's kernels, not "
    b"differentiable again (create_graph=True gradients through it cannot be differentiated). "
    b"Use torch.nn.LSTM for that (fastlstm.torch.revert(model) gives it back)")


def _delay_error(grads: Tuple[Optional[torch.Tensor], ...]) -> Tuple[Optional[torch.Tensor], ...]:
    """Under create_graph=True, the gradients as tensors whose own backward raises: using them
    in a loss (a gradient penalty) then fails loudly instead of dropping that term's
    dependence on the inputs and weights (torch's ``once_differentiable`` wraps them only
    when the incoming gradients require grad, which a plain ``y.sum()`` does not)."""
    present = [g for g in grads if g is not None]
    if not present:
        return grads
    err = torch._C._functions.DelayedError(_NO_DOUBLE_BACKWARD, len(present))

    def fake_requires_grad(g: torch.Tensor) -> torch.Tensor:
        g = g.detach()
        g.requires_grad = True
        return g

    wrapped = err(*[fake_requires_grad(g) for g in present])
    if isinstance(wrapped, torch.Tensor):
        wrapped = (wrapped,)
    it = iter(wrapped)
    return tuple(None if g is None else next(it) for g in grads)


def _tensor(a: Optional[np.ndarray]) -> Optional[torch.Tensor]:
    return None if a is None else torch.from_numpy(a)


class PackedCopy:
    """The kernels' copy of a torch module's parameters: a `fastlstm.LSTM` built once, then
    repacked in place (`_packing.repack`) when the values change.

    `names` are fastlstm's names of `params` (``weight_ih_l0``...); the tensors themselves are
    read at each `refresh`, so the module's own Parameters stay the only state."""

    def __init__(self, config: dict, names: Sequence[str], params: Sequence[torch.Tensor]):
        self.names = list(names)
        self.key = self._key(params)
        dtype = _DTYPES[params[0].dtype]
        state = {n: _np(p) for n, p in zip(self.names, params)}
        self.model = _model.LSTM.from_state_dict(state, batch_first=config["batch_first"],
                                                 dtype=dtype)
        self.dtype = np.dtype(dtype)
        self.packed_from = self._token(params)

    @staticmethod
    def _key(params):
        """What a repack in place cannot follow: other tensor objects, another dtype."""
        return tuple(id(p) for p in params), params[0].dtype

    @staticmethod
    def _token(params):
        """What changes when values change: each tensor's storage and version (through torch,
        not through ``.data``) and the count of updates above. Parameters in shared memory
        (``share_memory()``: Hogwild, A3C) may change in another process at any moment, where
        none of that moves: their token never matches."""
        if any(p.is_shared() for p in params):
            return object()
        return _updates[0], tuple((p.data_ptr(), p._version) for p in params)

    def fits(self, params: Sequence[torch.Tensor]) -> bool:
        return self._key(params) == self.key

    def refresh(self, params: Sequence[torch.Tensor], force: bool) -> None:
        """Repack from the tensors' current values: always when `force`, else only when their
        storage or version changed since the last pack."""
        token = self._token(params)
        if not force and token == self.packed_from:
            return
        values = dict(zip(self.names, (_np(p) for p in params)))
        m = self.model
        for k, directions in enumerate(m._layers):
            for d, direction in enumerate(directions):
                suffix = f"_l{k}" + ("_reverse" if d else "")
                repack(direction.packed, values["weight_ih" + suffix],
                       values["weight_hh" + suffix], values.get("bias_ih" + suffix),
                       values.get("bias_hh" + suffix), values.get("weight_hr" + suffix))
        self.packed_from = token


class _LSTMFunction(torch.autograd.Function):
    """fastlstm's forward_train as an autograd node; its backward is fastlstm's backprop."""

    @staticmethod
    def forward(ctx, packed: PackedCopy, num_threads: int, lengths, draw_mask,
                x: torch.Tensor, h0: Optional[torch.Tensor], c0: Optional[torch.Tensor],
                *params: torch.Tensor):
        hx = None if h0 is None else (_np(h0), _np(c0))
        y, (h_n, c_n), backprop = packed.model._forward_train(_np(x), hx, lengths, num_threads,
                                                              draw_mask)
        ctx.backprop, ctx.num_threads, ctx.names = backprop, num_threads, packed.names
        # only for torch's check that no parameter changed in place before this backward
        # (its values are in the pack, which a later step rewrites)
        ctx.save_for_backward(*params)
        ctx.set_materialize_grads(False)
        return torch.from_numpy(y), torch.from_numpy(h_n), torch.from_numpy(c_n)

    @staticmethod
    def backward(ctx, grad_y, grad_h, grad_c):
        params = ctx.saved_tensors  # raises torch's "modified by an inplace operation"
        if grad_y is None and grad_h is None and grad_c is None:  # no output reached the loss
            return (None,) * (7 + len(params))
        # a backward is mostly followed by an update, maybe a manual one through .data, which
        # moves no version counter: every pack is repacked before its next use
        _updates[0] += 1
        # grad mode is on in a backward exactly under create_graph=True
        double = torch.is_grad_enabled()
        grads = ctx.backprop(*(None if g is None else _np(g) for g in (grad_y, grad_h, grad_c)),
                             num_threads=ctx.num_threads)
        need = ctx.needs_input_grad
        inputs = [_tensor(grads[k]) if need[i] else None
                  for i, k in zip((4, 5, 6), ("x", "h0", "c0"))]
        weights = [_tensor(grads[n]) if need[7 + i] else None for i, n in enumerate(ctx.names)]
        out = (*inputs, *weights)
        return (None, None, None, None, *(_delay_error(out) if double else out))


def mask_drawer(dropout: float, dtype: torch.dtype) -> Callable[[Tuple[int, ...]], np.ndarray]:
    """Dropout masks from torch's generator (``torch.manual_seed`` reproduces them), scaled by
    1/(1 - dropout) as ``torch.nn.functional.dropout`` scales the kept elements."""
    keep = 1.0 - dropout

    def draw(shape):
        mask = torch.empty(shape, dtype=dtype).bernoulli_(keep)
        if keep:
            mask.div_(keep)
        return mask.numpy()

    return draw


def run(packed: PackedCopy, params: List[torch.Tensor], x: torch.Tensor,
        hx: Optional[Tuple[torch.Tensor, torch.Tensor]], lengths: Optional[np.ndarray],
        num_threads: int, dropout: float, training: bool):
    """(output, h_n, c_n) of fastlstm's LSTM on these tensors, differentiable when autograd
    needs it (training kernels and their backward), else from the inference kernels."""
    draw = mask_drawer(dropout, params[0].dtype) if training and dropout else None
    grad = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in params)
                                        or (hx is not None and (hx[0].requires_grad
                                                                or hx[1].requires_grad)))
    # training changes the values every step, also through .data (no version bump): repack on
    # every forward in train() mode or that autograd records (eval()-mode fine-tuning);
    # otherwise only when torch says the values changed
    packed.refresh(params, force=torch.is_grad_enabled() and (training or grad))
    if grad:
        h0, c0 = (None, None) if hx is None else hx
        return _LSTMFunction.apply(packed, num_threads, lengths, draw, x, h0, c0, *params)
    x_np = _np(x)
    hx_np = None if hx is None else (_np(hx[0]), _np(hx[1]))
    if draw is None:
        y, (h_n, c_n) = packed.model(x_np, hx_np, lengths=lengths, num_threads=num_threads)
    else:
        def dropout_fn(layer, y):
            return y * draw(y.shape)
        y, (h_n, c_n), _ = packed.model._run(x_np, hx_np, lengths, False, num_threads,
                                             dropout_fn)
    return torch.from_numpy(y), torch.from_numpy(h_n), torch.from_numpy(c_n)
