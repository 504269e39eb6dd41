"""Where JPEG decoding costs time with ``data.decode=worker`` (default) and ``data.decode=device``.

    python benchmarks/bench_decode.py --out benchmarks/results/decode_cpu.json

Writes ``--images`` JPEGs (``--width`` x ``--height``, quality 90, random smooth content) in memory and
times, per image, the two halves of the crop-box path (``data.batch_augment=true``, 4 views):

* worker: :func:`gsg_zoo.data.images.open_image` + :class:`CropBoxes` (decode, or read the header only);
* device: :meth:`PackedImages.crops` at 224 px of a batch of ``--batch`` images (the resize, plus the
  one batched ``decode_jpeg`` call when the images arrived encoded).

On a CPU "device" the decode only moves from the workers to the main process; on a GPU the second half
runs on nvjpeg, which this benchmark does not measure (no GPU here).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gsg_zoo.data.batch_augment import CropBoxes, PackedImages
from gsg_zoo.data.images import open_image


def jpegs(n: int, width: int, height: int) -> list[bytes]:
    """``n`` JPEGs of smooth random content (upsampled noise: closer to photos than white noise)."""
    rng, out = np.random.default_rng(0), []
    for _ in range(n):
        small = rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(small).resize((width, height), Image.BILINEAR).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def per_image_ms(seconds: float, n: int) -> float:
    return 1000 * seconds / n


def measure(data: list[bytes], encoded: bool, batch: int) -> dict[str, float]:
    """Worker ms per image and device (here: CPU main process) ms per image for one decode mode."""
    torch.manual_seed(0)
    boxes = CropBoxes(4)
    start = time.perf_counter()
    packed = [boxes(open_image(d, encoded)) for d in data]
    worker = time.perf_counter() - start
    batches = [PackedImages.cat(packed[i : i + batch]) for i in range(0, len(packed) - batch + 1, batch)]
    start = time.perf_counter()
    for b in batches:
        b.crops(224)
    device = time.perf_counter() - start
    return {
        "worker_ms": per_image_ms(worker, len(data)),
        "device_ms": per_image_ms(device, batch * len(batches)),
    }


def markdown(report: dict) -> str:
    rows = [
        f"| {mode} | {r['worker_ms']:.2f} | {r['device_ms']:.2f} |" for mode, r in report["modes"].items()
    ]
    w = report["modes"]
    return "\n".join(
        [
            "| data.decode | worker ms per image (decode or header + 4 boxes) | device ms per image (decode + 4 crops) |",
            "|---|---|---|",
            *rows,
            "",
            f"{report['images']} JPEGs ({report['size']}, quality 90), batches of {report['batch']}, one thread, "
            f"{report['machine']}. Worker time device/worker: "
            f"{w['device']['worker_ms'] / w['worker']['worker_ms']:.2f}.",
        ]
    )


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--width", type=int, default=500)
    p.add_argument("--height", type=int, default=375)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--out", help="JSON report (a .md next to it)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    data = jpegs(args.images, args.width, args.height)
    measure(data[: args.batch], False, args.batch)  # warm-up (imports, first kernels)
    modes = {mode: measure(data, mode == "device", args.batch) for mode in ("worker", "device")}
    report = {
        "command": " ".join(["python benchmarks/bench_decode.py", *(sys.argv[1:] if argv is None else argv)]),
        "images": args.images,
        "size": f"{args.width}x{args.height}",
        "batch": args.batch,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "modes": modes,
    }
    print(markdown(report))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        Path(args.out).with_suffix(".md").write_text(markdown(report) + "\n")
    return report


if __name__ == "__main__":
    main()
