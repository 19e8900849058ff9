"""Type aliases of the public API. Annotations only: nothing here runs on a call.

Runtime validation (`_validate`) accepts more than these say (NumPy integer sizes, torch tensors
as arrays) and explains what it refuses; the annotations describe the documented use, so that a
type checker flags ``num_threads="two"`` or ``LSTM(3, "5")`` before the code runs.
"""
from typing import Any, Dict, Optional, Protocol, Tuple

import numpy as np
import numpy.typing as npt

#: An array of the model's dtype, float32 or float64.
FloatArray = npt.NDArray[np.floating[Any]]
#: ``(h, c)``: a pair of states.
State = Tuple[FloatArray, FloatArray]
#: An initial state as given: ``(h0, c0)`` of anything array-like, or None for zeros.
StateLike = Optional[Tuple[npt.ArrayLike, npt.ArrayLike]]
#: Gradients by name: ``x``, the states', and the parameters' by PyTorch name.
Gradients = Dict[str, FloatArray]


class Backprop(Protocol):
    """The ``backprop`` that `LSTM.forward_train` returns."""

    def __call__(self, grad_output: Optional[npt.ArrayLike] = None,
                 grad_h_n: Optional[npt.ArrayLike] = None,
                 grad_c_n: Optional[npt.ArrayLike] = None, *,
                 num_threads: Optional[int] = None) -> Gradients: ...


class CellBackprop(Protocol):
    """The ``backprop`` that `LSTMCell.forward_train` returns."""

    def __call__(self, grad_h: Optional[npt.ArrayLike] = None,
                 grad_c: Optional[npt.ArrayLike] = None, *,
                 num_threads: Optional[int] = None) -> Gradients: ...
