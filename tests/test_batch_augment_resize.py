"""The batched resize of crop boxes (:func:`resize_boxes`, ``PackedImages.crops(batched=True)``): the
bytes of torchvision's uint8 ``resized_crop`` per box, whatever the sizes, and within one grey level of
its float path (the one CUDA takes)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional._geometry as tv_geometry
from PIL import Image
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms.v2.functional import resized_crop

import gsg_zoo.data.batch_augment as ba
from gsg_zoo.data.batch_augment import CropBoxes, PackedImages, resize_boxes, resize_taps, size_groups
from gsg_zoo.data.images import open_image

SHAPES = [(375, 500), (64, 47), (30, 30), (600, 200), (900, 1100)]


def _image(h: int, w: int, smooth: bool, seed: int) -> torch.Tensor:
    """uint8 ``(3, h, w)``: uniform noise, or smooth waves (where rounding differences show)."""
    g = torch.Generator().manual_seed(seed)
    if not smooth:
        return torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    phase = torch.rand(3, 1, 1, generator=g) * 6
    return ((torch.sin(y / 7.0 + phase) + torch.cos(x / 11.0)) * 60 + 128).clamp(0, 255).to(torch.uint8)


def _boxes(image: torch.Tensor, views: int, seed: int) -> list[list[int]]:
    """The whole image, a corner box touching the bottom-right border, then random boxes (area 1-100%)."""
    _, h, w = image.shape
    torch.manual_seed(seed)
    random = [list(RandomResizedCrop.get_params(image, (0.01, 1.0), (3 / 4, 4 / 3))) for _ in range(views)]
    return [[0, 0, h, w], [h - h // 2, w - w // 3, h // 2, w // 3], *random][:views]


@pytest.mark.parametrize("smooth", [False, True])
@pytest.mark.parametrize("size", [17, 64, 224])
def test_batched_resize_equals_torchvision_per_box(size, smooth):
    """Up- and downscaling (crops from 15 to 1,100 px to 17-224 px), boxes on the borders."""
    for k, (h, w) in enumerate(SHAPES):
        images = torch.stack([_image(h, w, smooth, seed) for seed in (k, k + 10)])
        boxes = torch.tensor([b for i, im in enumerate(images) for b in _boxes(im, 5, 3 * k + i)])
        canvas = images.permute(0, 2, 1, 3).reshape(2, h * 3, w).float()  # rows (y, channel)
        taps = (resize_taps(boxes[:, 2].tolist(), size), resize_taps(boxes[:, 3].tolist(), size))
        out = resize_boxes(canvas, boxes, 5, size, taps)
        assert out.shape == (2, 5, 3, size, size) and out.dtype == torch.uint8
        for i, image in enumerate(images):
            for v in range(5):
                ref = resized_crop(image, *boxes[5 * i + v].tolist(), [size, size], antialias=True)
                assert torch.equal(out[i, v], ref), (h, w, boxes[5 * i + v].tolist())


def _packed(shapes: list[tuple[int, int]], views: int = 4, seed: int = 0) -> PackedImages:
    rng = np.random.default_rng(seed)
    parts = []
    for k, (h, w) in enumerate(shapes):
        torch.manual_seed(seed + k)
        parts.append(CropBoxes(views)(Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))))
    return PackedImages.cat(parts)


def test_batched_crops_of_mixed_sizes_equal_the_per_box_crops(monkeypatch):
    """Several size groups (one large image does not pad the batch), put back in batch order; the
    bf16 matmuls CUDA takes (exact: products of 8-bit halves) give the same bytes."""
    packed = _packed([(375, 500), (64, 47), (500, 375), (40, 30), (1200, 900), (33, 33)])
    assert len(size_groups(packed.sizes.tolist())) > 1
    want = packed.crops(24, batched=False)
    assert torch.equal(packed.crops(24, batched=True), want)
    monkeypatch.setattr(ba, "_matmul_dtype", lambda device: torch.bfloat16)
    assert torch.equal(packed.crops(24, batched=True), want)


def test_batched_crops_decode_jpegs_and_keep_mixed_batches_in_order():
    rng = np.random.default_rng(3)

    def jpeg(h: int, w: int) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="JPEG")
        return buf.getvalue()

    images = [open_image(jpeg(100, 80), True), Image.fromarray(np.zeros((90, 70, 3), np.uint8) + 7)]
    images += [open_image(jpeg(64, 64), True)]
    parts = []
    for k, image in enumerate(images):
        torch.manual_seed(k)
        parts.append(CropBoxes(3)(image))
    packed = PackedImages.cat(parts)
    assert packed.encoded.tolist() == [True, False, True]
    assert torch.equal(packed.crops(16, batched=True), packed.crops(16, batched=False))


def test_batched_crops_are_within_one_grey_level_of_torchvision_float_path(monkeypatch):
    """torchvision's resize on CUDA has no uint8 kernel: it resizes in float and rounds once. The
    batched path (like ATen's CPU uint8 kernel) rounds after each axis: at most one grey level apart."""
    packed = _packed([(120, 160)] * 4, seed=5)
    batched = packed.crops(40, batched=True).float()
    monkeypatch.setattr(tv_geometry, "_do_native_uint8_resize_on_cpu", lambda interpolation: False)
    float_path = packed.crops(40, batched=False).float()
    diff = (batched - float_path).abs()
    assert diff.max() <= 1 and diff.mean() < 0.5


def test_size_groups_pad_little_and_keep_every_image_once():
    same = size_groups([(224, 224)] * 8)
    assert same == [list(range(8))]
    mixed = [(375, 500), (500, 375), (2000, 3000), (333, 500), (40, 40)]
    groups = size_groups(mixed)
    assert sorted(i for g in groups for i in g) == list(range(5))
    for g in groups:
        area = sum(mixed[i][0] * mixed[i][1] for i in g)
        padded = len(g) * max(mixed[i][0] for i in g) * max(mixed[i][1] for i in g)
        assert padded <= 2 * area
    assert [2] in groups  # the large image alone


def test_out_of_bounds_or_extreme_boxes_fall_back_to_per_box(monkeypatch):
    packed = _packed([(50, 60)] * 2)
    assert packed._batchable(16)
    outside = PackedImages(packed.pixels, packed.sizes, packed.boxes + torch.tensor([0, 30, 0, 0]))
    assert not outside._batchable(16)
    monkeypatch.setattr(ba, "MAX_BATCHED_SCALE", 1.0)  # boxes over 16 px downscaled past it
    assert not packed._batchable(16)


@pytest.mark.gpu
def test_batched_crops_on_cuda_equal_the_cpu_bytes():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    packed = _packed([(375, 500), (64, 47), (500, 375), (1200, 900)])
    gpu = packed.to("cuda").crops(64)
    assert gpu.device.type == "cuda" and torch.equal(gpu.cpu(), packed.crops(64))
