"""fastlstm: a fast, exact LSTM for the CPU, with PyTorch's parameters and shapes.

    >>> import numpy as np, fastlstm
    >>> lstm = fastlstm.LSTM(input_size=3, hidden_size=5, seed=0)
    >>> output, (h_n, c_n) = lstm(np.ones((7, 2, 3), np.float32))   # (seq_len, batch, input)
    >>> output.shape, h_n.shape, c_n.shape
    ((7, 2, 5), (1, 2, 5), (1, 2, 5))

`fastlstm.reference` holds the plain NumPy implementation every kernel is tested against.
``lstm.quantize("int8")`` gives an inference model with int8 weights (`QuantizedLSTM`).
"""
import os as _os
from typing import Any as _Any, Dict as _Dict

from . import _kernels, reference
from ._workspace import release_memory
from .cell import LSTMCell
from ._direction import last_num_threads
from .model import LSTM
from .quantized import QuantizedLSTM, QuantizedLSTMCell

__version__ = "0.1.0"
__all__ = ["LSTM", "LSTMCell", "QuantizedLSTM", "QuantizedLSTMCell", "openmp_enabled", "openmp_info",
           "reference", "release_memory"]

_forced = _os.environ.get("FASTLSTM_ISA", "").strip().lower()
if _forced:
    try:
        _kernels.select_isa(_forced)
    except ValueError as exc:
        raise ImportError(f"FASTLSTM_ISA={_forced!r}: {exc}") from None
else:
    _kernels.select_isa(_kernels.best_isa())


def openmp_enabled() -> bool:
    """Whether the kernels were built with OpenMP.

    Returns
    -------
    bool
        False means every call runs on one thread.
    """
    return _kernels.openmp_enabled()


def openmp_info() -> _Dict[str, _Any]:
    """How the kernels run here.

    Returns
    -------
    dict
        ``enabled`` (built with OpenMP), ``max_threads`` (what ``num_threads=None`` means:
        ``omp_get_max_threads()`` of the calling thread, governed by ``OMP_NUM_THREADS`` and
        threadpoolctl, whose ``threadpool_limits`` sets it for the calling thread only:
        libgomp keeps it per thread; docs/scale-out.md),
        ``last_num_threads`` (the team the last call from this Python thread really ran, None
        before any), ``isa`` (the kernel variant in use), ``isas`` (the variants this CPU
        supports, best first) and ``isa_int8`` (the int8 kernel variant in use:
        'avx512vnni', 'avx2' or 'generic').
    """
    return {
        "enabled": _kernels.openmp_enabled(),
        "max_threads": _kernels.max_threads(),
        "last_num_threads": last_num_threads(),
        "isa": _kernels.isa(),
        "isas": [name for name in ("avx512", "avx2", "generic") if _kernels.isa_supported(name)],
        "isa_int8": _kernels.isa_int8(),
    }
