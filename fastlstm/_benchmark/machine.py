"""What the results record about the machine and the run: CPU, platform, fastlstm's build,
package versions, load average and time."""
import datetime
import importlib.metadata
import os
import platform

import fastlstm


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _loadavg():
    try:
        return list(os.getloadavg())
    except (OSError, AttributeError):
        return None


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions():
    out = {"python": platform.python_version(), "fastlstm": fastlstm.__version__}
    for pkg in ("numpy", "threadpoolctl", "torch", "onnx", "onnxruntime", "matplotlib"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def machine_info(peers):
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info = fastlstm.openmp_info()
    return dict(cpu=_cpu_model(), cpus=os.cpu_count(), usable_cpus=usable,
                platform=platform.platform(), fastlstm_isa=info["isa"],
                fastlstm_isa_int8=info.get("isa_int8"),
                fastlstm_isas=info["isas"], fastlstm_openmp=info["enabled"],
                env={k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                "MKL_NUM_THREADS", "FASTLSTM_ISA",
                                                "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
                     if k in os.environ})


def _jsonable(opts):
    return dict(opts)
