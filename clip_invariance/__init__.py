"""clip-invariance: make CLIP robust to distribution shift, the scikit-learn way.

Importing this package is cheap: torch and open_clip are imported only by the
parts that need them.
"""

from .embedding import CLIPEmbedder
from .front_door import FrontDoorEnsembleClassifier
from .invariance import InvariantProjector
from .zero_shot import ZeroShotInvariantClassifier

__version__ = "0.1.0"

__all__ = [
    "CLIPEmbedder",
    "FrontDoorEnsembleClassifier",
    "InvariantProjector",
    "ZeroShotInvariantClassifier",
    "__version__",
]
