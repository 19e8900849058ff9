"""The C-level API (fastlstm/_kernels.pxd) as another package uses it: a Cython module that
cimports fastlstm._kernels and calls lstm_forward without the GIL, here from inside its own OpenMP
parallel loop, one sequence per iteration.

A kernel call that one thread serves runs with no OpenMP region of its own, so inside a caller's
region it must neither split the work by the caller's thread numbers nor wait at the caller's
barriers; a call asking for more threads opens a nested region (one thread when the OpenMP
runtime does not nest). Either way every sequence must come out bitwise equal to the same model
called from Python.

The module is compiled on the fly (Cython and a GCC-style compiler with -fopenmp: fastlstm's own
Linux build requirements), once per session, in a temporary directory.
"""
import os
import shutil
import sys

import numpy as np
import pytest

import fastlstm

EMBED_PYX = r"""
# cython: language_level=3, boundscheck=False, wraparound=False
from cython.parallel cimport prange
from fastlstm._kernels cimport lstm_forward


def forward_many(float[:, :, :, ::1] x, float[::1] w_ih, float[::1] w_hh, Py_ssize_t wgroup,
                 float[::1] bias, float[:, ::1] gates, float[:, ::1] h_state,
                 float[:, ::1] c_state, float[:, :, :, ::1] y, Py_ssize_t H, int outer_threads,
                 int inner_threads, int[::1] team):
    '''x[s] (T, B, I) -> y[s] (T, B, H), sequence s in iteration s of a prange; gates, h_state
    (2 slots) and c_state (1 slot) are each sequence's own rows; team[s]: what the call returned
    (the team that ran it, 0 for a refused argument).'''
    cdef Py_ssize_t S = x.shape[0], T = x.shape[1], B = x.shape[2], I = x.shape[3], s
    for s in prange(S, nogil=True, num_threads=outer_threads, schedule='static', chunksize=1):
        team[s] = lstm_forward(T, B, I, H, &x[s, 0, 0, 0], B * I, I, &w_ih[0], &w_hh[0], wgroup,
                               &bias[0], &gates[s, 0], T, &h_state[s, 0], &c_state[s, 0], NULL,
                               &y[s, 0, 0, 0], B * H, H, 0, NULL, NULL, inner_threads)
"""


def c_compiler():
    """The C compiler build_ext would run: Python's CC (or $CC), as distutils resolves it."""
    import setuptools  # noqa: F401  (its distutils)
    from distutils.ccompiler import new_compiler
    from distutils.sysconfig import customize_compiler

    cc = new_compiler()
    customize_compiler(cc)
    return cc.compiler[0]


@pytest.fixture(scope="session")
def embed(tmp_path_factory):
    pytest.importorskip("Cython")
    from Cython.Build import cythonize
    from setuptools import Distribution, Extension

    if not fastlstm.openmp_enabled():
        pytest.skip("fastlstm was built without OpenMP: there is no parallel region to nest in")
    if not sys.platform.startswith("linux"):
        pytest.skip("the embedding module is built with GCC-style -fopenmp (Linux)")
    compiler = c_compiler()
    if shutil.which(compiler) is None:  # e.g. a wheel installed where no compiler is
        pytest.skip(f"no C compiler on PATH ({compiler!r}, Python's CC): the embedding module "
                    "cannot be built")
    build = tmp_path_factory.mktemp("embed")
    (build / "fl_embed.pyx").write_text(EMBED_PYX)
    package_root = os.path.dirname(os.path.dirname(fastlstm.__file__))  # where fastlstm/ lies
    ext = Extension("fl_embed", [str(build / "fl_embed.pyx")], extra_compile_args=["-fopenmp"],
                    extra_link_args=["-fopenmp"])
    dist = Distribution({"ext_modules": cythonize([ext], include_path=[package_root], quiet=True,
                                                  build_dir=str(build))})
    cmd = dist.get_command_obj("build_ext")
    cmd.build_lib, cmd.build_temp = str(build), str(build / "tmp")
    dist.run_command("build_ext")
    sys.path.insert(0, str(build))
    try:
        import fl_embed
    finally:
        sys.path.remove(str(build))
    return fl_embed


def _run(embed, model, x, outer_threads, inner_threads, wgroup=None):
    S, T, B, I = x.shape
    p, H, NR = model._layers[0][0].packed, model.hidden_size, 16
    Hp = -(-H // NR) * NR
    gates = np.empty((S, T * B * 4 * Hp), np.float32)
    h_state = np.zeros((S, 2 * B * Hp), np.float32)
    c_state = np.zeros((S, B * Hp), np.float32)
    y = np.full((S, T, B, H), np.nan, np.float32)
    team = np.full(S, -1, np.intc)
    embed.forward_many(x, p.w_ih.reshape(-1), p.w_hh.reshape(-1),
                       p.weight_group if wgroup is None else wgroup, p.bias, gates, h_state,
                       c_state, y, H, outer_threads, inner_threads, team)
    h_n = h_state.reshape(S, 2, B, Hp)[:, T % 2, :, :H]
    return y, h_n, c_state.reshape(S, B, Hp)[:, :, :H], team


# (B, inner num_threads): one thread's work, and a batch that asks for a nested team of 2
@pytest.mark.parametrize("B, inner", [(3, 1), (16, 2)], ids=["one_thread", "nested_team"])
@pytest.mark.parametrize("outer_threads", [1, 2, 4])
def test_lstm_forward_inside_a_callers_parallel_loop(embed, outer_threads, B, inner):
    S, T, I, H = 6, 5, 7, 20
    model = fastlstm.LSTM(I, H, seed=3)
    x = np.random.default_rng(8).standard_normal((S, T, B, I)).astype(np.float32)
    y, h_n, c_n, team = _run(embed, model, x, outer_threads, inner)
    if inner == 1:
        assert (team == 1).all(), f"teams {team}: a one-thread call ran on more threads"
    else:  # a nested team of 2, or 1 where the runtime does not nest
        assert ((team == 1) | (team == 2)).all(), f"teams {team}"
    for s in range(S):
        want, (want_h, want_c) = model(x[s], num_threads=1)
        assert np.array_equal(y[s], want), f"sequence {s} (outer_threads={outer_threads})"
        assert np.array_equal(h_n[s], want_h[0]) and np.array_equal(c_n[s], want_c[0])


@pytest.mark.parametrize("wgroup", [0, 3, 8])
def test_lstm_forward_refuses_a_slab_width_it_cannot_read(embed, wgroup):
    """A width other than 1, 2 or 4 (0 would divide by zero in the GEMM) computes nothing and
    returns 0: y keeps what it held."""
    model = fastlstm.LSTM(7, 20, seed=3)
    x = np.ones((2, 3, 1, 7), np.float32)
    y, _, _, team = _run(embed, model, x, 1, 1, wgroup=wgroup)
    assert (team == 0).all() and np.isnan(y).all()
