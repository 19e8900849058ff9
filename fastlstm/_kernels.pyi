# Type stub for the compiled fastlstm._kernels (src/_kernels.pyx). Arrays are 1-D C-contiguous
# views of buffers fastlstm/model.py prepares; Cython types kept as comments.
import numpy as np

def forward(
    x: np.ndarray,  # const floating[::1]
    xs_t: int, xs_b: int, T: int, B: int, I: int, H: int,
    w_ih: np.ndarray, w_hh: np.ndarray, bias: np.ndarray | None,  # const floating[::1]
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
def probe_fma_gflops(dtype: object, seconds: float = ...) -> float: ...
def probe_read_gbs(nbytes: int, dtype: object = ..., seconds: float = ...) -> float: ...
def openmp_enabled() -> bool: ...
def max_threads() -> int: ...
def split_thresholds(step_bytes: int | None = ..., thread_bytes: int | None = ...) -> tuple[int, int]: ...
def isa() -> str: ...
def isa_supported(name: str) -> bool: ...
def best_isa() -> str: ...
def select_isa(name: str) -> None: ...
def pack_slabs(
    rows: np.ndarray,  # const floating[:, ::1]
    out: np.ndarray,  # floating[:, :, ::1]
) -> None: ...
