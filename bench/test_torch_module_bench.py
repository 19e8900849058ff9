"""pytest-benchmark: a training step of fastlstm.torch.LSTM against torch.nn.LSTM and against
fastlstm's kernels alone, per workload (group "torch-module-{workload}"); see
bench/torch_module.py, which times the same steps interleaved and prints the ratios.

    python -m pytest bench/test_torch_module_bench.py --bench-workloads=acf
    python -m pytest bench/test_torch_module_bench.py --benchmark-disable   # each step once, checked
"""
import pytest

pytest.importorskip("torch")

import torch_module as tm  # noqa: E402  (pytest puts bench/, which has no __init__.py, on sys.path)

_steps = {}


@pytest.mark.parametrize("system", tm.SYSTEMS)
@pytest.mark.parametrize("workload", list(tm.WORKLOADS))
def test_training_step(benchmark, workload, system, request):
    if workload not in request.config.getoption("--bench-workloads"):
        pytest.skip("not in --bench-workloads")
    if workload in "de" and benchmark.disabled:
        pytest.skip("smoke run: the big workloads take minutes here; a, b, c and f check the steps")
    threads = 1
    if _steps.get("key") != (workload, threads):
        _steps.clear()
        _steps.update(key=(workload, threads), steps=tm.make_steps(workload, threads))
        tm.check(_steps["steps"])
    benchmark.group = f"torch-module-{workload}"
    benchmark.extra_info.update(system=system, workload=workload, threads=threads)
    fn = _steps["steps"][system]
    if workload in "de" and not benchmark.disabled:
        benchmark.pedantic(fn, rounds=3, iterations=1, warmup_rounds=1)
    else:
        benchmark(fn)
