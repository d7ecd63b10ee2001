"""Datasets: a synthetic generator that follows the papers' causal model."""

from ._synthetic import make_invariant_embeddings
from ._templates import make_multi_template_embeddings

__all__ = ["make_invariant_embeddings", "make_multi_template_embeddings"]
