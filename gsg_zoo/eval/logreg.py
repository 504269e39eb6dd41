"""L2-regularised logistic regression fitted by full-batch L-BFGS in torch (the transfer protocol).

The objective is scikit-learn's ``LogisticRegression(C=C)`` divided by ``C * n`` (same minimiser)::

    multinomial:  mean_i CE(x_i W + b, y_i)            + ||W||^2 / (2 C n)
    multi-label:  sum_c mean_i BCE(x_i w_c + b_c, y_ic) + ||W||^2 / (2 C n)   (one binary model per class)

Biases are not penalised. :func:`sweep_c` fits a path of ``C`` values from the strongest
regularisation down, warm-starting each fit from the previous solution.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from .metrics import score


def c_grid(num: int = 45, low: float = 1e-6, high: float = 1e5) -> list[float]:
    """``C = 1/lambda`` for ``num`` log-spaced ``lambda`` in ``[low, high]``, strongest regularisation first."""
    lambdas = torch.logspace(math.log10(high), math.log10(low), num, dtype=torch.float64)
    return [1.0 / lam.item() for lam in lambdas]


@dataclass
class Standardizer:
    """z-score features with training statistics (constant features are left centred, not scaled)."""

    mean: Tensor
    std: Tensor

    @classmethod
    def fit(cls, x: Tensor) -> Standardizer:
        std = x.std(dim=0, unbiased=False)
        return cls(x.mean(dim=0), torch.where(std > 1e-8, std, torch.ones_like(std)))

    def __call__(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


@dataclass
class LogRegModel:
    weight: Tensor  # [D, K]
    bias: Tensor  # [K]
    C: float
    objective: float = float("nan")
    iterations: int = 0

    def decision_function(self, x: Tensor) -> Tensor:
        return x.to(self.weight) @ self.weight + self.bias


def objective(
    x: Tensor, y: Tensor, weight: Tensor, bias: Tensor, C: float, multilabel: bool = False
) -> Tensor:
    """The (scaled) scikit-learn objective above."""
    logits = x @ weight + bias
    if multilabel:
        data = F.binary_cross_entropy_with_logits(logits, y.to(logits), reduction="sum") / x.shape[0]
    else:
        data = F.cross_entropy(logits, y)
    return data + weight.pow(2).sum() / (2.0 * C * x.shape[0])


def fit_logreg(
    x: Tensor,
    y: Tensor,
    C: float,
    *,
    num_classes: int | None = None,
    multilabel: bool = False,
    init: LogRegModel | None = None,
    max_iter: int = 1000,
    tol: float = 1e-6,
    history_size: int = 20,
) -> LogRegModel:
    """Fit by L-BFGS with strong-Wolfe line search on ``x``'s device and dtype.

    ``y`` holds class indices ``[n]`` or, with ``multilabel``, 0/1 targets ``[n, K]``. Stops when the
    largest gradient entry falls below ``tol`` or after ``max_iter`` iterations.
    """
    if multilabel:
        k = y.shape[1]
    else:
        y = y.to(device=x.device, dtype=torch.long)
        k = int(num_classes if num_classes is not None else y.max().item() + 1)
    y = y.to(x.device)
    if init is not None:
        weight = init.weight.detach().to(x).clone().requires_grad_(True)
        bias = init.bias.detach().to(x).clone().requires_grad_(True)
    else:
        weight = torch.zeros(x.shape[1], k, dtype=x.dtype, device=x.device, requires_grad=True)
        bias = torch.zeros(k, dtype=x.dtype, device=x.device, requires_grad=True)
    opt = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iter,
        max_eval=max_iter * 5 // 4,
        tolerance_grad=tol,
        tolerance_change=1e-12 if x.dtype == torch.float64 else 1e-9,
        history_size=history_size,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        opt.zero_grad(set_to_none=False)
        loss = objective(x, y, weight, bias, C, multilabel)
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        final = objective(x, y, weight, bias, C, multilabel).item()
    n_iter = int(opt.state[opt._params[0]].get("n_iter", 0))
    return LogRegModel(weight.detach(), bias.detach(), C, final, n_iter)


@dataclass
class SweepResult:
    best_C: float
    best_val: float
    curve: list[tuple[float, float]] = field(default_factory=list)  # (C, validation metric)
    models: dict[float, LogRegModel] = field(default_factory=dict)
    seconds: float = 0.0


def sweep_c(
    x_train: Tensor,
    y_train: Tensor,
    x_val: Tensor,
    y_val: Tensor,
    metric: str,
    cs: Sequence[float] | None = None,
    *,
    num_classes: int | None = None,
    multilabel: bool = False,
    max_iter: int = 1000,
    tol: float = 1e-6,
    progress: bool = False,
    desc: str = "C sweep",
) -> SweepResult:
    """Fit every ``C`` (warm-started in order) and pick the best validation ``metric`` (ties: smaller C)."""
    from tqdm.auto import tqdm

    cs = list(cs if cs is not None else c_grid())
    t0 = time.perf_counter()
    result = SweepResult(best_C=cs[0], best_val=-math.inf)
    prev = None
    for C in tqdm(cs, desc=desc, disable=not progress, unit="C"):
        model = fit_logreg(
            x_train,
            y_train,
            C,
            num_classes=num_classes,
            multilabel=multilabel,
            init=prev,
            max_iter=max_iter,
            tol=tol,
        )
        with torch.no_grad():
            val = score(metric, model.decision_function(x_val).cpu(), y_val.cpu())
        result.curve.append((C, val))
        result.models[C] = model
        if val > result.best_val:
            result.best_C, result.best_val = C, val
        prev = model
    result.seconds = time.perf_counter() - t0
    return result


def transfer_protocol(
    train: tuple[Tensor, Tensor],
    val: tuple[Tensor, Tensor],
    trainval: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    metric: str,
    *,
    cs: Sequence[float] | None = None,
    num_classes: int | None = None,
    multilabel: bool = False,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    max_iter: int = 1000,
    tol: float = 1e-6,
    progress: bool = False,
    desc: str = "C sweep",
) -> dict[str, object]:
    """Choose C on (train, val), refit on train+val, score on test. Features are standardised with the
    statistics of the split being fitted. Returns a JSON-ready dict."""
    t0 = time.perf_counter()

    def prep(fit_on: Tensor, *xs: Tensor) -> list[Tensor]:
        std = Standardizer.fit(fit_on.to(device, dtype))
        return [std(x.to(device, dtype)) for x in xs]

    xtr, xval = prep(train[0], train[0], val[0])
    sweep = sweep_c(
        xtr,
        train[1],
        xval,
        val[1],
        metric,
        cs,
        num_classes=num_classes,
        multilabel=multilabel,
        max_iter=max_iter,
        tol=tol,
        progress=progress,
        desc=desc,
    )
    xtv, xte = prep(trainval[0], trainval[0], test[0])
    final = fit_logreg(
        xtv,
        trainval[1],
        sweep.best_C,
        num_classes=num_classes,
        multilabel=multilabel,
        init=sweep.models[sweep.best_C],
        max_iter=max_iter,
        tol=tol,
    )
    with torch.no_grad():
        test_score = score(metric, final.decision_function(xte).cpu(), test[1].cpu())
    return {
        "metric": metric,
        "test": test_score,
        "best_C": sweep.best_C,
        "val": sweep.best_val,
        "val_curve": [[c, v] for c, v in sweep.curve],
        "sizes": {
            "train": len(train[0]),
            "val": len(val[0]),
            "trainval": len(trainval[0]),
            "test": len(test[0]),
        },
        "sweep_seconds": sweep.seconds,
        "seconds": time.perf_counter() - t0,
    }
