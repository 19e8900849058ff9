"""Sphinx configuration of fastlstm's API reference (`bash .ci/api_docs` builds it with -W)."""
import fastlstm

project = "fastlstm"
version = release = fastlstm.__version__
extensions = ["sphinx.ext.autodoc", "numpydoc"]
exclude_patterns = ["_build"]
html_theme = "alabaster"
# `name` in a docstring links to that object when Sphinx knows it (plain text otherwise).
default_role = "py:obj"
# The docstrings' Parameters sections give the types in words; the annotations (for type
# checkers) would repeat them in the signature, in NumPy's long spelling.
autodoc_typehints = "none"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "special-members": "__call__"}
numpydoc_show_class_members = False  # autodoc lists the members, once
numpydoc_xref_param_type = False
# Render-time checks beside tests/test_docstrings.py: undocumented or unknown parameters,
# missing Returns, missing docstrings fail the build (-W).
numpydoc_validation_checks = {"GL08", "PR01", "PR02", "RT01"}
