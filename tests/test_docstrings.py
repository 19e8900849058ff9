"""Every public function and method is documented in numpydoc form (issue 21).

The public API is what ``fastlstm.__all__`` names (classes with their public methods and
properties, the `fastlstm.reference` module's ``__all__``), plus what it hands out or points
to: `fastlstm.shapes` (``describe``/``trace`` results) and the interop entry points. For each:
a summary line; a Parameters section naming exactly the signature's parameters, each with a
description; a Returns section unless it returns None or never returns; and a Raises section
wherever it takes arguments or always raises. Parsed here without numpydoc, so the check runs
in every environment (the Sphinx build in .ci/api_docs renders the same text).
"""
import inspect
import re

import pytest

import fastlstm
from fastlstm import reference, shapes
from fastlstm.interop import keras as keras_interop
from fastlstm.interop import onnx as onnx_interop

_HEADER = re.compile(r"^(\w[\w ]*)\n-+$", re.M)


def _public_api():
    """[(qualified name, object, kind)] with kind 'class', 'function' or 'property'."""
    found, seen = [], set()

    def add(name, obj, kind):
        if id(obj) not in seen:
            seen.add(id(obj))
            found.append((name, obj, kind))

    def add_class(prefix, cls):
        add(prefix, cls, "class")
        for attr, member in vars(cls).items():
            if attr.startswith("_") and attr != "__call__":
                continue
            if isinstance(member, property):
                add(f"{prefix}.{attr}", member.fget, "property")
            elif isinstance(member, (classmethod, staticmethod)):
                add(f"{prefix}.{attr}", member.__func__, "function")
            elif inspect.isfunction(member):
                add(f"{prefix}.{attr}", member, "function")

    def add_module(prefix, module):
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj):
                add_class(f"{prefix}.{name}", obj)
            elif inspect.isfunction(obj):
                add(f"{prefix}.{name}", obj, "function")

    for name in fastlstm.__all__:
        obj = getattr(fastlstm, name)
        if inspect.ismodule(obj):
            add_module(f"fastlstm.{name}", obj)
        elif inspect.isclass(obj):
            add_class(f"fastlstm.{name}", obj)
        else:
            add(f"fastlstm.{name}", obj, "function")
    add_module("fastlstm.shapes", shapes)
    add("fastlstm.interop.keras.from_keras", keras_interop.from_keras, "function")
    add("fastlstm.interop.onnx.from_onnx", onnx_interop.from_onnx, "function")
    add("fastlstm.interop.onnx.to_onnx", onnx_interop.to_onnx, "function")
    try:  # fastlstm.torch, where torch is installed (its own members; torch's are torch's)
        import fastlstm.torch as fastlstm_torch
    except ImportError:
        pass
    else:
        add_module("fastlstm.torch", fastlstm_torch)
    return found


API = _public_api()
# Result types fastlstm builds and hands out (describe, trace): nothing validates their
# constructors' arguments, so they document no Raises.
_MADE_BY_FASTLSTM = {"fastlstm.shapes.Description", "fastlstm.shapes.Trace",
                     "fastlstm.shapes.Row"}


def _sections(doc):
    """{section title: its body} of a numpydoc docstring (inspect.cleandoc'ed)."""
    heads = list(_HEADER.finditer(doc))
    return {m.group(1): doc[m.end():heads[i + 1].start() if i + 1 < len(heads) else len(doc)]
            for i, m in enumerate(heads)}


def _documented_parameters(body):
    """Names in a Parameters section: the unindented ``name : type`` lines (``a, b : int``
    documents both), each followed by an indented description."""
    names, lines = [], body.strip("\n").splitlines()
    for i, line in enumerate(lines):
        if not line or line[0].isspace():
            continue
        described = i + 1 < len(lines) and lines[i + 1].startswith(" ") and lines[i + 1].strip()
        for name in line.split(" : ")[0].split(","):
            names.append((name.strip(), bool(described)))
    return names


def test_the_public_api_is_what_we_think():
    names = {name for name, _, _ in API}
    assert {"fastlstm.LSTM", "fastlstm.LSTM.__call__", "fastlstm.LSTM.forward_train",
            "fastlstm.LSTMCell.forward_train", "fastlstm.QuantizedLSTM.nbytes",
            "fastlstm.openmp_info", "fastlstm.release_memory", "fastlstm.reference.backward",
            "fastlstm.shapes.Trace.step"} <= names
    assert len(API) > 60


@pytest.mark.parametrize("name, obj, kind", API, ids=[name for name, _, _ in API])
def test_numpydoc(name, obj, kind):
    doc = inspect.getdoc(obj)
    assert doc, f"{name} has no docstring"
    summary = doc.split("\n\n")[0]
    assert summary.strip() and not _HEADER.match(summary), f"{name}: no summary line"
    if kind == "property":
        return  # documented by its summary, as an attribute
    sections = _sections(doc)
    signature = inspect.signature(obj)
    params = [p for p in signature.parameters.values() if p.name not in ("self", "cls")]
    expected = [("**" if p.kind is p.VAR_KEYWORD else "*" if p.kind is p.VAR_POSITIONAL else "")
                + p.name for p in params]
    documented = _documented_parameters(sections.get("Parameters", ""))
    assert [n for n, _ in documented] == expected, (
        f"{name}: the Parameters section lists {[n for n, _ in documented]}, the signature "
        f"has {expected}")
    undescribed = [n for n, described in documented if not described]
    assert not undescribed, f"{name}: parameters without a description: {undescribed}"
    returns = signature.return_annotation
    if kind == "function" and returns not in ("None", "NoReturn", None):
        assert sections.get("Returns", "").strip(), f"{name} returns {returns}: no Returns"
    if (params and name not in _MADE_BY_FASTLSTM) or returns == "NoReturn":
        body = sections.get("Raises", "")
        assert re.search(r"^\w+(Error|Exception|Interrupt)\b", body, re.M), \
            f"{name}: no Raises section naming an exception"


def test_checker_catches_a_bad_docstring():
    """The checks above fail on what they look for (a test that cannot fail is a defect)."""
    def bad(x, y=1):
        """Do something.

        Parameters
        ----------
        x : int
        """
    bad.__module__ = __name__
    with pytest.raises(AssertionError, match="Parameters section lists"):
        test_numpydoc("bad", bad, "function")

    def undescribed(x: int) -> int:
        """Do something.

        Parameters
        ----------
        x : int

        Returns
        -------
        int
            x.

        Raises
        ------
        ValueError
            Never.
        """
    with pytest.raises(AssertionError, match="without a description"):
        test_numpydoc("undescribed", undescribed, "function")

    def no_raises(x: int) -> int:
        """Do something.

        Parameters
        ----------
        x : int
            A number.

        Returns
        -------
        int
            x.
        """
    with pytest.raises(AssertionError, match="no Raises"):
        test_numpydoc("no_raises", no_raises, "function")
