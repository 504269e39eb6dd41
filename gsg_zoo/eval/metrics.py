"""Classification metrics of the transfer protocol: top-1, mean per-class accuracy, VOC 11-point mAP."""

from __future__ import annotations

import torch
from torch import Tensor


def top1_accuracy(scores: Tensor, labels: Tensor) -> float:
    """Percent of samples whose highest score is the label."""
    return 100.0 * (scores.argmax(dim=1).cpu() == labels.cpu()).float().mean().item()


def mean_per_class_accuracy(scores: Tensor, labels: Tensor) -> float:
    """Mean over the classes present in ``labels`` of each class's accuracy (percent)."""
    pred, labels = scores.argmax(dim=1).cpu(), labels.cpu()
    accs = [(pred[labels == c] == c).float().mean() for c in labels.unique()]
    return 100.0 * torch.stack(accs).mean().item()


def voc07_average_precision(scores: Tensor, positives: Tensor) -> float:
    """VOC2007 11-point interpolated AP (fraction) of one class: mean over recall thresholds 0, 0.1, .., 1
    of the highest precision reached at recall >= threshold."""
    order = scores.double().argsort(descending=True)
    pos = positives[order].double()
    n_pos = pos.sum()
    if n_pos == 0:
        return float("nan")
    tp = pos.cumsum(0)
    recall = tp / n_pos
    precision = tp / torch.arange(1, len(pos) + 1, dtype=torch.float64)
    ap = 0.0
    for t in torch.linspace(0, 1, 11, dtype=torch.float64):
        reached = recall >= t - 1e-12
        ap += precision[reached].max().item() if reached.any() else 0.0
    return ap / 11


def voc07_map(scores: Tensor, targets: Tensor) -> float:
    """Mean over classes with positives of :func:`voc07_average_precision` (percent)."""
    aps = [voc07_average_precision(scores[:, c].cpu(), targets[:, c].cpu()) for c in range(targets.shape[1])]
    aps = [a for a in aps if a == a]
    return 100.0 * sum(aps) / len(aps)


METRICS = {"top1": top1_accuracy, "mean_per_class": mean_per_class_accuracy, "map11": voc07_map}
METRIC_NAMES = {"top1": "top-1 acc.", "mean_per_class": "mean per-class acc.", "map11": "11-point mAP"}


def score(metric: str, scores: Tensor, labels: Tensor) -> float:
    return METRICS[metric](scores, labels)
