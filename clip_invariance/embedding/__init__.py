"""Images and texts -> CLIP embeddings: the only subpackage that runs torch and open_clip.

:class:`~clip_invariance.CLIPEmbedder` (``_embedder.py``) embeds images or
texts with a frozen open_clip model: ``_backbone.py`` loads that model
(weights resolved offline-first, device and precision checked, a small
process-wide cache that :func:`clear_backbone_cache` empties), ``_cache.py``
keeps one embedding per input on disk (``memory=``) and ``_images.py``
decodes every image input (:func:`read_image`). The interventional data
CLIP-ICM learns from are made here too: image interventions, augmented views
of each image (:func:`make_image_interventions`, ``_augmentation.py``), and
text interventions, each class described in many styles
(:func:`make_text_interventions`, ``_prompts.py``, which also builds and
encodes the class prompts of a template list). ``_folder.py`` embeds a whole
image folder into an embedding store, resumably and in shards
(:func:`embed_image_folder`, what ``clip-invariance embed`` runs).

torch and open_clip are imported inside the functions that need them:
importing this subpackage is cheap.
"""

from ._augmentation import IMAGE_TRANSFORMS, ImageView, make_image_interventions
from ._backbone import clear_backbone_cache, get_backbone
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
    "get_backbone",
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
