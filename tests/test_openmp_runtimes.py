"""fastlstm beside PyTorch in one process: two OpenMP runtimes.

A manylinux wheel bundles its own libgomp under a hashed name (fastlstm.libs/libgomp-*.so), and
PyTorch's wheel bundles another, so a process that imports both maps two copies of GNU OpenMP,
each with its own thread pool, its own per-thread settings and its own fork handlers. (An in-place
build links the system's libgomp.so.1, which the loader may share with PyTorch's copy of the same
soname: one runtime.) These tests run fastlstm's threaded calls, concurrent Python threads and a
forked child in a process where PyTorch has imported its runtime and run a team first; results
must be bitwise those of one thread, whichever runtime layout the build has.
"""
import glob
import json
import os
import subprocess
import sys

import pytest

import fastlstm

pytest.importorskip("torch")
pytestmark = [
    pytest.mark.skipif(not fastlstm.openmp_enabled(), reason="fastlstm built without OpenMP"),
    pytest.mark.skipif(not hasattr(os, "fork") or not os.path.exists("/proc/self/maps"),
                       reason="fork() and /proc/self/maps: Linux"),
]

CHILD = r"""
import json, os, signal, sys, threading
import torch  # first, as an application that already uses PyTorch would
a = torch.randn(512, 512)
torch.set_num_threads(2)
(a @ a).sum().item()  # PyTorch's runtime has started its team
import numpy as np, fastlstm
from fastlstm import _kernels as k
k.cpu_limit(0); k.cold_teams(False); k.crowded(0, enabled=False)  # the teams asked for


def runtimes():
    maps = {line.split()[-1] for line in open("/proc/self/maps") if "/" in line}
    return sorted(p for p in maps if os.path.basename(p).startswith("libgomp"))


m = fastlstm.LSTM(256, 512, num_layers=2, seed=0)  # batch 1: a unit split, 2 threads
x = np.random.default_rng(0).standard_normal((20, 1, 256)).astype(np.float32)
ref = m(x, num_threads=1)[0]
y = m(x, num_threads=2)[0]
result = {"runtimes": runtimes(), "team": fastlstm.openmp_info()["last_num_threads"],
          "two_threads_equal": bool(np.array_equal(y, ref))}

# Python threads: fastlstm calls on 2 threads each, while PyTorch runs its own team alongside.
out, errors = [], []


def call():
    try:
        for _ in range(5):
            out.append(np.array_equal(m(x, num_threads=2)[0], ref))
    except Exception as exc:  # reported, not lost in the thread
        errors.append(repr(exc))


def torch_work():
    for _ in range(5):
        (a @ a).sum().item()


threads = [threading.Thread(target=call) for _ in range(2)] + [threading.Thread(target=torch_work)]
for t in threads:
    t.start()
for t in threads:
    t.join(120)
result["threads_equal"] = len(out) == 10 and all(out) and not errors
result["thread_errors"] = errors

# fork after both runtimes ran teams: the child's calls must finish with the same bits.
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    signal.alarm(60)  # a hang ends the child, and the parent sees a signal status
    ok = all(np.array_equal(m(x, num_threads=2)[0], ref) for _ in range(10))
    os.write(w, b"1" if ok else b"0")
    os._exit(0)
_, status = os.waitpid(pid, 0)
os.close(w)
result["fork_status"] = status
result["fork_equal"] = os.read(r, 1) == b"1"
print(json.dumps(result))
"""


def bundled_runtime():
    """The libgomp a repaired wheel ships beside the package (auditwheel's fastlstm.libs/)."""
    libs = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(fastlstm.__file__))),
                        "fastlstm.libs")
    return glob.glob(os.path.join(libs, "libgomp*"))


def test_threads_and_fork_beside_pytorchs_openmp_runtime():
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(fastlstm.__file__)))
    # this fastlstm, from any cwd
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([package_parent,
                                                    os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["team"] == 2, result
    assert result["two_threads_equal"], result
    assert result["threads_equal"], result
    assert result["fork_status"] == 0 and result["fork_equal"], result
    bundled = bundled_runtime()
    if bundled:  # a repaired wheel: its copy and PyTorch's are both mapped
        assert len(result["runtimes"]) == 2, result["runtimes"]
        assert any(os.path.samefile(p, bundled[0]) for p in result["runtimes"]), result
