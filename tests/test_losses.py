"""GSG selection and loss against an independent brute-force formula (values and gradients)."""

import math

import pytest
import torch
import torch.nn.functional as F

from gsg_zoo.method.losses import (
    gsg_loss,
    gsg_select,
    gsg_sources,
    gsg_targets,
    negative_cosine,
    pairwise_distances,
    symmetric_negative_cosine,
)


def brute_force_selection(z):
    """Per sample: Python argmin over the 4 Euclidean distances, first pair wins ties."""
    z11, z12, z21, z22 = (t.tolist() for t in z)
    out = []
    for i in range(len(z11)):
        d = [
            math.dist(z11[i], z21[i]),
            math.dist(z11[i], z22[i]),
            math.dist(z12[i], z21[i]),
            math.dist(z12[i], z22[i]),
        ]
        best = 0
        for k in range(1, 4):
            if d[k] < d[best]:
                best = k
        out.append(best)
    return torch.tensor(out)


def reference_loss(p, z):
    """All four candidate losses, one-hot mask on the argmin pair, mean (the reference formulation)."""
    p11, p12, p21, p22 = p
    z11, z12, z21, z22 = (t.detach() for t in z)
    cos = lambda a, b: F.cosine_similarity(a, b, dim=1)  # noqa: E731
    cand = torch.stack(
        [
            -0.5 * (cos(p11, z12) + cos(p21, z22)),
            -0.5 * (cos(p11, z12) + cos(p22, z21)),
            -0.5 * (cos(p12, z11) + cos(p21, z22)),
            -0.5 * (cos(p12, z11) + cos(p22, z21)),
        ],
        dim=1,
    )
    d = torch.stack(
        [
            torch.cdist(a[:, None], b[:, None]).flatten()
            for a, b in ((z11, z21), (z11, z22), (z12, z21), (z12, z22))
        ],
        dim=1,
    )
    onehot = F.one_hot(d.argmin(1), 4).to(cand.dtype)
    return (cand * onehot).sum(1).mean()


def _leaves(n, d, requires_grad=True):
    return [torch.randn(n, d, dtype=torch.float64, requires_grad=requires_grad) for _ in range(4)]


@pytest.mark.parametrize("n", [1, 2, 7, 64])
def test_selection_matches_brute_force(n):
    z = [torch.randn(n, 5) for _ in range(4)]
    assert torch.equal(gsg_select(z), brute_force_selection(z))


def test_selection_covers_all_pairs():
    sel = gsg_select([torch.randn(512, 3) for _ in range(4)])
    assert set(sel.tolist()) == {0, 1, 2, 3}


def test_selection_ties_go_to_first_pair():
    base = torch.randn(6, 4)
    z11, z12 = torch.randn(6, 4), torch.randn(6, 4) + 100  # view 12 is far: only pairs of 11 compete
    # z21 == z22: (11,21) and (11,22) tie exactly -> pair 0
    assert gsg_select([z11, z12, base, base.clone()]).tolist() == [0] * 6
    # z11 == z12 and z21 == z22: all four tie -> pair 0
    assert gsg_select([base, base.clone(), z11, z11.clone()]).tolist() == [0] * 6
    # tie between (12,21) and (12,22) only, with 11 far away -> pair 2
    assert gsg_select([z12, z11, base, base.clone()]).tolist() == [2] * 6


def test_selection_has_no_gradient():
    z = _leaves(4, 3)
    assert not pairwise_distances(z).requires_grad


def test_cosine_distance_option():
    z = [torch.randn(9, 4) for _ in range(4)]
    d = pairwise_distances(z, "cosine")
    assert torch.allclose(d[:, 1], 1 - F.cosine_similarity(z[0], z[3], dim=1))
    with pytest.raises(ValueError, match="euclidean"):
        pairwise_distances(z, "manhattan")


@pytest.mark.parametrize("n", [1, 3, 33])
def test_gsg_loss_value_and_gradients_match_reference(n):
    p, z = _leaves(n, 8), _leaves(n, 8)
    loss = gsg_loss(p, z)
    loss.backward()
    got = [t.grad.clone() if t.grad is not None else torch.zeros_like(t) for t in p]
    assert all(t.grad is None for t in z), "a gradient reached a target tensor"
    for t in p:
        t.grad = None
    ref = reference_loss(p, z)
    ref.backward()
    assert torch.allclose(loss.double(), ref, atol=1e-6)
    for g, t in zip(got, p):
        want = t.grad if t.grad is not None else torch.zeros_like(t)
        assert torch.allclose(g, want, atol=1e-6)


def test_gsg_loss_only_sources_receive_gradient():
    p, z = _leaves(16, 4), [t.detach() for t in _leaves(16, 4)]
    sel = gsg_select(z)
    gsg_loss(p, z, selection=sel).backward()
    src1 = torch.where(sel // 2 == 0, 0, 1)
    src2 = torch.where(sel % 2 == 0, 2, 3)
    for i in range(16):
        for v in range(4):
            nonzero = bool(p[v].grad[i].abs().sum() > 0)
            assert nonzero == (v in (src1[i].item(), src2[i].item()))


def test_gsg_loss_explicit_selection_and_bad_shapes():
    p, z = _leaves(5, 3), _leaves(5, 3)
    for k in range(4):
        sel = torch.full((5,), k)
        a, b = k // 2, k % 2
        pa, za = (p[1], z[0]) if a else (p[0], z[1])
        pb, zb = (p[3], z[2]) if b else (p[2], z[3])
        want = -0.5 * (F.cosine_similarity(pa, za, dim=1) + F.cosine_similarity(pb, zb, dim=1)).mean()
        assert torch.allclose(gsg_loss(p, z, selection=sel).double(), want)
    with pytest.raises(ValueError, match="one shape"):
        gsg_loss([p[0], p[1], p[2], torch.randn(5, 4)], z)
    with pytest.raises(ValueError, match="4 tensors"):
        gsg_loss(p[:3], z)
    with pytest.raises(ValueError, match="selection"):
        gsg_loss(p, z, selection=torch.zeros(4, dtype=torch.long))


def test_symmetric_negative_cosine():
    p1, p2, z1, z2 = _leaves(6, 5)
    loss = symmetric_negative_cosine(p1, p2, z1, z2)
    want = -0.5 * (F.cosine_similarity(p1, z2.detach()).mean() + F.cosine_similarity(p2, z1.detach()).mean())
    assert torch.allclose(loss.double(), want)
    loss.backward()
    assert z1.grad is None and z2.grad is None and p1.grad is not None


def test_negative_cosine_leaves_stop_gradient_to_caller():
    p, z = torch.randn(3, 4, requires_grad=True), torch.randn(3, 4, requires_grad=True)
    negative_cosine(p, z).backward()
    assert z.grad is not None


def test_bfloat16_inputs_give_float32_loss():
    p = [t.bfloat16() for t in _leaves(8, 16, requires_grad=False)]
    z = [t.bfloat16() for t in _leaves(8, 16, requires_grad=False)]
    loss = gsg_loss(p, z)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    ref = reference_loss([t.float() for t in p], [t.float() for t in z])
    assert torch.allclose(loss, ref, atol=1e-5)


@pytest.mark.parametrize("shape", [(6, 5), (6, 3, 4, 4)])
def test_sources_and_targets_follow_the_named_pair_for_any_shape(shape):
    """Pair k = 2a + b names views (1a, 2b) as sources; their partners (1a', 2b') are the targets."""
    four = [torch.randn(shape) for _ in range(4)]  # x11, x12, x21, x22
    selection = torch.tensor([0, 1, 2, 3, 2, 1])
    src1, src2 = gsg_sources(four, selection)
    tgt1, tgt2 = gsg_targets(four, selection)
    for i, k in enumerate(selection.tolist()):
        a, b = divmod(k, 2)  # image 1's view a, image 2's view b (0: first view, 1: second)
        assert torch.equal(src1[i], four[a][i]) and torch.equal(src2[i], four[2 + b][i])
        assert torch.equal(tgt1[i], four[1 - a][i]) and torch.equal(tgt2[i], four[3 - b][i])
