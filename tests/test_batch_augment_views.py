"""The ImageNet-scale device path: worker crops (uint8) + batched flip/colour/blur/solarisation.

Each batched op is checked against torchvision's per-sample op for the same random parameters, and
the parameters' distributions against the PIL recipe's (probabilities, ranges).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode, RandomResizedCrop
from torchvision.transforms.v2.functional import resized_crop as resized_crop_v2

import gsg_zoo.data.batch_augment as ba
from gsg_zoo.data.batch_augment import (
    BatchAugment,
    CropBoxes,
    PackedImages,
    default_blur_kernel,
    gaussian_blur,
    solarize,
)
from gsg_zoo.data.pretraining import collate_views


def _images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g)


def test_blur_equals_torchvision_per_sample():
    x = _images(4, 48)
    sigma = torch.tensor([0.1, 0.7, 2.0, 0.0])
    out = gaussian_blur(x, sigma, 23)
    for i in range(3):
        ref = TF.gaussian_blur(x[i], [23, 23], [float(sigma[i])] * 2)
        torch.testing.assert_close(out[i], ref, atol=1e-5, rtol=0)
    assert torch.equal(out[3], x[3])  # sigma 0: not blurred
    assert default_blur_kernel(224) == 23 and default_blur_kernel(32) == 5


def test_solarize_equals_torchvision_where_applied():
    x = _images(3, 16)
    out = solarize(x, torch.tensor([True, False, True]))
    for i, applied in enumerate((True, False, True)):
        assert torch.equal(out[i], TF.solarize(x[i], 128 / 255) if applied else x[i])


def test_worker_boxes_and_device_crops_equal_torchvision_resized_crop():
    """The boxes are the PIL recipe's draws; the device resize is torchvision's uint8 resized_crop on the
    contiguous CHW image, bit for bit, and within rounding of the PIL recipe's resize."""
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in ((375, 500), (64, 47))
    ]
    torch.manual_seed(5)
    packed = collate_views([([CropBoxes(num_views=4)(im)], 0) for im in images])[0][0]
    crops = packed.crops(64)
    assert crops.shape == (2, 4, 3, 64, 64) and crops.dtype == torch.uint8 and len(packed) == 2
    torch.manual_seed(5)
    for image, views in zip(images, crops):
        pixels = TF.pil_to_tensor(image).contiguous()
        for view in views:
            i, j, h, w = RandomResizedCrop.get_params(image, (0.2, 1.0), (3 / 4, 4 / 3))
            ref = resized_crop_v2(pixels, i, j, h, w, [64, 64], antialias=True)  # same boxes as the recipe
            assert torch.equal(view, ref)
            pil = TF.pil_to_tensor(TF.resized_crop(image, i, j, h, w, [64, 64], InterpolationMode.BILINEAR))
            assert (view.float() - pil.float()).abs().mean() < 1.0


def test_packed_images_travel_as_one_buffer():
    rng = np.random.default_rng(1)
    parts = [
        CropBoxes(2)(Image.fromarray(rng.integers(0, 256, (5 + k, 7, 3), dtype=np.uint8))) for k in range(3)
    ]
    packed = PackedImages.cat(parts)
    assert packed.pixels.shape == (sum((5 + k) * 7 * 3 for k in range(3)),)
    assert packed.boxes.shape == (3, 2, 4)
    moved = packed.to("cpu", non_blocking=True)
    assert moved.sizes is packed.sizes and torch.equal(moved.pixels, packed.pixels)
    assert torch.equal(moved.crops(4), torch.cat([p.crops(4) for p in parts]))


def test_device_path_is_blur_of_flip_for_fixed_parameters():
    aug = BatchAugment(
        32,
        (0.0,) * 3,
        (1.0,) * 3,
        crop=False,
        jitter_p=0.0,
        grayscale_p=0.0,
        flip_p=1.0,
        blur_p=1.0,
        blur_sigma=(1.3, 1.3),
    )
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    out = aug(x, torch.Generator().manual_seed(0))
    for i in range(2):
        ref = TF.gaussian_blur(TF.hflip(x[i].float() / 255), [5, 5], [1.3, 1.3])
        torch.testing.assert_close(out[i], ref, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="cropped to 32"):
        aug(torch.zeros(1, 3, 40, 40, dtype=torch.uint8))


def test_blur_and_solarize_draws_follow_the_recipe(monkeypatch):
    """MoCo-v2: blur p=0.5, sigma U(0.1, 2.0); BYOL's second view: solarise p=0.2. Per sample, over many draws."""
    seen = {}

    def spy_blur(x, sigma, k):
        seen["sigma"], seen["k"] = sigma.clone(), k
        return x

    def spy_solarize(x, apply, threshold=128 / 255):
        seen["solarize"] = apply.clone()
        return x

    monkeypatch.setattr(ba, "gaussian_blur", spy_blur)
    monkeypatch.setattr(ba, "solarize", spy_solarize)
    aug = BatchAugment(224, (0.0,) * 3, (1.0,) * 3, crop=False, blur_p=0.5, solarize_p=0.2)
    aug._blur_solarize(torch.zeros(20000, 3, 1, 1), torch.Generator().manual_seed(1), view=0)
    blurred = seen["sigma"][seen["sigma"] > 0]
    assert seen["k"] == 23
    assert abs(len(blurred) / 20000 - 0.5) < 0.02 and abs(seen["solarize"].float().mean() - 0.2) < 0.02
    assert 0.1 <= blurred.min() < 0.12 and 1.98 < blurred.max() <= 2.0 and abs(blurred.mean() - 1.05) < 0.03


def test_byol_views_blur_and_solarize_per_view(monkeypatch):
    """BYOL's asymmetric views (Grill et al. Table 6): views 0, 2 blur p=1.0, no solarisation; views 1, 3
    blur p=0.1, solarise p=0.2; saturation jitter 0.2 while brightness/contrast stay 0.4."""
    from gsg_zoo.config.recipes import load_recipe
    from gsg_zoo.train.inputs import view_transform

    recipe = load_recipe("imagenet_byol_gsg_byol_views", ["data.batch_augment=true"])
    assert recipe.paper == {} and recipe.data.min_scale == 0.08
    _, aug = view_transform(recipe.data, 4)
    assert aug.saturation == 0.2 and aug.jitter == 0.4 and not aug.crop
    seen = []
    monkeypatch.setattr(
        ba, "gaussian_blur", lambda x, sigma, k: seen.append(("blur", (sigma > 0).float().mean())) or x
    )
    monkeypatch.setattr(ba, "solarize", lambda x, apply: seen.append(("solarize", apply.float().mean())) or x)
    x = torch.zeros(20000, 3, 1, 1)
    for view in range(4):
        seen.clear()
        aug._blur_solarize(x, torch.Generator().manual_seed(view), view)
        rates = dict(seen)
        if view % 2 == 0:
            assert rates == {"blur": 1.0}
        else:
            assert abs(rates["blur"] - 0.1) < 0.01 and abs(rates["solarize"] - 0.2) < 0.01


def test_byol_pil_views_alternate_the_two_pipelines():
    from torchvision import transforms as T

    from gsg_zoo.config.recipes import load_recipe
    from gsg_zoo.data.augment import MultiView, build_augmentation

    data = load_recipe("imagenet_byol_gsg_byol_views").data
    first, second = build_augmentation(data.augmentation, 32, data.normalization, **data.augment_options())
    for pipeline, blur_p, solarize_p in ((first, 1.0, None), (second, 0.1, 0.2)):
        kinds = {type(t).__name__: t for t in pipeline.transforms}
        assert kinds["RandomResizedCrop"].scale == (0.08, 1.0)
        (jitter,) = [
            t.transforms[0]
            for t in pipeline.transforms
            if isinstance(t, T.RandomApply) and isinstance(t.transforms[0], T.ColorJitter)
        ]
        assert jitter.saturation == (0.8, 1.2) and jitter.brightness == (0.6, 1.4)
        blur = [
            t
            for t in pipeline.transforms
            if isinstance(t, T.RandomApply) and isinstance(t.transforms[0], T.GaussianBlur)
        ]
        assert blur[0].p == blur_p and blur[0].transforms[0].kernel_size == (5, 5)  # default_blur_kernel(32)
        assert (kinds["RandomSolarize"].p if "RandomSolarize" in kinds else None) == solarize_p
    views = MultiView([lambda im: "a", lambda im: "b"], 4)(None)
    assert views == ["a", "b", "a", "b"]
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    assert [tuple(v.shape) for v in MultiView([first, second], 4)(image)] == [(3, 32, 32)] * 4


def test_flips_differ_across_samples_and_replay_with_the_generator():
    aug = BatchAugment(16, (0.0,) * 3, (1.0,) * 3, crop=False, jitter_p=0.0, grayscale_p=0.0)
    x = torch.arange(16, dtype=torch.uint8).repeat(64, 3, 16, 1)  # left-right ramp: a flip shows
    out = aug(x, torch.Generator().manual_seed(2))
    flipped = out[:, 0, 0, 0] > out[:, 0, 0, -1]
    assert 0 < int(flipped.sum()) < 64
    assert torch.equal(out, aug(x, torch.Generator().manual_seed(2)))


def test_cifar_path_draws_no_blur_or_solarize_numbers():
    """p = 0 draws nothing: the CIFAR recipe's random stream (and so its views) is unchanged."""
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    x = torch.randint(0, 256, (8, 3, 40, 40), dtype=torch.uint8)
    BatchAugment(32, (0.0,) * 3, (1.0,) * 3)(x, g1)
    BatchAugment(32, (0.0,) * 3, (1.0,) * 3, blur_p=0.0, solarize_p=0.0)(x, g2)
    assert torch.equal(torch.rand(4, generator=g1), torch.rand(4, generator=g2))
    g3 = torch.Generator().manual_seed(4)
    BatchAugment(32, (0.0,) * 3, (1.0,) * 3, blur_p=0.5)(x, g3)  # blur draws: the stream moves on
    assert not torch.equal(torch.rand(4, generator=g1), torch.rand(4, generator=g3))


def test_views_of_worker_crops_take_one_crop_each():
    aug = BatchAugment(8, (0.0,) * 3, (1.0,) * 3, crop=False, jitter_p=0.0, grayscale_p=0.0, flip_p=0.0)
    crops = torch.randint(0, 256, (3, 4, 3, 8, 8), dtype=torch.uint8)
    views = aug.views(crops, 4, torch.Generator().manual_seed(0))
    assert len(views) == 4 and all(torch.allclose(v, crops[:, i].float() / 255) for i, v in enumerate(views))
    with pytest.raises(ValueError, match=r"\(N, 2, 3, H, W\)"):
        aug.views(crops, 2)


def test_imagenet_recipe_batch_augment_splits_the_work():
    """mocov2 + data.batch_augment: workers decode and draw 4 boxes, the device resizes them and does
    MoCo-v2's colour and blur."""
    from gsg_zoo.config.recipes import load_recipe
    from gsg_zoo.train.inputs import view_transform

    data = load_recipe("imagenet_simsiam_gsg", ["data.batch_augment=true", "data.image_size=32"]).data
    views, aug = view_transform(data, 4)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8))
    (packed,) = views(image)
    assert packed.pixels.shape == (60 * 80 * 3,) and packed.boxes.shape == (1, 4, 4)
    assert not aug.crop and aug.blur_p == 0.5 and aug.solarize_p == 0.0 and aug.jitter_p == 0.8
    assert aug.mean == (0.485, 0.456, 0.406) and aug.blur_sigma == (0.1, 2.0)
    out = aug.views(packed, 4, torch.Generator().manual_seed(0))
    assert [tuple(v.shape) for v in out] == [(1, 3, 32, 32)] * 4
    data.augmentation = "other"
    with pytest.raises(ValueError, match="cifar, mocov2 or byol"):
        view_transform(data, 4)
