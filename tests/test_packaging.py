"""What a user of an installed fastlstm sees of its packaging: the version on the command line and
in the metadata, and the licence the metadata declares."""
import importlib.metadata
import os
import subprocess
import sys

import pytest

import fastlstm
from fastlstm.__main__ import main

PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(fastlstm.__file__)))


def run_module(*args, cwd):
    # From another directory, with the imported fastlstm's parent first on the path: the child
    # imports this same fastlstm (an installed one or the checkout's), not whatever cwd holds.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([PACKAGE_PARENT,
                                                    os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "fastlstm", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=120)


def test_version_option(tmp_path):
    done = run_module("--version", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"fastlstm {fastlstm.__version__}\n"


def test_version_option_in_process(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"fastlstm {fastlstm.__version__}"


def installed_distribution():
    """fastlstm's metadata as a wheel installed it, when that is the fastlstm imported here;
    else None (an in-place or editable build has no installed files of its own to check)."""
    try:
        dist = importlib.metadata.distribution("fastlstm")
    except importlib.metadata.PackageNotFoundError:
        return None
    if dist.read_text("WHEEL") is None:  # e.g. a build's fastlstm.egg-info in a checkout
        return None
    init = dist.locate_file("fastlstm/__init__.py")
    if os.path.exists(init) and os.path.samefile(init, fastlstm.__file__):
        return dist
    return None


def test_metadata_version_license_and_urls():
    dist = installed_distribution()
    if dist is None:
        pytest.skip("this fastlstm is an in-place or editable build, not an installed "
                    "distribution (.ci/package checks the installed wheel)")
    meta = dist.metadata
    assert meta["Version"] == fastlstm.__version__
    assert meta["License-Expression"] == "BSD-3-Clause"
    assert "fastlstm developers" in (meta["Author"] or "") + (meta["Author-email"] or "")
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert urls["Source"] == "https://github.com/fastlstm/fastlstm"
    licence = [f for f in dist.files if f.name == "LICENSE"]
    assert licence, "the LICENSE file is not in the installed distribution"
    assert "BSD 3-Clause License" in dist.locate_file(licence[0]).read_text()
