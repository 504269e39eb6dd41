"""gsg-zoo: model zoo and evaluation toolkit for Guided Stop-Gradient self-supervised learning.

``import gsg_zoo`` registers the CIFAR-stem ResNets with timm (``timm.create_model("resnet18_cifar")``,
and exports of them through ``local-dir:``/``hf-hub:``) and exposes the public API below.
"""

from __future__ import annotations

from ._version import __version__ as __version__
from .method.learner import METHODS, LearnerConfig, LearnerOutput, SelfSupervisedLearner
from .method.losses import (
    gsg_loss,
    gsg_select,
    negative_cosine,
    pairwise_distances,
    symmetric_negative_cosine,
)
from .method.pairing import pair_indices, random_derangement
from .zoo.load import load, load_backbone

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
    "load_backbone",
]
