"""Losses of SimSiam/BYOL and Guided Stop-Gradient as pure functions.

Every function here is usable from any training loop. ``negative_cosine`` is the raw building block
and places no stop-gradient (the caller decides, as in lightly); the composite losses
``symmetric_negative_cosine`` and ``gsg_loss`` take *target projections* and detach them themselves,
because stop-gradient on the targets is part of their definition.

View order for GSG is always ``11, 12, 21, 22``: views 1 and 2 of image 1 (sample ``i``) and views
1 and 2 of image 2 (the sample that ``i`` is paired with). The four candidate pairs are indexed::

    0: (11, 21)   1: (11, 22)   2: (12, 21)   3: (12, 22)

so for a pair index ``k`` the source of image 1 is view ``k // 2`` and that of image 2 is ``k % 2``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Distance = Literal["euclidean", "cosine"]
Selection = Literal["min", "max", "random"]
SELECTIONS: tuple[str, ...] = ("min", "max", "random")
PAIRS: tuple[tuple[str, str], ...] = (("11", "21"), ("11", "22"), ("12", "21"), ("12", "22"))


def negative_cosine(p: Tensor, z: Tensor) -> Tensor:
    """Mean over the batch of ``-cos(p, z)`` along dim 1. No stop-gradient: the caller places it.

    Shapes: ``p, z: (N, D)`` -> scalar. Computed in at least float32 (for stability under autocast;
    float64 inputs stay float64).
    """
    _check_same_shape(p=p, z=z)
    dtype = torch.promote_types(torch.promote_types(p.dtype, z.dtype), torch.float32)
    return -F.cosine_similarity(p.to(dtype), z.to(dtype), dim=1).mean()


def symmetric_negative_cosine(p1: Tensor, p2: Tensor, z1: Tensor, z2: Tensor) -> Tensor:
    """SimSiam/BYOL loss ``-1/2 [cos(p1, sg z2) + cos(p2, sg z1)]`` averaged over the batch.

    ``z1, z2`` are the target projections of views 1 and 2 (the online ones for SimSiam, the EMA
    encoder's for BYOL); they are detached here. Shapes: all ``(N, D)`` -> scalar.
    """
    return 0.5 * (negative_cosine(p1, z2.detach()) + negative_cosine(p2, z1.detach()))


def pairwise_distances(z: Sequence[Tensor], distance: Distance = "euclidean") -> Tensor:
    """The four cross-image distances per sample, without gradient.

    Args:
        z: four projections ``(z11, z12, z21, z22)``, each ``(N, D)``, unnormalised.
        distance: ``"euclidean"`` (the paper) or ``"cosine"`` (``1 - cos``, for ablations).

    Returns:
        ``(N, 4)`` float32 tensor, columns in the order of :data:`PAIRS`.
    """
    z11, z12, z21, z22 = _four(z, "z")
    with torch.no_grad():
        a = (z11.float(), z11.float(), z12.float(), z12.float())
        b = (z21.float(), z22.float(), z21.float(), z22.float())
        if distance == "euclidean":
            cols = [torch.linalg.vector_norm(x - y, dim=1) for x, y in zip(a, b)]
        elif distance == "cosine":
            cols = [1.0 - F.cosine_similarity(x, y, dim=1) for x, y in zip(a, b)]
        else:
            raise ValueError(f"distance must be 'euclidean' or 'cosine', got {distance!r}")
        return torch.stack(cols, dim=1)


def gsg_select(
    z: Sequence[Tensor],
    distance: Distance = "euclidean",
    rule: Selection = "min",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Index (0..3, see :data:`PAIRS`) of the selected cross-image pair per sample, no gradient.

    ``rule``: ``"min"`` the nearest pair (the paper), ``"max"`` the farthest pair, ``"random"`` a pair
    drawn uniformly per sample from ``generator`` (a CPU generator, default the global RNG; the draw
    does not look at ``z`` beyond its shape and device: the control without guidance). Ties of
    ``min``/``max`` go to the first pair in the order of :data:`PAIRS` (``torch.argmin``/``argmax``
    semantics, as in the reference implementation). Shapes: four ``(N, D)`` -> ``(N,)`` int64.
    """
    if rule == "random":
        n = _four(z, "z")[0].shape[0]
        return torch.randint(0, 4, (n,), generator=generator).to(z[0].device, non_blocking=True)
    if rule not in ("min", "max"):
        raise ValueError(f"gsg_selection must be one of {', '.join(SELECTIONS)}, got {rule!r}")
    d = pairwise_distances(z, distance)
    return d.argmin(dim=1) if rule == "min" else d.argmax(dim=1)


def gsg_loss(
    p: Sequence[Tensor],
    z: Sequence[Tensor],
    *,
    selection: Tensor | None = None,
    distance: Distance = "euclidean",
    local_p: Sequence[Tensor] = (),
) -> Tensor:
    """Guided Stop-Gradient loss, optionally with local crops (multi-crop GSG).

    Per sample, the selected cross-image pair ``(1a, 2b)`` (by :func:`gsg_select` on ``z``; the paper's
    nearest pair by default) names the two *source* views; their positive partners are the targets.
    The ``L`` local crops of image 1 are extra sources predicting image 1's selected target::

        loss_i = -1/(2+L) [cos(p_1a, sg z_1a') + cos(p_2b, sg z_2b') + sum_j cos(q_ij, sg z_1a')]

    and the result is the batch mean (``L = 0``: the paper's ``-1/2 [...]``). Only the chosen terms
    are computed per sample.

    Args:
        p: predictions ``(p11, p12, p21, p22)``, each ``(N, D)`` (the projections themselves when
            there is no predictor).
        z: target projections ``(z11, z12, z21, z22)``, each ``(N, D)``: the online encoder's for
            SimSiam, the EMA encoder's for BYOL. They are detached here and also give the distances.
        selection: optional precomputed ``(N,)`` pair indices (e.g. from another rule, see
            :func:`gsg_select`).
        distance: distance for the nearest-pair selection when ``selection`` is None.
        local_p: predictions ``q_j`` of the local crops of image 1 (sample ``i``'s own image), each
            ``(N, D)``; empty for the paper's loss.

    Returns:
        Scalar loss (float32).
    """
    p11, p12, p21, p22 = _four(p, "p")
    z11, z12, z21, z22 = (t.detach() for t in _four(z, "z"))
    _check_same_shape(p11=p11, z11=z11)
    if selection is None:
        selection = gsg_select((z11, z12, z21, z22), distance)
    if selection.shape != (p11.shape[0],):
        raise ValueError(f"selection must have shape ({p11.shape[0]},), got {tuple(selection.shape)}")
    src1, src2 = gsg_sources((p11, p12, p21, p22), selection)
    tgt1, tgt2 = gsg_targets((z11, z12, z21, z22), selection)
    return guided_loss(src1, tgt1, src2, tgt2, local_p)


def gsg_sources(four: Sequence[Tensor], selection: Tensor) -> tuple[Tensor, Tensor]:
    """The source views the pair ``selection`` ``(N,)`` names among ``(x11, x12, x21, x22)``, each
    ``(N, ...)`` (predictions, projections or images): image 1's (``x12`` where ``selection // 2``,
    else ``x11``) and image 2's (``x22`` where ``selection % 2``, else ``x21``)."""
    x11, x12, x21, x22 = four
    return _pick(x11, x12, (selection // 2).bool()), _pick(x21, x22, (selection % 2).bool())


def gsg_targets(four: Sequence[Tensor], selection: Tensor) -> tuple[Tensor, Tensor]:
    """The positive partners of :func:`gsg_sources`' views: the other view of the same image."""
    x11, x12, x21, x22 = four
    return _pick(x12, x11, (selection // 2).bool()), _pick(x22, x21, (selection % 2).bool())


def _pick(a: Tensor, b: Tensor, take_b: Tensor) -> Tensor:
    """Per sample ``b`` where ``take_b`` ``(N,)`` holds, else ``a``; ``a`` and ``b`` ``(N, ...)``."""
    return torch.where(take_b.view(-1, *(1,) * (a.dim() - 1)), b, a)


def guided_loss(
    src1: Tensor, tgt1: Tensor, src2: Tensor, tgt2: Tensor, local_p: Sequence[Tensor] = ()
) -> Tensor:
    """``-1/(2+L) [cos(src1, sg tgt1) + cos(src2, sg tgt2) + sum_j cos(local_p[j], sg tgt1)]``, batch mean.

    The selected sources and targets of GSG (and image 1's local-crop predictions), each ``(N, D)``;
    the targets are detached here.
    """
    tgt1, tgt2 = tgt1.detach(), tgt2.detach()
    total = negative_cosine(src1, tgt1) + negative_cosine(src2, tgt2)
    for q in local_p:
        total = total + negative_cosine(q, tgt1)
    return total / (2 + len(local_p))


def _four(xs: Sequence[Tensor], name: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    if len(xs) != 4:
        raise ValueError(f"{name} must hold 4 tensors in the order 11, 12, 21, 22; got {len(xs)}")
    _check_same_shape(**{f"{name}{k}": x for k, x in zip(("11", "12", "21", "22"), xs)})
    return xs[0], xs[1], xs[2], xs[3]


def _check_same_shape(**tensors: Tensor) -> None:
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    first = next(iter(shapes.values()))
    if len(first) != 2 or any(s != first for s in shapes.values()):
        detail = ", ".join(f"{k}={s}" for k, s in shapes.items())
        raise ValueError(f"expected tensors of one shape (N, D); got {detail}")
