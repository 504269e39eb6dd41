"""Source-only GSG backward: same loss and gradients as the reference formulation when normalisation
does not depend on the batch; same selection, fewer online passes in train mode."""

import copy

import pytest
import torch
from torch import nn

from gsg_zoo.method.learner import LearnerConfig, SelfSupervisedLearner

NARROW = {"channels": (16, 16, 32, 32)}  # a narrow CIFAR ResNet-18 keeps float64 steps fast
TINY = dict(
    backbone="resnet18_cifar",
    backbone_kwargs=NARROW,
    projector_hidden_dim=32,
    projector_dim=16,
    predictor_hidden_dim=8,
)


def make(method, norm, **kw):
    """A float64 learner whose normalisation is batch-independent (``norm``: 'eval-bn' or 'groupnorm')."""
    extra = {"backbone_kwargs": {**NARROW, "norm_layer": "groupnorm1"}} if norm == "groupnorm" else {}
    torch.manual_seed(1)
    learner = SelfSupervisedLearner(LearnerConfig.for_method(method, **{**TINY, **extra, **kw})).double()
    g = torch.Generator().manual_seed(5)
    for m in learner.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g, dtype=torch.float64) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g, dtype=torch.float64) + 0.5)
            m.eval()  # batch-independent: running statistics
    if learner.target_encoder is not None:  # an EMA encoder that differs from the online one
        with torch.no_grad():
            for p in learner.target_encoder.parameters():
                p.add_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.05)
    return learner


def views(n=8, size=8, seed=7):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 3, size, size, generator=g, dtype=torch.float64) for _ in range(4)]


def grads(learner):
    return {k: p.grad for k, p in learner.online_modules().named_parameters()}


@pytest.mark.parametrize("norm", ["eval-bn", "groupnorm"])
@pytest.mark.parametrize("method", ["simsiam_gsg", "byol_gsg"])
@pytest.mark.parametrize("predictor", [True, False])
def test_source_only_equals_reference_exactly(method, predictor, norm):
    ref = make(method, norm, predictor=predictor)
    fast = copy.deepcopy(ref)
    fast.config = LearnerConfig(**{**ref.config.to_dict(), "source_only": True})
    vs = views()
    torch.manual_seed(11)
    out_ref = ref(vs)
    torch.manual_seed(11)
    out_fast = fast(vs)
    assert torch.equal(out_ref.pairing, out_fast.pairing)
    assert torch.equal(out_ref.selection, out_fast.selection)
    assert len(set(out_ref.selection.tolist())) > 1  # the test exercises several source choices
    out_ref.loss.backward()
    out_fast.loss.backward()
    assert out_fast.loss.dtype == torch.float64
    torch.testing.assert_close(out_fast.loss, out_ref.loss, rtol=1e-12, atol=1e-12)
    g_ref, g_fast = grads(ref), grads(fast)
    checked = 0
    for name, g in g_ref.items():
        if g is None:
            assert g_fast[name] is None or not g_fast[name].any(), name
            continue
        torch.testing.assert_close(g_fast[name], g, rtol=1e-9, atol=1e-12, msg=name)
        checked += int(g.abs().sum() > 0)
    assert checked > 10
    if fast.target_encoder is not None:
        assert all(p.grad is None for p in fast.target_encoder.parameters())


def count_calls(module):
    calls = []
    module.register_forward_hook(lambda m, i, o: calls.append(torch.is_grad_enabled()))
    return calls


@pytest.mark.parametrize("method", ["simsiam_gsg", "byol_gsg"])
def test_train_mode_bn_same_selection_fewer_grad_passes(method):
    torch.manual_seed(1)
    ref = SelfSupervisedLearner(LearnerConfig.for_method(method, **TINY))
    fast = copy.deepcopy(ref)
    fast.config = LearnerConfig(**{**ref.config.to_dict(), "source_only": True})
    vs = [v.float() for v in views(n=16, size=16)]
    online = count_calls(fast.encoder)
    torch.manual_seed(3)
    out_ref = ref(vs)
    torch.manual_seed(3)
    out_fast = fast(vs)
    if method == "simsiam_gsg":  # targets = online projections of the per-view batches in both
        assert torch.equal(out_ref.selection, out_fast.selection)
        assert online == [False] * 4 + [True] * 2
    else:  # EMA targets: also the same per-view batches
        assert torch.equal(out_ref.selection, out_fast.selection)
        assert online == [True] * 2
    out_fast.loss.backward()
    assert torch.isfinite(out_fast.loss)
    assert all(p.grad is not None for p in fast.encoder.parameters())


def test_source_only_requires_gsg():
    with pytest.raises(ValueError, match="GSG methods only"):
        SelfSupervisedLearner(LearnerConfig.for_method("byol", source_only=True, **TINY))
