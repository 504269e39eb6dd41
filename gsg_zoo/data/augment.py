"""Multi-view augmentations: the MoCo-v2/SimSiam recipe (224 px), the CIFAR recipe (32 px) and BYOL's
asymmetric pair (a named variant)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image, ImageFilter
from torchvision import transforms as T

from ..core.normalization import CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD, mean_std


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
    saturation: float | None = None,
) -> T.Compose:
    """Crop ``min_scale``-1, colour jitter (b = c = ``jitter``, s = ``saturation`` or ``jitter``, ``hue``)
    p=0.8, grayscale, MoCo-v2's PIL blur, flip."""
    sat = jitter if saturation is None else saturation
    return T.Compose(
        [
            T.RandomResizedCrop(size, scale=(min_scale, 1.0)),
            T.RandomApply([T.ColorJitter(jitter, jitter, sat, hue)], p=0.8),
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


BYOL_BLUR_P, BYOL_SOLARIZE_P = (1.0, 0.1), (0.0, 0.2)  # view 1, view 2 (Grill et al. 2020, Table 6)


def byol_transforms(
    size: int = 224,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    min_scale: float = 0.08,
    jitter: float = 0.4,
    hue: float = 0.1,
    grayscale_p: float = 0.2,
    saturation: float = 0.2,
) -> list[T.Compose]:
    """BYOL's two asymmetric view pipelines (Grill et al. 2020, Table 6; a named variant: the GSG paper's
    ImageNet runs use MoCo-v2's views for BYOL too): crop ``min_scale``-1, flip, colour jitter
    0.4/0.4/0.2/0.1 p=0.8 (torchvision's random order), grayscale 0.2, then Gaussian blur with a kernel
    of ~10% of the side (23 px at 224), sigma 0.1-2, p = 1.0 / 0.1, and solarisation (threshold 128)
    p = 0.0 / 0.2. :class:`MultiView` gives views 0, 2 the first and views 1, 3 the second pipeline."""
    from .batch_augment import default_blur_kernel

    views = []
    for blur_p, solarize_p in zip(BYOL_BLUR_P, BYOL_SOLARIZE_P):
        blur = T.GaussianBlur(default_blur_kernel(size), sigma=(0.1, 2.0))
        views.append(
            T.Compose(
                [
                    T.RandomResizedCrop(size, scale=(min_scale, 1.0)),
                    T.RandomHorizontalFlip(),
                    T.RandomApply([T.ColorJitter(jitter, jitter, saturation, hue)], p=0.8),
                    T.RandomGrayscale(p=grayscale_p),
                    *([T.RandomApply([blur], p=blur_p)] if blur_p > 0 else []),
                    *([T.RandomSolarize(128, p=solarize_p)] if solarize_p > 0 else []),
                    T.ToTensor(),
                    T.Normalize(mean, std),
                ]
            )
        )
    return views


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


AUGMENTATIONS: dict[str, Callable[..., Any]] = {
    "mocov2": mocov2_transform,
    "cifar": cifar_transform,
    "byol": byol_transforms,
}


def build_augmentation(
    name: str, size: int, normalization: str = "imagenet", **kwargs: Any
) -> T.Compose | list[T.Compose]:
    """The named view augmentation: one pipeline, or one per view parity (``byol``)."""
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}; choose one of {sorted(AUGMENTATIONS)}")
    mean, std = mean_std(normalization)
    return AUGMENTATIONS[name](size, mean=mean, std=std, **kwargs)


def uint8_views(
    transform: T.Compose | Sequence[T.Compose],
) -> tuple[T.Compose | list[T.Compose], tuple[float, ...], tuple[float, ...]] | None:
    """The pipeline(s) ending in ``PILToTensor`` instead of ``ToTensor, Normalize(mean, std)``, with
    that mean and std (:func:`~gsg_zoo.data.batch_augment.normalize_uint8` on the device gives the
    same floats); None when a pipeline ends otherwise or the pipelines normalise differently."""
    pipelines = list(transform) if isinstance(transform, Sequence) else [transform]
    out, norms = [], set()
    for t in pipelines:
        ops = getattr(t, "transforms", [])
        if len(ops) < 2 or type(ops[-2]) is not T.ToTensor or type(ops[-1]) is not T.Normalize:
            return None
        norms.add((tuple(float(m) for m in ops[-1].mean), tuple(float(s) for s in ops[-1].std)))
        out.append(T.Compose([*ops[:-2], T.PILToTensor()]))
    if len(norms) != 1:
        return None
    mean, std = norms.pop()
    return (out if isinstance(transform, Sequence) else out[0]), mean, std


class MultiView:
    """Apply an augmentation ``num_views`` times to an image decoded once; given a list of pipelines,
    view ``v`` uses pipeline ``v % len(list)`` (BYOL's asymmetric views)."""

    def __init__(
        self, transform: Callable[[Image.Image], Any] | Sequence[Callable[[Image.Image], Any]], num_views: int
    ) -> None:
        self.transforms = list(transform) if isinstance(transform, Sequence) else [transform]
        self.num_views = num_views

    def __call__(self, img: Image.Image) -> list[Any]:
        return [self.transforms[v % len(self.transforms)](img) for v in range(self.num_views)]

    def __repr__(self) -> str:
        return f"MultiView({self.num_views} x {self.transforms!r})"
