"""Shared fixtures: every kernel variant this CPU can run, and seeded random data."""
import os

import numpy as np
import pytest

import fastlstm
from fastlstm import _kernels

ISAS = fastlstm.openmp_info()["isas"]


def pytest_report_header(config):
    info = fastlstm.openmp_info()
    return (f"fastlstm: isa={info['isa']} (supported {info['isas']}), openmp={info['enabled']}, "
            f"max_threads={info['max_threads']}, FASTLSTM_ISA={os.environ.get('FASTLSTM_ISA')!r}")


@pytest.fixture(params=ISAS)
def isa(request):
    """Run the test once per kernel variant the CPU supports (CI has AVX-512, so the AVX2 and
    portable variants would otherwise never run), restoring the default afterwards."""
    before = _kernels.isa()
    _kernels.select_isa(request.param)
    yield request.param
    _kernels.select_isa(before)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
