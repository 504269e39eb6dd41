"""Batched multi-view augmentation of uint8 image tensors on their own device.

:class:`BatchAugment` applies the SimSiam/BYOL view recipe to a whole batch, independently per sample
and seeded by an explicit generator (a resumed run redraws the same views); ImageNet-size images
travel as crop boxes in one packed buffer (:class:`PackedImages`). Each step and how it matches
torchvision: docs/reference/internals.md.
"""

from __future__ import annotations

import functools
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


@functools.lru_cache(maxsize=64)
def channel_constant(values: tuple[float, ...], device: torch.device, dtype: torch.dtype) -> Tensor:
    """``(1, C, 1, 1)`` constant on ``device``, built once per (values, device, dtype): a
    ``torch.tensor(list, device=cuda)`` per call is a blocking host-to-device copy."""
    return torch.tensor(values, dtype=dtype).view(1, -1, 1, 1).to(device)


def _gray(x: Tensor) -> Tensor:
    return (x * channel_constant(_GRAY, x.device, x.dtype)).sum(1, keepdim=True)


def normalize_uint8(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 images ``(N, C, H, W)`` as ``ToTensor`` + ``Normalize(mean, std)`` make them, bit for bit
    (the same float32 ops: / 255, - mean, / std), with the constants cached per device. 255 is a device
    tensor: CUDA divides by a host scalar as a product with its reciprocal, not the same floats."""
    x = (
        x.float().div_(channel_constant((255.0,), x.device, torch.float32))
        if x.dtype == torch.uint8
        else x.float()
    )
    mean_c, std_c = (channel_constant(tuple(v), x.device, torch.float32) for v in (mean, std))
    return x.sub_(mean_c).div_(std_c)


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
    n = channel_constant((5.0, 3.0, 1.0), x.device, x.dtype)
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
        mean = channel_constant(self.mean, x.device, torch.float32)
        std = channel_constant(self.std, x.device, torch.float32)
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
    both None when every image is decoded. ``predecoded``: those JPEGs already decoded on the pixels'
    device (:meth:`decode_ahead`), uint8 ``(3, H, W)`` each in the order of ``jpeg``; None: not yet.
    """

    pixels: Tensor
    sizes: Tensor
    boxes: Tensor
    jpeg: Tensor | None = None
    jpeg_lengths: Tensor | None = None
    predecoded: tuple[Tensor, ...] | None = None

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
        with_jpegs = [p for p in parts if p.jpeg is not None]
        ahead = None  # the parts' decoded JPEGs, kept only when every part with JPEGs has them
        if all(p.predecoded is not None for p in with_jpegs):
            ahead = tuple(image for p in with_jpegs for image in p.predecoded)
        return PackedImages(pixels, sizes, boxes, jpeg, torch.cat([p.lengths() for p in parts]), ahead)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> PackedImages:
        """The decoded pixels (and :attr:`predecoded`) moved to ``device``; the JPEG bytes stay on the
        CPU (decode_jpeg's input)."""
        ahead = self.predecoded
        if ahead is not None:
            ahead = tuple(image.to(device, non_blocking=non_blocking) for image in ahead)
        return replace(self, pixels=self.pixels.to(device, non_blocking=non_blocking), predecoded=ahead)

    def pin_memory(self) -> PackedImages:  # called by DataLoader(pin_memory=True)
        ahead = self.predecoded
        if ahead is not None:
            ahead = tuple(image.pin_memory() for image in ahead)
        return replace(self, pixels=self.pixels.pin_memory(), predecoded=ahead)

    def decode_ahead(self) -> PackedImages:
        """This batch with its JPEGs decoded now on the pixels' device (:attr:`predecoded`), so that
        :meth:`crops` does not decode them; itself when it has none or they are decoded already."""
        if self.predecoded is not None or not bool(self.encoded.any()):
            return self
        return replace(self, predecoded=tuple(self._jpeg_images()))

    def _jpeg_images(self) -> list[Tensor]:
        """The JPEGs as uint8 ``(3, H, W)`` on the pixels' device, in the order of ``jpeg``:
        :attr:`predecoded`, else one :func:`decode_jpegs` call (none without JPEGs)."""
        if self.predecoded is not None:
            return list(self.predecoded)
        encoded = self.encoded
        jpegs = self.jpeg.split(self.lengths()[encoded].tolist()) if bool(encoded.any()) else []
        return decode_jpegs(jpegs, self.pixels.device)

    def decoded(self) -> list[Tensor]:
        """Every image as uint8 ``(3, H, W)`` on the pixels' device: the JPEGs decoded in one batched
        call (:func:`decode_jpegs`; :attr:`predecoded` when present), the others views of ``pixels``
        (HWC viewed as CHW)."""
        encoded = self.encoded
        decoded = iter(self._jpeg_images())
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

    def crops(self, size: int, batched: bool | None = None) -> Tensor:
        """Every box resized to ``size`` x ``size``: uint8 ``(N, V, 3, size, size)`` on the pixels' device.

        torchvision's ``resized_crop`` (bilinear, antialiased; its CPU uint8 kernel's bytes) either per
        box (``batched=False``; on the HWC image viewed as CHW, or the CHW image ``decode_jpeg`` gave) or
        for the whole batch at once (:func:`resize_boxes`: a fixed number of ops whatever the batch size;
        the same bytes, tested). ``None``: batched off the CPU, per box on it (ATen's vectorised uint8
        kernel is the faster one there). Boxes outside their image or downscaled past
        :data:`MAX_BATCHED_SCALE` are resized per box.
        """
        if batched is None:
            batched = self.pixels.device.type != "cpu"
        if batched and self._batchable(size):
            return self._crops_batched(size)
        from torchvision.transforms.v2.functional import resized_crop

        out = []
        for image, boxes in zip(self.decoded(), self.boxes.tolist()):
            out.append(
                torch.stack([resized_crop(image, *box, [size, size], antialias=True) for box in boxes])
            )
        return torch.stack(out)

    def _batchable(self, size: int) -> bool:
        """Every box inside its image and downscaled at most :data:`MAX_BATCHED_SCALE` (host tensors)."""
        if len(self) == 0:
            return True
        top, left, h, w = self.boxes.unbind(2)
        height, width = self.sizes[:, :1], self.sizes[:, 1:]
        inside = (top >= 0) & (left >= 0) & (h > 0) & (w > 0) & (top + h <= height) & (left + w <= width)
        return bool(inside.all()) and int(self.boxes[..., 2:].max()) <= MAX_BATCHED_SCALE * size

    def _crops_batched(self, size: int) -> Tensor:
        """:meth:`crops` as :func:`resize_boxes` over one canvas per group of similar sizes
        (:func:`size_groups`; one group for same-size images): a fixed number of ops per group."""
        dev, n, views = self.pixels.device, len(self), self.boxes.shape[1]
        if n == 0:
            return torch.zeros(0, views, 3, size, size, dtype=torch.uint8, device=dev)
        sizes, encoded = self.sizes.tolist(), self.encoded.tolist()
        jpegs = self._decoded_jpegs()
        sources = {False: (self.pixels, 3), True: (jpegs, 1)}  # HWC pixels (element stride 3), CHW
        offsets = _source_offsets(sizes, encoded)
        groups = [sorted(g, key=lambda i: encoded[i]) for g in size_groups(sizes)]
        order = [i for g in groups for i in g]
        meta = _to(
            torch.cat([self.boxes[order].view(-1, 4), torch.tensor(order).view(-1, 1).expand(-1, 4)]), dev
        )
        boxes, perm = meta[: n * views], meta[n * views :, 0]
        dtype, out, start = _matmul_dtype(dev), [], 0
        for group in groups:
            hmax, wmax = (max(sizes[i][k] for i in group) for k in (0, 1))
            rows = []
            for jpeg in (False, True):  # the group's HWC images first, then its decoded JPEGs
                members = [i for i in group if encoded[i] == jpeg]
                if members:
                    source, stride = sources[jpeg]
                    params = [(offsets[i], *_row_strides(sizes[i], jpeg)) for i in members]
                    rows.append(canvas_rows(source, stride, _to(torch.tensor(params), dev), hmax, wmax))
            canvas = torch.cat(rows).to(dtype) if len(rows) > 1 else rows[0].to(dtype)
            group_boxes = boxes[start * views : (start + len(group)) * views]
            taps = (
                resize_taps(self.boxes[group, :, 2].flatten().tolist(), size),
                resize_taps(self.boxes[group, :, 3].flatten().tolist(), size),
            )
            out.append(resize_boxes(canvas, group_boxes, views, size, taps))
            start += len(group)
        crops = torch.cat(out) if len(out) > 1 else out[0]
        if order == list(range(n)):
            return crops
        return torch.empty_like(crops).index_copy_(0, perm, crops)

    def _decoded_jpegs(self) -> Tensor:
        """The batch's JPEGs decoded on the pixels' device, concatenated CHW ``(sum of 3*H*W,)`` uint8
        (empty without JPEGs); RuntimeError when one decodes to another size than its header's."""
        encoded = self.encoded
        if not bool(encoded.any()):
            return torch.zeros(0, dtype=torch.uint8, device=self.pixels.device)
        images = self._jpeg_images()
        for image, (h, w) in zip(images, self.sizes[encoded].tolist()):
            if tuple(image.shape) != (3, h, w):
                raise RuntimeError(f"a JPEG decoded to {tuple(image.shape)}, its header says (3, {h}, {w})")
        return torch.cat([image.reshape(-1) for image in images])


# --- the batched antialiased resize of crop boxes (PackedImages.crops; docs/guides/pretraining.md) ---

#: largest downscale (crop side / output side) the batched resize takes exactly (its sums stay below
#: 2**24 in float32); boxes beyond it are resized one by one
MAX_BATCHED_SCALE = 100.0


def pow2(e: Tensor) -> Tensor:
    """``2**e`` as float64 for int64 ``e >= 0``, exactly (an integer shift: no ``pow`` rounding)."""
    return torch.bitwise_left_shift(torch.ones_like(e), e).double()


def size_groups(sizes: Sequence[Sequence[int]], waste: float = 2.0) -> list[list[int]]:
    """Image indices grouped so that padding each group to its largest height and width costs at most
    ``waste`` x its pixels (greedy over the images sorted by area): one group for same-size images, a
    few for a mixed batch, so that one large image does not pad the whole batch."""
    groups: list[list[int]] = []
    group: list[int] = []
    hmax = wmax = area = 0
    for i in sorted(range(len(sizes)), key=lambda i: sizes[i][0] * sizes[i][1]):
        h, w = sizes[i]
        if group and (len(group) + 1) * max(hmax, h) * max(wmax, w) > waste * (area + h * w):
            groups.append(group)
            group, hmax, wmax, area = [], 0, 0, 0
        group.append(i)
        hmax, wmax, area = max(hmax, h), max(wmax, w), area + h * w
    return [sorted(g) for g in [*groups, group] if g]


def _source_offsets(sizes: Sequence[Sequence[int]], encoded: Sequence[bool]) -> list[int]:
    """Each image's first element in its source buffer (the HWC pixels or the decoded JPEGs)."""
    ends = {False: 0, True: 0}
    offsets = []
    for (h, w), jpeg in zip(sizes, encoded):
        offsets.append(ends[jpeg])
        ends[jpeg] += 3 * h * w
    return offsets


def _row_strides(size: Sequence[int], chw: bool) -> tuple[int, int]:
    """(row stride, channel stride) of an image ``(H, W)`` stored CHW or HWC."""
    h, w = size
    return (w, h * w) if chw else (3 * w, 1)


def _to(x: Tensor, device: torch.device) -> Tensor:
    """A small host tensor on ``device`` without a host sync (pinned, then a non-blocking copy)."""
    return (x.pin_memory() if device.type == "cuda" else x).to(device, non_blocking=True)


def canvas_rows(source: Tensor, stride: int, params: Tensor, height: int, width: int) -> Tensor:
    """Rows (y, channel) of images in a flat uint8 ``source`` padded to ``height`` x ``width``: uint8
    ``(n, height * 3, width)`` in one gather.

    ``params`` ``(n, 3)`` int64 on the source's device: each image's first element, row stride and
    channel stride; ``stride``: the element stride along a row (3 for HWC, 1 for CHW). The padding holds
    whatever follows a row in ``source`` (the resize weights are zero there)."""
    flat = F.pad(source, (0, stride * width))
    rows = flat.as_strided((source.numel() + 1, width), (1, stride))  # every start, a row each
    y = torch.arange(height, device=source.device).view(1, -1, 1)
    c = torch.arange(3, device=source.device).view(1, 1, -1)
    first, row, channel = (p.view(-1, 1, 1) for p in params.unbind(1))
    starts = (first + y * row + c * channel).clamp_max_(source.numel())  # rows past an image: any
    return rows.index_select(0, starts.view(-1)).view(-1, 3 * height, width)


def resize_taps(lengths: Sequence[int], size: int) -> int:
    """The most input taps any of these 1-D antialiased resizes ``lengths -> size`` reads: torchvision's
    ``ceil(support) * 2 + 1`` with support ``max(length / size, 1)`` (host ints: no device read)."""
    return max(math.ceil(max(n / size, 1.0)) * 2 + 1 for n in lengths)


def aa_weights(lengths: Tensor, size: int, taps: int) -> tuple[Tensor, Tensor, Tensor]:
    """Quantised weights of torchvision's CPU uint8 antialiased bilinear resize, for B 1-D resizes at once.

    ``lengths`` ``(B,)`` int64 input lengths -> ``size`` outputs, each reading at most ``taps`` inputs.
    As ATen's ``_compute_indices_min_size_weights_aa`` + ``_compute_index_ranges_int16_weights``, in
    float64: support ``scale = length / size`` (at least 1), centre ``scale (i + 0.5)``, triangle filter
    scaled by ``1 / scale``, weights normalised, then rounded to integers at the largest precision ``p``
    under which the largest weight stays under 2**15. Returns ``first`` ``(B, size)`` int64 (first input
    index of each output), ``weights`` ``(B, size, taps)`` float64 integers, ``precision`` ``(B,)`` int64.
    """
    dev = lengths.device
    scale = lengths.double() / size  # (B,)
    down = scale >= 1.0
    support = torch.where(down, scale, 1.0).unsqueeze(1)
    invscale = torch.where(down, 1.0 / scale, 1.0).view(-1, 1, 1)
    centre = scale.unsqueeze(1) * (torch.arange(size, device=dev, dtype=torch.float64) + 0.5)  # (B, size)
    first = (centre - support + 0.5).trunc().clamp_min_(0)
    last = torch.minimum((centre + support + 0.5).trunc(), lengths.unsqueeze(1).double())
    count = torch.minimum((last - first).clamp_min_(0), support.ceil() * 2 + 1)  # (B, size)
    j = torch.arange(taps, device=dev, dtype=torch.float64)
    x = (first.unsqueeze(2) + j - centre.unsqueeze(2) + 0.5) * invscale  # (B, size, taps)
    w = torch.where(j < count.unsqueeze(2), (1.0 - x.abs()).clamp_min_(0.0), 0.0)
    total = w.sum(2, keepdim=True)
    w = torch.where(total != 0, w / total, w)
    bits = pow2(torch.arange(1, 23, device=dev))  # 2**(p + 1), p = 0..21
    precision = (0.5 + w.amax((1, 2)).unsqueeze(1) * bits < 2**15).sum(1)  # (B,)
    weights = (w * pow2(precision).view(-1, 1, 1) + 0.5).floor_()
    return first.long(), weights, precision


def dense_weights(
    first: Tensor, weights: Tensor, precision: Tensor, offset: Tensor, length: int, dtype: torch.dtype
) -> Tensor:
    """``(B, 2, size, length + taps)`` matrices of :func:`aa_weights` over a canvas axis (the first
    ``length`` columns are the axis; the box starts at ``offset`` ``(B,)``): the integer weights split in
    an 8-bit high half scaled by ``2**(8 - p)`` and a low half scaled by ``2**-8``, both exact in bf16."""
    b, size, taps = weights.shape
    high = (weights / 256).floor_()
    step = (1.0 / pow2(precision - 8)).view(-1, 1, 1)
    halves = torch.stack([high * step, (weights - 256 * high) / 256], 1)
    index = (offset.view(-1, 1) + first).unsqueeze(2) + torch.arange(taps, device=first.device)
    dense = torch.zeros(b, 2, size, length + taps, device=first.device, dtype=dtype)
    return dense.scatter_(3, index.unsqueeze(1).expand(b, 2, size, taps), halves.to(dtype))


def round_shift(high: Tensor, low: Tensor, precision: Tensor, out: Tensor) -> Tensor:
    """``clamp((256 H + L + 2**(p-1)) >> p, max=255)`` from the two halves' products ``high = H 2**(8-p)``
    and ``low = L / 256`` (float32, exact), as ``floor(high + floor(low + 2**(p-9)) 2**(8-p))``, written
    to ``out``; ``precision`` broadcasts against them. ``low`` is overwritten."""
    low.add_(pow2(precision - 9).float()).floor_()
    torch.addcmul(high, low, (1.0 / pow2(precision - 8)).float(), out=out)
    return out.floor_().clamp_max_(255.0)


def _matmul_dtype(device: torch.device) -> torch.dtype:
    """bf16 on CUDA with native bf16 (its products of 8-bit halves are exact, accumulated in float32),
    else float32."""
    native = device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)
    return torch.bfloat16 if native else torch.float32


_BF16_OUT_FLOAT = [True]  # False once CUDA's bmm(bf16, bf16, out_dtype=float32) has failed here


def _bmm(a: Tensor, b: Tensor) -> Tensor:
    """Batched float32 products; bf16 inputs: ``out_dtype=float32`` on CUDA, float32 products of the
    bf16 values elsewhere or if that call fails (the same exact sums; how the CPU tests check it)."""
    if a.dtype == torch.float32:
        return torch.bmm(a, b)
    if a.device.type == "cuda" and _BF16_OUT_FLOAT[0]:
        try:
            return torch.bmm(a, b, out_dtype=torch.float32)
        except RuntimeError as err:  # not run on hardware yet: keep training, in float32
            _BF16_OUT_FLOAT[0] = False
            log.warning(
                "bmm(bf16, out_dtype=float32) failed (%s): the batched crops use float32 matmuls", err
            )
    return torch.bmm(a.float(), b.float())


def resize_boxes(canvas: Tensor, boxes: Tensor, views: int, size: int, taps: tuple[int, int]) -> Tensor:
    """Every box resized as torchvision's uint8 antialiased bilinear ``resized_crop``, bit for bit.

    ``canvas`` ``(n, H * 3, W)`` in the matmul dtype, rows (y, channel) of the images padded to H x W
    (padding: any finite value); ``boxes`` ``(n * views, 4)`` int64 (top, left, height, width) on the
    canvas's device; ``taps`` (vertical, horizontal) from :func:`resize_taps`. Two batched matmuls,
    horizontal then vertical, each rounded to uint8 as ATen's separable uint8 kernel does.
    Returns uint8 ``(n, views, 3, size, size)``.
    """
    n, rows, width = canvas.shape
    height, b, dtype = rows // 3, n * views, canvas.dtype
    top, left, h, w = boxes.unbind(1)
    fx, wx, px = aa_weights(w, size, taps[1])
    fy, wy, py = aa_weights(h, size, taps[0])
    mx = dense_weights(fx, wx, px, left, width, dtype).view(n, views * 2 * size, -1)[..., :width]
    first = _bmm(canvas, mx.transpose(1, 2)).view(n, height, 3, views, 2, size)  # columns (view, half, x)
    first = first.permute(0, 3, 1, 2, 4, 5)  # (n, V, H, 3, 2, S)
    rows1 = torch.empty(n, views, height, 3, size, device=canvas.device)
    round_shift(first[..., 0, :], first[..., 1, :], px.view(n, views, 1, 1, 1), rows1)
    rows1 = rows1.to(dtype).view(b, height, 3 * size)
    my = dense_weights(fy, wy, py, top, height, dtype).view(b, 2 * size, -1)[..., :height]
    second = _bmm(my, rows1).view(b, 2, size, 3, size)
    out = torch.empty(b, 3, size, size, device=canvas.device)
    round_shift(second[:, 0], second[:, 1], py.view(b, 1, 1, 1), out.permute(0, 2, 1, 3))
    return out.to(torch.uint8).view(n, views, 3, size, size)


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
