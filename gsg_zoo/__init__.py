"""gsg-zoo: model zoo and evaluation toolkit for Guided Stop-Gradient self-supervised learning.

``import gsg_zoo`` is light (no torch): the public API below loads on first use, and the CIFAR-stem
ResNets and the zoo's pretrained tags are registered with timm as soon as timm is imported
(:mod:`gsg_zoo.timm_hook`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import timm_hook

__version__ = "0.1.0"

#: public name -> the module that defines it (imported on first access).
_PUBLIC = {
    "METHODS": ".learner",
    "LearnerConfig": ".learner",
    "LearnerOutput": ".learner",
    "SelfSupervisedLearner": ".learner",
    "gsg_loss": ".losses",
    "gsg_select": ".losses",
    "negative_cosine": ".losses",
    "pairwise_distances": ".losses",
    "symmetric_negative_cosine": ".losses",
    "pair_indices": ".pairing",
    "random_derangement": ".pairing",
    "load": ".zoo",
}
__all__ = [  # = _PUBLIC's keys (tested); a literal so that tools read it
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

if TYPE_CHECKING:
    from .learner import METHODS, LearnerConfig, LearnerOutput, SelfSupervisedLearner
    from .losses import gsg_loss, gsg_select, negative_cosine, pairwise_distances, symmetric_negative_cosine
    from .pairing import pair_indices, random_derangement
    from .zoo import load


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'gsg_zoo' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])


timm_hook.install()
