"""``model.gsg_selection`` (min / max / random) and ``distance`` against an independent per-sample formula
written from the method page's table (values and gradients), in the loss and in the learner."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gsg_zoo.method.learner import LearnerConfig, SelfSupervisedLearner
from gsg_zoo.method.losses import gsg_loss, gsg_select

# View order 11, 12, 21, 22 = indices 0..3. Candidate pairs, and per pair the two (source, target) terms
# of the per-sample loss, literally the table of GSG.md.
CANDIDATES = ((0, 2), (0, 3), (1, 2), (1, 3))  # (11,21) (11,22) (12,21) (12,22)
TERMS = (((0, 1), (2, 3)), ((0, 1), (3, 2)), ((1, 0), (2, 3)), ((1, 0), (3, 2)))


def ref_distance(a, b, distance):
    a, b = a.tolist(), b.tolist()
    if distance == "euclidean":
        return math.dist(a, b)
    dot = sum(x * y for x, y in zip(a, b))
    return 1 - dot / (math.hypot(*a) * math.hypot(*b))


def ref_select(z, rule, distance="euclidean"):
    """Per sample, in Python: the nearest (min) or farthest (max) cross-image pair; first wins ties."""
    out = []
    for i in range(z[0].shape[0]):
        d = [ref_distance(z[a][i], z[b][i], distance) for a, b in CANDIDATES]
        best = 0
        for k in range(1, 4):
            if (d[k] < d[best]) if rule == "min" else (d[k] > d[best]):
                best = k
        out.append(best)
    return torch.tensor(out)


def ref_loss(p, z, selection, local_p=()):
    """Per sample: -1/(2+L) [cos(p_src1, sg z_tgt1) + cos(p_src2, sg z_tgt2) + sum_j cos(q_j, sg z_tgt1)]."""
    total = 0
    n = p[0].shape[0]
    for i in range(n):
        (s1, t1), (s2, t2) = TERMS[int(selection[i])]
        terms = [
            F.cosine_similarity(p[s1][i], z[t1][i].detach(), dim=0),
            F.cosine_similarity(p[s2][i], z[t2][i].detach(), dim=0),
        ]
        terms += [F.cosine_similarity(q[i], z[t1][i].detach(), dim=0) for q in local_p]
        total = total - sum(terms) / len(terms)
    return total / n


def leaves(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(4)]


def grads_of(loss, tensors):
    return torch.autograd.grad(loss, tensors, allow_unused=True, materialize_grads=True)


@pytest.mark.parametrize("rule", ["min", "max"])
@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_min_max_selection_value_and_gradient(rule, distance):
    p, z = leaves(17, 6, 0), leaves(17, 6, 1)
    sel = gsg_select(z, distance, rule)
    assert torch.equal(sel, ref_select(z, rule, distance))
    loss = gsg_loss(p, z, selection=sel)
    ref = ref_loss(p, z, ref_select(z, rule, distance))
    assert torch.allclose(loss.double(), ref, atol=1e-10)
    for g, g_ref in zip(grads_of(loss, p + z), grads_of(ref, p + z)):
        assert torch.allclose(g, g_ref, atol=1e-10)
    assert all(not g.any() for g in grads_of(gsg_loss(p, z, selection=sel), z)), "gradient reached a target"


def test_max_is_not_min_and_default_is_min():
    z = [t.detach() for t in leaves(64, 5, 2)]
    assert torch.equal(gsg_select(z), gsg_select(z, rule="min"))
    assert not torch.equal(gsg_select(z, rule="max"), gsg_select(z, rule="min"))


def test_random_selection_is_uniform_reproducible_and_blind_to_z():
    z = [t.detach() for t in leaves(4000, 3, 3)]
    sel = gsg_select(z, rule="random", generator=torch.Generator().manual_seed(9))
    counts = torch.bincount(sel, minlength=4).double()
    chi2 = ((counts - 1000) ** 2 / 1000).sum()
    assert chi2 < 16.3, counts  # chi-square, 3 dof, p = 0.001
    other_z = [t * -3 + 1 for t in z]
    again = gsg_select(other_z, rule="random", generator=torch.Generator().manual_seed(9))
    assert torch.equal(sel, again)
    near = ref_select([t[:200] for t in z], "min")
    assert 0.15 < (sel[:200] == near).double().mean() < 0.35  # agrees with the guidance by chance only


def test_random_selection_loss_matches_formula():
    p, z = leaves(9, 4, 4), leaves(9, 4, 5)
    sel = gsg_select(z, rule="random", generator=torch.Generator().manual_seed(1))
    loss, ref = gsg_loss(p, z, selection=sel), ref_loss(p, z, sel)
    assert torch.allclose(loss.double(), ref, atol=1e-10)
    for g, g_ref in zip(grads_of(loss, p), grads_of(ref, p)):
        assert torch.allclose(g, g_ref, atol=1e-10)


def test_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="gsg_selection must be one of min, max, random"):
        gsg_select([torch.randn(3, 2)] * 4, rule="median")
    with pytest.raises(ValueError, match="model.gsg_selection must be one of"):
        SelfSupervisedLearner(LearnerConfig.for_method("simsiam_gsg", gsg_selection="nearest", **TINY))
    with pytest.raises(ValueError, match="GSG methods only"):
        SelfSupervisedLearner(LearnerConfig.for_method("simsiam", gsg_selection="max", **TINY))


# --- the learner: every rule, with and without source_only, against the formula on the twin's outputs
TINY = dict(
    backbone="resnet18_cifar",
    backbone_kwargs={"channels": (8, 8, 16, 16)},
    projector_hidden_dim=16,
    projector_dim=8,
    predictor_hidden_dim=4,
)


def make(method, **kw):
    """A float64 learner with BatchNorm on running statistics (batch-independent: the source-only
    formulation then equals the reference one exactly), an EMA target that differs from the online one."""
    torch.manual_seed(1)
    learner = SelfSupervisedLearner(LearnerConfig.for_method(method, **{**TINY, **kw})).double()
    g = torch.Generator().manual_seed(5)
    for m in learner.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g, dtype=torch.float64) * 0.1)
            m.eval()
    if learner.target_encoder is not None:
        with torch.no_grad():
            for t in learner.target_encoder.parameters():
                t.add_(torch.randn(t.shape, generator=g, dtype=torch.float64) * 0.05)
    return learner


def views(k, n=6, size=8, seed=7):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 3, size, size, generator=g, dtype=torch.float64) for _ in range(k)]


def twin_terms(twin, vs, r):
    """Predictions and targets of every view, image 2 re-indexed by ``r``."""
    ps = [twin.predictor(twin.encoder.projector(twin.encoder.backbone(v))) for v in vs]
    target = twin.target_encoder or twin.encoder
    with torch.no_grad():
        zs = [target.projector(target.backbone(v)) for v in vs]
    return [ps[0], ps[1], ps[2][r], ps[3][r]], [zs[0], zs[1], zs[2][r], zs[3][r]]


def check_grads(learner, twin):
    ref = dict(twin.online_modules().named_parameters())
    n = 0
    for name, p in learner.online_modules().named_parameters():
        g, g_ref = p.grad, ref[name].grad
        g = torch.zeros_like(p) if g is None else g
        g_ref = torch.zeros_like(p) if g_ref is None else g_ref
        assert torch.allclose(g, g_ref, atol=1e-9), name
        n += int(g_ref.any())
    assert n > 0


# every rule with and without source_only; each method three times (6 cases, not 12: test time)
@pytest.mark.parametrize(
    "rule, source_only, method",
    [
        ("min", False, "byol_gsg"),
        ("min", True, "simsiam_gsg"),
        ("max", False, "simsiam_gsg"),
        ("max", True, "byol_gsg"),
        ("random", False, "byol_gsg"),
        ("random", True, "simsiam_gsg"),
    ],
)
def test_learner_selection_value_and_gradient(rule, source_only, method):
    distance = "cosine" if method == "byol_gsg" else "euclidean"
    learner = make(method, gsg_selection=rule, source_only=source_only, distance=distance)
    twin = copy.deepcopy(learner)
    vs = views(4)
    out = learner(vs, generator=torch.Generator().manual_seed(3))
    out.loss.backward()
    p4, z4 = twin_terms(twin, vs, out.pairing)
    if rule == "random":  # drawn from the step's generator after the pairing: the same stream
        g = torch.Generator().manual_seed(3)
        from gsg_zoo.method.pairing import pair_indices

        assert torch.equal(out.pairing, pair_indices(6, "derangement", g))
        sel = torch.randint(0, 4, (6,), generator=g)
    else:
        sel = ref_select(z4, rule, distance)
    assert torch.equal(out.selection, sel)
    ref = ref_loss(p4, z4, sel)
    ref.backward()
    assert torch.allclose(out.loss.double(), ref, atol=1e-9), (out.loss, ref)
    check_grads(learner, twin)


def test_random_rule_keeps_the_pairing_stream():
    """The random selection draws after the pairing: same step generator, same pairing as ``min``."""
    vs = views(4)
    outs = [
        make("simsiam_gsg", gsg_selection=rule)(vs, generator=torch.Generator().manual_seed(4))
        for rule in ("min", "random")
    ]
    assert torch.equal(outs[0].pairing, outs[1].pairing)
