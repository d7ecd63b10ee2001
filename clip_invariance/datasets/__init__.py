"""Datasets: a synthetic generator that follows the papers' causal model."""

from ._image_folder import load_image_folder
from ._synthetic import make_invariant_embeddings

__all__ = ["load_image_folder", "make_invariant_embeddings"]
