"""Scratch buffers reused from call to call, per Python thread.

A training step allocates several times the size of its input in internal buffers (gates, cell
states, ...). Fresh memory costs a page fault per 4 KiB page, and the OS zeroes every page: for
large models that is a good part of a step (measured 0.6 s of a 4.3 s step on workload e here).
So internal buffers go back to a small free list of the Python thread that drops them and are
taken from it again. They never hold anything a caller can see.

Large results (gradients) are new arrays to the caller, but `output()` may build them on the memory
of an earlier result that nothing references any more: glibc hands such mid-sized blocks back to
the OS on free, and faulting them in again cost 3 ms of a 0.2 ms float64 backward (H=256, B=T=1).
Every view of a result keeps its buffer referenced, so a buffer is reused only once no array,
view or memoryview of it is left anywhere.

Each thread has its own lists, so concurrent calls never share memory; `release_memory()` empties
the calling thread's lists (the lists of other threads go when those threads end).
"""
from __future__ import annotations

import math
import sys
import threading
from typing import Any, List, Optional, Tuple, Union

import numpy as np
import numpy.typing as npt

_Shape = Union[int, Tuple[int, ...]]

# Below this, malloc reuses memory by itself: not worth keeping.
_MIN_BYTES = 1 << 20
# Free buffers kept per thread: a training step holds five, and a loop that rebinds its
# backprop keeps the previous step's five alive while the next forward takes its own.
_MAX_KEPT = 12
# Result buffers remembered per thread (a backward returns up to three large ones per direction).
_MAX_RESULTS = 16


class _FreeList(threading.local):
    def __init__(self) -> None:
        # 1-D uint8 arrays: free ones, most recently returned last; those under results handed
        # out, most recent last
        self.buffers: List[npt.NDArray[np.uint8]] = []
        self.results: List[npt.NDArray[np.uint8]] = []


_free = _FreeList()


def _nbytes(shape: _Shape, dtype: np.dtype[Any]) -> int:
    return (shape if isinstance(shape, int) else math.prod(shape)) * dtype.itemsize


def take(shape: _Shape, dtype: npt.DTypeLike) -> npt.NDArray[Any]:
    """An uninitialised array: a view of a free buffer of this thread that fits (not more than
    4x too big), else a new one."""
    dtype = np.dtype(dtype)
    nbytes = _nbytes(shape, dtype)
    if nbytes < _MIN_BYTES:  # the common small call: no bookkeeping at all
        return np.empty(shape, dtype)
    buffers = _free.buffers
    fits = [i for i, b in enumerate(buffers) if nbytes <= b.nbytes <= 4 * nbytes]
    if fits:
        raw = buffers.pop(min(fits, key=lambda i: buffers[i].nbytes))
    else:
        raw = np.empty(nbytes, np.uint8)
    return raw[:nbytes].view(dtype).reshape(shape)


def output(shape: _Shape, dtype: npt.DTypeLike) -> npt.NDArray[Any]:
    """An uninitialised new array for the caller to keep (the kernels must write all of it): the
    memory of an earlier result nothing references any more, when one fits, else fresh."""
    dtype = np.dtype(dtype)
    nbytes = _nbytes(shape, dtype)
    if nbytes < _MIN_BYTES:
        return np.empty(shape, dtype)
    results = _free.results
    raw = None
    for i in range(len(results) - 1, -1, -1):
        candidate = results[i]
        # 3 references: the list, `candidate` and getrefcount's argument; any array or view
        # built on the buffer (numpy views point at the array owning the memory) adds one
        if nbytes <= candidate.nbytes <= 2 * nbytes and sys.getrefcount(candidate) == 3:
            raw = results.pop(i)
            break
        del candidate
    if raw is None:
        raw = np.empty(nbytes, np.uint8)
    results.append(raw)
    del results[:-_MAX_RESULTS]  # forgotten here; a caller still holding one keeps it alive
    return raw[:nbytes].view(dtype).reshape(shape)


def give(*arrays: Optional[npt.NDArray[Any]]) -> None:
    """Hand arrays obtained from take() back to the calling thread's free list (None: skipped)."""
    for array in arrays:
        if array is None or array.nbytes < _MIN_BYTES:
            continue
        raw = array.base if array.base is not None else array
        if raw.dtype == np.uint8 and raw.ndim == 1:
            _free.buffers.append(raw)
            del _free.buffers[:-_MAX_KEPT]


def release_memory() -> None:
    """Free the scratch memory this Python thread keeps for later calls.

    Buffers of 1 MiB and more are kept per Python thread and reused by the next call (fresh
    memory costs a page fault per page); they never hold anything a caller sees. Other
    threads' buffers go when those threads end.
    """
    _free.buffers.clear()
    _free.results.clear()
