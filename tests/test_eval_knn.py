"""Weighted kNN against an independent brute-force implementation."""

import math

import numpy as np
import pytest
import torch

from gsg_zoo.eval.knn import DEFAULT_KS_AND_TS, knn_classify, knn_evaluate, topk_accuracy


def brute_force_votes(train, labels, test, k, t, num_classes):
    """Per query, in float64 numpy: cosine similarities, k largest, summed exp(s/T) votes per class."""
    tr = train / np.linalg.norm(train, axis=1, keepdims=True)
    te = test / np.linalg.norm(test, axis=1, keepdims=True)
    out = []
    for q in te:
        sims = tr @ q
        nn_idx = np.argsort(-sims, kind="stable")[:k]
        votes = np.zeros(num_classes)
        for i in nn_idx:
            votes[labels[i]] += math.exp(sims[i] / t)
        out.append(votes)
    return np.array(out)


def brute_force_knn(train, labels, test, k, t, num_classes, topk=5):
    votes = brute_force_votes(train, labels, test, k, t, num_classes)
    return np.argsort(-votes, axis=1, kind="stable")[:, :topk]


def _problem(n_train=300, n_test=57, dim=16, classes=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, dim, generator=g)
    ytr = torch.randint(0, classes, (n_train,), generator=g)
    yte = torch.randint(0, classes, (n_test,), generator=g)
    xtr = centers[ytr] + 0.8 * torch.randn(n_train, dim, generator=g)
    xte = centers[yte] + 0.8 * torch.randn(n_test, dim, generator=g)
    return xtr * 3.0, ytr, xte, yte  # scaled: normalisation must happen inside


@pytest.mark.parametrize("chunk_size", [1, 10, 1000])
def test_matches_brute_force_for_every_k_and_t(chunk_size):
    xtr, ytr, xte, yte = _problem()
    pairs = [(200, 0.1), (20, 0.07), (5, 0.2), (1, 0.5)]
    ranked = knn_classify(xtr, ytr, xte, pairs, num_classes=7, chunk_size=chunk_size)
    for k, t in pairs:
        votes = brute_force_votes(xtr.double().numpy(), ytr.numpy(), xte.double().numpy(), k, t, 7)
        got = ranked[(k, t)].numpy()
        assert got.shape == (len(xte), 5)
        np.testing.assert_array_equal(got[:, 0], votes.argmax(axis=1))
        # every rank holds a class with the right vote (classes with equal votes may swap)
        got_votes = np.take_along_axis(votes, got, axis=1)
        np.testing.assert_allclose(got_votes, -np.sort(-votes, axis=1)[:, :5], rtol=1e-4)
        assert len(set(got[0])) == 5


def test_accuracies_and_default_pairs():
    xtr, ytr, xte, yte = _problem()
    accs = knn_evaluate(xtr, ytr, xte, yte)
    assert set(accs) == set(DEFAULT_KS_AND_TS)
    for acc in accs.values():
        assert 60.0 < acc["top1"] <= acc["top5"] <= 100.0
    ref = brute_force_knn(xtr.numpy(), ytr.numpy(), xte.numpy(), 20, 0.07, 7)
    assert accs[(20, 0.07)]["top1"] == pytest.approx(100.0 * (ref[:, 0] == yte.numpy()).mean())


def test_k_larger_than_bank_and_few_classes():
    xtr, ytr, xte, _ = _problem(n_train=12, classes=3)
    ranked = knn_classify(xtr, ytr, xte, [(200, 0.1)], num_classes=3)
    ref = brute_force_knn(xtr.numpy(), ytr.numpy(), xte.numpy(), 12, 0.1, 3, topk=3)
    assert ranked[(200, 0.1)].shape == (len(xte), 3)
    np.testing.assert_array_equal(ranked[(200, 0.1)][:, 0].numpy(), ref[:, 0])


def test_topk_accuracy_and_input_checks():
    ranked = torch.tensor([[0, 1], [1, 0], [2, 1]])
    assert topk_accuracy(ranked, torch.tensor([0, 0, 0]), ks=(1, 2)) == {
        "top1": pytest.approx(100 / 3),
        "top2": pytest.approx(200 / 3),
    }
    with pytest.raises(ValueError, match="equal width"):
        knn_classify(torch.randn(5, 3), torch.zeros(5, dtype=torch.long), torch.randn(2, 4))
    with pytest.raises(ValueError, match="T > 0"):
        knn_classify(torch.randn(5, 3), torch.zeros(5, dtype=torch.long), torch.randn(2, 3), [(5, 0.0)])
