"""ThreadSanitizer check of the team barrier and team-size accounting (src/fl_omp.h).

tests/c/tsan_barrier.c runs fl_omp.h's barrier, work counter and team-size policy, and
fl_interrupt.h's stop agreement, from plain pthreads, built with -fsanitize=thread: TSan reports
any memory the barrier fails to order, and the program checks every value its threads pass
through it. Plain pthreads, because Debian's libgomp is not built with TSan, which then reports
races that are not there inside every OpenMP team. Needs gcc with TSan's runtime; not the
extension.
"""
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = os.path.join(ROOT, "tests", "c", "tsan_barrier.c")
# -fopenmp: fl_omp.h has its own barrier only in OpenMP builds (the program starts no OpenMP team)
CFLAGS = ["-fsanitize=thread", "-O1", "-g", "-pthread", "-fopenmp"]
TIMEOUT_S = 120  # ~5 s on the 2-core VM: only a barrier that never opens comes near it


def clean_env():
    env = dict(os.environ)
    # The ASan stage (.ci/sanitize) preloads libasan into every process; TSan cannot share one.
    env.pop("LD_PRELOAD", None)
    env["TSAN_OPTIONS"] = "halt_on_error=1 exitcode=66"
    return env


def build(tmp_path, source, name):
    """(path of the binary, None), or (None, why not)."""
    exe = str(tmp_path / name)
    r = subprocess.run(["gcc", *CFLAGS, "-I", os.path.join(ROOT, "src"), source, "-o", exe],
                       capture_output=True, text=True, env=clean_env(), timeout=TIMEOUT_S)
    return (exe, None) if r.returncode == 0 else (None, r.stderr.strip())


@pytest.fixture(scope="module")
def tsan_launcher(tmp_path_factory):
    """The command prefix that runs a TSan program here ([] or setarch's, with address-space
    randomization off); skips unless gcc builds and runs a trivial threaded one."""
    if shutil.which("gcc") is None:
        pytest.skip("no gcc on PATH")
    tmp = tmp_path_factory.mktemp("tsan_probe")
    probe = tmp / "probe.c"
    probe.write_text("#include <pthread.h>\n#include <omp.h>\n"
                     "static void *run(void *a) { return a; }\n"
                     "int main(void) { pthread_t t; pthread_create(&t, 0, run, 0);\n"
                     "  pthread_join(t, 0); return omp_get_num_procs() > 0 ? 0 : 1; }\n")
    exe, why = build(tmp, str(probe), "probe")
    if exe is None:
        pytest.skip(f"gcc cannot build with {' '.join(CFLAGS)} (no TSan runtime or libgomp?): "
                    f"{why[-500:]}")
    # GCC 12's TSan stops with "unexpected memory mapping" under a kernel's wider mmap
    # randomization (vm.mmap_rnd_bits 32); the program itself runs the same without it.
    tries = [[], ["setarch", os.uname().machine, "-R"]] if shutil.which("setarch") else [[]]
    for prefix in tries:
        r = subprocess.run([*prefix, exe], capture_output=True, text=True, env=clean_env(),
                           timeout=60)
        if r.returncode == 0:
            return prefix
    pytest.skip(f"TSan's runtime does not run here: {r.stderr.strip()[-500:]}")


def text(output):
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def test_barrier_under_tsan(tsan_launcher, tmp_path):
    exe, why = build(tmp_path, SOURCE, "tsan_barrier")
    assert exe is not None, f"tests/c/tsan_barrier.c does not compile:\n{why}"
    try:
        r = subprocess.run([*tsan_launcher, exe], capture_output=True, text=True,
                           env=clean_env(), timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as e:  # (its output comes as bytes)
        pytest.fail(f"no exit in {TIMEOUT_S} s: a barrier that never opens (a lost wake-up?)\n"
                    f"stdout:\n{text(e.stdout)}\nstderr:\n{text(e.stderr)[-20000:]}")
    out = f"exit status {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr[-20000:]}"
    assert "WARNING: ThreadSanitizer" not in r.stderr, out
    assert r.returncode == 0, out
    assert r.stdout.rstrip().endswith("ok"), out
