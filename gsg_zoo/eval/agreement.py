"""How closely the ``--solver torch`` transfer variant agrees with the scikit-learn reference path.

Both solvers run on one fixed fixture of features (:func:`fixture`: Gaussian class clusters drawn from a
seeded generator, a multinomial problem and a VOC-style multi-label one) with the same splits; the
chosen C, its validation score and the test score of each are reported side by side
(:func:`measure`), and ``gsg transfer classification --solver torch`` prints them in its report.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

Split = tuple[Tensor, Tensor]


def fixture(multilabel: bool, n: int = 300, dim: int = 24, classes: int = 6, seed: int = 0) -> list[Split]:
    """``[train, val, trainval, test]`` of overlapping Gaussian clusters (multi-label: 1-2 labels each)."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=gen) * 1.5
    first = torch.randint(0, classes, (n,), generator=gen)
    x = centres[first] + torch.randn(n, dim, generator=gen) * 2.0
    if multilabel:
        second = torch.randint(0, classes, (n,), generator=gen)
        extra = torch.rand(n, generator=gen) < 0.4
        x = x + torch.where(extra[:, None], centres[second], torch.zeros(dim))
        y = torch.zeros(n, classes, dtype=torch.long)
        y[torch.arange(n), first] = 1
        y[torch.arange(n)[extra], second[extra]] = 1
    else:
        y = first
    a, b = int(0.5 * n), int(0.7 * n)
    return [(x[:a], y[:a]), (x[a:b], y[a:b]), (x[:b], y[:b]), (x[b:], y[b:])]


def _sklearn(splits: list[Split], metric: str, num_wd: int) -> dict[str, Any]:
    from .many_shot import as_arrays, reference_protocol

    return reference_protocol(*(as_arrays(*s) for s in splits), metric=metric, num_wd=num_wd)


def _torch(splits: list[Split], metric: str, num_wd: int, multilabel: bool, max_iter: int) -> dict[str, Any]:
    from .logreg import c_grid, transfer_protocol

    num_classes = None if multilabel else int(splits[2][1].max()) + 1
    return transfer_protocol(
        *splits,
        metric,
        cs=c_grid(num_wd),
        num_classes=num_classes,  # type: ignore[misc]
        multilabel=multilabel,
        max_iter=max_iter,
    )


def measure(num_wd: int = 45, max_iter: int = 1000) -> dict[str, Any]:
    """``{problem: {"sklearn": {C, val, test}, "torch": {...}, "same_C", "test_diff"}}`` on :func:`fixture`."""
    out: dict[str, Any] = {}
    for name, metric, multilabel in (("multinomial", "top1", False), ("multilabel", "map11", True)):
        splits = fixture(multilabel)
        ref, var = _sklearn(splits, metric, num_wd), _torch(splits, metric, num_wd, multilabel, max_iter)
        pick = ("best_C", "val", "test")
        out[name] = {
            "metric": metric,
            "sklearn": {k: ref[k] for k in pick},
            "torch": {k: var[k] for k in pick},
            "same_C": abs(ref["best_C"] - var["best_C"]) <= 1e-6 * ref["best_C"],
            "test_diff": var["test"] - ref["test"],
        }
    return out


def markdown(agreement: dict[str, Any]) -> str:
    """The agreement table printed under a ``--solver torch`` report."""
    lines = [
        "Agreement of `--solver torch` with the scikit-learn reference on the built-in fixture",
        "",
        "| problem | metric | C sklearn / torch | val sklearn / torch | test sklearn / torch |",
        "|---|---|---|---|---|",
    ]
    for name, a in agreement.items():
        s, t = a["sklearn"], a["torch"]
        lines.append(
            f"| {name} | {a['metric']} | {s['best_C']:.3g} / {t['best_C']:.3g} | "
            f"{s['val']:.2f} / {t['val']:.2f} | {s['test']:.2f} / {t['test']:.2f} |"
        )
    return "\n".join(lines) + "\n"
