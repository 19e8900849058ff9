"""What the benchmark runs: the workloads, modes and systems, the checks' tolerances, the
run's sizes and timing constants, and the FLOPs each cell is credited with."""

WORKLOADS = {
    "a": dict(B=1, T=100, I=128, H=128, desc="streaming / latency"),
    "b": dict(B=1, T=100, I=512, H=512, desc="latency, larger H"),
    "c": dict(B=16, T=100, I=256, H=256, desc="small batch"),
    "d": dict(B=64, T=50, I=512, H=512, desc="medium batch"),
    "e": dict(B=256, T=25, I=1024, H=1024, desc="throughput, GEMM-bound"),
    "f": dict(B=1, T=1, I=256, H=256, desc="one step, state in and out", state=True),
}
MODES = ("fwd", "fwd+bwd")
SYSTEMS = ("fastlstm", "numpy", "torch", "torch-native", "onnxruntime")
FWD_ONLY = frozenset({"onnxruntime"})
LABELS = {"fastlstm": "fastlstm", "numpy": "NumPy ref", "torch": "torch (oneDNN)",
          "torch-native": "torch native", "onnxruntime": "ONNX Runtime"}
SHORT = {"numpy": "numpy", "torch": "torch", "torch-native": "native", "onnxruntime": "ort"}

TOL = 1e-4  # float32
TOLS = {"float32": TOL, "float64": 1e-9}
DTYPES = tuple(TOLS)
PRECISIONS = ("float32", "int8")  # int8: fastlstm's quantized model against low-precision peers
SEED = 1234
PEAK_GFLOPS_REFERENCE = 225.0  # one core's float32 FMA peak where peers/RESULTS.md was measured

# The scaling plot: fwd, 1 thread, time per step against the batch and against the hidden size.
SCALING_T = 20
SCALING_B = (1, 4, 16, 64)  # I = H = 256
SCALING_H = (64, 128, 256, 512, 1024)  # I = H, B = 16

DEFAULTS = dict(workloads="abcdef", threads="1,2", budget=3.0, min_rounds=5, max_rounds=25,
                scaling_budget=0.6)
QUICK = dict(workloads="acf", threads="1,2", budget=1.0, min_rounds=3, max_rounds=7,
             scaling_budget=0.25)
TARGET_ROUND = 0.04  # seconds: cheap calls repeat `inner` times per round to last this long
GAP = 0.15  # idle seconds before each system's round when threads > 1


def fwd_flops(B, T, I, H):
    """Forward FLOPs of the two matrix products; fwd+bwd counts 3x."""
    return 2 * 4 * H * (I + H) * B * T


def mode_flops(sizes, mode):
    return fwd_flops(sizes["B"], sizes["T"], sizes["I"], sizes["H"]) * (
        3 if mode == "fwd+bwd" else 1)
