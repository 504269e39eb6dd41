"""Loader CPU per image for the ImageNet recipes' 4 views: the PIL path vs decode + crop boxes + device.

On JPEGs of ImageNet-like size (500x375, written here), at 224 px and 4 views, in one process with one
torch thread (a DataLoader worker), CPU time (``time.process_time``) per image of:

- ``decode``: open + decode the JPEG to RGB (the floor of any loader);
- ``pil``: decode + the MoCo-v2/SimSiam PIL recipe 4 times (crop, jitter, grayscale, PIL blur, flip,
  to-tensor, normalise), what the workers do today;
- ``boxes``: decode + :class:`~gsg_zoo.data.batch_augment.CropBoxes` (the pixels and 4 crop boxes) and
  the image's share of the collate into one buffer, what the workers do with ``data.batch_augment=true``;

and the device half per batch (here the CPU with the process's threads; on CUDA the GPU):
:meth:`~gsg_zoo.data.batch_augment.PackedImages.crops` (4 antialiased resizes per image) and
:class:`~gsg_zoo.data.batch_augment.BatchAugment` ``(crop=False, blur_p=0.5)`` on the 4 views.

    python benchmarks/bench_imagenet_views.py --out benchmarks/results/imagenet_views_cpu.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gsg_zoo.core.normalization import IMAGENET_MEAN, IMAGENET_STD
from gsg_zoo.data.augment import MultiView, mocov2_transform
from gsg_zoo.data.batch_augment import BatchAugment, CropBoxes, PackedImages
from gsg_zoo.data.synthetic import SyntheticShapes


def write_jpegs(folder: Path, n: int) -> list[Path]:
    """``n`` 500x375 JPEGs (quality 90, ~115 KB: ImageNet's average file size) of the built-in shapes
    with sensor-like noise, so that decoding costs what a photo's does (flat shapes decode 3x faster)."""
    folder.mkdir(parents=True, exist_ok=True)
    ds, rng = SyntheticShapes(n, image_size=500, seed=1), np.random.default_rng(0)
    paths = []
    for i in range(n):
        pixels = np.asarray(ds[i][0].resize((500, 375), Image.BILINEAR), dtype=np.float32)
        noisy = (pixels + rng.normal(0, 25, pixels.shape)).clip(0, 255).astype(np.uint8)
        path = folder / f"{i:04d}.jpg"
        Image.fromarray(noisy).save(path, quality=90)
        paths.append(path)
    return paths


def decode(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def cpu_ms_per_image(paths: list[Path], work: Callable[[Image.Image], object], repeats: int) -> float:
    """Median over ``repeats`` of the CPU milliseconds per image of decode + ``work``."""
    times = []
    for _ in range(repeats):
        start = time.process_time()
        for p in paths:
            work(decode(p))
        times.append(1000 * (time.process_time() - start) / len(paths))
    return float(np.median(times))


def packed_batch(paths: list[Path], batch: int, views: int) -> PackedImages:
    boxes = CropBoxes(views)
    return PackedImages.cat([boxes(decode(paths[i % len(paths)])) for i in range(batch)])


def device_ms_per_batch(
    packed: PackedImages, size: int, views: int, device: torch.device, repeats: int
) -> dict:
    """Median ms per batch of the device's resizes and of its colour/blur work on the 4 views."""
    aug = BatchAugment(size, IMAGENET_MEAN, IMAGENET_STD, crop=False, blur_p=0.5)
    g = torch.Generator(device=device).manual_seed(0)
    times: dict[str, list[float]] = {"resize": [], "colour_blur": []}
    for _ in range(repeats):
        start = _sync_time(device)
        crops = packed.to(device).crops(size)
        mid = _sync_time(device)
        aug.views(crops, views, g)
        times["resize"].append(1000 * (mid - start))
        times["colour_blur"].append(1000 * (_sync_time(device) - mid))
    return {k: float(np.median(v)) for k, v in times.items()}


def _sync_time(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--views", type=int, default=4)
    p.add_argument("--batch", type=int, default=16, help="device half: images per batch")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--data", default="/tmp/gsg_bench_jpegs", help="where the JPEGs are written")
    p.add_argument("--out", help="write JSON here (and a .md beside it)")
    args = p.parse_args(argv)

    paths = write_jpegs(Path(args.data), args.images)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one DataLoader worker
    loader = {
        "decode": cpu_ms_per_image(paths, lambda im: im, args.repeats),
        "pil": cpu_ms_per_image(paths, MultiView(mocov2_transform(args.size), args.views), args.repeats),
        "boxes": cpu_ms_per_image(
            paths, lambda im: PackedImages.cat([CropBoxes(args.views)(im)]), args.repeats
        ),
    }
    torch.set_num_threads(threads)
    dev = torch.device(args.device)
    device_ms = device_ms_per_batch(
        packed_batch(paths, args.batch, args.views), args.size, args.views, dev, args.repeats
    )
    kb = float(np.mean([p.stat().st_size for p in paths]) / 1024)
    result = {
        "jpeg_kb": kb,
        "protocol": "bench_imagenet_views: 500x375 JPEG q90, 224 px, MoCo-v2 views, CPU ms per image (1 thread)",
        "images": args.images,
        "size": args.size,
        "views": args.views,
        "loader_cpu_ms_per_image": loader,
        "boxes_over_decode": loader["boxes"] / loader["decode"],
        "pil_over_boxes": loader["pil"] / loader["boxes"],
        "device": str(dev),
        "device_threads": threads,
        "batch": args.batch,
        "device_ms_per_batch": device_ms,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        write_report(Path(args.out), result)
    return 0


def write_report(out: Path, r: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(r, indent=2) + "\n")
    ms = r["loader_cpu_ms_per_image"]
    md = [
        f"# Loader CPU per image, {r['views']} views at {r['size']} px ({r['protocol']})",
        "",
        "| path | CPU ms / image | x decode |",
        "|---|---:|---:|",
        *(f"| {k} | {v:.2f} | {v / ms['decode']:.2f} |" for k, v in ms.items()),
        "",
        f"PIL path / batch-augment workers: {r['pil_over_boxes']:.2f}x. Device half ({r['device']}, "
        f"{r['device_threads']} threads), ms per batch of {r['batch']} images x {r['views']} views: "
        f"resize {r['device_ms_per_batch']['resize']:.1f}, colour + blur {r['device_ms_per_batch']['colour_blur']:.1f}.",
    ]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
