"""Sphinx configuration: `pip install -e ".[docs]" && sphinx-build docs docs/_build`."""

project = "clip-invariance"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.mathjax", "numpydoc"]
numpydoc_show_class_members = False
exclude_patterns = ["_build"]
html_theme = "alabaster"
