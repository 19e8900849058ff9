"""The avx512vnni int8 kernels' logic on any CPU (tests/c/i8_vnni_emulated.c).

That program compiles fl_i8_impl.h's VNNI section against plain-C versions of the AVX-512
intrinsics it uses and checks its GEMM, quantize_row and dequant_add against exact sums and the
generic variant (which tests/test_int8_kernels.py checks against NumPy), under AddressSanitizer
and UBSan where gcc has them. CPUs with AVX-512 VNNI also run the real variant in
tests/test_int8_kernels.py; this one covers the machines without it (the 2-core dev VM and CI).
Needs gcc; not the extension.
"""
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = [os.path.join(ROOT, "tests", "c", "i8_vnni_emulated.c"),
           os.path.join(ROOT, "src", "fl_kern_generic_i8.c")]
# -O0: the unrolled tiles over emulated registers take ~30 s to optimize, the checks ~8 s to run
BASE = ["-O0", "-g", "-ffp-contract=off", "-I", os.path.join(ROOT, "src")]
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"]


def test_vnni_kernels_emulated(tmp_path):
    if shutil.which("gcc") is None:
        pytest.skip("no gcc on PATH")
    exe = str(tmp_path / "i8_vnni_emulated")
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0:halt_on_error=1")
    built = None
    for flags in (SANITIZE, []):  # without the sanitizers where gcc lacks their runtimes
        r = subprocess.run(["gcc", *BASE, *flags, *SOURCES, "-o", exe, "-lm"],
                           capture_output=True, text=True, env=env, timeout=300)
        if r.returncode == 0:
            built = flags
            break
    assert built is not None, f"tests/c/i8_vnni_emulated.c does not compile:\n{r.stderr[-3000:]}"
    r = subprocess.run([exe], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0 and "all checks passed" in r.stdout, (
        f"exit {r.returncode} (sanitizers: {bool(built)}):\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
