# Type stub for the compiled fastlstm._kernels (src/_kernels.pyx). Arrays are 1-D C-contiguous
# views of buffers fastlstm/model.py prepares; Cython types kept as comments.
from collections.abc import Sequence

from typing_extensions import disjoint_base  # (Cython types with C fields: PEP 800)

import numpy as np

def forward(
    x: np.ndarray,  # const floating[::1]
    xs_t: int, xs_b: int, T: int, B: int, I: int, H: int,
    w_ih: np.ndarray, w_hh: np.ndarray, wgroup: int,  # const floating[::1]; wgroup 1, 2 or 4
    bias: np.ndarray | None,
    gates: np.ndarray, chunk: int,  # floating[::1]
    h_state: np.ndarray, c_state: np.ndarray, tc_state: np.ndarray | None,  # floating[::1]
    y: np.ndarray, ys_t: int, ys_b: int,  # floating[::1]
    num_threads: int = ...,
    P: int = ..., w_hr: np.ndarray | None = ..., h_full: np.ndarray | None = ...,
) -> int: ...
def backward(
    T: int, B: int, I: int, H: int,
    gates: np.ndarray, c_state: np.ndarray, tc_state: np.ndarray, h_state: np.ndarray,
    xpad: np.ndarray, w_ih_t: np.ndarray, w_hh_t: np.ndarray,  # const floating[::1]
    dy: np.ndarray | None, dys_t: int, dys_b: int,  # const floating[::1]
    dh: np.ndarray, dc: np.ndarray, dgates: np.ndarray, chunk: int,  # floating[::1]
    dx: np.ndarray,  # floating[::1]
    dw_ih: np.ndarray | None, dw_hh: np.ndarray | None, db: np.ndarray | None,  # None: deferred
    num_threads: int = ...,
    P: int = ..., w_hr_t: np.ndarray | None = ..., h_full: np.ndarray | None = ...,
    dr_steps: np.ndarray | None = ..., dh_full: np.ndarray | None = ...,
    dw_hr: np.ndarray | None = ...,
) -> int: ...
def weight_gradients_packed(
    R: int, I: int, H: int,
    dgates: np.ndarray, xpad: np.ndarray, h_prev: np.ndarray,  # const floating[::1]
    w_ih_t: np.ndarray,  # const floating[::1]
    dx: np.ndarray, dw_ih: np.ndarray, dw_hh: np.ndarray, db: np.ndarray | None,  # floating[::1]
    num_threads: int = ...,
) -> int: ...
class SmallForward:
    """Inference with its whole entry in C, for small one-layer calls with ready arguments."""
    def __init__(self, packed: object, record: object) -> None: ...
    def __call__(self, x: object, hx: object, num_threads: object,
                 batch_first: bool) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]] | None: ...
@disjoint_base
class SmallBackprop:
    """The backprop of a SmallTrain call; it owns that forward's tape."""
    def __call__(self, grad_output: object = ..., grad_h_n: object = ..., grad_c_n: object = ...,
                 *, num_threads: int | None = ...) -> dict[str, np.ndarray]: ...
@disjoint_base
class SmallTrain:
    """forward_train with its whole entry in C, for the calls SmallForward takes (tape <= 2**18)."""
    def __init__(self, packed: object, record: object, output: object, check_upstream: object,
                 check_num_threads: object) -> None: ...
    def __call__(self, x: object, hx: object, num_threads: object, batch_first: bool
                 ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], SmallBackprop] | None: ...
@disjoint_base
class SmallForwardInt8:
    """SmallForward for an int8 direction without projection (QuantizedLSTM's small calls)."""
    def __init__(self, packed: object, record: object) -> None: ...
    def __call__(self, x: object, hx: object, num_threads: object,
                 batch_first: bool) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]] | None: ...
def probe_fma_gflops(dtype: object, seconds: float = ...) -> float: ...
def probe_read_gbs(nbytes: int, dtype: object = ..., seconds: float = ...) -> float: ...
def openmp_enabled() -> bool: ...
def max_threads() -> int: ...
def split_thresholds(step_bytes: int | None = ..., thread_bytes: int | None = ...) -> tuple[int, int]: ...
def cold_teams(enabled: bool | None = ..., wake_costs: Sequence[float] | None = ...) -> tuple[bool, list[float]]: ...
def cpu_limit(n: int | None = ...) -> int: ...
def busy_threads(add: int = ...) -> int: ...
def crowded(seconds: float | None = ..., enabled: bool | None = ...) -> tuple[bool, float]: ...
def interrupt_settings(watch_ns: float | None = ...) -> float: ...
def usable_cpus(cgroup: str = ...) -> int: ...
def isa() -> str: ...
def isa_supported(name: str) -> bool: ...
def best_isa() -> str: ...
def select_isa(name: str) -> None: ...
def pack_slabs(
    rows: np.ndarray,  # const floating[:, ::1]
    out: np.ndarray,  # floating[:, :, ::1]
) -> None: ...
def repack_gate_rows(
    w: np.ndarray,  # const floating[:, ::1], PyTorch's (4H, K)
    order: np.ndarray,  # const Py_ssize_t[::1], (4Hp,): source row of each interleaved row, -1 pad
    fwd: np.ndarray,  # floating[:, :, ::1], (4Hp/W, K, W)
    bwd: np.ndarray,  # floating[:, :, ::1], (Kp/NR, 4Hp, NR)
) -> None: ...
def weight_group(dtype: object) -> int: ...
# int8 inference kernels (src/int8_kernels.pxi; issue 19)
INT8_ISAS: tuple[str, ...]
def isa_int8() -> str: ...
def int8_isa_supported(name: str) -> bool: ...
def int8_isas() -> list[str]: ...
def forward_int8(
    x: np.ndarray,  # const float[::1]
    xs_t: int, xs_b: int, T: int, B: int, I: int, H: int, P: int,
    w_ih: np.ndarray, bsum_ih: np.ndarray, s_ih: np.ndarray,  # const int8_t / int32_t / float[::1]
    bias: np.ndarray,  # const float[::1]
    w_hh: np.ndarray, bsum_hh: np.ndarray, s_hh: np.ndarray,
    w_hr: np.ndarray | None, bsum_hr: np.ndarray | None,  # None: no projection
    s_hr: np.ndarray | None,
    gates: np.ndarray, chunk: int,  # float[::1]
    h_state: np.ndarray, c_state: np.ndarray, h_full: np.ndarray | None,  # float[::1]
    y: np.ndarray, ys_t: int, ys_b: int,  # float[::1]
    num_threads: int = ...,
) -> int: ...
def int8_pack(q_w: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...  # int8 (N, K) -> (int8 1-D, int32 (P*16,))
def int8_gemm(q_a: np.ndarray, packed: np.ndarray, bsum: np.ndarray, N: int, K: int,
              isa: str | None = ...) -> np.ndarray: ...  # int8 (M, >= round_up(K, 4)) -> int32 (M, N)
def int8_quantize_rows(x: np.ndarray, isa: str | None = ...
                       ) -> tuple[np.ndarray, np.ndarray]: ...  # float32 (M, K) -> (int8 (M, Kpad), float32 (M,))
def int8_dequant_add(acc: np.ndarray, s_a: np.ndarray, s_w: np.ndarray,
                     add: np.ndarray | None = ..., isa: str | None = ...,
                     out: np.ndarray | None = ...) -> np.ndarray: ...  # float32 (M, N)
def _time_gemm(dtype: str, M: int, K: int, N: int, reps: int, isa: str | None = ...,
               seed: int = ...) -> float: ...
def thread_fpmodes(num_threads: int) -> list[int]: ...
