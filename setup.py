"""Builds the compiled part of fastlstm (metadata lives in pyproject.toml).

One extension, fastlstm._kernels: the Cython sequence kernels (src/_kernels.pyx) linked with the C
kernels, each C unit instantiating them for one instruction set and dtype. OpenMP is probed by
compiling and running a tiny program; without it the build goes on serially, with a warning, and
fastlstm.openmp_enabled() reports False.
"""
# Flags: -O3; -ffp-contract=off so the only fused multiply-adds are the ones the kernels ask for.
# Never the fast-math family (it switches flush-to-zero on for the whole process) nor a native
# -march (the wheel must run on any x86-64: AVX2/AVX-512 come from per-unit target pragmas and
# runtime dispatch in src/fl_dispatch.c).
import glob
import os
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


def openmp_flags(compiler_type):
    if compiler_type == "msvc":
        return ["/openmp"], []
    if sys.platform == "darwin":  # Apple clang with Homebrew's libomp
        return ["-Xpreprocessor", "-fopenmp"], ["-lomp"]
    return ["-fopenmp"], ["-fopenmp"]


class BuildExt(build_ext):
    def probe_openmp(self):
        compile_flags, link_flags = openmp_flags(self.compiler.compiler_type)
        tmp = tempfile.mkdtemp()
        try:
            src = os.path.join(tmp, "probe.c")
            with open(src, "w") as fh:
                fh.write(OPENMP_PROBE)
            objs = self.compiler.compile([src], output_dir=tmp, extra_postargs=compile_flags)
            exe = os.path.join(tmp, "probe")
            self.compiler.link_executable(objs, exe, extra_postargs=link_flags)
            subprocess.run([exe], check=True, capture_output=True, timeout=60)
            return compile_flags, link_flags
        except Exception as exc:  # any failure: build serially, loudly
            warnings.warn(f"OpenMP is not available ({exc!r}); fastlstm is built single-threaded.")
            return [], []
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def build_extensions(self):
        omp_compile, omp_link = self.probe_openmp()
        if self.compiler.compiler_type == "msvc":
            base = ["/O2", "/fp:precise"]
        else:
            base = ["-O3", "-g0", "-ffp-contract=off", "-fno-strict-aliasing"]
        for ext in self.extensions:
            ext.extra_compile_args = base + omp_compile + ext.extra_compile_args
            ext.extra_link_args = omp_link + ext.extra_link_args
        super().build_extensions()


c_sources = sorted(glob.glob("src/fl_*.c"))
extensions = [
    Extension(
        "fastlstm._kernels",
        ["src/_kernels.pyx"] + c_sources,
        include_dirs=["src"],
        depends=glob.glob("src/*.h"),
    )
]

setup(
    ext_modules=cythonize(
        extensions,
        include_path=["."],
        compiler_directives={"language_level": 3},
    ),
    cmdclass={"build_ext": BuildExt},
)
