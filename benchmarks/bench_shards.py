"""The same JPEGs read as an ImageFolder and as WebDataset shards (``gsg data shard``): loader images/s,
time to the first batch, and the dataset object's pickled size (what each loader worker receives).

    python benchmarks/bench_shards.py --images 1000 --out benchmarks/results/shards_cpu.json

Both sides decode with PIL and resize to 224 px in the loader workers, in one process run, alternating.
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms

from gsg_zoo.data.datasets import Transformed
from gsg_zoo.data.loaders import image_folder
from gsg_zoo.data.shards import ShardImages, write_shards


def write_jpegs(root: Path, n: int, classes: int = 10) -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (375, 500, 3), dtype=np.uint8)
    for i in range(n):
        folder = root / "train" / f"c{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.roll(base, i * 7, axis=1)).save(folder / f"{i}.jpg", quality=90)


def measure(dataset, workers: int, batch: int) -> dict[str, float]:
    tf = transforms.Compose([transforms.Resize(224), transforms.CenterCrop(224), transforms.PILToTensor()])
    loader = DataLoader(Transformed(dataset, tf), batch_size=batch, num_workers=workers, shuffle=True)
    start = time.perf_counter()
    it = iter(loader)
    next(it)
    first = time.perf_counter() - start
    n = batch
    for x, _ in it:
        n += len(x)
    return {"images_per_s": n / (time.perf_counter() - start), "first_batch_s": first,
            "pickled_dataset_kb": len(pickle.dumps(dataset)) / 1024}  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--out")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_jpegs(root / "folder", args.images)
        folder = image_folder(root / "folder", "train")
        write_shards(folder, root / "shards", max_count=500, progress=False)
        runs = {"folder": [], "shards": []}
        for _ in range(args.reps):
            runs["folder"].append(measure(image_folder(root / "folder", "train"), args.workers, args.batch))
            runs["shards"].append(measure(ShardImages(root / "shards"), args.workers, args.batch))
    mean = {side: {k: statistics.mean(r[k] for r in rs) for k in rs[0]} for side, rs in runs.items()}
    result = {"command": f"python benchmarks/bench_shards.py --images {args.images} --workers {args.workers} "
                         f"--batch {args.batch} --reps {args.reps}",
              "images": args.images, "jpeg": "500x375, quality 90", "workers": args.workers, "runs": runs, "mean": mean,
              "ratio_images_per_s": mean["shards"]["images_per_s"] / mean["folder"]["images_per_s"]}  # fmt: skip
    print(
        json.dumps(result["mean"], indent=1),
        f"\nshards / folder images/s: {result['ratio_images_per_s']:.2f}",
    )
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
