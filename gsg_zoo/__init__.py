"""gsg-zoo: model zoo and evaluation toolkit for Guided Stop-Gradient self-supervised learning.

Importing the package registers the CIFAR-stem ResNets with timm. Heavy submodules are imported
lazily by the CLI commands that need them.
"""

from . import backbones  # noqa: F401  (timm registration)
from .learner import METHODS, LearnerConfig, LearnerOutput, SelfSupervisedLearner
from .losses import gsg_loss, gsg_select, negative_cosine, pairwise_distances, symmetric_negative_cosine
from .pairing import pair_indices, random_derangement

__version__ = "0.1.0"
__all__ = [
    "METHODS",
    "LearnerConfig",
    "LearnerOutput",
    "SelfSupervisedLearner",
    "gsg_loss",
    "gsg_select",
    "negative_cosine",
    "pairwise_distances",
    "symmetric_negative_cosine",
    "pair_indices",
    "random_derangement",
    "load",
]


def __getattr__(name: str):
    if name == "load":  # lazy: zoo manifest + timm Hub loading
        from .zoo import load

        return load
    raise AttributeError(f"module 'gsg_zoo' has no attribute {name!r}")
