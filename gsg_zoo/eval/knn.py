"""Weighted k-nearest-neighbour classification on L2-normalised features (InstDisc / DINO protocol).

Pure tensor functions, no I/O: :func:`knn_classify` ranks classes per query, :func:`knn_evaluate`
scores them. The pretraining monitor (:func:`gsg_zoo.train.monitor.knn_top1`) calls :func:`knn_evaluate` on
features it already holds; ``gsg eval knn`` calls it on cached features.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

#: ``(k, temperature)`` pairs reported by ``gsg eval knn``: the InstDisc/DINO defaults and variants.
DEFAULT_KS_AND_TS: tuple[tuple[int, float], ...] = ((200, 0.1), (20, 0.07), (200, 0.2))


@torch.no_grad()
def knn_classify(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    ks_and_ts: Sequence[tuple[int, float]] = DEFAULT_KS_AND_TS,
    num_classes: int | None = None,
    chunk_size: int = 256,
    topk: int = 5,
) -> dict[tuple[int, float], Tensor]:
    """Ranked class predictions of a cosine-similarity weighted kNN, for several ``(k, T)`` at once.

    Each query's ``k`` nearest training features (cosine similarity ``s``) vote for their labels
    with weight ``exp(s / T)``; classes are ranked by summed votes. Features are L2-normalised here.
    Queries are processed ``chunk_size`` at a time, so memory is ``chunk_size x len(train_feats)``
    similarities (e.g. 256 x 1.28M floats = 1.3 GB for ImageNet) and the nearest-neighbour search
    runs once for the largest ``k``. Computation happens on ``train_feats``' device.

    Returns ``{(k, T): LongTensor [len(test_feats), min(topk, num_classes)]}``, best class first.
    """
    if train_feats.ndim != 2 or test_feats.ndim != 2 or train_feats.shape[1] != test_feats.shape[1]:
        raise ValueError(
            f"expected 2-D features of equal width, got {tuple(train_feats.shape)} and {tuple(test_feats.shape)}"
        )
    if train_labels.shape != (train_feats.shape[0],):
        raise ValueError(f"train_labels must be [{train_feats.shape[0]}], got {tuple(train_labels.shape)}")
    if not ks_and_ts:
        raise ValueError("ks_and_ts is empty")
    if any(k < 1 or t <= 0 for k, t in ks_and_ts):
        raise ValueError(f"need k >= 1 and T > 0, got {list(ks_and_ts)}")
    device = train_feats.device
    labels = train_labels.to(device=device, dtype=torch.long)
    num_classes = int(num_classes if num_classes is not None else labels.max().item() + 1)
    bank = F.normalize(train_feats.float(), dim=1)
    kmax = min(max(k for k, _ in ks_and_ts), bank.shape[0])
    ntop = min(topk, num_classes)
    out = {(k, t): torch.empty(test_feats.shape[0], ntop, dtype=torch.long) for k, t in ks_and_ts}
    for start in range(0, test_feats.shape[0], chunk_size):
        query = F.normalize(test_feats[start : start + chunk_size].to(device).float(), dim=1)
        sims, idx = (query @ bank.T).topk(kmax, dim=1)  # sorted, most similar first
        neighbour_labels = labels[idx]
        for k, t in ks_and_ts:
            kk = min(k, kmax)  # fewer training samples than k: use them all
            votes = torch.zeros(query.shape[0], num_classes, device=device)
            votes.scatter_add_(1, neighbour_labels[:, :kk], (sims[:, :kk] / t).exp())
            out[(k, t)][start : start + query.shape[0]] = votes.topk(ntop, dim=1).indices.cpu()
    return out


def topk_accuracy(ranked: Tensor, labels: Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Top-k accuracy (percent) of ranked predictions ``[N, >=k]`` against integer labels ``[N]``."""
    hits = ranked == labels.view(-1, 1).to(ranked.device)
    return {
        f"top{k}": 100.0 * hits[:, :k].any(dim=1).float().mean().item() for k in ks if k <= ranked.shape[1]
    }


def knn_evaluate(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    test_labels: Tensor,
    ks_and_ts: Sequence[tuple[int, float]] = DEFAULT_KS_AND_TS,
    num_classes: int | None = None,
    chunk_size: int = 256,
) -> dict[tuple[int, float], dict[str, float]]:
    """:func:`knn_classify` then top-1/top-5 accuracy (percent) per ``(k, T)``."""
    if num_classes is None:
        num_classes = int(max(train_labels.max().item(), test_labels.max().item()) + 1)
    ranked = knn_classify(train_feats, train_labels, test_feats, ks_and_ts, num_classes, chunk_size)
    return {kt: topk_accuracy(r, test_labels) for kt, r in ranked.items()}
