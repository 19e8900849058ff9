"""The public API's annotations are precise enough to catch the usual mistakes (issue 21).

mypy checks a user's snippet against the installed or checked-out fastlstm: the good calls must
pass with --strict (and their results must not be Any), the bad ones must be flagged where they
are. Skipped only where mypy is not installed (`pip install -e ".[types]"`).
"""
import os
import re
import textwrap
from pathlib import Path

import pytest

import fastlstm

mypy_api = pytest.importorskip("mypy.api")

# Each line ending in "# E: <code>" must get exactly that error; no other line may get one.
SNIPPET = textwrap.dedent('''
    import numpy as np
    import fastlstm
    from fastlstm import reference

    x = np.zeros((7, 2, 3), np.float32)
    lstm = fastlstm.LSTM(3, 5, num_layers=2, seed=0, dtype=np.float64)
    output, (h_n, c_n) = lstm(x, num_threads=2)
    out_t, state = lstm.step(x[0], (h_n, c_n), num_threads=None)
    output, states, backprop = lstm.forward_train(x, lengths=[7, 3], seed=1)
    grads = backprop(grad_output=np.ones_like(output))
    w: np.ndarray = grads["weight_ih_l0"]
    lstm.set_parameters(weight_hh_l0=lstm.parameters()["weight_hh_l0"] * 0.5)
    q = lstm.quantize("int8")
    y_q, (h_q, c_q) = q(x, lengths=np.array([7, 3]))
    cell = fastlstm.LSTMCell(3, 5, bias=False)
    (h, c), cell_backprop = cell.forward_train(x[0])
    cell_grads = cell_backprop(grad_h=np.ones_like(h))
    qcell = fastlstm.QuantizedLSTMCell(cell)
    h, c = qcell(x[0], (h, c))
    threads: int = fastlstm.openmp_info()["max_threads"]
    enabled: bool = fastlstm.openmp_enabled()
    fastlstm.release_memory()
    print(lstm.describe(seq_len=7).format(width=80), lstm.trace(x).keys())
    y, h_r, c_r = reference.forward(x[:, :, :3], np.zeros((20, 3)), np.zeros((20, 5)))

    lstm(x, num_threads="two")  # E: arg-type
    fastlstm.LSTM(3, "5")  # E: arg-type
    fastlstm.LSTMCell(input_size=2.5, hidden_size=4)  # E: arg-type
    lstm.forward_train(x, seed="zero")  # E: arg-type
    fastlstm.QuantizedLSTM(cell)  # E: arg-type
    not_an_array: str = lstm(x)[0]  # E: assignment
    not_a_state: int = cell(x[0])  # E: assignment
''')


def _mypy_path():
    """The directory holding the fastlstm this test imported, for mypy to find it there
    (an editable install's import hook is invisible to mypy; mypy refuses site-packages here,
    and finds an installed fastlstm there by itself)."""
    root = Path(fastlstm.__file__).resolve().parent.parent
    return None if root.name in ("site-packages", "dist-packages") else str(root)


def test_mypy_flags_wrong_types_and_passes_right_ones(tmp_path):
    snippet = tmp_path / "snippet.py"
    snippet.write_text(SNIPPET)
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\n")  # this project's own [tool.mypy] is not the user's
    env_path = _mypy_path()
    old = os.environ.get("MYPYPATH")
    try:
        if env_path:
            os.environ["MYPYPATH"] = env_path
        stdout, stderr, status = mypy_api.run(
            [str(snippet), "--strict", "--follow-imports=silent", "--config-file", str(config),
             "--cache-dir", str(tmp_path / "cache"), "--show-error-codes", "--no-pretty"])
    finally:
        if old is None:
            os.environ.pop("MYPYPATH", None)
        else:
            os.environ["MYPYPATH"] = old
    expected = {}
    for lineno, line in enumerate(SNIPPET.splitlines(), 1):
        m = re.search(r"# E: (\S+)$", line)
        if m:
            expected[lineno] = m.group(1)
    got = {}
    for line in stdout.splitlines():
        m = re.match(r".*snippet\.py:(\d+): error: .*\[([\w-]+)\]$", line)
        if m:
            got.setdefault(int(m.group(1)), m.group(2))
    assert got == expected, f"mypy said:\n{stdout}{stderr}"
    assert status == 1
