"""Sphinx configuration. Build offline, warnings as errors, examples executed::

    pip install -e ".[docs]"
    python -m sphinx -W -b html docs docs/_build/html

``-D plot_gallery=0`` skips running the examples (the gallery pages are still built).

The figures and the computed tables the pages show are committed (``docs/_static/figures/``,
``docs/tables/``; the scripts next to this file redraw them on demand), so that the sources render on a
code host as well; the build writes only what git ignores (``docs/_build``, ``docs/api``,
``docs/auto_examples``, ``docs/_generated``, the examples' figures).

The API reference has one page per public object, written at every build into ``docs/api/`` (not in
git) from each subpackage's ``__all__``: ``docs/api.rst`` lists a subpackage with the ``api-summary``
directive defined here, so a name added to an ``__all__`` gets its page, its row in the summary table
and its "Examples using ..." gallery without an edit of the docs.
"""

import datetime
import importlib
import inspect
import os
import re
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))  # document the checkout's package, whatever else is installed
os.environ["MPLBACKEND"] = "Agg"  # examples and figure scripts never open a window

import matplotlib

matplotlib.use("Agg")

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective

from clip_invariance import __version__
from clip_invariance._utils._doc_link import DOCS_URL

project = "clip-invariance"
author = "the clip-invariance contributors"
copyright = f"{datetime.date.today().year}, {author}"
release = version = __version__
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # serves MathJax from _static/mathjax: no CDN, maths renders offline
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]
exclude_patterns = ["_build", "_generated", "tables", "**.ipynb_checkpoints"]
templates_path = ["_templates"]
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_title = f"clip-invariance {version}"
html_baseurl = DOCS_URL  # where the site would be published: a placeholder, no site is published there
html_show_sourcelink = False
toc_object_entries_show_parents = "hide"  # "fit()" in a class page's table of contents, not "Class.fit()"

# pydata-sphinx-theme, as scikit-learn's and skada's docs: a wide content column, the version in the
# navigation bar, nothing loaded from the network (the icons and fonts ship with the theme).
html_theme = "pydata_sphinx_theme"
html_theme_options = {
    "navbar_start": ["navbar-logo", "version"],
    "navbar_end": ["theme-switcher"],
    "header_links_before_dropdown": 6,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_center": ["licence"],
    "footer_end": ["sphinx-version", "theme-version"],
    "show_prev_next": True,
    "navigation_with_keys": False,
    "pygments_light_style": "tango",
}
html_sidebars = {"**": ["sidebar-nav-bs"], "index": [], "citing": []}
html_context = {"default_mode": "light"}

numpydoc_show_class_members = False
autodoc_default_options = {"member-order": "bysource"}
autosummary_generate = False  # the pages are written by write_api_pages, from the subpackages' __all__

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
    # "Examples using X" on each API page: which examples use which public name
    "doc_module": ("clip_invariance",),
    "backreferences_dir": "_generated/backreferences",
    "inspect_global_variables": True,
}

# ---------------------------------------------------------------------------------------------------------
# One page per public object, from the subpackages' __all__

API_DIR = DOCS / "api"  # the written pages; api.html is the summary of all of them

CLASS_PAGE = """\
{title}
{underline}

.. currentmodule:: {module}

.. autoclass:: {name}
   :members:

.. minigallery:: {module}.{name}
   :add-heading: Examples using ``{name}``
   :heading-level: -
"""

FUNCTION_PAGE = """\
{title}
{underline}

.. currentmodule:: {module}

.. autofunction:: {name}

.. minigallery:: {module}.{name}
   :add-heading: Examples using ``{name}``
   :heading-level: -
"""


def documented(module_name):
    """The classes and functions of ``module_name``'s ``__all__`` that get a page there.

    A name the package's top level exports too (``CLIPEmbedder``) has its page under the top-level name,
    the one users import, and is left out here; constants have no page (``api.rst`` documents each
    with ``autodata`` and a sentence on what it means).
    """
    module = importlib.import_module(module_name)
    top = importlib.import_module("clip_invariance")
    names = []
    for name in module.__all__:
        obj = getattr(module, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        if module is not top and name in top.__all__:
            continue
        names.append(name)
    return names


def public_modules():
    """``clip_invariance`` and its public subpackages and modules that define an ``__all__``."""
    import pkgutil

    import clip_invariance

    found = ["clip_invariance"]
    for info in pkgutil.iter_modules(clip_invariance.__path__):
        if info.name.startswith("_") or info.name == "cli":
            continue
        if hasattr(importlib.import_module(f"clip_invariance.{info.name}"), "__all__"):
            found.append(f"clip_invariance.{info.name}")
    return found


def write_api_pages(app):
    """Write ``docs/api/<module>.<name>.rst`` for every documented public name (and nothing stale)."""
    API_DIR.mkdir(exist_ok=True)
    for stale in API_DIR.glob("*.rst"):
        stale.unlink()
    for module_name in public_modules():
        module = importlib.import_module(module_name)
        for name in documented(module_name):
            template = CLASS_PAGE if inspect.isclass(getattr(module, name)) else FUNCTION_PAGE
            # titled by the short name, as scikit-learn's pages are: the signature gives the full path
            page = template.format(title=name, underline="=" * len(name), module=module_name, name=name)
            (API_DIR / f"{module_name}.{name}.rst").write_text(page)


class APISummary(SphinxDirective):
    """``.. api-summary:: clip_invariance.embedding``: the summary table of a module's public names.

    Each row links to the object's page (written by :func:`write_api_pages`), and the pages join the
    navigation under ``api.rst``. A top-level estimator the module re-exports (``CLIPEmbedder`` in
    ``clip_invariance.embedding``) has its row too, linking to its one page under the top-level name.
    """

    required_arguments = 1

    def run(self):
        module_name = self.arguments[0]
        module = importlib.import_module(module_name)
        top = importlib.import_module("clip_invariance")
        names = documented(module_name)
        also = [f"clip_invariance.{name}" for name in module.__all__
                if module is not top and name in top.__all__]
        lines = [f".. currentmodule:: {module_name}", ""]
        if also:  # their pages are in the top-level section's toctree already
            lines += [".. autosummary::", "   :nosignatures:", ""] + [f"   ~{name}" for name in also] + [""]
        if names:
            lines += [".. autosummary::", "   :nosignatures:", "   :toctree: api", ""]
            lines += [f"   {name}" for name in names]
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source=self.get_source_info()[0]), self.content_offset,
                                container)
        return container.children


class APISummaryOthers(SphinxDirective):
    """``.. api-summary-others::``: every public module the page names in no ``api-summary``, each under a
    rubric with its docstring and table, so that a new subpackage is never left without pages."""

    def run(self):
        source = Path(self.env.doc2path(self.env.docname)).read_text()
        listed = set(re.findall(r"^\.\. api-summary:: (\S+)", source, flags=re.M))
        lines = []
        for module_name in public_modules():
            if module_name not in listed:
                lines += [f".. rubric:: ``{module_name}``", "", f".. automodule:: {module_name}", "",
                          f".. api-summary:: {module_name}", ""]
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source=self.get_source_info()[0]), self.content_offset,
                                container)
        return container.children


# ---------------------------------------------------------------------------------------------------------


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


def copy_tables(app, exception):
    """Copy ``docs/tables/*.csv`` into the built site's ``tables/``.

    The figures and tables of the pages are committed (``docs/_static/figures/``, ``docs/tables/``) and
    read as they are, so that the pages render on a code host too; nothing here draws them. Next to each
    table a page links its CSV, relatively (``tables/x.csv``), which a code host resolves in the
    repository and the built site here.
    """
    if exception is None and app.builder.format == "html":
        out = Path(app.outdir) / "tables"
        out.mkdir(exist_ok=True)
        for table in sorted((DOCS / "tables").glob("*.csv")):
            shutil.copyfile(table, out / table.name)


def setup(app):
    app.add_directive("api-summary", APISummary)
    app.add_directive("api-summary-others", APISummaryOthers)
    app.connect("autodoc-skip-member", skip_metadata_request_setters)
    app.connect("autodoc-process-docstring", drop_inherited_type_docstrings, priority=400)  # before numpydoc
    app.connect("builder-inited", write_api_pages)
    app.connect("build-finished", copy_tables)
