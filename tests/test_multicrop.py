"""Multi-crop GSG (``model.local_crops``): loss value and gradient against the per-sample formula of the
design (docs/guides/research-knobs.md), in the loss and in the learner; the local crops' device views."""

import copy
import math

import pytest
import torch
from test_pretrain import TINY
from test_selection_knobs import grads_of, leaves, make, ref_loss, ref_select, twin_terms, views

from gsg_zoo.config.recipes import load_recipe
from gsg_zoo.data.batch_augment import crop_flip_theta
from gsg_zoo.method.learner import LearnerConfig, SelfSupervisedLearner
from gsg_zoo.method.losses import gsg_loss, gsg_select, negative_cosine
from gsg_zoo.train.inputs import local_view_augment
from gsg_zoo.train.trainer import Pretrainer


@pytest.mark.parametrize("num_local", [1, 3])
def test_loss_with_local_crops_value_and_gradient(num_local):
    p, z = leaves(11, 5, 0), leaves(11, 5, 1)
    q = leaves(11, 5, 2)[:num_local]
    sel = gsg_select(z)
    loss = gsg_loss(p, z, local_p=q)
    ref = ref_loss(p, z, ref_select(z, "min"), q)
    assert torch.allclose(loss.double(), ref, atol=1e-10)
    for g, g_ref in zip(grads_of(loss, p + q), grads_of(ref, p + q)):
        assert torch.allclose(g, g_ref, atol=1e-10)
    assert all(not g.any() for g in grads_of(gsg_loss(p, z, selection=sel, local_p=q), z)), (
        "target got a gradient"
    )
    # the local crops are sources of image 1's selected target: their gradient vanishes when they
    # already point at it
    tgt1 = torch.where((sel // 2).bool().unsqueeze(1), z[0], z[1]).detach()
    aligned = [(2.0 * tgt1).requires_grad_() for _ in range(num_local)]
    assert all(g.abs().max() < 1e-12 for g in grads_of(gsg_loss(p, z, local_p=aligned), aligned))


def test_no_local_crops_is_the_paper_loss_bit_for_bit():
    p, z = leaves(9, 4, 3), leaves(9, 4, 4)
    sel = gsg_select(z)
    src1, tgt1 = (
        torch.where((sel // 2).bool().unsqueeze(1), p[1], p[0]),
        torch.where((sel // 2).bool().unsqueeze(1), z[0], z[1]),
    )
    src2, tgt2 = (
        torch.where((sel % 2).bool().unsqueeze(1), p[3], p[2]),
        torch.where((sel % 2).bool().unsqueeze(1), z[2], z[3]),
    )
    paper = 0.5 * (negative_cosine(src1, tgt1.detach()) + negative_cosine(src2, tgt2.detach()))
    assert torch.equal(gsg_loss(p, z), paper)


def test_pretrain_with_local_crops_on_the_device_path(tmp_path):
    seen = []
    over = [
        *TINY,
        "data.batch_augment=true",
        "model.local_crops=2",
        "train.epochs=1",
        "train.max_steps_per_epoch=2",
        "monitor.every=-1",
    ]
    trainer = Pretrainer(load_recipe("demo", over), tmp_path, progress=False)
    trainer.learner.register_forward_pre_hook(lambda m, args: seen.append([tuple(v.shape) for v in args[0]]))
    summary = trainer.run()
    assert seen[0] == [(16, 3, 16, 16)] * 4 + [(16, 3, 8, 8)] * 2  # 16 x 96/224 -> 8 px local crops
    assert summary["steps"] == 2 and math.isfinite(summary["final_loss"])


@pytest.mark.parametrize("method, source_only", [("simsiam_gsg", False), ("byol_gsg", True)])
def test_learner_with_local_crops_value_and_gradient(method, source_only):
    learner = make(method, local_crops=2, source_only=source_only, gsg_selection="max")
    twin = copy.deepcopy(learner)
    vs = views(4) + views(2, size=6, seed=8)  # 4 global views, then 2 smaller local crops
    out = learner(vs, generator=torch.Generator().manual_seed(2))
    out.loss.backward()
    p4, z4 = twin_terms(twin, vs[:4], out.pairing)
    q = [twin.predictor(twin.encoder.projector(twin.encoder.backbone(v))) for v in vs[4:]]  # own image
    sel = ref_select(z4, "max")
    assert torch.equal(out.selection, sel)
    ref = ref_loss(p4, z4, sel, q)
    ref.backward()
    assert torch.allclose(out.loss.double(), ref, atol=1e-9), (out.loss, ref)
    mine = dict(learner.online_modules().named_parameters())
    for name, p in twin.online_modules().named_parameters():
        assert torch.allclose(mine[name].grad, p.grad, atol=1e-9), name
    assert len(out.projections) == 4  # the global views' outputs only


def test_local_crop_errors_are_clear():
    learner = make("simsiam_gsg", local_crops=2)
    with pytest.raises(ValueError, match="needs 4 views \\+ 2 local crops"):
        learner(views(4))
    with pytest.raises(ValueError, match="one shape"):
        learner(views(4) + [views(1, size=6)[0], views(1, size=4)[0]])
    with pytest.raises(ValueError, match="GSG methods only"):
        SelfSupervisedLearner(LearnerConfig.for_method("byol", local_crops=2))
    with pytest.raises(ValueError, match="integer >= 0"):
        SelfSupervisedLearner(LearnerConfig.for_method("byol_gsg", local_crops=-1))
    recipe = load_recipe("demo", ["model.local_crops=2", "data.batch_augment=false"])
    with pytest.raises(ValueError, match="data.batch_augment=true"):
        local_view_augment(recipe.data, 2)
    with pytest.raises(ValueError, match="out of range"):
        load_recipe("demo", ["data.local_crops.max_scale=1.5"])


def test_local_crop_device_views_sizes_and_areas():
    recipe = load_recipe("demo", ["model.local_crops=2"])  # demo: 32 px, device augmentation
    aug = local_view_augment(recipe.data, 2)
    assert aug.size == 14 and (aug.min_scale, aug.max_scale) == (0.05, 0.4)  # 32 x 96/224, DINO's range
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    crops = aug.views(images, 2, torch.Generator().manual_seed(0))
    assert [tuple(c.shape) for c in crops] == [(5, 3, 14, 14)] * 2
    theta = crop_flip_theta(
        400, 0.05, 0.5, torch.Generator().manual_seed(1), torch.device("cpu"), max_scale=0.4
    )
    area = theta[:, 0, 0].abs() * theta[:, 1, 1]
    assert area.min() >= 0.05 - 1e-6 and area.max() <= 0.4 + 1e-6 and area.max() > 0.3
    # the global crops' stream is unchanged by the new bound's default
    g1, g2 = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    assert torch.equal(
        crop_flip_theta(9, 0.2, 0.5, g1, torch.device("cpu")),
        crop_flip_theta(9, 0.2, 0.5, g2, torch.device("cpu"), max_scale=1.0),
    )
