"""Batched multi-view augmentation of uint8 image tensors on their own device (CIFAR-scale GPU path).

The PIL pipeline (:mod:`gsg_zoo.data.augment`) runs per image in DataLoader workers; at 32 px a GPU
step outruns a few CPU workers. :class:`BatchAugment` applies the CIFAR/SimSiam recipe to a whole
``(N, C, H, W)`` uint8 batch on the GPU, independently per sample:

- random resized crop (area ``min_scale``-1, aspect 3/4-4/3) and horizontal flip as one affine
  ``grid_sample`` (bilinear); a crop that does not fit takes the whole image, which is torchvision's
  fallback after 10 failed draws (torchvision first re-draws; here the draw is not repeated);
- colour jitter with probability ``jitter_p``: brightness, contrast, saturation, hue (in that fixed
  order, torchvision draws a random order), each matching ``torchvision.transforms.functional``'s
  ``adjust_*`` for the same factor (tested);
- grayscale with probability ``grayscale_p``; then normalisation.

Randomness comes from an explicit ``torch.Generator`` so a resumed run redraws the same views.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

_GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


def _gray(x: Tensor) -> Tensor:
    w = torch.tensor(_GRAY, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def _per_sample(f: Tensor) -> Tensor:
    return f.view(-1, 1, 1, 1)


def adjust_brightness(x: Tensor, factor: Tensor) -> Tensor:
    """``x`` float in [0, 1] ``(N, 3, H, W)``, ``factor`` ``(N,)``."""
    return (x * _per_sample(factor)).clamp_(0, 1)


def adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
    f = _per_sample(factor)
    return (f * x + (1 - f) * mean).clamp_(0, 1)


def adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    f = _per_sample(factor)
    return (f * x + (1 - f) * _gray(x)).clamp_(0, 1)


def adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate the hue by ``shift`` turns (``(N,)``, in [-0.5, 0.5]) through HSV, as torchvision does."""
    r, g, b = x.unbind(1)
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    v = maxc
    delta = maxc - minc
    eqc = delta == 0
    s = delta / torch.where(eqc, torch.ones_like(maxc), maxc)
    dc = torch.where(eqc, torch.ones_like(delta), delta)
    rc, gc, bc = (maxc - r) / dc, (maxc - g) / dc, (maxc - b) / dc
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(eqc, torch.zeros_like(h), h)
    h = torch.fmod(h / 6.0 + 1.0 + shift.view(-1, 1, 1), 1.0)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.to(torch.int64) % 6
    p = (v * (1 - s)).clamp(0, 1)
    q = (v * (1 - s * f)).clamp(0, 1)
    t = (v * (1 - s * (1 - f))).clamp(0, 1)
    choices = torch.stack(
        [torch.stack(c, 1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))], 1
    )  # (N, 6, 3, H, W)
    idx = i.unsqueeze(1).unsqueeze(1).expand(-1, 1, 3, -1, -1)
    return choices.gather(1, idx).squeeze(1)


def crop_flip_theta(
    n: int, min_scale: float, flip_p: float, generator: torch.Generator | None, device: torch.device
) -> Tensor:
    """Affine matrices ``(N, 2, 3)`` of random resized crops (+ flips) in ``affine_grid`` coordinates."""

    def u(lo: float, hi: float) -> Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=generator, device=device)

    area = u(min_scale, 1.0)
    log_ratio = u(math.log(3 / 4), math.log(4 / 3))
    ratio = log_ratio.exp()
    w = (area * ratio).sqrt()  # crop sides as fractions of the image side
    h = (area / ratio).sqrt()
    fits = (w <= 1) & (h <= 1)  # else torchvision re-draws, then falls back to the whole image
    w, h = torch.where(fits, w, 1.0), torch.where(fits, h, 1.0)
    cx = (1 - w) * (2 * torch.rand(n, generator=generator, device=device) - 1)  # centre in [-1+w, 1-w]
    cy = (1 - h) * (2 * torch.rand(n, generator=generator, device=device) - 1)
    flip = torch.where(torch.rand(n, generator=generator, device=device) < flip_p, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    return theta


class BatchAugment:
    """One random view per sample of a uint8 batch, on the batch's device (see the module docstring)."""

    def __init__(
        self,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        min_scale: float = 0.2,
        jitter: float = 0.4,
        hue: float = 0.1,
        jitter_p: float = 0.8,
        grayscale_p: float = 0.2,
        flip_p: float = 0.5,
    ) -> None:
        if not 0 <= hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {hue}")
        self.size, self.min_scale, self.flip_p = size, min_scale, flip_p
        self.jitter, self.hue, self.jitter_p, self.grayscale_p = jitter, hue, jitter_p, grayscale_p
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``images``: uint8 ``(N, 3, H, W)``; returns normalised float32 ``(N, 3, size, size)``."""
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 images (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
        n, dev = images.shape[0], images.device
        x = images.float().div_(255)
        theta = crop_flip_theta(n, self.min_scale, self.flip_p, generator, dev)
        grid = F.affine_grid(theta, [n, 3, self.size, self.size], align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

        def u(lo: float, hi: float) -> Tensor:
            return lo + (hi - lo) * torch.rand(n, generator=generator, device=dev)

        apply = torch.rand(n, generator=generator, device=dev) < self.jitter_p
        one = torch.ones(n, device=dev)
        j = self.jitter
        x = adjust_brightness(x, torch.where(apply, u(max(0.0, 1 - j), 1 + j), one))
        x = adjust_contrast(x, torch.where(apply, u(max(0.0, 1 - j), 1 + j), one))
        x = adjust_saturation(x, torch.where(apply, u(max(0.0, 1 - j), 1 + j), one))
        if self.hue > 0:
            x = adjust_hue(x, torch.where(apply, u(-self.hue, self.hue), one - 1))
        gray = _per_sample(torch.rand(n, generator=generator, device=dev) < self.grayscale_p)
        x = torch.where(gray, _gray(x).expand_as(x), x)
        mean = torch.tensor(self.mean, device=dev).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=dev).view(1, 3, 1, 1)
        return (x - mean) / std

    def views(self, images: Tensor, num_views: int, generator: torch.Generator | None = None) -> list[Tensor]:
        """``num_views`` independent views of every image (the images are decoded once, by the caller)."""
        return [self(images, generator) for _ in range(num_views)]
