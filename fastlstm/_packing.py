"""Weights rearranged, once, into the layouts the kernels read (see src/_kernels.pyx).

PyTorch stores weight_ih as (4H, I) with the gate blocks i, f, g, o one after another. The kernels
want the four gates of a block of NR hidden units side by side (so the thread that owns a block has
everything it needs), transposed, split into NR-wide panels and zero-padded. `pack` builds that
from the user's arrays without touching them; every `pack` makes new arrays, so a backward pass
still holding an older pack stays correct. `repack` instead rewrites a pack in place, for a
training loop whose parameters change every step (fastlstm.torch), where the caller knows no
tape still needs the old values.
"""
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import numpy as np

from . import _kernels

PANEL: Dict[np.dtype[Any], int] = {np.dtype(np.float32): 16, np.dtype(np.float64): 8}


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def gate_order(hidden_size, panel):
    """For each interleaved gate column, the PyTorch row it comes from (-1 for padding)."""
    Hp = round_up(hidden_size, panel)
    n = np.arange(4 * Hp)
    unit = (n // (4 * panel)) * panel + n % panel
    gate = (n // panel) % 4
    return np.where(unit < hidden_size, gate * hidden_size + unit, -1)


@dataclass(frozen=True)
class Packed:
    """The packed weights of one layer and direction, for one dtype."""

    input_size: int
    hidden_size: int
    w_ih: np.ndarray  # forward, (4Hp/(g*NR), I, g*NR): W_ih^T in slabs of g = weight_group panels
    w_hh: np.ndarray  # forward, (4Hp/(g*NR), K, g*NR): W_hh^T likewise (K = H or P)
    bias: Optional[np.ndarray]  # (4Hp,): b_ih + b_hh, or None without bias
    w_ih_t: np.ndarray  # backward, (Ip/NR, 4Hp, NR): W_ih, rows interleaved, by column panels
    w_hh_t: np.ndarray  # backward, (Kp/NR, 4Hp, NR): W_hh, rows interleaved, by column panels
    to_torch_rows: np.ndarray  # (4H,): interleaved row of each PyTorch row, to unpack gradients
    weight_group: int  # g: panels per forward slab (4/g slabs per unit block)
    proj_size: int = 0  # P; 0: no projection, and the two below are None
    w_hr: Optional[np.ndarray] = None  # forward, (Pp/NR, H, NR): W_hr^T by output panels
    w_hr_t: Optional[np.ndarray] = None  # backward, (Hp/NR, P, NR): W_hr by column panels
    # `repack`'s zero-padded staging buffers, made on its first call
    scratch: dict = field(default_factory=dict, compare=False, repr=False)


def _aligned_empty(shape, dtype, align=64):
    """np.empty starting on a cache line: NumPy's large arrays start 16 bytes past one, and then
    every panel load straddles two lines (measured: 3-4% of a batch-1 step streaming W_hh from
    L2, 25% of a plain L2 read)."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.empty(nbytes + align, np.uint8)
    skip = -raw.ctypes.data % align
    return raw[skip:skip + nbytes].view(dtype).reshape(shape)


def _slabs(rows, K, width):
    """(N, >=K) rows -> (N/width, K, width): slab u is the transpose of rows [u*width, (u+1)*width)
    (a compiled loop: NumPy's transposed copies are slow on large matrices)."""
    out = _aligned_empty((rows.shape[0] // width, K, width), rows.dtype)
    _kernels.pack_slabs(rows, out)
    return out


def pack(weight_ih, weight_hh, bias_ih, bias_hh, dtype, weight_hr=None):
    """Pack one layer's PyTorch-layout parameters (bias_* and weight_hr may be None) into
    `dtype`. With weight_hr (P, H), weight_hh is (4H, P): the recurrence reads projected states."""
    dtype = np.dtype(dtype)
    panel = PANEL[dtype]
    four_h, input_size = weight_ih.shape
    hidden_size = four_h // 4
    rows = gate_order(hidden_size, panel)
    real = rows >= 0
    Ip = round_up(input_size, panel)
    Hp = round_up(hidden_size, panel)
    K = weight_hh.shape[1]  # the recurrent input: hidden_size, or proj_size
    Kp = round_up(K, panel)
    # slabs as wide as the active ISA's GEMM tiles, so each tile streams one slab (the layout
    # travels with the pack: a later ISA switch still computes the same bits, only slower)
    group = _kernels.weight_group(dtype)

    def interleave_rows(w, width):
        """(4H, K) in blocks i, f, g, o -> (4Hp, width): per unit block, its i, f, g, o rows."""
        padded = np.zeros((4, Hp, width), dtype)
        padded[:, :hidden_size, : w.shape[1]] = w.reshape(4, hidden_size, -1)
        blocks = padded.reshape(4, Hp // panel, panel, width).transpose(1, 0, 2, 3)
        return np.ascontiguousarray(blocks).reshape(4 * Hp, width)

    wih_rows = interleave_rows(weight_ih, Ip)  # (4Hp, Ip)
    whh_rows = interleave_rows(weight_hh, Kp)  # (4Hp, Kp)
    bias = None
    if bias_ih is not None:
        summed = np.asarray(bias_ih, dtype) + np.asarray(bias_hh, dtype)
        bias = np.zeros(rows.size, dtype)
        bias[real] = summed[rows[real]]
    to_torch = np.empty(four_h, np.intp)
    to_torch[rows[real]] = np.nonzero(real)[0]
    proj = {}
    if weight_hr is not None:
        hr = np.zeros((Kp, Hp), dtype)  # W_hr (P, H), padded
        hr[:K, :hidden_size] = weight_hr
        proj = dict(proj_size=K, w_hr=_slabs(hr, hidden_size, panel),
                    w_hr_t=_slabs(np.ascontiguousarray(hr.T), K, panel))
    return Packed(
        input_size=input_size,
        hidden_size=hidden_size,
        w_ih=_slabs(wih_rows, input_size, group * panel),
        w_hh=_slabs(whh_rows, K, group * panel),
        bias=bias,
        w_ih_t=_slabs(np.ascontiguousarray(wih_rows.T), 4 * Hp, panel),
        w_hh_t=_slabs(np.ascontiguousarray(whh_rows.T), 4 * Hp, panel),
        to_torch_rows=to_torch,
        weight_group=group,
        **proj,
    )


def _scratch(p, key, shape, dtype):
    """A zero-filled buffer kept with the pack (the padding part is written once, here)."""
    buf = p.scratch.get(key)
    if buf is None:
        buf = p.scratch[key] = np.zeros(shape, dtype)
    return buf


def repack(p, weight_ih, weight_hh, bias_ih=None, bias_hh=None, weight_hr=None):
    """Write new parameter values into pack `p`'s arrays in place, bitwise as `pack` would make
    them: no validation and no new arrays, for a training step that changes them every time.

    The caller guarantees what `pack`'s callers check: the shapes `p` was packed from and p's
    dtype; and that no backward still needs p's old values (its arrays, and the kernels' pointers
    to them, stay the same)."""
    dtype = p.w_ih.dtype
    panel = PANEL[dtype]
    src = p.scratch.get("src")
    if src is None:
        order = gate_order(p.hidden_size, panel).astype(np.intp)
        src = p.scratch["src"] = (order, np.nonzero(order >= 0)[0], order[order >= 0])
    order, dst_real, src_real = src
    for w, fwd, bwd in ((weight_ih, p.w_ih, p.w_ih_t), (weight_hh, p.w_hh, p.w_hh_t)):
        _kernels.repack_gate_rows(np.ascontiguousarray(w, dtype), order, fwd, bwd)
    if p.bias is not None:
        summed = _scratch(p, "bias_sum", (4 * p.hidden_size,), dtype)
        np.add(bias_ih, bias_hh, out=summed)
        if dst_real.size == p.bias.size:
            np.take(summed, order, out=p.bias, mode="clip")
        else:
            p.bias[dst_real] = summed[src_real]
    if p.proj_size:
        P, H = p.proj_size, p.hidden_size
        hr = _scratch(p, "hr", (round_up(P, panel), round_up(H, panel)), dtype)
        hr[:P, :H] = weight_hr
        _kernels.pack_slabs(hr, p.w_hr)
        for u in range(p.w_hr_t.shape[0]):  # column panels of W_hr (P, H)
            np.copyto(p.w_hr_t[u], hr[:P, u * panel:(u + 1) * panel])
