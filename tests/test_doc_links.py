"""Every public estimator's HTML repr links to its own page of the API reference.

The pages are ``api/<public name>.html`` (``docs/conf.py`` writes one per name of each public module's
``__all__``); ``clip_invariance/_utils/_doc_link.py`` gives the link through scikit-learn's
``_doc_link_*`` attributes.
"""

import importlib
import inspect
import pkgutil

import pytest
from sklearn.base import BaseEstimator

import clip_invariance
from clip_invariance._utils._doc_link import DOCS_URL, public_name


def public_estimators():
    """``(public name, class)`` of every estimator a public module exports, once each."""
    modules = [clip_invariance] + [
        importlib.import_module(f"clip_invariance.{info.name}")
        for info in pkgutil.iter_modules(clip_invariance.__path__)
        if not info.name.startswith("_") and info.name not in {"cli", "__main__"}
    ]
    found = {}
    for module in modules:
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if inspect.isclass(obj) and issubclass(obj, BaseEstimator):
                found.setdefault(obj, f"{module.__name__}.{name}")
    return sorted((name, cls) for cls, name in found.items())


ESTIMATORS = public_estimators()


def test_the_four_top_level_estimators_are_found():
    names = {name for name, _ in ESTIMATORS}
    assert {f"clip_invariance.{name}" for name in clip_invariance.__all__ if name[0].isupper()} <= names


@pytest.mark.parametrize(("name", "cls"), ESTIMATORS, ids=[name for name, _ in ESTIMATORS])
def test_the_html_repr_links_to_the_estimator_page(name, cls):
    assert public_name(cls) == name  # the page the docs write for it
    url = f"{DOCS_URL}api/{name}.html"
    assert object.__new__(cls)._get_doc_link() == url  # the link needs the class only
    try:
        estimator = cls()
    except TypeError:  # required arguments (prompt embeddings): the link above is what the repr shows
        return
    assert f'href="{url}"' in estimator._repr_html_()
