"""SyntheticShapes: a procedurally generated, offline dataset for demos and tests.

The class is the object's shape; colour, scale, rotation, position, background and clutter are
nuisances. Images are rendered on the fly, a pure function of ``(seed, split, index)``, with boxes
and masks for detection and segmentation. Details and speed: docs/reference/internals.md.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

CLASSES: tuple[str, ...] = (  # alphabetical, so torchvision's ImageFolder assigns the same indices
    "arrow",
    "circle",
    "crescent",
    "cross",
    "heart",
    "hexagon",
    "ring",
    "square",
    "star",
    "triangle",
)
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 512
MAX_EXTRA_INSTANCES = 2
_LABEL_SALT = 0x1ABE1  # keeps the label stream independent of the image stream


def _regular(n: int, radius: float = 1.0, phase: float = -math.pi / 2) -> np.ndarray:
    t = phase + np.arange(n) * 2 * math.pi / n
    return np.stack([radius * np.cos(t), radius * np.sin(t)], 1)


def _star(points: int, outer: float, inner: float) -> np.ndarray:
    t = -math.pi / 2 + np.arange(2 * points) * math.pi / points
    r = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def _heart(n: int = 40) -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    pts = np.stack([x, y], 1) / 15.0
    return pts - (pts.max(0) + pts.min(0)) / 2


def _cross(w: float = 0.34, l: float = 1.0) -> np.ndarray:
    return np.array(
        [
            (-w, -l),
            (w, -l),
            (w, -w),
            (l, -w),
            (l, w),
            (w, w),
            (w, l),
            (-w, l),
            (-w, w),
            (-l, w),
            (-l, -w),
            (-w, -w),
        ]
    )


def _arrow() -> np.ndarray:
    return np.array(
        [(-1.0, -0.24), (0.1, -0.24), (0.1, -0.7), (1.05, 0.0), (0.1, 0.7), (0.1, 0.24), (-1.0, 0.24)]
    )


# Each shape is a list of (polygon in unit coordinates, fill): fill 1 paints, fill 0 cuts a hole.
_SHAPES: dict[str, list[tuple[np.ndarray, int]]] = {
    "arrow": [(_arrow(), 1)],
    "circle": [(_regular(48), 1)],
    "crescent": [(_regular(48), 1), (_regular(48, 0.86) + np.array([0.5, -0.12]), 0)],
    "cross": [(_cross(), 1)],
    "heart": [(_heart(), 1)],
    "hexagon": [(_regular(6, 1.05, 0.0), 1)],
    "ring": [(_regular(48), 1), (_regular(40, 0.58), 0)],
    "square": [(_regular(4, 1.2, math.pi / 4), 1)],
    "star": [(_star(5, 1.2, 0.5), 1)],
    "triangle": [(_regular(3, 1.25), 1)],
}
_EXTENT = {
    name: float(max(np.linalg.norm(p, axis=1).max() for p, _ in parts)) for name, parts in _SHAPES.items()
}


@dataclass
class RenderedSample:
    """One rendered item: the image, its label and every annotated shape instance."""

    image: np.ndarray  # uint8 [H, W, 3]
    label: int
    masks: np.ndarray  # bool [K, H, W]
    boxes: np.ndarray  # float32 [K, 4], xyxy in pixels (x1, y1 exclusive: tight box of the mask)
    colors: np.ndarray  # uint8 [K, 3], the fill colour of each instance


def split_id(split: str) -> int:
    """The stable integer that stands for ``split`` in the seed (CRC-32 of its name)."""
    return zlib.crc32(split.encode("utf-8"))


class SyntheticShapes(Dataset):
    """Procedural shapes dataset; items are ``(PIL RGB image, int label)``.

    Args:
        num_images: length of the dataset.
        image_size: side of the square images in pixels (32 to 512; 32, 64 and 224 are tested).
        seed: non-negative integer; with ``split`` and the index it fixes every pixel.
        split: any name (``"train"``, ``"val"``, ...); different splits give different images.
        num_classes: use the first ``num_classes`` (2 to 10) of :data:`CLASSES`.
        max_extra_instances: up to this many (0 to 2) smaller shapes of the same class per image.
        transform: optional callable applied to the PIL image in ``__getitem__``.
        textured_background: ``False`` paints the background flat (its first colour) instead.
        clutter: ``False`` leaves out the distractor lines and dots.
        grayscale: ``True`` renders grey images (still RGB; instance ``colors`` become grey too).

    The three nuisance switches are for ablations: they consume the same random numbers whether on or
    off, so item ``i`` keeps its label, shapes, layout, masks and boxes and only loses the nuisance.

    Labels are balanced: each consecutive block of ``num_classes`` indices holds every class once, in
    an order shuffled by ``(seed, split, block)``.
    """

    def __init__(
        self,
        num_images: int,
        image_size: int = 64,
        seed: int = 0,
        split: str = "train",
        *,
        num_classes: int = len(CLASSES),
        max_extra_instances: int = MAX_EXTRA_INSTANCES,
        transform: Callable[[Image.Image], Any] | None = None,
        textured_background: bool = True,
        clutter: bool = True,
        grayscale: bool = False,
    ) -> None:
        _check_int("num_images", num_images, 1, None)
        _check_int("image_size", image_size, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE)
        _check_int("seed", seed, 0, 2**63 - 1)
        _check_int("num_classes", num_classes, 2, len(CLASSES))
        _check_int("max_extra_instances", max_extra_instances, 0, MAX_EXTRA_INSTANCES)
        if not isinstance(split, str) or not split or not all(c.isalnum() or c in "-_." for c in split):
            raise ValueError(
                f"split must be a non-empty name made of letters, digits, '-', '_', '.'; got {split!r}"
            )
        self.num_images = int(num_images)
        self.image_size = int(image_size)
        self.seed = int(seed)
        self.split = split
        self.classes: list[str] = list(CLASSES[:num_classes])
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.max_extra_instances = int(max_extra_instances)
        self.transform = transform
        self.textured_background, self.clutter, self.grayscale = textured_background, clutter, grayscale
        self._split_id = split_id(split)
        self._orders: dict[int, list[int]] = {}  # label order of each block, cached

    def __len__(self) -> int:
        return self.num_images

    def __repr__(self) -> str:
        off = [k for k in ("textured_background", "clutter") if not getattr(self, k)]
        extra = "".join(f", {k}=False" for k in off) + (", grayscale=True" if self.grayscale else "")
        return (
            f"SyntheticShapes(num_images={self.num_images}, image_size={self.image_size}, seed={self.seed}, "
            f"split={self.split!r}, num_classes={len(self.classes)}{extra})"
        )

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, label, _ = self._draw(index)
        return (self.transform(image) if self.transform is not None else image), label

    def label(self, index: int) -> int:
        """The class of item ``index`` without rendering it."""
        index = self._check_index(index)
        c = len(self.classes)
        block = index // c
        order = self._orders.get(block)
        if order is None:
            if len(self._orders) > 4096:
                self._orders.clear()
            rng = np.random.default_rng([self.seed, self._split_id, block, _LABEL_SALT])
            order = self._orders[block] = rng.permutation(c).tolist()
        return order[index % c]

    @property
    def targets(self) -> list[int]:
        """All labels, like torchvision's ``targets``."""
        return [self.label(i) for i in range(len(self))]

    def annotation(self, index: int) -> dict[str, np.ndarray]:
        """``dict(boxes=float32 [K,4] xyxy pixels, labels=int64 [K] class ids, masks=bool [K,H,W])``, K >= 1.

        Boxes are tight boxes of the masks in pixel-edge coordinates (``x1``, ``y1`` exclusive).
        """
        s = self.render(index)
        return {"boxes": s.boxes, "labels": np.full(len(s.boxes), s.label, dtype=np.int64), "masks": s.masks}

    def render(self, index: int) -> RenderedSample:
        """Render item ``index`` with its instances (deterministic in ``(seed, split, index)``)."""
        image, label, instances = self._draw(index)
        size = self.image_size
        masks, colors = [], []
        for alpha, (x0, y0), color in instances:
            mask = np.zeros((size, size), dtype=bool)
            a = np.frombuffer(alpha.tobytes(), np.uint8).reshape(alpha.height, alpha.width)
            mask[y0 : y0 + alpha.height, x0 : x0 + alpha.width] = a >= 128
            if mask.any():  # a sliver too thin to reach half coverage anywhere is no instance
                masks.append(mask)
                colors.append(color)
        return RenderedSample(
            image=np.asarray(image).copy(),
            label=label,
            masks=np.stack(masks),
            boxes=np.asarray([_tight_box(m) for m in masks], dtype=np.float32).reshape(-1, 4),
            colors=np.asarray(colors, dtype=np.uint8).reshape(-1, 3),
        )

    def _draw(self, index: int) -> tuple[Image.Image, int, list[tuple[Image.Image, tuple[int, int], tuple]]]:
        """The PIL image, its label and (coverage image, origin, colour) of each drawn instance."""
        label = self.label(index)
        index = self._check_index(index)
        rng = np.random.default_rng([self.seed, self._split_id, index])
        size, shape = self.image_size, self.classes[label]
        image, palette = _background(rng, size)
        if not self.textured_background:
            image = Image.new("RGB", (size, size), tuple(round(c) for c in palette[0]))
        _clutter(rng, image, size, paint=self.clutter)
        instances = []
        for x, y, radius, angle, aspect in _layout(rng, shape, size, self.max_extra_instances):
            color = _contrasting_color(rng, palette)
            alpha, origin = _rasterize(shape, x, y, radius, angle, aspect, size)
            image.paste(color, (*origin, origin[0] + alpha.width, origin[1] + alpha.height), alpha)
            instances.append((alpha, origin, color))
        if self.grayscale:
            image = image.convert("L").convert("RGB")
            instances = [(a, o, (_luma(c),) * 3) for a, o, c in instances]
        return image, label, instances

    def _check_index(self, index: int) -> int:
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
            raise TypeError(f"index must be an integer, got {type(index).__name__}")
        i = int(index) + (self.num_images if index < 0 else 0)
        if not 0 <= i < self.num_images:
            raise IndexError(f"index {index} out of range for SyntheticShapes of length {self.num_images}")
        return i


def _check_int(name: str, value: Any, lo: int, hi: int | None) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        bounds = f">= {lo}" if hi is None else f"between {lo} and {hi}"
        raise ValueError(f"{name} must be {bounds}, got {value}")


# --------------------------------------------------------------------------------------- rendering


@lru_cache(maxsize=16)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-0.5, 0.5], as a row vector and a column vector (float32)."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    return c[None, :], c[:, None]


def _background(rng: np.random.Generator, size: int) -> tuple[Image.Image, tuple[list[float], list[float]]]:
    """A textured background whose colours all lie on the segment between two random colours."""
    colors = rng.uniform(0, 255, (2, 3)).astype(np.float32)
    kind, theta, a, b, c, d = rng.random(6).tolist()
    kind = int(kind * 5)
    x, y = _grid(size)
    cos, sin = math.cos(2 * math.pi * theta), math.sin(2 * math.pi * theta)
    if kind == 0:  # linear gradient
        t = (x * (0.7 * cos) + y * (0.7 * sin)) + 0.5
    elif kind == 1:  # radial gradient around a random centre
        t = np.minimum(np.sqrt((x - (a - 0.5)) ** 2 + (y - (b - 0.5)) ** 2) * (1 / (0.5 + 0.7 * c)), 1)
    elif kind == 2:  # soft or hard stripes
        t = np.sin((x * cos + y * sin) * (2 * math.pi * (2.5 + 5.5 * a)) + 2 * math.pi * b)
        t = 0.5 + 0.5 * (np.sign(t) if c < 0.5 else t)
    elif kind == 3:  # rotated checkerboard
        n = 2 + 5 * a
        t = (np.floor((x * cos + y * sin) * n) + np.floor((x * sin - y * cos) * n)) % 2
    else:  # smooth blotches
        cells = 2 + int(a * 4)
        grid = Image.frombytes("L", (cells, cells), rng.bytes(cells * cells))
        t = np.frombuffer(grid.resize((size, size), Image.BILINEAR).tobytes(), np.uint8).reshape(size, size)
        t = t * np.float32(1 / 255)
    # t is in [0, 1]; then uniform pixel noise with a standard deviation of up to 14 grey levels
    canvas = (t[..., None] * (colors[1] - colors[0])) + colors[0]
    canvas += (rng.random((size, size, 1), dtype=np.float32) - np.float32(0.5)) * np.float32(48.5 * d)
    np.maximum(canvas, 0, out=canvas)
    np.minimum(canvas, 255, out=canvas)
    c0, c1 = colors.tolist()
    return Image.frombytes("RGB", (size, size), canvas.astype(np.uint8).tobytes()), (c0, c1)


def _clutter(rng: np.random.Generator, image: Image.Image, size: int, paint: bool = True) -> None:
    """Unannotated distractors drawn beneath the shapes: line segments and small dots.

    ``paint=False`` draws the same random numbers and paints nothing.
    """
    n_lines, n_dots = rng.integers(0, (5, 7)).tolist()
    if n_lines + n_dots == 0:
        return
    if not paint:
        rng.integers(0, 256, (n_lines + n_dots, 3))
        rng.random((n_lines, 4))
        rng.random((n_dots, 3))
        return
    draw = ImageDraw.Draw(image)
    width = max(1, round(size / 48))
    colors = rng.integers(0, 256, (n_lines + n_dots, 3)).tolist()
    for (x0, y0, length, theta), color in zip(rng.random((n_lines, 4)).tolist(), colors):
        length, theta = (0.15 + 0.45 * length) * size, 2 * math.pi * theta
        x0, y0 = x0 * size, y0 * size
        draw.line((x0, y0, x0 + length * math.cos(theta), y0 + length * math.sin(theta)), tuple(color), width)
    for (x, y, r), color in zip(rng.random((n_dots, 3)).tolist(), colors[n_lines:]):
        x, y, r = x * size, y * size, (0.01 + 0.02 * r) * size + 0.5
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(color))


def _layout(rng: np.random.Generator, shape: str, size: int, max_extra: int) -> list[tuple[float, ...]]:
    """(x, y, radius, angle, aspect) of the primary shape and of non-overlapping smaller copies."""
    extent = _EXTENT[shape]
    u = rng.random()
    n_extra = min(max_extra, 0 if u < 0.5 else 1 if u < 0.8 else 2)
    placed: list[tuple[float, ...]] = []
    bounds: list[float] = []
    for k in range(1 + n_extra):
        aspect, scale, angle = rng.random(3).tolist()
        aspect = 0.85 + 0.3 * aspect
        stretch = extent * max(aspect, 1 / aspect)
        if k == 0:  # leave room for the extra instances, if any
            radius = (0.2 + 0.2 * scale if n_extra == 0 else 0.19 + 0.12 * scale) * size
        else:
            radius = (0.09 + 0.06 * scale) * size
        radius = min(radius, (0.5 * size - 1.5) / stretch)
        bound = radius * stretch
        for x, y in rng.random((1 if k == 0 else 16, 2)).tolist():
            x, y = bound + 1 + x * (size - 2 * bound - 2), bound + 1 + y * (size - 2 * bound - 2)
            if all(math.hypot(x - p[0], y - p[1]) > bound + q + 1.5 for p, q in zip(placed, bounds)):
                placed.append((x, y, radius, 2 * math.pi * angle, aspect))
                bounds.append(bound)
                break
    return placed


def _rasterize(
    shape: str, x: float, y: float, radius: float, angle: float, aspect: float, size: int
) -> tuple[Image.Image, tuple[int, int]]:
    """Anti-aliased coverage of one shape as an "L" image cropped to its box, and the crop origin."""
    ss = 4 if size <= 96 else 2  # supersampling factor
    bound = radius * _EXTENT[shape] * max(aspect, 1 / aspect)
    x0, y0 = max(0, math.floor(x - bound - 1)), max(0, math.floor(y - bound - 1))
    x1, y1 = min(size, math.ceil(x + bound + 1)), min(size, math.ceil(y + bound + 1))
    img = Image.new("L", ((x1 - x0) * ss, (y1 - y0) * ss), 0)
    draw = ImageDraw.Draw(img)
    cos, sin = math.cos(angle) * radius * ss, math.sin(angle) * radius * ss
    rot = np.array([[cos * aspect, sin * aspect], [-sin / aspect, cos / aspect]], dtype=np.float64)
    offset = np.array([(x - x0) * ss - 0.5, (y - y0) * ss - 0.5])
    for poly, fill in _SHAPES[shape]:
        draw.polygon((poly @ rot + offset).ravel().tolist(), fill=255 * fill)
    return img.reduce(ss), (x0, y0)


def _contrasting_color(
    rng: np.random.Generator, palette: tuple[list[float], list[float]]
) -> tuple[int, int, int]:
    """The candidate colour farthest (in RGB) from the background's colour segment, of 6 random ones."""
    c0, c1 = palette
    d = [q - p for p, q in zip(c0, c1)]
    dd = max(sum(v * v for v in d), 1e-6)
    best, best_dist = (0, 0, 0), -1.0
    for cand in rng.integers(0, 256, (6, 3)).tolist():
        t = min(1.0, max(0.0, sum((v - p) * w for v, p, w in zip(cand, c0, d)) / dd))
        dist = sum((v - p - t * w) ** 2 for v, p, w in zip(cand, c0, d))
        if dist > best_dist:
            best, best_dist = tuple(cand), dist
    return best


def _luma(color: tuple[int, int, int]) -> int:
    """The grey level PIL's ``convert("L")`` gives ``color``."""
    return Image.new("RGB", (1, 1), color).convert("L").getpixel((0, 0))


def _tight_box(mask: np.ndarray) -> list[float]:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]


def sample_grid(
    ds: SyntheticShapes, n: int = 64, *, columns: int | None = None, start: int = 0
) -> Image.Image:
    """A contact sheet of items ``start .. start + n - 1`` (2-px white gaps), for eyeballing the data."""
    n = max(1, min(n, len(ds) - start))
    cols = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    s = ds.image_size
    sheet = Image.new("RGB", (cols * (s + 2), rows * (s + 2)), (255, 255, 255))
    for k in range(n):
        sheet.paste(ds._draw(start + k)[0], ((k % cols) * (s + 2) + 1, (k // cols) * (s + 2) + 1))
    return sheet
