"""Multi-view augmentations: the MoCo-v2/SimSiam recipe (224 px) and the CIFAR recipe (32 px)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image, ImageFilter
from torchvision import transforms as T

from ..normalization import CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD, mean_std


class GaussianBlur:
    """MoCo-v2 Gaussian blur with sigma drawn uniformly from ``sigma`` (uses torch's RNG)."""

    def __init__(self, sigma: Sequence[float] = (0.1, 2.0)) -> None:
        self.sigma = tuple(sigma)

    def __call__(self, img: Image.Image) -> Image.Image:
        s = self.sigma[0] + float(torch.rand(())) * (self.sigma[1] - self.sigma[0])
        return img.filter(ImageFilter.GaussianBlur(radius=s))

    def __repr__(self) -> str:
        return f"GaussianBlur(sigma={self.sigma})"


def simsiam_transform(
    size: int,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    min_scale: float = 0.2,
    jitter: float = 0.4,
    hue: float = 0.1,
    grayscale_p: float = 0.2,
    blur_p: float = 0.5,
) -> T.Compose:
    """Crop ``min_scale``-1, colour jitter (b = c = s = ``jitter``, ``hue``) p=0.8, grayscale, blur, flip."""
    return T.Compose(
        [
            T.RandomResizedCrop(size, scale=(min_scale, 1.0)),
            T.RandomApply([T.ColorJitter(jitter, jitter, jitter, hue)], p=0.8),
            T.RandomGrayscale(p=grayscale_p),
            *([T.RandomApply([GaussianBlur((0.1, 2.0))], p=blur_p)] if blur_p > 0 else []),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )


def mocov2_transform(size: int = 224, mean=IMAGENET_MEAN, std=IMAGENET_STD, **kwargs: Any) -> T.Compose:
    """SimSiam/MoCo-v2 augmentation: crop 0.2-1, jitter 0.4/0.4/0.4/0.1 p=0.8, gray 0.2, blur 0.5, flip."""
    return simsiam_transform(size, mean, std, blur_p=0.5, **kwargs)


def cifar_transform(size: int = 32, mean=CIFAR_MEAN, std=CIFAR_STD, **kwargs: Any) -> T.Compose:
    """CIFAR recipe: crop 0.2-1, jitter 0.4/0.4/0.4/0.1 p=0.8, grayscale 0.2, flip; no blur."""
    return simsiam_transform(size, mean, std, blur_p=0.0, **kwargs)


class ToRGB:
    """Convert any PIL image (grayscale, CMYK, palette) to RGB; Caltech-101 has grayscale images."""

    def __call__(self, image: Image.Image) -> Image.Image:
        return image.convert("RGB") if image.mode != "RGB" else image

    def __repr__(self) -> str:
        return "ToRGB()"


def _interp(name: str) -> T.InterpolationMode:
    return {"bicubic": T.InterpolationMode.BICUBIC, "nearest": T.InterpolationMode.NEAREST}.get(
        name, T.InterpolationMode.BILINEAR
    )


def _normalize(mean: Any, std: Any) -> T.Normalize:
    return T.Normalize(tuple(float(m) for m in mean), tuple(float(s) for s in std))


def eval_transform(
    size: int, mean: Any, std: Any, crop_pct: float = 1.0, interpolation: str = "bilinear"
) -> T.Compose:
    """``Resize(size / crop_pct)`` (shorter side), ``CenterCrop(size)``, tensor, normalise."""
    return T.Compose(
        [
            ToRGB(),
            T.Resize(int(round(size / crop_pct)), interpolation=_interp(interpolation)),
            T.CenterCrop(size),
            T.ToTensor(),
            _normalize(mean, std),
        ]
    )


def square_resize_transform(
    size: int = 224, resize: int = 256, mean: Any = IMAGENET_MEAN, std: Any = IMAGENET_STD
) -> T.Compose:
    """GSG's ``main_knn.py`` (github.com/bych-lee/gsg): ``Resize([resize, resize])`` (square, aspect not
    kept, bilinear), ``CenterCrop(size)``, tensor, normalise (ImageNet mean/std by default)."""
    return T.Compose(
        [
            ToRGB(),
            T.Resize([resize, resize], interpolation=T.InterpolationMode.BILINEAR),
            T.CenterCrop(size),
            T.ToTensor(),
            _normalize(mean, std),
        ]
    )


def probe_transform(size: int, mean: Any, std: Any, interpolation: str = "bilinear") -> T.Compose:
    """The linear-probe training augmentation: ``RandomResizedCrop(size)`` + horizontal flip."""
    return T.Compose(
        [
            ToRGB(),
            T.RandomResizedCrop(size, interpolation=_interp(interpolation)),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            _normalize(mean, std),
        ]
    )


def uint8_transform(size: int) -> T.Compose:
    """Decode only: RGB uint8 tensor ``(3, size, size)`` (resized if needed) for :mod:`.batch_augment`."""
    return T.Compose([ToRGB(), T.Resize(size), T.CenterCrop(size), T.PILToTensor()])


AUGMENTATIONS: dict[str, Callable[..., T.Compose]] = {"mocov2": mocov2_transform, "cifar": cifar_transform}


def build_augmentation(name: str, size: int, normalization: str = "imagenet", **kwargs: Any) -> T.Compose:
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}; choose one of {sorted(AUGMENTATIONS)}")
    mean, std = mean_std(normalization)
    return AUGMENTATIONS[name](size, mean=mean, std=std, **kwargs)


class MultiView:
    """Apply one augmentation ``num_views`` times to an image decoded once."""

    def __init__(self, transform: Callable[[Image.Image], torch.Tensor], num_views: int) -> None:
        self.transform = transform
        self.num_views = num_views

    def __call__(self, img: Image.Image) -> list[torch.Tensor]:
        return [self.transform(img) for _ in range(self.num_views)]

    def __repr__(self) -> str:
        return f"MultiView({self.num_views} x {self.transform!r})"
