"""Datasets: synthetic generators that follow the papers' causal model, and an image-folder loader."""

from ._embed_folder import embed_image_folder, image_folder_views, text_interventions_with_styles
from ._image_folder import load_image_folder
from ._store import load_embeddings, save_embeddings
from ._synthetic import make_invariant_embeddings
from ._templates import make_multi_template_embeddings

__all__ = [
    "load_image_folder",
    "make_invariant_embeddings",
    "make_multi_template_embeddings",
    "save_embeddings",
    "load_embeddings",
    "embed_image_folder",
    "image_folder_views",
    "text_interventions_with_styles",
]
