"""docs/scale-out.md: its dask recipe, run as written, and its note on threadpool_limits.

The recipe's code block is read from the document and executed, so the documented code is the
tested code. It runs on a dask.distributed LocalCluster of two worker processes (one thread
each): the outputs must be bitwise those of one call in this process, and each worker's call
must have run one OpenMP thread.
"""
import os
import re
import threading
from pathlib import Path

import numpy as np
import pytest

import fastlstm
from fastlstm import _kernels

DOC = Path(__file__).resolve().parent.parent / "docs" / "scale-out.md"
requires_openmp = pytest.mark.skipif(not fastlstm.openmp_enabled(),
                                     reason="fastlstm built without OpenMP: every call is 1 thread")


def recipe():
    """The names the document's one Python block defines (its __main__ part not run)."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) == 1, f"{DOC.name} should hold exactly one python block"
    namespace = {"__name__": "scale_out_recipe"}  # not importable: cloudpickle sends it by value
    exec(compile(blocks[0], str(DOC), "exec"), namespace)
    return namespace


@pytest.fixture(scope="module")
def client():
    pytest.importorskip("dask.array", reason="the dask extra is not installed (.ci/scale_out "
                                             "installs it: pip install fastlstm[dask])")
    distributed = pytest.importorskip("distributed", reason="the dask extra is not installed")
    import dask

    # The document says distributed starts its workers with OMP_NUM_THREADS=1; these workers
    # start without it, so that their default team is all their CPUs and the one thread checked
    # below is the recipe's own num_threads=1.
    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ"))
    assert environ.get("OMP_NUM_THREADS") in (1, "1"), environ
    environ.pop("OMP_NUM_THREADS")
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           dashboard_address=None)
    with cluster, distributed.Client(cluster) as client:
        yield client


@pytest.mark.parametrize("config", [
    dict(input_size=8, hidden_size=16, num_layers=2, seed=0),
    dict(input_size=8, hidden_size=16, num_layers=2, bidirectional=True, proj_size=5, seed=1,
         dtype=np.float64),
], ids=["float32", "float64-bidirectional-proj"])
def test_recipe_is_bitwise_one_process(client, config):
    import dask.array as da

    ns = recipe()
    model = fastlstm.LSTM(batch_first=True, **config)
    rng = np.random.default_rng(7)
    sequences = rng.standard_normal((64, 12, 8)).astype(model.dtype)
    x = da.from_array(sequences, chunks=(8, 6, 8))  # split over time too: the recipe rechunks
    y = ns["score_array"](x, model)
    assert y.chunks[0] == (8,) * 8
    got = y.compute()
    want = model(sequences)[0]  # one call, this process, its default team
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.array_equal(got, want)


@requires_openmp
def test_recipe_runs_one_openmp_thread_per_worker_thread(client):
    ns = recipe()

    def worker_teams(block, model, score, num_threads=None):  # a local function: sent by value
        """In a worker: the team of one call (the recipe's score, or a plain call asking for
        num_threads), with the teams it asks for whatever the worker's CPUs look like."""
        _kernels.cpu_limit(0)
        _kernels.cold_teams(False)
        _kernels.crowded(0, enabled=False)
        if num_threads is None:
            score(block, model)
        else:  # 0: the call's default, num_threads=None
            model(block, num_threads=num_threads or None)
        return fastlstm.openmp_info()["last_num_threads"], os.getpid()

    model = fastlstm.LSTM(256, 512, batch_first=True, seed=0)  # batch 1: a unit split, 2 threads
    block = np.random.default_rng(0).standard_normal((1, 20, 256)).astype(np.float32)
    recipe_teams = client.gather(
        [client.submit(worker_teams, block, model, ns["score"], pure=False) for _ in range(4)])
    assert {team for team, _ in recipe_teams} == {1}, recipe_teams
    assert os.getpid() not in {pid for _, pid in recipe_teams}  # worker processes, not this one
    # Control: a plain call in the same workers runs their default team of all (2) CPUs, so the
    # 1 above is the recipe's num_threads=1.
    defaults = client.gather([client.submit(worker_teams, block, model, ns["score"],
                                            num_threads=0, pure=False) for _ in range(4)])
    assert {team for team, _ in defaults} == {min(os.cpu_count(), 2)}, defaults


@requires_openmp
def test_threadpool_limits_governs_only_the_calling_thread():
    """As docs/scale-out.md says: omp_set_num_threads (what threadpool_limits calls) is a
    per-thread setting, so another Python thread's calls keep their default team."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if fastlstm.openmp_info()["max_threads"] < 2:
        pytest.skip("one CPU: the default team is 1 thread anyway")
    model = fastlstm.LSTM(256, 512, seed=0)  # batch 1: a unit split, 2 threads
    x = np.random.default_rng(0).standard_normal((20, 1, 256)).astype(np.float32)
    other = []

    def call():
        model(x)
        other.append(fastlstm.openmp_info()["last_num_threads"])

    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        model(x)
        here = fastlstm.openmp_info()["last_num_threads"]
        thread = threading.Thread(target=call)
        thread.start()
        thread.join()
    model(x)
    after = fastlstm.openmp_info()["last_num_threads"]
    assert here == 1  # the limit holds in the thread that set it ...
    assert other == [2]  # ... and not in another thread
    assert after == 2  # and ends with the block


def test_recipe_runs_as_a_script(client, tmp_path):
    """The block as a user copies it: a script whose __main__ part starts its own cluster."""
    import subprocess
    import sys

    script = tmp_path / "scale_out.py"
    script.write_text(re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)[0])
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(fastlstm.__file__)))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                              [package_parent, os.environ.get("PYTHONPATH", "")])))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "(4096, 50, 128)"
