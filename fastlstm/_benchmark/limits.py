"""This machine's limits the report measures fastlstm against: one core's multiply-add peak and
its read bandwidth over the weights a batch-1 forward streams."""
import numpy as np

from fastlstm import _kernels

from .workloads import WORKLOADS


def peak_for(peak_gflops, dtype):
    """One core's peak in `dtype` from the float32 one: float64 vectors hold half the lanes."""
    return peak_gflops / 2 if np.dtype(dtype) == np.float64 else peak_gflops


def streamed_bytes(sizes, threads, itemsize):
    """Batch-1 forward: each thread's share of W_hh (read every step) and of W_ih (read once)."""
    H, I = sizes["H"], sizes["I"]
    return 4 * H * H * itemsize // threads, 4 * H * I * itemsize // threads


def measure_limits(dtype, workloads, threads, peak_gflops=None):
    """This machine's limits for the report: one core's multiply-add rate in `dtype` (or the
    float32 `peak_gflops` given, halved for float64) and its read bandwidth over the weight
    shares the batch-1 workloads stream (fastlstm's own probes, its active instruction set)."""
    itemsize = np.dtype(dtype).itemsize
    peak = (peak_for(peak_gflops, dtype) if peak_gflops else
            _kernels.probe_fma_gflops(dtype))
    sizes = sorted({n for wl in workloads if WORKLOADS[wl]["B"] == 1 for nt in threads
                    for n in streamed_bytes(WORKLOADS[wl], nt, itemsize)})
    return dict(fma_gflops_per_core=peak, peak_given=bool(peak_gflops),
                read_gbs={str(n): _kernels.probe_read_gbs(n, dtype) for n in sizes})


def limit_fraction(cell, limits):
    """(fraction of this machine's limit fastlstm reached, which limit) for a cell, or None."""
    res = cell["systems"].get("fastlstm")
    if not res or res["status"] != "ok" or not limits:
        return None
    seconds = res["median_ms"] * 1e-3
    peak = limits["fma_gflops_per_core"] * 1e9 * cell["threads"]
    read = limits.get("read_gbs", {})
    itemsize = np.dtype(cell.get("dtype", "float32")).itemsize
    hh, ih = streamed_bytes(cell, cell["threads"], itemsize)
    if cell["mode"] == "fwd" and cell["B"] == 1 and str(hh) in read and str(ih) in read:
        input_flops = 2 * 4 * cell["H"] * cell["I"] * cell["T"]
        floor = (cell["T"] * hh / (read[str(hh)] * 1e9)
                 + max(input_flops / peak, ih / (read[str(ih)] * 1e9)))
        return floor / seconds, "read"
    return cell["flops"] / seconds / peak, "FMA"
