"""The documentation link of an estimator's HTML repr (the "?" in its box, as scikit-learn draws it).

scikit-learn's ``BaseEstimator`` builds the link from ``_doc_link_module``, ``_doc_link_template`` and
``_doc_link_url_param_generator``; its default rule (the module up to the first private part) would send
``CLIPEmbedder`` to ``clip_invariance.embedding.CLIPEmbedder``, but the API pages document each of the four
top-level estimators under the name users import it by, ``clip_invariance.CLIPEmbedder``. ``docs/conf.py``
writes one page per public name, ``api/<public name>.html``.
"""

import itertools
import sys

#: Where the documentation is published: a placeholder until the project is (``[project.urls]`` of
#: ``pyproject.toml`` gives the same address).
DOCS_URL = "https://clip-invariance.github.io/clip-invariance/"


def public_name(cls):
    """The dotted name the API pages document ``cls`` under.

    A class exported by the package's top level (its ``__all__``) is ``clip_invariance.<name>``; any other
    is ``<module up to its first private part>.<name>``, the subpackage that re-exports it.
    """
    top = sys.modules.get(cls.__module__.split(".")[0])
    if cls.__name__ in getattr(top, "__all__", ()):
        return f"{top.__name__}.{cls.__name__}"
    module = itertools.takewhile(lambda part: not part.startswith("_"), cls.__module__.split("."))
    return ".".join([*module, cls.__name__])


class DocLinkMixin:
    """Link an estimator's HTML repr to its page of the API reference.

    Put it first among the bases of a public estimator::

        class InvariantProjector(DocLinkMixin, TransformerMixin, BaseEstimator): ...
    """

    _doc_link_module = "clip_invariance"
    _doc_link_template = DOCS_URL + "api/{public_name}.html"

    def _doc_link_url_param_generator(self):
        return {"public_name": public_name(type(self))}
