"""Write a dataset to disk in the formats the real loaders read.

* :func:`write_imagefolder`: ``root/<class_name>/<index>.png`` (``torchvision.datasets.ImageFolder``).
* :func:`write_coco`: ``root/<split>/<index>.png`` + ``root/annotations/instances_<split>.json``
  (COCO instances: xywh boxes, areas, ``iscrowd`` 0, polygon or uncompressed-RLE segmentations).
* :func:`write_mmseg`: ``root/img_dir/<split>/<index>.png`` + ``root/ann_dir/<split>/<index>.png``
  (uint8 label maps, 0 = background, 1..C = classes) + ``root/classes.txt`` and ``root/meta.json``.

The dataset is a :class:`~gsg_zoo.data.synthetic.SyntheticShapes` or anything with ``classes``,
``__len__``, ``__getitem__ -> (PIL image, label)`` and, for COCO and mmseg, ``annotation(i)``.
The mask helpers follow pycocotools' conventions: RLE runs are column-major and start with a run of
zeros; polygon coordinates put the centre of pixel ``(row, col)`` at ``(x=col, y=row)``.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

SEGMENTATION_FORMATS = ("polygon", "rle")


# ------------------------------------------------------------------------------------------ writers


def write_imagefolder(ds: Any, root: str | Path, *, progress: bool = True, workers: int = 0) -> Path:
    """Write ``root/<class_name>/<index>.png`` for every item; returns ``root``.

    Class names of :class:`SyntheticShapes` are alphabetical, so ImageFolder's indices equal the labels.
    ``workers`` > 1 renders and encodes in that many processes (the dataset must be picklable).
    """
    root = _prepare(root)
    for name in ds.classes:
        (root / name).mkdir(parents=True, exist_ok=True)
    _run(ds, partial(_imagefolder_item, ds, root), "imagefolder", progress, workers)
    return root


def write_coco(
    ds: Any,
    root: str | Path,
    split: str,
    *,
    segmentation: str = "polygon",
    progress: bool = True,
    workers: int = 0,
) -> Path:
    """Write images to ``root/<split>/`` and COCO instances to ``root/annotations/instances_<split>.json``.

    ``segmentation`` is ``"polygon"`` (default; what detectron2's default ``MASK_FORMAT`` expects, exact
    in the pixel grid, holes joined by zero-width bridges) or ``"rle"`` (uncompressed RLE). Category
    ids are ``1..C`` in the order of ``ds.classes``; image ids are ``index + 1``. Returns the json path.
    """
    if segmentation not in SEGMENTATION_FORMATS:
        raise ValueError(f"segmentation must be one of {SEGMENTATION_FORMATS}, got {segmentation!r}")
    _check_split(split)
    root = _prepare(root)
    image_dir, ann_dir = root / split, root / "annotations"
    image_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    job = partial(_coco_item, ds, image_dir, segmentation)
    for image, anns in _run(ds, job, f"coco/{split}", progress, workers):
        images.append(image)
        for ann in anns:
            annotations.append({"id": len(annotations) + 1, **ann})
    doc = {
        "info": {"description": f"gsg-zoo synthetic shapes ({_describe(ds)})", "version": "1.0"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": n, "supercategory": "shape"} for k, n in enumerate(ds.classes)],
    }
    path = ann_dir / f"instances_{split}.json"
    path.write_text(json.dumps(doc))
    return path


def write_mmseg(ds: Any, root: str | Path, split: str, *, progress: bool = True, workers: int = 0) -> Path:
    """Write the mmsegmentation folder layout for ``split``; returns ``root``.

    ``root/img_dir/<split>/<index>.png`` (RGB) and ``root/ann_dir/<split>/<index>.png`` (uint8 label
    map: 0 background, ``1..C`` the classes), plus ``root/classes.txt`` (one name a line, background
    first) and ``root/meta.json`` (classes, palette, per-split counts; use ``reduce_zero_label=False``).
    """
    _check_split(split)
    if len(ds.classes) > 254:
        raise ValueError(f"mmseg label maps are uint8: at most 254 classes, got {len(ds.classes)}")
    root = _prepare(root)
    classes = ["background", *ds.classes]
    meta_path = root / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if meta.get("classes", classes) != classes:
        raise ValueError(
            f"{meta_path} lists classes {meta['classes']}, but this dataset has {classes}: "
            "write it to another folder"
        )
    img_dir, ann_dir = root / "img_dir" / split, root / "ann_dir" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)
    _run(ds, partial(_mmseg_item, ds, img_dir, ann_dir), f"mmseg/{split}", progress, workers)
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    meta.update(
        classes=classes,
        palette=_palette(len(classes)),
        reduce_zero_label=False,
        ignore_index=255,
        img_suffix=".png",
        seg_map_suffix=".png",
        description=_describe(ds),
    )
    meta.setdefault("splits", {})[split] = len(ds)
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return root


def _imagefolder_item(ds: Any, root: Path, i: int) -> None:
    image, label, _ = _item(ds, i, annotations=False)
    _save_png(image, root / ds.classes[label] / _name(i, len(ds)))


def _coco_item(ds: Any, image_dir: Path, segmentation: str, i: int) -> tuple[dict, list[dict]]:
    image, _, ann = _item(ds, i, annotations=True)
    name = _name(i, len(ds))
    _save_png(image, image_dir / name)
    anns = []
    for box, label, mask in zip(ann["boxes"].tolist(), ann["labels"].tolist(), ann["masks"]):
        x0, y0, x1, y1 = box
        anns.append(
            {
                "image_id": i + 1,
                "category_id": int(label) + 1,
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": float(mask.sum()),
                "iscrowd": 0,
                "segmentation": mask_to_polygons(mask) if segmentation == "polygon" else mask_to_rle(mask),
            }
        )
    w, h = image.size
    return {"id": i + 1, "file_name": name, "width": w, "height": h}, anns


def _mmseg_item(ds: Any, img_dir: Path, ann_dir: Path, i: int) -> None:
    image, _, ann = _item(ds, i, annotations=True)
    w, h = image.size
    label_map = np.zeros((h, w), dtype=np.uint8)
    for label, mask in zip(ann["labels"].tolist(), ann["masks"]):
        label_map[mask] = int(label) + 1
    name = _name(i, len(ds))
    _save_png(image, img_dir / name)
    _save_png(Image.fromarray(label_map, "L"), ann_dir / name)


# ------------------------------------------------------------------------------------- mask codecs


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """Uncompressed COCO RLE ``{"counts": [...], "size": [h, w]}`` (column-major, zeros first)."""
    mask = np.asarray(mask, dtype=bool)
    flat = mask.ravel(order="F")
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    return {"counts": [int(c) for c in counts], "size": [int(mask.shape[0]), int(mask.shape[1])]}


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """Decode an uncompressed COCO RLE into a bool ``[h, w]`` mask."""
    h, w = rle["size"]
    counts = np.asarray(rle["counts"], dtype=np.int64)
    if not isinstance(rle["counts"], list) or counts.sum() != h * w:
        raise ValueError(f"not an uncompressed RLE of a {h}x{w} mask")
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts).reshape(w, h).T.copy()


def mask_to_polygons(mask: np.ndarray) -> list[list[float]]:
    """COCO polygons that rasterise (even-odd, pixel centres) exactly to ``mask``.

    The boundary is traced along pixel edges. Without holes there is one polygon per boundary loop;
    with holes, all loops are joined into one polygon through zero-width bridges (which even-odd
    filling, as in pycocotools, ignores), since COCO polygons of one object are otherwise unioned.
    """
    loops = _boundary_loops(np.asarray(mask, dtype=bool))
    if not loops:
        return []
    # a hole loop runs counter-clockwise on screen (negative shoelace area with y pointing down)
    if all(_shoelace(loop) > 0 for loop in loops):
        polys = loops
    else:
        anchor = loops[0][0]
        joined: list[tuple[int, int]] = []
        for loop in loops:  # anchor -> v0 .. vn, v0 -> anchor: every bridge is walked both ways
            for p in (*loop, loop[0], anchor):
                if not joined or joined[-1] != p:
                    joined.append(p)
        polys = [joined[:-1]]  # the closing edge returns to the anchor
    return [[c for x, y in poly for c in (x - 0.5, y - 0.5)] for poly in polys]


def polygons_to_mask(polygons: list[list[float]], h: int, w: int) -> np.ndarray:
    """Rasterise COCO polygons: a pixel is inside when its centre is (even-odd); polygons are unioned."""
    out = np.zeros((h, w), dtype=bool)
    for flat in polygons:
        pts = np.asarray(flat, dtype=np.float64).reshape(-1, 2)
        toggles = np.zeros((h, w + 1), dtype=np.int64)
        for (x0, y0), (x1, y1) in zip(pts, np.roll(pts, -1, axis=0)):
            if y0 == y1:
                continue
            lo, hi = min(y0, y1), max(y0, y1)
            rows = np.arange(max(0, int(np.ceil(lo))), min(h, int(np.ceil(hi))))
            rows = rows[(rows >= lo) & (rows < hi)]
            if rows.size == 0:
                continue
            xs = x0 + (rows - y0) * (x1 - x0) / (y1 - y0)
            cols = np.clip(np.floor(xs).astype(np.int64) + 1, 0, w)  # pixels strictly right of the edge
            np.add.at(toggles, (rows, cols), 1)
        out |= (np.cumsum(toggles, axis=1)[:, :w] % 2).astype(bool)
    return out


def _boundary_loops(mask: np.ndarray) -> list[list[tuple[int, int]]]:
    """Closed loops of pixel-corner points ``(x, y)`` along the mask boundary, foreground on the right."""
    m = np.pad(mask, 1)
    fg = m[1:-1, 1:-1]
    out: dict[tuple[int, int], list[tuple[int, int]]] = {}
    sides = (  # (neighbour is background, start corner offset, end corner offset), clockwise on screen
        (~m[:-2, 1:-1], (0, 0), (1, 0)),  # top edge: left to right
        (~m[1:-1, 2:], (1, 0), (1, 1)),  # right edge: downwards
        (~m[2:, 1:-1], (1, 1), (0, 1)),  # bottom edge: right to left
        (~m[1:-1, :-2], (0, 1), (0, 0)),  # left edge: upwards
    )
    for free, (sx, sy), (ex, ey) in sides:
        rows, cols = np.nonzero(fg & free)
        for r, c in zip(rows.tolist(), cols.tolist()):
            out.setdefault((c + sx, r + sy), []).append((c + ex, r + ey))
    loops = []
    while out:
        start = next(iter(out))
        loop, cur = [start], start
        while True:
            nxt = out[cur].pop()
            if not out[cur]:
                del out[cur]
            if nxt == start:
                break
            loop.append(nxt)
            cur = nxt
        loops.append(_drop_collinear(loop))
    return loops


def _drop_collinear(loop: list[tuple[int, int]]) -> list[tuple[int, int]]:
    n = len(loop)
    keep = []
    for k in range(n):
        (ax, ay), (bx, by), (cx, cy) = loop[k - 1], loop[k], loop[(k + 1) % n]
        if (bx - ax) * (cy - by) - (by - ay) * (cx - bx) != 0:
            keep.append(loop[k])
    return keep


def _shoelace(loop: list[tuple[int, int]]) -> float:
    x = np.array([p[0] for p in loop], dtype=np.float64)
    y = np.array([p[1] for p in loop], dtype=np.float64)
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


# ------------------------------------------------------------------------------------------ helpers


def _item(ds: Any, i: int, *, annotations: bool) -> tuple[Image.Image, int, dict | None]:
    """(PIL image, label, annotation or None); a SyntheticShapes item is rendered once."""
    if hasattr(ds, "render"):
        s = ds.render(i)
        ann = None
        if annotations:
            ann = {"boxes": s.boxes, "labels": np.full(len(s.boxes), s.label, np.int64), "masks": s.masks}
        return Image.fromarray(s.image, "RGB"), s.label, ann
    image, label = ds[i]
    if not isinstance(image, Image.Image):
        raise ValueError(f"items must be (PIL image, label); item {i} holds a {type(image).__name__}")
    return image.convert("RGB"), int(label), ds.annotation(i) if annotations else None


def _run(ds: Any, job: Callable[[int], Any], desc: str, progress: bool, workers: int) -> list[Any]:
    """``[job(i) for i in range(len(ds))]`` with a progress bar, in ``workers`` processes if > 1."""
    n = len(ds)
    if n == 0:
        raise ValueError("the dataset is empty: nothing to write")
    if ("coco" in desc or "mmseg" in desc) and not hasattr(ds, "annotation"):
        raise ValueError(f"{type(ds).__name__} has no annotation(i): it cannot be written as {desc}")
    if not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be a non-negative integer, got {workers!r}")
    bar = tqdm(total=n, desc=f"writing {desc}", unit="img", disable=not progress)
    with bar:
        if workers <= 1:
            results = []
            for i in range(n):
                results.append(job(i))
                bar.update()
            return results
        try:
            pickle.dumps(job)
        except Exception as err:
            raise ValueError(f"workers={workers} needs a picklable dataset (drop lambdas): {err}") from err
        step = max(1, min(256, n // (4 * workers)))
        chunks = [range(k, min(n, k + step)) for k in range(0, n, step)]
        out: list[list[Any]] = [[] for _ in chunks]
        with ProcessPoolExecutor(workers) as pool:
            futures = {pool.submit(_run_chunk, job, chunk): k for k, chunk in enumerate(chunks)}
            for future in as_completed(futures):
                out[futures[future]] = future.result()
                bar.update(len(chunks[futures[future]]))
        return [r for part in out for r in part]


def _run_chunk(job: Callable[[int], Any], indices: range) -> list[Any]:
    return [job(i) for i in indices]


def _prepare(root: str | Path) -> Path:
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise ValueError(f"{root} exists and is not a directory; pick another output folder")
    root.mkdir(parents=True, exist_ok=True)
    return root


def _check_split(split: str) -> None:
    if not isinstance(split, str) or not split or not all(c.isalnum() or c in "-_." for c in split):
        raise ValueError(
            f"split must be a non-empty name made of letters, digits, '-', '_', '.'; got {split!r}"
        )


def _name(index: int, total: int) -> str:
    return f"{index:0{max(6, len(str(total - 1)))}d}.png"


def _save_png(image: Image.Image, path: Path) -> None:
    image.save(path, format="PNG", compress_level=1)


def _describe(ds: Any) -> str:
    return repr(ds) if hasattr(ds, "render") else type(ds).__name__


def _palette(n: int) -> list[list[int]]:
    """Distinct colours for ``n`` label values (background black)."""
    rng = np.random.default_rng(0)
    return [[0, 0, 0], *rng.integers(40, 256, (n - 1, 3)).tolist()]
