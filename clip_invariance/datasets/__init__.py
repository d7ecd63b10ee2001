"""Datasets: synthetic generators that follow the papers' causal model, and an image-folder loader."""

from ._image_folder import load_image_folder
from ._synthetic import make_invariant_embeddings
from ._templates import make_multi_template_embeddings

__all__ = ["load_image_folder", "make_invariant_embeddings", "make_multi_template_embeddings"]
