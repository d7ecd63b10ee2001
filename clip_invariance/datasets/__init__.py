"""Datasets: a synthetic generator that follows the papers' causal model."""

from ._synthetic import make_invariant_embeddings

__all__ = ["make_invariant_embeddings"]
