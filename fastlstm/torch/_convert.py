"""`convert` and `revert`: swap torch's LSTMs in a model tree for fastlstm's and back.

A module is converted by changing its class (``torch.nn.LSTM`` <-> `fastlstm.torch.LSTM`, which
only overrides forward): its Parameters, buffers, hooks and mode stay the very same objects, so an
optimizer built before an in-place convert keeps working.
"""
import copy
import warnings
from typing import Dict, List, Tuple, TypeVar

import torch
from torch import nn

from ._autograd import _DTYPES
from ._modules import LSTM, LSTMCell

M = TypeVar("M", bound=nn.Module)

_TO_FAST = {nn.LSTM: LSTM, nn.LSTMCell: LSTMCell}
_TO_TORCH = {LSTM: nn.LSTM, LSTMCell: nn.LSTMCell}


def _why_not(module: nn.Module) -> str:
    """Why a torch LSTM cannot run on fastlstm ('' when it can)."""
    if type(module) not in _TO_FAST:
        return (f"{type(module).__name__} subclasses {type(module).__mro__[1].__name__}"
                f" and may change its forward, which a converted module would drop")
    for name, p in module.named_parameters(recurse=False):
        if p.device.type != "cpu":
            return f"its parameter {name} is on {p.device}; fastlstm runs on the CPU"
        if p.dtype not in _DTYPES:
            return f"its parameter {name} is {p.dtype}; fastlstm runs float32 and float64"
    return ""


def _swap(module: nn.Module, table: Dict[type, type], path: str, skipped: List[Tuple[str, str]]) -> None:
    """Change the classes in place, depth first."""
    cls = type(module)
    if table is _TO_FAST and isinstance(module, (nn.LSTM, nn.LSTMCell)) and cls not in _TO_TORCH:
        why = _why_not(module)
        if why:
            skipped.append((path or "(the model itself)", why))
        else:
            module.__class__ = table[cls]
            getattr(module, "_fastlstm_init")()  # (its class was just swapped in)
    elif table is _TO_TORCH and cls in table:
        module.__class__ = table[cls]
        for attr in ("num_threads", "_fastlstm_packed"):
            module.__dict__.pop(attr, None)
    for name, child in module.named_children():
        _swap(child, table, f"{path}.{name}" if path else name, skipped)


def convert(module: M, inplace: bool = False) -> M:
    """Swap every ``torch.nn.LSTM`` and ``torch.nn.LSTMCell`` in a model for `fastlstm.torch.LSTM`
    / `LSTMCell`, weights included.

    Parameters
    ----------
    module : torch.nn.Module
        The model (or one LSTM). Modules of any depth are visited, in containers too.
    inplace : bool, default False
        Change `module` itself (its Parameters stay the same objects, so an existing optimizer
        keeps training them), or a deep copy of it.

    Returns
    -------
    torch.nn.Module
        The converted model: `module` itself when inplace, else a copy.

    Raises
    ------
    TypeError
        `module` is not a ``torch.nn.Module``.

    Warns
    -----
    UserWarning
        Naming each LSTM left as it was and why: on a GPU, a dtype other than float32/float64,
        or a subclass of ``nn.LSTM`` (its own forward would be lost).
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"convert takes a torch.nn.Module; got {type(module).__name__}")
    if not inplace:
        module = copy.deepcopy(module)
    skipped: List[Tuple[str, str]] = []
    _swap(module, _TO_FAST, "", skipped)
    if skipped:
        warnings.warn("fastlstm.torch.convert left these as they were:\n"
                      + "\n".join(f"  {path}: {why}" for path, why in skipped), stacklevel=2)
    return module


def revert(module: M, inplace: bool = False) -> M:
    """Swap every `fastlstm.torch.LSTM` / `LSTMCell` back to ``torch.nn.LSTM`` /
    ``torch.nn.LSTMCell`` (for the GPU, ``torch.onnx.export``, or code that checks the type).

    Parameters
    ----------
    module : torch.nn.Module
        The model (or one module).
    inplace : bool, default False
        Change `module` itself, or a deep copy of it.

    Returns
    -------
    torch.nn.Module
        The model with torch's modules, same Parameters.

    Raises
    ------
    TypeError
        `module` is not a ``torch.nn.Module``.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"revert takes a torch.nn.Module; got {type(module).__name__}")
    if not inplace:
        module = copy.deepcopy(module)
    _swap(module, _TO_TORCH, "", [])
    return module
