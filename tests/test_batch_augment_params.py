"""BatchAugment draws its random parameters per sample, with the PIL recipe's distributions.

Spies record what each op receives; over many samples the crop areas and aspect ratios, the flip,
jitter, grayscale probabilities and the jitter factor ranges are compared with torchvision's
``RandomResizedCrop.get_params`` and the CIFAR/MoCo recipe (crop 0.2-1, jitter 0.4/0.4/0.4/0.1 p=0.8,
grayscale 0.2, flip 0.5).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import RandomResizedCrop

import gsg_zoo.data.batch_augment as ba
from gsg_zoo.data.batch_augment import BatchAugment, crop_flip_theta

N = 20000


@pytest.fixture
def spies(monkeypatch):
    seen: dict[str, torch.Tensor] = {}

    def spy(name, fn):
        def wrapped(x, value, *args):
            seen[name] = value.clone()
            return fn(x, value, *args)

        monkeypatch.setattr(ba, name, wrapped)

    for name in ("adjust_brightness", "adjust_contrast", "adjust_saturation", "adjust_hue"):
        spy(name, getattr(ba, name))
    return seen


def test_crop_boxes_match_torchvision_distribution():
    theta = crop_flip_theta(N, 0.2, 0.5, torch.Generator().manual_seed(0), torch.device("cpu"))
    w, h, flip = theta[:, 0, 0].abs(), theta[:, 1, 1], theta[:, 0, 0] < 0
    area, log_ratio = (w * h).numpy(), torch.log(w / h).numpy()
    torch.manual_seed(0)
    image = Image.new("RGB", (100, 100))
    boxes = np.array([RandomResizedCrop.get_params(image, (0.2, 1.0), (3 / 4, 4 / 3)) for _ in range(4000)])
    ref_area, ref_log_ratio = boxes[:, 2] * boxes[:, 3] / 1e4, np.log(boxes[:, 3] / boxes[:, 2])
    assert area.min() >= 0.2 - 1e-6 and area.max() <= 1.0 + 1e-6
    assert abs(area.mean() - ref_area.mean()) < 0.02 and abs(area.std() - ref_area.std()) < 0.02
    assert np.abs(log_ratio).max() <= math.log(4 / 3) + 1e-6
    assert abs(log_ratio.std() - ref_log_ratio.std()) < 0.02
    assert abs(flip.float().mean().item() - 0.5) < 0.02
    assert len(torch.unique(theta[:8, 0, 2])) == 8  # crop positions differ within one batch


def test_colour_parameters_per_sample_with_the_recipe_distribution(spies):
    aug = BatchAugment(4, (0.0,) * 3, (1.0,) * 3)
    aug(torch.randint(0, 256, (N, 3, 4, 4), dtype=torch.uint8), torch.Generator().manual_seed(1))
    b, c, s, hue = (
        spies[k] for k in ("adjust_brightness", "adjust_contrast", "adjust_saturation", "adjust_hue")
    )
    applied = b != 1.0
    assert abs(applied.float().mean().item() - 0.8) < 0.02  # RandomApply(ColorJitter, p=0.8)
    for f in (b, c, s):
        assert torch.equal(f != 1.0, applied)  # one coin for the whole jitter, as RandomApply
        v = f[applied]
        assert 0.6 <= v.min() < 0.61 and 1.39 < v.max() <= 1.4 and abs(v.mean().item() - 1.0) < 0.01
    h = hue[applied]
    assert -0.1 <= h.min() < -0.099 and 0.099 < h.max() <= 0.1 and torch.all(hue[~applied] == 0)
    assert len(torch.unique(b[:16])) > 8  # factors differ across the samples of one batch


def test_grayscale_probability():
    aug = BatchAugment(4, (0.0,) * 3, (1.0,) * 3, jitter_p=0.0, flip_p=0.0, min_scale=1.0)
    x = torch.zeros(N, 3, 4, 4, dtype=torch.uint8)
    x[:, 0] = 255  # pure red: grey is 0.2989 in every channel
    out = aug(x, torch.Generator().manual_seed(2))
    gray = (out[:, 1, 0, 0] > 0.1).float().mean().item()
    assert abs(gray - 0.2) < 0.02
