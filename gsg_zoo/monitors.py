"""Collapse indicators and the kNN monitor used during pretraining."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def normalized_std(z: Tensor) -> float:
    """Mean per-channel std of L2-normalised ``z`` times sqrt(dim): ~1 healthy, ~0 collapsed to a point."""
    zn = F.normalize(z.float(), dim=1)
    return float(zn.std(dim=0).mean() * math.sqrt(z.shape[1]))


def effective_rank(x: Tensor, eps: float = 1e-7) -> float:
    """RankMe (Garrido et al. 2023): exp of the entropy of the L1-normalised singular values.

    Between 1 (rank-one, e.g. collapsed) and ``min(N, D)``; catches dimensional collapse that a
    BatchNorm on the projector's output hides from :func:`normalized_std`.
    """
    s = torch.linalg.svdvals(x.float())
    p = s / (s.sum() + eps) + eps
    return float(torch.exp(-(p * p.log()).sum()))


def collapse_metrics(features: Tensor, projections: Tensor) -> dict[str, float]:
    return {
        "z_std": normalized_std(projections),
        "z_rank": effective_rank(projections),
        "h_rank": effective_rank(features),
    }


def knn_top1(
    bank: Tensor, bank_labels: Tensor, query: Tensor, query_labels: Tensor, num_classes: int,
    k: int = 200, t: float = 0.1,
) -> float:  # fmt: skip
    """Weighted kNN top-1 accuracy (%) (cosine, weights exp(s/T)); see :mod:`gsg_zoo.eval.knn`."""
    from .eval.knn import knn_evaluate

    return knn_evaluate(bank, bank_labels, query, query_labels, [(k, t)], num_classes)[(k, t)]["top1"]
