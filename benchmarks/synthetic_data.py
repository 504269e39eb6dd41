"""Benchmark the built-in SyntheticShapes dataset: generation speed, writer speed, raw-pixel kNN.

    python benchmarks/synthetic_data.py --out results/synthetic

Writes ``synthetic_data.json``, ``synthetic_data.md`` and sample grids (``grid_<size>.png``) to --out.
Generation speed is measured on one core (process CPU time, which is robust to other load on the
machine, and wall time). The kNN sanity check classifies flattened 32-px test images by their k=20
nearest training images (cosine): it must beat chance yet stay far from perfect, because colour,
scale, rotation, position, texture and clutter dominate the raw pixels.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gsg_zoo.data.synthetic import SyntheticShapes, sample_grid
from gsg_zoo.data.writers import write_coco, write_imagefolder, write_mmseg


def generation_speed(size: int, n: int) -> dict[str, float]:
    ds = SyntheticShapes(n, size, seed=0)
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(n):
        ds[i]
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {
        "image_size": size,
        "images": n,
        "cpu_s": cpu,
        "images_per_cpu_s": n / cpu,
        "images_per_wall_s": n / wall,
    }


def writer_speed(fmt: str, size: int, n: int) -> dict[str, float]:
    ds = SyntheticShapes(n, size, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        cpu, wall = time.process_time(), time.perf_counter()
        if fmt == "imagefolder":
            write_imagefolder(ds, tmp, progress=False)
        elif fmt == "coco":
            write_coco(ds, tmp, "train", progress=False)
        else:
            write_mmseg(ds, tmp, "train", progress=False)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        mb = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file()) / 2**20
    return {
        "format": fmt,
        "image_size": size,
        "images": n,
        "images_per_cpu_s": n / cpu,
        "images_per_wall_s": n / wall,
        "MiB": mb,
    }


def pixel_knn(seed: int, n_train: int = 2000, n_test: int = 1000, k: int = 20) -> float:
    tr = SyntheticShapes(n_train, 32, seed=seed, split="train")
    te = SyntheticShapes(n_test, 32, seed=seed, split="test")
    xtr = np.stack([np.asarray(tr[i][0], np.float32).ravel() for i in range(n_train)])
    xte = np.stack([np.asarray(te[i][0], np.float32).ravel() for i in range(n_test)])
    xtr /= np.linalg.norm(xtr, axis=1, keepdims=True)
    xte /= np.linalg.norm(xte, axis=1, keepdims=True)
    neighbours = np.argsort(-(xte @ xtr.T), axis=1)[:, :k]
    votes = np.zeros((n_test, len(tr.classes)))
    np.add.at(votes, (np.arange(n_test)[:, None], np.array(tr.targets)[neighbours]), 1)
    return float((votes.argmax(1) == np.array(te.targets)).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results/synthetic"))
    parser.add_argument("--quick", action="store_true", help="fewer images (a smoke run)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    scale = 10 if args.quick else 1
    gen = [
        generation_speed(32, 10000 // scale),
        generation_speed(64, 3000 // scale),
        generation_speed(224, 500 // scale),
    ]
    writers = [writer_speed(f, 64, 1000 // scale) for f in ("imagefolder", "coco", "mmseg")]
    writers.append(writer_speed("coco", 224, 200 // scale))
    knn = {seed: pixel_knn(seed) for seed in (0, 1, 2)}
    for size in (32, 64, 224):
        sample_grid(SyntheticShapes(64 if size < 224 else 16, size, seed=0), 64).save(
            args.out / f"grid_{size}.png"
        )
    result = {
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "torch_threads": 1},
        "generation": gen,
        "writers": writers,
        "pixel_knn": {
            "k": 20,
            "train": 2000,
            "test": 1000,
            "image_size": 32,
            "chance": 0.1,
            "top1_by_seed": knn,
        },
    }
    (args.out / "synthetic_data.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "## SyntheticShapes generation (one core)",
        "",
        "| size | images | images/s (CPU time) | images/s (wall) |",
        "|---:|---:|---:|---:|",
        *(
            f"| {g['image_size']} | {g['images']} | {g['images_per_cpu_s']:.0f} | {g['images_per_wall_s']:.0f} |"
            for g in gen
        ),
        "",
        "## Writers (PNG, one process)",
        "",
        "| format | size | images | images/s (CPU time) | images/s (wall) | MiB |",
        "|---|---:|---:|---:|---:|---:|",
        *(
            f"| {w['format']} | {w['image_size']} | {w['images']} | {w['images_per_cpu_s']:.0f} | "
            f"{w['images_per_wall_s']:.0f} | {w['MiB']:.1f} |"
            for w in writers
        ),
        "",
        "## Raw-pixel kNN (32 px, k=20 cosine, 2000 train / 1000 test, chance 10%)",
        "",
        "| seed | top-1 |",
        "|---:|---:|",
        *(f"| {s} | {100 * a:.1f}% |" for s, a in knn.items()),
        "",
    ]
    (args.out / "synthetic_data.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
