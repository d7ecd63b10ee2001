"""CDC's front door: prompt templates and augmented views fused by their evidence (numpy at prediction).

:class:`FrontDoorEnsembleClassifier` forms one subjective-logic opinion per
(template, view) pair and fuses them with the reduced Dempster rule;
``_evidence.py`` holds the evidence function, the opinions and the fusion
(:func:`fuse_evidence`, and :func:`fuse_scores` at the speed of prediction),
``_adapters.py`` the learned per-template maps (:class:`TemplateAdapters`)
and ``_training.py`` the losses and the trainer
(:func:`~clip_invariance.front_door._training.train_adapters`).
``_prompt_learning.py`` learns prompt contexts through the frozen open_clip
text tower instead (:class:`PromptLearningFrontDoorClassifier`, CDC as
published, and :class:`CoOpClassifier`). Those two modules import torch,
inside the functions that train.
"""

from ._adapters import TemplateAdapters
from ._classifier import CDC_LOSS, FrontDoorEnsembleClassifier
from ._evidence import (
    EVIDENCE_FUNCTIONS,
    fuse_evidence,
    fuse_opinions,
    fuse_scores,
    log_evidence,
    opinion_from_evidence,
)
from ._prompt_learning import CDC_TEMPLATES, CoOpClassifier, PromptLearningFrontDoorClassifier

__all__ = [
    "FrontDoorEnsembleClassifier",
    "CDC_LOSS",
    "TemplateAdapters",
    # learned prompt contexts through the frozen text tower
    "PromptLearningFrontDoorClassifier",
    "CoOpClassifier",
    "CDC_TEMPLATES",
    # evidence, opinions and their fusion
    "EVIDENCE_FUNCTIONS",
    "fuse_evidence",
    "fuse_opinions",
    "fuse_scores",
    "log_evidence",
    "opinion_from_evidence",
]
