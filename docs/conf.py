"""Sphinx configuration. Build offline, warnings as errors, examples executed::

    pip install -e ".[docs]"
    python -m sphinx -W -b html docs docs/_build/html

``-D plot_gallery=0`` skips running the examples (the gallery pages are still built).
"""

import os
import re
import runpy
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))  # document the checkout's package, whatever else is installed
os.environ["MPLBACKEND"] = "Agg"  # examples and figure scripts never open a window

import matplotlib

matplotlib.use("Agg")

from clip_invariance import __version__

project = "clip-invariance"
release = version = __version__
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # serves MathJax from _static/mathjax: no CDN, maths renders offline
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]
exclude_patterns = ["_build", "_generated", "tables", "**.ipynb_checkpoints"]
html_theme = "alabaster"
html_static_path = ["_static"]
numpydoc_show_class_members = False
autodoc_default_options = {"member-order": "bysource"}

sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"\.py$",  # execute every example, not only plot_*
    "plot_gallery": "True",
    "abort_on_example_error": True,
    "image_scrapers": ("matplotlib",),
    "reset_modules": ("matplotlib",),
    "remove_config_comments": True,
    "download_all_examples": False,
    "write_computation_times": False,  # its page loads jQuery and DataTables from a CDN
}


def skip_metadata_request_setters(app, what, name, obj, skip, options):
    """Leave out scikit-learn's generated ``set_{method}_request`` methods.

    Every estimator inherits them from ``BaseEstimator``; their docstrings point at scikit-learn's own
    glossary and user guide, which this build cannot resolve offline. The user guide's page on
    metadata routing (``guide/hyperparameters``) explains them once.
    """
    if re.fullmatch(r"set_\w+_request", name):
        return True
    return None


def drop_inherited_type_docstrings(app, what, name, obj, options, lines):
    """Leave out the docstring of a constant's type (``tuple``, ``str``) that autodoc would show.

    A constant a subpackage re-exports (``METHODS``, ``IMAGE_TRANSFORMS``) has no docstring of its own,
    so autodoc falls back to its type's ("Built-in immutable sequence..."); the API page writes what
    each constant means under its ``autodata`` directive instead.
    """
    type_doc = type(obj).__doc__
    if what == "data" and type_doc and " ".join(" ".join(lines).split()) == " ".join(type_doc.split()):
        lines.clear()


def build_figures(app):
    """Draw the causal graphs and compute the guide's tables, into docs/_generated (not in git)."""
    for script in ("causal_graphs.py", "demo_table.py", "projection_table.py"):
        runpy.run_path(str(DOCS / script), run_name="__main__")


def setup(app):
    app.connect("autodoc-skip-member", skip_metadata_request_setters)
    app.connect("autodoc-process-docstring", drop_inherited_type_docstrings, priority=400)  # before numpydoc
    app.connect("builder-inited", build_figures)
