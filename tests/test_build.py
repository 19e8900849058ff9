"""The build's flags: the user's come last, the sanitizer switch, and an OpenMP probe that links
with the same flags as the extension (a CFLAGS/LDFLAGS sanitizer build once lost OpenMP silently)."""
import importlib.util
import os
import shutil
import subprocess
import time
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def build():
    pytest.importorskip("Cython")
    spec = importlib.util.spec_from_file_location("fastlstm_setup", ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines the helpers; setup() runs only as __main__
    return module


@pytest.fixture(scope="module")
def compiler():
    import setuptools  # noqa: F401  (its distutils)
    from distutils.ccompiler import new_compiler
    from distutils.sysconfig import customize_compiler

    cc = new_compiler()
    customize_compiler(cc)
    if cc.compiler_type != "unix" or shutil.which(cc.compiler[0]) is None:
        pytest.skip("needs a Unix C compiler")
    return cc


def asan_links(tmp_path):
    src = tmp_path / "asan.c"
    src.write_text("int main(void) { return 0; }\n")
    exe = tmp_path / "asan"
    run = subprocess.run(["cc", "-fsanitize=address", str(src), "-o", str(exe)], capture_output=True)
    return run.returncode == 0


def test_the_users_flags_come_last(build):
    env = {"CFLAGS": "-O0 -g", "LDFLAGS": "-L/opt/x -Wl,--as-needed"}
    compile_flags, link_flags = build.build_flags("unix", env)
    assert compile_flags[-2:] == ["-O0", "-g"]
    assert compile_flags.index("-O3") < compile_flags.index("-O0")
    assert compile_flags.index("-g0") < compile_flags.index("-g")
    assert link_flags[-2:] == ["-L/opt/x", "-Wl,--as-needed"]


def test_never_fast_math_nor_native(build):
    for env in ({}, {"FASTLSTM_SANITIZE": "1"}):
        flags = " ".join(build.build_flags("unix", env)[0])
        assert "fast-math" not in flags and "-Ofast" not in flags and "native" not in flags
        assert "-ffp-contract=off" in flags


@pytest.mark.parametrize("value, on", [("1", True), ("yes", True), ("0", False), ("", False)])
def test_the_sanitize_switch(build, value, on):
    compile_flags, link_flags = build.build_flags("unix", {"FASTLSTM_SANITIZE": value})
    assert ("-fsanitize=address,undefined" in compile_flags) is on
    assert ("-fsanitize=address,undefined" in link_flags) is on
    assert ("-fno-sanitize-recover=all" in compile_flags) is on


def test_the_openmp_probe_links_with_ldflags(build, compiler, tmp_path, monkeypatch):
    if not asan_links(tmp_path):
        pytest.skip("the compiler cannot link an AddressSanitizer program here")
    monkeypatch.delenv("FASTLSTM_SANITIZE", raising=False)
    monkeypatch.setenv("CFLAGS", "-fsanitize=address")
    monkeypatch.setenv("LDFLAGS", "-fsanitize=address")
    compile_flags, link_flags = build.build_flags(compiler.compiler_type)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fallback's "built single-threaded" warning
        omp = build.probe_openmp(compiler, compile_flags, link_flags)
    assert omp == build.openmp_flags(compiler.compiler_type), "OpenMP lost under CFLAGS/LDFLAGS"


def test_a_sanitized_build_without_openmp_fails_loudly(build, compiler, monkeypatch):
    monkeypatch.setenv("FASTLSTM_SANITIZE", "1")
    monkeypatch.setattr(build, "OPENMP_PROBE", "#error no OpenMP here\n")
    with pytest.raises(RuntimeError, match="FASTLSTM_SANITIZE=1 needs OpenMP"):
        build.probe_openmp(compiler, [], [])


def test_an_ordinary_build_without_openmp_warns_and_goes_on(build, compiler, monkeypatch):
    monkeypatch.delenv("FASTLSTM_SANITIZE", raising=False)
    monkeypatch.setattr(build, "OPENMP_PROBE", "#error no OpenMP here\n")
    with pytest.warns(UserWarning, match="built single-threaded"):
        assert build.probe_openmp(compiler, [], []) == ([], [])


@pytest.mark.parametrize("value, jobs", [("3", 3), ("1", 1), ("0", 1)])
def test_build_jobs_from_the_environment(build, value, jobs):
    assert build.build_jobs({"FASTLSTM_BUILD_JOBS": value}) == jobs


def test_build_jobs_default_to_the_usable_cpus(build):
    assert build.build_jobs({}) == len(os.sched_getaffinity(0))


def test_parallel_compile_keeps_the_order_and_the_arguments(build):
    class Compiler:
        def __init__(self):
            self.calls = []

        def compile(self, sources, output_dir=None, extra_postargs=None):
            time.sleep(0.05 if sources[0] == "a.c" else 0)  # finishes last
            self.calls.append((list(sources), output_dir, extra_postargs))
            return [s[:-2] + ".o" for s in sources]

    cc = Compiler()
    build.compile_in_parallel(cc, 2)
    objects = cc.compile(["a.c", "b.c", "c.c"], output_dir="out", extra_postargs=["-O3"])
    assert objects == ["a.o", "b.o", "c.o"]
    assert sorted(cc.calls) == [([s], "out", ["-O3"]) for s in ("a.c", "b.c", "c.c")]
    assert cc.calls[-1][0] == ["a.c"]  # a.c really ran beside the others
