"""The many-shot linear transfer protocol of Ericsson et al. 2021, run with scikit-learn as its code runs it.

Reference: github.com/linusericsson/ssl-transfer, ``linear.py`` (``LogisticRegression``,
``LinearTester``, ``get_train_valid_loader``, ``voc_ap``, ``voc_eval_cls``). The transcription,
setting by setting, and the scikit-learn >= 1.7 binary case: docs/reference/internals.md.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

#: the reference's sweep: ``torch.logspace(-6, 5, 45)`` values of weight decay, C = 1 / wd
WD_RANGE = (-6.0, 5.0)
NUM_WD = 45


def _has_multi_class() -> bool:
    from sklearn.linear_model import LogisticRegression

    return "multi_class" in inspect.signature(LogisticRegression).parameters


#: factor applied to C for binary fits so that they minimise the reference's objective (module docstring)
BINARY_C_SCALE = 1.0 if _has_multi_class() else 2.0


def c_values(num: int = NUM_WD) -> list[float]:
    """The reference's C values in its sweep order: ``1 / wd.item()`` for ``wd`` in float32
    ``torch.logspace(-6, 5, num)`` (largest C first)."""
    return [1.0 / wd.item() for wd in torch.logspace(*WD_RANGE, num)]


def reference_val_split(n: int, valid_size: float = 0.2, seed: int = 0) -> tuple[list[int], list[int]]:
    """``(train indices, val indices)`` as ``get_train_valid_loader`` draws them (``np.random.seed(0)``
    then ``np.random.shuffle`` of ``list(range(n))``: the same draws as a ``RandomState(0)``)."""
    indices = list(range(n))
    split = int(np.floor(valid_size * n))
    np.random.RandomState(seed).shuffle(indices)
    return indices[split:], indices[:split]


def new_classifier() -> Any:
    """``LogisticRegression(solver="lbfgs", multi_class="multinomial", warm_start=True)``; without
    ``multi_class`` where scikit-learn no longer has it (lbfgs is then multinomial by default)."""
    from sklearn.linear_model import LogisticRegression

    extra = {"multi_class": "multinomial"} if _has_multi_class() else {}
    return LogisticRegression(solver="lbfgs", warm_start=True, **extra)


def voc_ap(rec: np.ndarray, prec: np.ndarray) -> float:
    """VOC2007 11-point AP: mean over ``t`` in 0, 0.1, .., 1 of the best precision at recall >= t."""
    ap = 0.0
    for t in np.linspace(0, 1, 11):
        ap += (0.0 if np.sum(rec >= t) == 0 else float(np.max(prec[rec >= t]))) / 11.0
    return ap


def voc_eval_cls(y_true: np.ndarray, y_score: np.ndarray) -> float:
    from sklearn.metrics import precision_recall_curve

    prec, rec, _ = precision_recall_curve(y_true, y_score)
    return voc_ap(rec, prec)


class ReferenceLogReg:
    """The reference's ``LogisticRegression`` wrapper: one warm-started classifier, fit then score."""

    def __init__(self, metric: str) -> None:
        if metric not in ("top1", "mean_per_class", "map11"):
            raise ValueError(f"unknown metric {metric!r}")
        self.metric = metric
        self.clf = new_classifier()

    def _fit(self, x: np.ndarray, y: np.ndarray) -> None:
        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():  # the reference: @ignore_warnings(category=ConvergenceWarning)
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", FutureWarning)  # multi_class, deprecated in 1.5-1.6
            self.clf.fit(x, y)

    def fit_score(
        self, C: float, x_fit: np.ndarray, y_fit: np.ndarray, x: np.ndarray, y: np.ndarray
    ) -> float:
        """``set_params(C)``, fit on ``(x_fit, y_fit)``, score ``(x, y)`` in percent (``fit_logistic_regression``)."""
        from sklearn.metrics import confusion_matrix

        if self.metric == "map11":
            self.clf.set_params(C=C * BINARY_C_SCALE)
            aps = []
            for cls in range(y_fit.shape[1]):
                self._fit(x_fit, y_fit[:, cls])
                aps.append(voc_eval_cls(y[:, cls], self.clf.decision_function(x)))
            return 100.0 * float(np.mean(aps))
        self.clf.set_params(C=C)
        self._fit(x_fit, y_fit)
        if self.metric == "top1":
            return 100.0 * float(self.clf.score(x, y))
        cm = confusion_matrix(y, self.clf.predict(x))
        with np.errstate(invalid="ignore", divide="ignore"):  # a predicted class absent from y: nan
            return 100.0 * float((cm.diagonal() / cm.sum(axis=1)).mean())


def sweep(
    clf: ReferenceLogReg,
    cs: Sequence[float],
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
) -> tuple[float, float, list[tuple[float, float]]]:
    """``LinearTester.validate``: ``(best C, its val score, [(C, val score)])``; a C is kept when its
    score is strictly above the best so far, which starts at 0 (so ties keep the larger C, nan never wins)."""
    best_score, best_c, curve = 0.0, None, []
    for C in cs:
        score = clf.fit_score(C, *train, *val)
        curve.append((C, score))
        if score > best_score:
            best_score, best_c = score, C
    if best_c is None:
        raise ValueError("no value of C scored above 0 on val (the reference has no C to report then)")
    return best_c, best_score, curve


def as_arrays(x: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Features as float64 (what scikit-learn 0.24's lbfgs fitted), labels as ints, as numpy."""
    return x.detach().cpu().numpy().astype(np.float64), y.detach().cpu().numpy().astype(int)


def run_reference(
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    trainval: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    metric: str,
    num_wd: int = NUM_WD,
) -> tuple[dict[str, Any], ReferenceLogReg]:
    """Sweep C on (train, val), refit train+val from the sweep's last state, score test (``validate``
    then ``evaluate``). Returns a JSON-ready dict and the final classifier."""
    clf = ReferenceLogReg(metric)
    best_c, best_val, curve = sweep(clf, c_values(num_wd), train, val)
    test_score = clf.fit_score(best_c, *trainval, *test)
    sizes = {"train": len(train[0]), "val": len(val[0]), "trainval": len(trainval[0]), "test": len(test[0])}
    curve_json = [[c, None if math.isnan(v) else v] for c, v in curve]
    result = {
        "metric": metric,
        "test": test_score,
        "best_C": best_c,
        "val": best_val,
        "val_curve": curve_json,
        "sizes": sizes,
    }
    return result, clf


def reference_protocol(
    *splits: tuple[np.ndarray, np.ndarray], metric: str, num_wd: int = NUM_WD
) -> dict[str, Any]:
    """:func:`run_reference`'s results only, for ``(train, val, trainval, test)``."""
    return run_reference(*splits, metric, num_wd)[0]  # type: ignore[misc]
