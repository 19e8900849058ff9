"""Shared fixtures: every kernel variant this CPU can run, and seeded random data."""
import os

import numpy as np
import pytest

import fastlstm
from fastlstm import _kernels

ISAS = fastlstm.openmp_info()["isas"]

try:  # hypothesis is in the test extra; without it only its tests are missing
    from hypothesis import HealthCheck, settings
except ImportError:  # pragma: no cover
    pass
else:
    # "ci" (the default): the same examples on every run, as many as keep tests/test_properties.py
    # near a minute on a 2-core machine. "fuzz": long runs by hand, fresh examples each time,
    #   HYPOTHESIS_PROFILE=fuzz python -m pytest tests/test_properties.py -k fuzz
    # (or --hypothesis-profile=fuzz). Tests that set max_examples themselves keep their number.
    _SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large]
    settings.register_profile("ci", derandomize=True, max_examples=600, deadline=None,
                              print_blob=True, suppress_health_check=_SLOW)
    settings.register_profile("fuzz", derandomize=False, max_examples=5000, deadline=None,
                              print_blob=True, suppress_health_check=_SLOW)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


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


@pytest.fixture(autouse=True)
def teams_as_asked():
    """Every test gets the teams it asks for, on any machine: a call after an idle moment would
    otherwise run on one thread when this machine's measured wake-up of a sleeping team costs
    more than the tiny work, no team would be larger than this machine's CPUs, and a moment of
    crowded CPUs would shrink teams (tests/test_threads.py tests each policy itself)."""
    saved, cap, crowded = _kernels.cold_teams()[0], _kernels.cpu_limit(), _kernels.crowded()[0]
    _kernels.cold_teams(False)
    _kernels.cpu_limit(0)
    _kernels.crowded(0, enabled=False)
    yield
    _kernels.cold_teams(saved)
    _kernels.cpu_limit(cap)
    _kernels.crowded(0, enabled=crowded)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
