"""Batched multi-view augmentation of uint8 image tensors on their own device.

:class:`BatchAugment` applies the SimSiam/BYOL view recipe to a whole batch, independently per sample
and seeded by an explicit generator (a resumed run redraws the same views); ImageNet-size images
travel as crop boxes in one packed buffer (:class:`PackedImages`). Each step and how it matches
torchvision: docs/reference/internals.md.
"""

from __future__ import annotations

import io
import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from .images import EncodedImage

log = logging.getLogger("gsg_zoo.data")

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
    return torch.mul(x, f).add_((1 - f) * mean).clamp_(0, 1)  # f x + (1 - f) mean, one new tensor


def adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    f = _per_sample(factor)
    return torch.mul(x, f).add_(_gray(x).mul_(1 - f)).clamp_(0, 1)  # f x + (1 - f) gray, one new tensor


def adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate the hue by ``shift`` turns (``(N,)``, in [-0.5, 0.5]) through HSV, as torchvision does.

    RGB -> HSV is torchvision's ``_rgb2hsv``; HSV -> RGB uses the closed form
    ``c = v - v s clamp(min(k, 4 - k), 0, 1)``, ``k = (n + 6h) mod 6`` for ``n = 5, 3, 1`` (R, G, B), the
    same function as torchvision's six-case ``_hsv2rgb`` (within 1e-6, tested) at half the memory traffic.
    The same float operations in the same order as before, in place on this function's own temporaries
    (bit-identical, checked; ``amax``/``amin`` skip ``max``'s indices): 2 new ``(N, 3, H, W)`` tensors, not 7.
    """
    r, g, b = x.unbind(1)
    maxc, minc = torch.amax(x, 1), torch.amin(x, 1)  # (N, H, W)
    delta = maxc - minc
    eqc = delta == 0
    s = delta / maxc.masked_fill(eqc, 1.0)
    dc = delta.masked_fill_(eqc, 1.0)
    rc, gc, bc = (maxc - r).div_(dc), (maxc - g).div_(dc), (maxc - b).div_(dc)
    h = torch.add(gc, 4.0).sub_(rc)  # 4 + gc - rc where b is the max, then g's and r's cases over it
    torch.where(maxc == g, rc.add_(2.0).sub_(bc), h, out=h)
    torch.where(maxc == r, torch.sub(bc, gc, out=gc), h, out=h)
    h.masked_fill_(eqc, 0.0).div_(6.0).add_(1.0).add_(shift.view(-1, 1, 1)).fmod_(1.0).mul_(6.0)
    n = torch.tensor([5.0, 3.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    k = torch.add(h.unsqueeze(1), n).remainder_(6.0)  # (N, 3, H, W)
    torch.minimum(k, torch.rsub(k, 4.0), out=k).clamp_(0, 1).mul_(s.mul_(maxc).unsqueeze(1))
    return torch.sub(maxc.unsqueeze(1), k, out=k)


def gaussian_blur(x: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Blur each sample of ``x`` ``(N, C, H, W)`` with its own ``sigma`` ``(N,)`` (0: unchanged).

    Separable ``kernel_size``-tap Gaussian with reflect padding, as torchvision's ``gaussian_blur``.
    """
    n, c, h, w = x.shape
    half = (kernel_size - 1) * 0.5
    pos = torch.linspace(-half, half, kernel_size, device=x.device, dtype=x.dtype)
    safe = sigma.clamp_min(1e-6).to(x.dtype).view(-1, 1)
    k = torch.exp(-0.5 * (pos / safe) ** 2)
    k = torch.where(sigma.view(-1, 1) > 0, k / k.sum(1, keepdim=True), (pos == 0).to(x.dtype))  # (N, K)
    k = k.repeat_interleave(c, 0)  # one kernel per (sample, channel)
    pad = kernel_size // 2
    y = F.pad(x.reshape(1, n * c, h, w), (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, k.view(n * c, 1, 1, kernel_size), groups=n * c)
    y = F.conv2d(y, k.view(n * c, 1, kernel_size, 1), groups=n * c)
    return y.view(n, c, h, w)


def solarize(x: Tensor, apply: Tensor, threshold: float = 128 / 255) -> Tensor:
    """Invert pixels at or above ``threshold`` in the samples where ``apply`` ``(N,)`` is set."""
    return torch.where((x >= threshold).logical_and_(_per_sample(apply)), torch.rsub(x, 1.0), x)


def default_blur_kernel(size: int) -> int:
    """About 10% of the side, odd (23 at 224 px, as BYOL); at least 3."""
    return max(3, 2 * round(0.05 * size) + 1)


def uniform(
    shape: tuple[int, ...], lo: float, hi: float, generator: torch.Generator | None, device: torch.device
) -> Tensor:
    """``U(lo, hi)`` samples of ``shape`` from ``generator`` (every draw of this module goes through here
    or through ``torch.rand`` for coin flips, so a seeded generator replays a batch exactly)."""
    return lo + (hi - lo) * torch.rand(*shape, generator=generator, device=device)


def crop_flip_theta(
    n: int,
    min_scale: float,
    flip_p: float,
    generator: torch.Generator | None,
    device: torch.device,
    attempts: int = 10,
    max_scale: float = 1.0,
) -> Tensor:
    """Affine matrices ``(N, 2, 3)`` of random resized crops (+ flips) in ``affine_grid`` coordinates.

    As ``RandomResizedCrop.get_params``: area uniform in ``[min_scale, max_scale]`` (local crops of
    multi-crop: a small range), aspect ratio log-uniform in
    [3/4, 4/3], re-drawn until the crop fits (``attempts`` tries, all drawn at once), else the whole image.
    """

    def u(lo: float, hi: float, *shape: int) -> Tensor:
        return uniform(shape, lo, hi, generator, device)

    area = u(min_scale, max_scale, attempts, n)
    ratio = u(math.log(3 / 4), math.log(4 / 3), attempts, n).exp()
    w, h = (area * ratio).sqrt(), (area / ratio).sqrt()  # crop sides as fractions of the image side
    fits = (w <= 1) & (h <= 1)
    first = fits.to(torch.uint8).argmax(0, keepdim=True)  # the first draw that fits
    w = torch.where(fits.any(0), w.gather(0, first)[0], 1.0)
    h = torch.where(fits.any(0), h.gather(0, first)[0], 1.0)
    cx = (1 - w) * (2 * u(0.0, 1.0, n) - 1)  # centre in [-1+w, 1-w]
    cy = (1 - h) * (2 * u(0.0, 1.0, n) - 1)
    flip = torch.where(u(0.0, 1.0, n) < flip_p, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    return theta


def _for_view(p: float | Sequence[float], view: int) -> float:
    """A probability given once or per view (cycled: view ``v`` takes entry ``v % len``)."""
    return p[view % len(p)] if isinstance(p, Sequence) else p


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
        *,
        crop: bool = True,
        blur_p: float | Sequence[float] = 0.0,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        blur_kernel: int | None = None,
        solarize_p: float | Sequence[float] = 0.0,
        saturation: float | None = None,
        max_scale: float = 1.0,
    ) -> None:
        if not 0 <= hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {hue}")
        if not 0 < min_scale <= max_scale <= 1:
            raise ValueError(
                f"crop scales must satisfy 0 < min_scale <= max_scale <= 1, got {min_scale}, {max_scale}"
            )
        self.size, self.min_scale, self.flip_p, self.crop = size, min_scale, flip_p, crop
        self.max_scale = max_scale
        self.jitter, self.hue, self.jitter_p, self.grayscale_p = jitter, hue, jitter_p, grayscale_p
        self.saturation = jitter if saturation is None else saturation
        self.blur_p, self.blur_sigma, self.solarize_p = blur_p, tuple(blur_sigma), solarize_p
        self.blur_kernel = blur_kernel or default_blur_kernel(size)
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, images: Tensor, generator: torch.Generator | None = None, view: int = 0) -> Tensor:
        """``images``: uint8 ``(N, 3, H, W)`` (``crop=False``: already ``size`` x ``size``); ``view``
        picks the per-view blur and solarisation probabilities; returns normalised float32
        ``(N, 3, size, size)``."""
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 images (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
        if not self.crop and tuple(images.shape[-2:]) != (self.size, self.size):
            raise ValueError(f"crop=False expects views cropped to {self.size} px, got {tuple(images.shape)}")
        x = self._geometry(images.float().div_(255), generator)
        x = self._colour(x, generator)
        x = self._blur_solarize(x, generator, view)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return x.sub_(mean).div_(std)  # x is this call's own tensor

    def _geometry(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        """Random resized crop + flip as one ``grid_sample``; with ``crop=False`` the flip only."""
        n, dev = x.shape[0], x.device
        if not self.crop:
            flip = torch.rand(n, generator=generator, device=dev) < self.flip_p
            return torch.where(_per_sample(flip), x.flip(-1), x)
        theta = crop_flip_theta(n, self.min_scale, self.flip_p, generator, dev, max_scale=self.max_scale)
        grid = F.affine_grid(theta, [n, 3, self.size, self.size], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _colour(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        """Colour jitter (p = ``jitter_p``; brightness, contrast, saturation, hue), then grayscale."""
        n, dev = x.shape[0], x.device
        apply = torch.rand(n, generator=generator, device=dev) < self.jitter_p
        one = torch.ones(n, device=dev)

        def factor(j: float) -> Tensor:
            return torch.where(apply, uniform((n,), max(0.0, 1 - j), 1 + j, generator, dev), one)

        x = adjust_brightness(x, factor(self.jitter))
        x = adjust_contrast(x, factor(self.jitter))
        x = adjust_saturation(x, factor(self.saturation))
        if self.hue > 0:
            x = adjust_hue(x, torch.where(apply, uniform((n,), -self.hue, self.hue, generator, dev), one - 1))
        gray = _per_sample(torch.rand(n, generator=generator, device=dev) < self.grayscale_p)
        return torch.where(gray, _gray(x), x, out=x)  # x is the adjust_* ops' new tensor: in place

    def _blur_solarize(self, x: Tensor, generator: torch.Generator | None, view: int) -> Tensor:
        """Gaussian blur (p = ``blur_p``), then solarisation (p = ``solarize_p``), each the ``view``'s
        entry when given per view (BYOL: views 0, 2 / 1, 3); no draw when p = 0."""
        n, dev = x.shape[0], x.device
        blur_p, solarize_p = _for_view(self.blur_p, view), _for_view(self.solarize_p, view)
        if blur_p > 0:
            blur = torch.rand(n, generator=generator, device=dev) < blur_p
            sigma = uniform((n,), *self.blur_sigma, generator, dev)
            x = gaussian_blur(x, torch.where(blur, sigma, 0.0), self.blur_kernel)
        if solarize_p > 0:
            x = solarize(x, torch.rand(n, generator=generator, device=dev) < solarize_p)
        return x

    def views(
        self, images: Tensor | PackedImages, num_views: int, generator: torch.Generator | None = None
    ) -> list[Tensor]:
        """``num_views`` views of every image: from the decoded images ``(N, 3, H, W)`` (``crop=True``),
        or (``crop=False``) from crops ``(N, num_views, 3, size, size)`` or the loader's
        :class:`PackedImages`."""
        if self.crop:
            return [self(images, generator, v) for v in range(num_views)]
        if isinstance(images, PackedImages):
            images = images.crops(self.size)
        if images.ndim != 5 or images.shape[1] != num_views:
            raise ValueError(f"crop=False expects (N, {num_views}, 3, H, W) crops, got {tuple(images.shape)}")
        return [self(images[:, v], generator, v) for v in range(num_views)]


def decode_jpegs(data: Sequence[Tensor], device: torch.device) -> list[Tensor]:
    """JPEG bytes (1-D uint8 CPU tensors) -> RGB uint8 images ``(3, H, W)`` on ``device``.

    One batched call of torchvision's ``decode_jpeg`` (``torchvision.io.decode_jpeg(list, mode=RGB,
    device=...)``: its inputs are CPU tensors whatever the device; on CUDA it decodes with nvjpeg, on
    the CPU with libjpeg-turbo). If that call raises, every image is decoded by PIL on the CPU (logged)
    and moved to ``device``; a JPEG PIL cannot decode either raises RuntimeError (the readers checked
    only its header, so it was not skipped like an unreadable file).
    """
    if not data:
        return []
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        with warnings.catch_warnings():  # torchvision 0.29 deprecates its image I/O (for TorchCodec)
            warnings.simplefilter("ignore", DeprecationWarning)
            return list(decode_jpeg(list(data), mode=ImageReadMode.RGB, device=device))
    except Exception as err:  # any failure of the batched call (a damaged JPEG, nvjpeg): image by image
        log.warning(
            "batched decode_jpeg of %d JPEGs on %s failed (%s): decoding them one by one with PIL on the CPU",
            len(data),
            device,
            err,
        )
        return [_pil_decode(jpeg, i, len(data)).to(device) for i, jpeg in enumerate(data)]


def _pil_decode(jpeg: Tensor, i: int, n: int) -> Tensor:
    """One JPEG (1-D uint8 CPU tensor) decoded by PIL: RGB uint8 ``(3, H, W)`` (a view of HWC pixels)."""
    try:
        image = Image.open(io.BytesIO(jpeg.numpy().tobytes())).convert("RGB")
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise RuntimeError(
            f"JPEG {i} of {n} in the batch ({jpeg.numel()} bytes) cannot be decoded by decode_jpeg nor by PIL "
            f"({err}). With data.decode=device the loader reads only image headers, so an image damaged after "
            "its header reaches the device: repair or remove it, or train with data.decode=worker (unreadable "
            "images skipped and counted)"
        ) from err
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    return pixels.view(image.height, image.width, 3).permute(2, 0, 1)


@dataclass(frozen=True)
class PackedImages:
    """Images of different sizes in flat buffers (one host-to-device copy), with each image's view crop
    boxes: what the ``crop=False`` loader yields (see :class:`CropBoxes`).

    ``pixels`` ``(sum of H*W*3,)`` uint8, each decoded image HWC (on any device); ``sizes`` ``(N, 2)``
    (H, W) and ``boxes`` ``(N, V, 4)`` (top, left, height, width), int64 on the CPU. With
    ``data.decode: device`` some images are JPEGs still encoded: their bytes concatenated in ``jpeg``
    ``(sum of lengths,)`` uint8, which stays on the CPU (``decode_jpeg`` takes CPU inputs), and
    ``jpeg_lengths`` ``(N,)`` int64, each image's JPEG byte count, 0 where its pixels are in ``pixels``;
    both None when every image is decoded.
    """

    pixels: Tensor
    sizes: Tensor
    boxes: Tensor
    jpeg: Tensor | None = None
    jpeg_lengths: Tensor | None = None

    def __len__(self) -> int:
        return self.sizes.shape[0]

    @property
    def encoded(self) -> Tensor:
        """``(N,)`` bool: which images are JPEG bytes (decoded on the device by :meth:`crops`)."""
        return self.lengths() > 0

    def lengths(self) -> Tensor:
        """``(N,)`` int64: each image's JPEG byte count, 0 for a decoded image."""
        none = self.jpeg_lengths is None
        return torch.zeros(len(self), dtype=torch.long) if none else self.jpeg_lengths

    @staticmethod
    def cat(parts: Sequence[PackedImages]) -> PackedImages:
        pixels = torch.cat([p.pixels for p in parts])
        sizes, boxes = torch.cat([p.sizes for p in parts]), torch.cat([p.boxes for p in parts])
        if all(p.jpeg is None for p in parts):
            return PackedImages(pixels, sizes, boxes)
        jpeg = torch.cat([p.jpeg for p in parts if p.jpeg is not None])
        return PackedImages(pixels, sizes, boxes, jpeg, torch.cat([p.lengths() for p in parts]))

    def to(self, device: torch.device | str, non_blocking: bool = False) -> PackedImages:
        """The decoded pixels moved to ``device``; the JPEG bytes stay on the CPU (decode_jpeg's input)."""
        return replace(self, pixels=self.pixels.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> PackedImages:  # called by DataLoader(pin_memory=True)
        return replace(self, pixels=self.pixels.pin_memory())

    def decoded(self) -> list[Tensor]:
        """Every image as uint8 ``(3, H, W)`` on the pixels' device: the JPEGs decoded in one batched
        call (:func:`decode_jpegs`), the others views of ``pixels`` (HWC viewed as CHW)."""
        encoded = self.encoded
        jpegs = self.jpeg.split(self.lengths()[encoded].tolist()) if bool(encoded.any()) else []
        decoded = iter(decode_jpegs(jpegs, self.pixels.device))
        ends = (self.sizes.prod(1) * 3 * ~encoded).cumsum(0).tolist()  # the end of each one's pixels
        images = []
        for (h, w), end, is_jpeg in zip(self.sizes.tolist(), ends, encoded.tolist()):
            if not is_jpeg:
                images.append(self.pixels[end - h * w * 3 : end].view(h, w, 3).permute(2, 0, 1))
                continue
            images.append(next(decoded))
            if tuple(images[-1].shape) != (3, h, w):
                raise RuntimeError(
                    f"a JPEG decoded to {tuple(images[-1].shape)}, its header says (3, {h}, {w})"
                )
        return images

    def crops(self, size: int) -> Tensor:
        """Every box resized to ``size`` x ``size``: uint8 ``(N, V, 3, size, size)`` on the pixels' device.

        torchvision's ``resized_crop`` (bilinear, antialiased) per box, on the HWC image viewed as CHW (the
        layout its vectorised uint8 CPU kernel takes; equal to the contiguous-CHW result, tested) or on
        the CHW image ``decode_jpeg`` gave.
        """
        from torchvision.transforms.v2.functional import resized_crop

        out = []
        for image, boxes in zip(self.decoded(), self.boxes.tolist()):
            out.append(
                torch.stack([resized_crop(image, *box, [size, size], antialias=True) for box in boxes])
            )
        return torch.stack(out)


class CropBoxes:
    """DataLoader-worker half of the ``crop=False`` path: an image -> its pixels (or, a JPEG left
    encoded by the reader, its bytes) and ``num_views`` crop boxes, a :class:`PackedImages` of one image;
    no pixel work.

    Each box is torchvision's ``RandomResizedCrop.get_params`` (scale ``(min_scale, 1)``, ratio 3/4-4/3,
    the worker's torch RNG), as in the PIL recipe; an encoded image's are drawn from its header's size
    with the same draws. The device resizes them (:meth:`PackedImages.crops`), which differs from the
    PIL recipe's resize by rounding only (mean |difference| under one grey level, tested).
    """

    def __init__(self, num_views: int, min_scale: float = 0.2) -> None:
        self.num_views, self.scale = num_views, (min_scale, 1.0)

    def boxes(self, image: Image.Image | Tensor) -> Tensor:
        """``(1, V, 4)`` int64 boxes (top, left, height, width) for ``image`` (only its size is read)."""
        from torchvision.transforms import RandomResizedCrop

        return torch.tensor(
            [[RandomResizedCrop.get_params(image, self.scale, (3 / 4, 4 / 3)) for _ in range(self.num_views)]]
        )

    def __call__(self, image: Image.Image | EncodedImage) -> PackedImages:
        if isinstance(image, EncodedImage):
            shape = torch.zeros(()).expand(3, image.height, image.width)  # the header's size, no pixels
            jpeg = torch.frombuffer(bytearray(image.data), dtype=torch.uint8)
            return PackedImages(
                torch.zeros(0, dtype=torch.uint8),
                torch.tensor([[image.height, image.width]]),
                self.boxes(shape),
                jpeg,
                torch.tensor([jpeg.numel()]),
            )
        image = image.convert("RGB") if image.mode != "RGB" else image
        boxes = self.boxes(image)
        pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
        return PackedImages(pixels, torch.tensor([[image.height, image.width]]), boxes)

    def __repr__(self) -> str:
        return f"CropBoxes(num_views={self.num_views}, scale={self.scale})"
