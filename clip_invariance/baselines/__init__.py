"""The baselines a user would run instead of ours: WiSE-FT and Tip-Adapter on frozen CLIP features.

Both add a head learnt from labelled images to CLIP's zero-shot head, and
both take an optional ``projector`` (an
:class:`~clip_invariance.InvariantProjector`) to run in the invariant
subspace, like :class:`~clip_invariance.ZeroShotInvariantClassifier`:

- :class:`WiSEClassifier`: WiSE-FT's weight-space mix of the zero-shot head
  and a linear probe;
- :class:`TipAdapterClassifier`: Tip-Adapter's training-free cache of the
  training images.
"""

from ._tip_adapter import TipAdapterClassifier
from ._wise import WiSEClassifier

__all__ = ["TipAdapterClassifier", "WiSEClassifier"]
