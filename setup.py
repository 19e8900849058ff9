"""Builds the compiled part of fastlstm (metadata lives in pyproject.toml).

One extension, fastlstm._kernels: the Cython sequence kernels (src/_kernels.pyx) linked with the C
kernels, each C unit instantiating them for one instruction set and dtype. OpenMP is probed by
compiling and running a tiny program with the extension's own flags; without it the build goes on
serially, with a warning, and fastlstm.openmp_enabled() reports False.

FASTLSTM_SANITIZE=1 builds with AddressSanitizer and UndefinedBehaviorSanitizer (docs/sanitizers.md);
then a missing OpenMP is an error, since a serial build would hide the threads from the sanitizers.
The user's CFLAGS and LDFLAGS come last, so a requested -O0 or -g wins over ours. The C units
compile in parallel, one per CPU this process may use (FASTLSTM_BUILD_JOBS=N to choose).
"""
# Flags: -O3; -ffp-contract=off so the only fused multiply-adds are the ones the kernels ask for.
# Never the fast-math family (it switches flush-to-zero on for the whole process) nor a native
# -march (the wheel must run on any x86-64: AVX2/AVX-512 come from per-unit target pragmas and
# runtime dispatch in src/fl_dispatch.c).
import concurrent.futures
import glob
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
import warnings

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

OPENMP_PROBE = textwrap.dedent(
    """
    #include <omp.h>
    #include <stdio.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel num_threads(2) reduction(+:n)
        n += 1;
        printf("%d\\n", n);
        return n == 2 ? 0 : 1;
    }
    """
)


SANITIZE_FLAGS = [
    "-fsanitize=address,undefined",
    "-fno-sanitize-recover=all",  # a report ends the process, so no test can pass over one
    "-fno-omit-frame-pointer",
    "-fno-wrapv",  # Python's own CFLAGS define signed overflow; UBSan should see it as the bug it is
    "-g",
    "-O1",
]


def sanitizing(env=os.environ):
    return env.get("FASTLSTM_SANITIZE", "") not in ("", "0")


def build_flags(compiler_type, env=os.environ):
    """(compile, link) flags: ours, then the sanitizers', then the user's CFLAGS/LDFLAGS."""
    if compiler_type == "msvc":
        return ["/O2", "/fp:precise"], []
    compile_flags = ["-O3", "-g0", "-ffp-contract=off", "-fno-strict-aliasing"]
    link_flags = []
    if sanitizing(env):
        compile_flags += SANITIZE_FLAGS
        link_flags += SANITIZE_FLAGS[:1]
    compile_flags += shlex.split(env.get("CFLAGS", ""))
    link_flags += shlex.split(env.get("LDFLAGS", ""))
    return compile_flags, link_flags


def openmp_flags(compiler_type):
    if compiler_type == "msvc":
        return ["/openmp"], []
    if sys.platform == "darwin":  # Apple clang with Homebrew's libomp
        return ["-Xpreprocessor", "-fopenmp"], ["-lomp"]
    return ["-fopenmp"], ["-fopenmp"]


def probe_openmp(compiler, compile_flags, link_flags):
    """OpenMP's (compile, link) flags if a program built with the extension's flags runs a team.

    The probe links as an executable, which distutils does without the user's LDFLAGS: they are
    passed here, or a CFLAGS=-fsanitize=... build fails the probe and silently loses its threads.
    """
    omp_compile, omp_link = openmp_flags(compiler.compiler_type)
    tmp = tempfile.mkdtemp()
    try:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as fh:
            fh.write(OPENMP_PROBE)
        objs = compiler.compile([src], output_dir=tmp, extra_postargs=compile_flags + omp_compile)
        exe = os.path.join(tmp, "probe")
        compiler.link_executable(objs, exe, extra_postargs=omp_link + link_flags)
        env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0")  # libgomp's threads outlive main()
        subprocess.run([exe], check=True, capture_output=True, timeout=60, env=env)
        return omp_compile, omp_link
    except Exception as exc:  # any failure: build serially, loudly
        if sanitizing():
            raise RuntimeError(f"FASTLSTM_SANITIZE=1 needs OpenMP, and the probe failed: {exc!r}")
        warnings.warn(f"OpenMP is not available ({exc!r}); fastlstm is built single-threaded.")
        return [], []
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_jobs(env=os.environ):
    """How many C units to compile at once: FASTLSTM_BUILD_JOBS, else the CPUs this process may
    use. distutils compiles an extension's units one by one, and ours are eleven, some of them
    minutes long (the generic kernels), so a serial build leaves cores idle."""
    text = env.get("FASTLSTM_BUILD_JOBS", "").strip()
    if text:
        return max(1, int(text))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def compile_in_parallel(compiler, jobs):
    """Make `compiler.compile` compile its sources `jobs` at a time, each with the same
    arguments; the objects come back in the sources' order."""
    if jobs < 2:
        return
    serial = compiler.compile

    def compile(sources, *args, **kwargs):
        if len(sources) < 2:
            return serial(sources, *args, **kwargs)
        with concurrent.futures.ThreadPoolExecutor(jobs) as pool:  # each unit is a gcc process
            parts = list(pool.map(lambda source: serial([source], *args, **kwargs), sources))
        return [obj for objects in parts for obj in objects]

    compiler.compile = compile


class BuildExt(build_ext):
    def build_extensions(self):
        compile_flags, link_flags = build_flags(self.compiler.compiler_type)
        omp_compile, omp_link = probe_openmp(self.compiler, compile_flags, link_flags)
        compile_in_parallel(self.compiler, build_jobs())
        for ext in self.extensions:
            ext.extra_compile_args = omp_compile + ext.extra_compile_args + compile_flags
            ext.extra_link_args = omp_link + ext.extra_link_args + link_flags
        super().build_extensions()


c_sources = sorted(glob.glob("src/fl_*.c"))
extensions = [
    Extension(
        "fastlstm._kernels",
        ["src/_kernels.pyx"] + c_sources,
        include_dirs=["src"],
        depends=glob.glob("src/*.h") + glob.glob("src/*.pxi"),
    )
]

if __name__ == "__main__":  # (tests/test_build.py imports the helpers above without building)
    setup(
        ext_modules=cythonize(
            extensions,
            include_path=["."],
            compiler_directives={"language_level": 3},
        ),
        cmdclass={"build_ext": BuildExt},
    )
