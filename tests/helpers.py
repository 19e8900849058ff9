"""What several test files share (imported as `helpers`: pytest puts tests/ on sys.path)."""
import numpy as np


def scaled_err(a, ref, min_scale=0.0):
    """max|a - ref| / max(max|ref|, min_scale) in float64: the error relative to the largest
    magnitude. A NaN gives NaN, which fails every bound; with ref all zero the error is absolute;
    empty arrays agree (0)."""
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    assert a.shape == ref.shape, (a.shape, ref.shape)
    if a.size == 0:
        return 0.0
    err = np.max(np.abs(a - ref))
    scale = max(np.max(np.abs(ref)), min_scale)
    return float(err / scale) if scale > 0 else float(err)


def user_shapes(T, B, I, H, batch_first, unbatched):
    """Shapes of x, output and each state as the user passes them (PyTorch's conventions)."""
    if unbatched:
        return (T, I), (T, H), (1, H)
    if batch_first:
        return (B, T, I), (B, T, H), (1, B, H)
    return (T, B, I), (T, B, H), (1, B, H)
