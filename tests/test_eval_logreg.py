"""L-BFGS logistic regression against scikit-learn; transfer metrics against direct definitions."""

import numpy as np
import pytest
import torch

from gsg_zoo.eval.logreg import Standardizer, c_grid, fit_logreg, objective, sweep_c, transfer_protocol
from gsg_zoo.eval.metrics import mean_per_class_accuracy, top1_accuracy, voc07_average_precision, voc07_map

sklearn_lm = pytest.importorskip("sklearn.linear_model")


def _problem(n=240, d=12, k=4, noise=1.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(k, d, generator=g)
    y = torch.arange(n) % k
    x = centers[y] + noise * torch.randn(n, d, generator=g)
    return x.double(), y


@pytest.mark.parametrize("C", [0.01, 1.0, 50.0])
def test_multinomial_matches_sklearn(C):
    x, y = _problem()
    ours = fit_logreg(x, y, C, max_iter=3000, tol=1e-9)
    sk = sklearn_lm.LogisticRegression(C=C, max_iter=10000, tol=1e-12).fit(x.numpy(), y.numpy())
    w, b = torch.from_numpy(sk.coef_.T.copy()), torch.from_numpy(sk.intercept_.copy())
    # same objective value at both optima, ours never worse
    sk_obj = objective(x, y, w, b, C).item()
    assert ours.objective <= sk_obj + 1e-7
    assert ours.objective == pytest.approx(sk_obj, rel=1e-5)
    p_ours = torch.softmax(ours.decision_function(x), dim=1).numpy()
    np.testing.assert_allclose(p_ours, sk.predict_proba(x.numpy()), atol=1e-4)
    assert (p_ours.argmax(1) == sk.predict(x.numpy())).mean() == 1.0


def test_binary_multilabel_matches_sklearn_per_class():
    x, y = _problem(k=3)
    targets = torch.stack(
        [(y == 0) | (y == 1), y == 2, (y == 1) & (torch.arange(len(y)) % 2 == 0)], 1
    ).double()
    C = 0.5
    ours = fit_logreg(x, targets, C, multilabel=True, max_iter=3000, tol=1e-9)
    for c in range(3):
        sk = sklearn_lm.LogisticRegression(C=C, max_iter=10000, tol=1e-12).fit(
            x.numpy(), targets[:, c].numpy()
        )
        np.testing.assert_allclose(
            torch.sigmoid(ours.decision_function(x)[:, c]).numpy(),
            sk.predict_proba(x.numpy())[:, 1],
            atol=1e-4,
        )


def test_c_grid_is_the_protocols():
    cs = c_grid()
    assert len(cs) == 45
    assert cs[0] == pytest.approx(1e-5) and cs[-1] == pytest.approx(1e6)  # 1/C from 1e5 down to 1e-6
    assert all(a < b for a, b in zip(cs, cs[1:]))


def test_sweep_warm_start_picks_sensible_c_and_protocol_scores_test():
    x, y = _problem(n=400, d=30, noise=2.5)
    xtr, ytr, xval, yval = x[:200], y[:200], x[200:300], y[200:300]
    std = Standardizer.fit(xtr)
    sweep = sweep_c(std(xtr), ytr, std(xval), yval, "top1", c_grid(9))
    assert [c for c, _ in sweep.curve] == c_grid(9)
    assert sweep.best_val == max(v for _, v in sweep.curve)
    assert sweep.curve[0][1] <= sweep.best_val  # the heaviest regularisation is not better than the best
    # warm start changes the path, not the optimum
    cold = fit_logreg(std(xtr), ytr, c_grid(9)[4])
    assert sweep.models[c_grid(9)[4]].objective == pytest.approx(cold.objective, rel=1e-4)
    res = transfer_protocol(
        (xtr, ytr),
        (xval, yval),
        (x[:300], y[:300]),
        (x[300:], y[300:]),
        "mean_per_class",
        cs=c_grid(9),
        dtype=torch.float64,
    )
    assert res["best_C"] == sweep.best_C
    assert res["sizes"] == {"train": 200, "val": 100, "trainval": 300, "test": 100}
    assert 50.0 < res["test"] <= 100.0


def test_metrics_match_definitions():
    scores = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.1, 0.9]])
    labels = torch.tensor([0, 0, 0, 0, 1])
    assert top1_accuracy(scores, labels) == pytest.approx(60.0)
    assert mean_per_class_accuracy(scores, labels) == pytest.approx(100 * (2 / 4 + 1) / 2)


def _voc07_ap_reference(scores, positives):
    """The VOC2007 devkit's voc_ap(use_07_metric=True), transcribed."""
    order = np.argsort(-scores, kind="stable")
    tp = positives[order].astype(float)
    fp = 1 - tp
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    rec, prec = tp / positives.sum(), tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    ap = 0.0
    for t in np.arange(0.0, 1.1, 0.1):
        p = 0 if np.sum(rec >= t) == 0 else np.max(prec[rec >= t])
        ap += p / 11.0
    return ap


def test_voc07_map_matches_devkit():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(60, 4))
    targets = (rng.random((60, 4)) < 0.3).astype(float)
    targets[:, 2] = 0  # a class without positives is left out of the mean
    targets[0, 2] = 1
    aps = [_voc07_ap_reference(scores[:, c], targets[:, c]) for c in range(4)]
    for c in range(4):
        assert voc07_average_precision(
            torch.tensor(scores[:, c]), torch.tensor(targets[:, c])
        ) == pytest.approx(aps[c])
    assert voc07_map(torch.tensor(scores), torch.tensor(targets)) == pytest.approx(100 * np.mean(aps))
    perfect = torch.tensor(targets[:, :2]) * 2 - 1
    assert voc07_map(perfect, torch.tensor(targets[:, :2])) == pytest.approx(100.0)
