"""Batched device-side augmentation: each colour op equals torchvision's, crops/flips are geometric."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.functional as TF
from test_pretrain import TINY

from gsg_zoo.config.recipes import load_recipe
from gsg_zoo.data.batch_augment import (
    BatchAugment,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    crop_flip_theta,
)
from gsg_zoo.train.trainer import Pretrainer


@pytest.fixture
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (5, 3, 12, 12), generator=g, dtype=torch.uint8)


@pytest.mark.parametrize(
    "ours, theirs, factors",
    [
        (adjust_brightness, TF.adjust_brightness, [0.6, 1.0, 1.4, 0.2, 1.8]),
        (adjust_contrast, TF.adjust_contrast, [0.6, 1.0, 1.4, 0.2, 1.8]),
        (adjust_saturation, TF.adjust_saturation, [0.6, 1.0, 1.4, 0.0, 1.8]),
        (adjust_hue, TF.adjust_hue, [-0.5, -0.1, 0.0, 0.25, 0.45]),
    ],
)
def test_colour_ops_match_torchvision_per_sample(images, ours, theirs, factors):
    x = images.float() / 255
    got = ours(x.clone(), torch.tensor(factors))
    want = torch.stack([theirs(x[i], f) for i, f in enumerate(factors)])
    torch.testing.assert_close(got, want, atol=2e-5, rtol=0)


def test_identity_crop_and_flip_are_exact(images):
    aug = BatchAugment(
        12, (0, 0, 0), (1, 1, 1), min_scale=1.0, jitter=0.0, hue=0.0, grayscale_p=0.0, flip_p=0.0
    )
    theta = crop_flip_theta(5, 1.0, 1.0, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert torch.all(theta[:, 0, 0] <= 0) and torch.all(theta[:, 1, 1] > 0)  # every sample flipped
    # area 1 only fits as the whole image: the crop is the image itself
    out = aug(images, torch.Generator().manual_seed(1))
    torch.testing.assert_close(out, images.float() / 255, atol=1e-5, rtol=0)


def test_views_are_random_per_sample_and_reproducible(images):
    aug = BatchAugment(8, (0.5,) * 3, (0.25,) * 3, jitter=0.8, hue=0.5)
    a = aug.views(images, 4, torch.Generator().manual_seed(3))
    b = aug.views(images, 4, torch.Generator().manual_seed(3))
    assert len(a) == 4 and a[0].shape == (5, 3, 8, 8) and a[0].dtype == torch.float32
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y)
    assert not torch.allclose(a[0], a[1])
    with pytest.raises(ValueError, match="uint8"):
        aug(images.float())


def test_pretrain_with_batch_augment_resumes_exactly(tmp_path):
    sets = [*TINY, "data.batch_augment=true", "train.epochs=2", "train.checkpoint_every=1"]
    full = Pretrainer(load_recipe("demo", sets), tmp_path / "full", progress=False)
    full.run()
    resumed = Pretrainer(load_recipe("demo", sets), tmp_path / "resumed", progress=False)
    resumed.run(resume_from=tmp_path / "full" / "checkpoints" / "epoch_0001.pt")
    ckpts = sorted(p.name for p in (tmp_path / "resumed" / "checkpoints").glob("epoch_*.pt"))
    assert ckpts == ["epoch_0002.pt"]  # it trained epoch 2 only
    for (k, a), b in zip(full.learner.state_dict().items(), resumed.learner.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)
    with pytest.raises(ValueError, match="cifar, mocov2 or byol"):
        Pretrainer(load_recipe("demo", [*sets, "data.augmentation=simclr"]), tmp_path / "x", progress=False)
