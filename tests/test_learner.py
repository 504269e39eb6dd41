"""The composable learner against an independent re-implementation of each method."""

import copy

import pytest
import torch
import torch.nn.functional as F
from test_losses import reference_loss

from gsg_zoo.method.ema import ema_momentum, ema_update
from gsg_zoo.method.learner import LearnerConfig, SelfSupervisedLearner
from gsg_zoo.method.pairing import pair_indices, random_derangement

TINY = dict(backbone="resnet18_cifar", projector_hidden_dim=32, projector_dim=16, predictor_hidden_dim=8)


def make(method, **kw):
    torch.manual_seed(1)
    return SelfSupervisedLearner(LearnerConfig.for_method(method, **{**TINY, **kw})).double()


def views(k, n=6, size=8):
    g = torch.Generator().manual_seed(7)
    return [torch.randn(n, 3, size, size, generator=g, dtype=torch.float64) for _ in range(k)]


def reference_step(learner, vs, pairing=None):
    """Independent formula: encode every view, all-candidates GSG or the symmetric loss."""
    enc, pred = learner.encoder, learner.predictor
    zs = [enc.projector(enc.backbone(v)) for v in vs]
    ps = [pred(z) for z in zs]
    if learner.target_encoder is not None:
        with torch.no_grad():
            ts = [learner.target_encoder.projector(learner.target_encoder.backbone(v)) for v in vs]
    else:
        ts = [z.detach() for z in zs]
    if pairing is None:
        cos = lambda a, b: F.cosine_similarity(a, b, dim=1).mean()  # noqa: E731
        return -0.5 * (cos(ps[0], ts[1]) + cos(ps[1], ts[0]))
    r = pairing
    return reference_loss([ps[0], ps[1], ps[2][r], ps[3][r]], [ts[0], ts[1], ts[2][r], ts[3][r]])


def perturb_target(learner) -> None:
    """Make the EMA encoder differ from the online one, so targets taken from the wrong encoder show."""
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for t in [*learner.target_encoder.parameters(), *learner.target_encoder.buffers()]:
            if t.is_floating_point():
                t.add_(0.5 * torch.randn(t.shape, generator=g, dtype=t.dtype))


@pytest.mark.parametrize("method", ["simsiam", "simsiam_gsg", "byol", "byol_gsg"])
@pytest.mark.parametrize("predictor", [True, False])
def test_learner_matches_reference_values_and_gradients(method, predictor):
    learner = make(method, predictor=predictor)
    if learner.target_encoder is not None:  # BYOL, BYOL+GSG: targets (and GSG distances) from the EMA copy
        perturb_target(learner)
    twin = copy.deepcopy(learner)
    vs = views(learner.config.num_views)
    out = learner(vs)
    out.loss.backward()
    ref = reference_step(twin, vs, out.pairing)
    ref.backward()
    assert torch.allclose(out.loss.double(), ref, atol=1e-6), (out.loss, ref)
    online = dict(learner.online_modules().named_parameters())
    online_ref = dict(twin.online_modules().named_parameters())
    n_with_grad = 0
    for name, p in online.items():
        g, g_ref = p.grad, online_ref[name].grad
        if g_ref is None:
            assert g is None or not g.abs().any(), name
            continue
        n_with_grad += 1
        assert torch.allclose(g, g_ref, atol=1e-6), name
    assert n_with_grad > 0
    if learner.target_encoder is not None:
        assert all(p.grad is None and not p.requires_grad for p in learner.target_encoder.parameters())
    if method.endswith("gsg"):
        assert out.selection.shape == (6,) and out.pairing.shape == (6,)


def test_gsg_distances_use_ema_outputs_for_byol():
    learner = make("byol_gsg")
    perturb_target(learner)
    vs = views(4)
    torch.manual_seed(3)
    out = learner(vs)
    with torch.no_grad():
        t = [learner.target_encoder(v)[1] for v in vs]
    r = out.pairing
    d = torch.stack(
        [
            (a - b).norm(dim=1)
            for a, b in ((t[0], t[2][r]), (t[0], t[3][r]), (t[1], t[2][r]), (t[1], t[3][r]))
        ],
        1,
    )
    assert torch.equal(out.selection, d.argmin(1))


def test_view_count_and_shape_errors():
    learner = make("simsiam_gsg")
    with pytest.raises(ValueError, match="needs 4 views"):
        learner(views(2))
    bad = views(4)
    bad[3] = torch.randn(6, 3, 10, 10, dtype=torch.float64)
    with pytest.raises(ValueError, match="one shape"):
        learner(bad)
    with pytest.raises(ValueError, match="unknown method"):
        LearnerConfig.for_method("moco")


def test_ema_update_numerics():
    learner = make("byol")
    with torch.no_grad():
        for p in learner.encoder.parameters():
            p.add_(1.0)
    before = [p.clone() for p in learner.target_encoder.parameters()]
    m = learner.update_target(step=0, total_steps=10)
    assert m == 0.99
    for b, t, o in zip(before, learner.target_encoder.parameters(), learner.encoder.parameters()):
        assert torch.allclose(t, 0.99 * b + 0.01 * o)
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 3)
    with pytest.raises(ValueError):
        ema_update(a, torch.nn.Sequential(a, b), 0.5)


def test_ema_cosine_schedule():
    assert ema_momentum(0.996, 0, 100, "cosine") == pytest.approx(0.996)
    assert ema_momentum(0.996, 50, 100, "cosine") == pytest.approx(0.998)
    assert ema_momentum(0.996, 100, 100, "cosine") == pytest.approx(1.0)
    with pytest.raises(ValueError):
        ema_momentum(0.9, 0, 1, "linear")


def test_derangement_has_no_fixed_points_and_is_a_permutation():
    g = torch.Generator().manual_seed(0)
    for n in [2, 3, 5, 64, 513]:
        for _ in range(20):
            r = random_derangement(n, g)
            assert sorted(r.tolist()) == list(range(n))
            assert not (r == torch.arange(n)).any()
    assert random_derangement(1).tolist() == [0]
    fixed = sum(int((pair_indices(16, "permutation", g) == torch.arange(16)).sum()) for _ in range(300))
    assert 150 < fixed < 450  # randperm has ~1 fixed point per batch
    with pytest.raises(ValueError):
        pair_indices(4, "shuffle")


def test_bfloat16_autocast_step():
    learner = SelfSupervisedLearner(LearnerConfig.for_method("simsiam_gsg", **TINY))
    vs = [v.float() for v in views(4)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = learner(vs)
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad.dtype == torch.float32 for p in learner.encoder.parameters() if p.grad is not None)


def test_no_predictor_gsg_is_projection_identity():
    learner = make("simsiam_gsg", predictor=False)
    assert isinstance(learner.predictor, torch.nn.Identity)
