"""Images and texts -> CLIP embeddings: the only part of the package that runs torch and open_clip.

:class:`CLIPEmbedder` embeds images or texts with a frozen open_clip model
(its per-input cache in ``_cache.py``, the loaded models in ``_backbone.py``);
images of any kind are decoded by :func:`read_image`; image interventions
(:func:`make_image_interventions`) and text interventions
(:func:`make_text_interventions`) are the augmented views and style-varied
prompts CLIP-ICM learns from; :func:`embed_image_folder` embeds a whole
image folder into an embedding store, resumably and in shards.

torch and open_clip are imported inside the functions that need them:
importing this subpackage is cheap.
"""

from ._augmentation import IMAGE_TRANSFORMS, ImageView, make_image_interventions
from ._backbone import clear_backbone_cache
from ._embedder import CLIPEmbedder
from ._folder import TEXT_TEMPLATE, embed_image_folder, image_folder_views, text_interventions_with_styles
from ._images import read_image
from ._prompts import (
    DEFAULT_SETTINGS,
    DEFAULT_STYLES,
    build_prompts,
    encode_prompts,
    get_templates,
    make_text_interventions,
)

__all__ = [
    # the embedder
    "CLIPEmbedder",
    "clear_backbone_cache",
    "read_image",
    # image interventions
    "IMAGE_TRANSFORMS",
    "ImageView",
    "make_image_interventions",
    # prompts and text interventions
    "DEFAULT_SETTINGS",
    "DEFAULT_STYLES",
    "build_prompts",
    "encode_prompts",
    "get_templates",
    "make_text_interventions",
    # an image folder -> an embedding store
    "TEXT_TEMPLATE",
    "embed_image_folder",
    "image_folder_views",
    "text_interventions_with_styles",
]
