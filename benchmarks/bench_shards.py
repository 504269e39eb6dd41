"""The same JPEGs read as an ImageFolder, as WebDataset shards by index, and as streamed shards
(``data.stream.enabled``): loader images/s, start-up (dataset built + first batch), and the resident memory of
each loader worker; then 2 gloo ranks x 2 workers stream one epoch (coverage, equal steps), and the
shuffle buffer's quality is measured on the epoch plan alone (no reads) against a global permutation;
``gsg pretrain`` images/s from each input (imagenet_simsiam_gsg, ResNet-10-T at 64 px); start-up of
each input and its workers' memory at two dataset sizes.

    python benchmarks/bench_shards.py --images 2000 --out benchmarks/results/shards_cpu.json

All inputs decode with PIL and resize/crop to 224 px uint8 in 2 loader workers, in one process run,
alternating. The JPEGs are 500x375 (ImageNet's typical size), quality 90.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms

from gsg_zoo.data.pretraining import Transformed, collate_images
from gsg_zoo.data.readers import image_folder
from gsg_zoo.data.shards import ShardImages, write_shards
from gsg_zoo.data.stream import EpochPlan, ShardStream

TRANSFORM = transforms.Compose([transforms.Resize(224), transforms.CenterCrop(224), transforms.PILToTensor()])


def write_jpegs(root: Path, n: int, classes: int = 10, size: tuple[int, int] = (500, 375)) -> float:
    """``n`` JPEGs of ``size`` (smooth noise; at 500x375 ~ImageNet's bytes per image) in ``classes``
    folders; mean KB."""
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / "train" / f"c{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        small = Image.fromarray(rng.integers(0, 255, (size[1] // 4, size[0] // 4, 3), dtype=np.uint8))
        small.resize(size, Image.BICUBIC).save(folder / f"{i}.jpg", quality=90)
    files = list(root.glob("train/*/*.jpg"))
    return sum(f.stat().st_size for f in files) / len(files) / 1024


def worker_memory_mb(iterator) -> list[dict[str, float]]:
    """Rss and Pss (shared pages divided among their users) of each live loader worker, MB."""
    out = []
    for w in getattr(iterator, "_workers", []):
        try:
            rollup = Path(f"/proc/{w.pid}/smaps_rollup").read_text().splitlines()
        except OSError:  # the worker has exited
            continue
        fields = {line.split(":")[0]: int(line.split()[1]) / 1024 for line in rollup[1:]}
        out.append({"rss_mb": fields["Rss"], "pss_mb": fields["Pss"]})
    return out


def measure(build, workers: int, batch: int) -> dict[str, float]:
    """Images/s over one epoch, start-up (dataset built + first batch), and worker memory late in the epoch."""
    start = time.perf_counter()
    dataset = build()
    shuffle = {} if isinstance(dataset, ShardStream) else {"shuffle": True}
    it = iter(
        DataLoader(dataset, batch_size=batch, num_workers=workers, collate_fn=collate_images, **shuffle)
    )
    n = len(next(it)[0])
    first, memory = time.perf_counter() - start, []
    for k, (x, _, _) in enumerate(it):
        n += len(x)
        memory = (worker_memory_mb(it) or memory) if k % 4 == 0 else memory
    seconds = time.perf_counter() - start
    memory = memory or [{"rss_mb": float("nan"), "pss_mb": float("nan")}]
    return {
        "images_per_s": n / seconds,
        "start_s": first,
        "worker_rss_mb": statistics.mean(m["rss_mb"] for m in memory),
        "worker_pss_mb": statistics.mean(m["pss_mb"] for m in memory),
    }


def inputs(root: Path, batch: int, buffer: int = 1000) -> dict:
    return {
        "folder": lambda: Transformed(image_folder(root / "folder", "train"), TRANSFORM),
        "shards": lambda: Transformed(ShardImages(root / "shards"), TRANSFORM),
        "stream": lambda: ShardStream(root / "shards", TRANSFORM, batch=batch, buffer=buffer),
    }


def crc(image: Image.Image) -> int:
    return zlib.crc32(image.tobytes())


def coverage_rank(rank: int, root: Path, store: str, batch: int, out: Path) -> None:
    """One of 2 gloo ranks: stream an epoch with 2 workers; rank 0 writes what all ranks saw (pixel checksums)."""
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    stream = ShardStream(root / "shards", crc, seed=0, rank=rank, world=2, batch=batch, buffer=500)
    stream.set_epoch(1)
    seen = [
        [int(c) for c, _ in b] for b in DataLoader(stream, batch_size=batch, num_workers=2, collate_fn=list)
    ]
    gathered = [None, None]
    dist.all_gather_object(gathered, seen)
    if rank == 0:
        keys = [c for steps in gathered for b in steps for c in b]
        total = sum(stream.plan.counts)
        out.write_text(
            json.dumps(
                {
                    "ranks": 2,
                    "workers": 2,
                    "batch": batch,
                    "samples": total,
                    "steps_per_rank": [len(g) for g in gathered],
                    "images_per_rank": [sum(map(len, g)) for g in gathered],
                    "distinct": len(set(keys)),
                    "repeated": len(keys) - len(set(keys)),
                    "dropped_tail": total - len(set(keys)),
                }
            )
        )
    dist.destroy_process_group()


def coverage(root: Path, batch: int) -> dict:
    out, store = root / "coverage.json", root / "gloo_store"
    torch.multiprocessing.spawn(coverage_rank, (root, str(store), batch, out), nprocs=2)
    return json.loads(out.read_text())


def shuffle_quality(
    samples: int = 128_000,
    shard: int = 1000,
    world: int = 8,
    workers: int = 4,
    batch: int = 64,
    buffers: tuple[int, ...] = (1000, 8192),
) -> dict:
    """Rank 0's epoch order under the plan vs a global permutation (the map-style readers'): how many
    shards a batch draws from, how often two loader-adjacent samples share a shard, and how often two
    samples that shared a batch share one again the next epoch (with shards written shuffled, the
    cost of a buffer is this correlation, not a class bias)."""
    counts = (shard,) * (samples // shard)
    rng = np.random.default_rng(0)

    def stats(epochs: list[list[int]]) -> dict[str, float]:
        first, second = epochs
        shard_of = np.asarray(first) // shard
        batches = [first[i : i + batch] for i in range(0, len(first) - batch + 1, batch)]
        again = {i: k // batch for k, i in enumerate(second)}
        pairs = repeats = 0
        for b in batches:
            for x in range(len(b)):
                for y in range(x + 1, len(b)):
                    pairs += 1
                    repeats += again.get(b[x], -1) == again.get(b[y], -2)
        return {
            "shards_per_batch": float(np.mean([len(set(np.asarray(b) // shard)) for b in batches])),
            "adjacent_same_shard": float(np.mean(shard_of[1:] == shard_of[:-1])),
            "batch_pairs_repeated_next_epoch": repeats / pairs,
        }

    per_rank = samples // world
    result = {
        "setup": {"samples": samples, "shard": shard, "world": world, "workers": workers, "batch": batch},
        "global_permutation": stats([list(rng.permutation(samples)[:per_rank]) for _ in range(2)]),
    }
    for size in buffers:
        plan = EpochPlan(counts, seed=0, world=world, batch=batch, buffer=size)
        result[f"buffer_{size}"] = stats([plan.rank_indices(e, 0, workers) for e in (0, 1)])
    return result


PRETRAIN = [
    "model.backbone=resnet10t",
    "model.projector_hidden_dim=512",
    "model.projector_dim=512",
    "model.predictor_hidden_dim=128",
    "data.image_size=64",
    "train.batch_size=32",
    "train.epochs=1",
    "monitor.every=-1",
    "train.checkpoint_every=0",
    "data.split=train",
]
PRETRAIN_INPUTS = {
    "folder": ["data.dataset=imagefolder"],
    "shards": ["data.dataset=webdataset"],
    "stream": ["data.dataset=webdataset", "data.stream.enabled=true", "data.stream.shuffle_buffer=1000"],
}


def pretrain_rate(root: Path, side: str, steps: int, workers: int, out: Path) -> float:
    """``gsg pretrain imagenet_simsiam_gsg`` (ResNet-10-T at 64 px, batch 32) for ``steps`` steps; images/s."""
    from gsg_zoo.config.recipes import load_recipe
    from gsg_zoo.train.trainer import Pretrainer

    data = root / ("folder" if side == "folder" else "shards")
    recipe = load_recipe(
        "imagenet_simsiam_gsg",
        [
            *PRETRAIN,
            *PRETRAIN_INPUTS[side],
            f"data.root={data}",
            f"train.max_steps_per_epoch={steps}",
            f"data.loader.num_workers={workers}",
        ],
    )
    Pretrainer(recipe, out, progress=False).run()
    return json.loads((out / "summary.json").read_text())["images_per_s"]


def startup_by_size(root: Path, sizes: list[int], workers: int, batch: int) -> dict[str, dict[str, dict]]:
    """Start-up (dataset built + first batch) and worker RSS/PSS after it, of each input at each dataset
    size; small JPEGs (64x48: the count matters, not the pixels); the stream with a 256-sample buffer
    (smaller than a worker's share at every size, so it does not fill with the data)."""
    out: dict[str, dict[str, dict]] = {}
    for n in sizes:
        sized = root / f"size_{n}"
        write_jpegs(sized / "folder", n, classes=100, size=(64, 48))
        write_shards(
            image_folder(sized / "folder", "train"),
            sized / "shards",
            max_count=500,
            progress=False,
            shuffle_seed=0,
        )
        for side, build in inputs(sized, batch, buffer=256).items():
            start = time.perf_counter()
            dataset = build()
            shuffle = {} if isinstance(dataset, ShardStream) else {"shuffle": True}
            it = iter(
                DataLoader(
                    dataset,
                    batch_size=batch,
                    num_workers=workers,
                    collate_fn=collate_images,
                    persistent_workers=True,
                    **shuffle,
                )
            )
            next(it)
            seconds, memory = time.perf_counter() - start, worker_memory_mb(it)
            out.setdefault(side, {})[str(n)] = {
                "start_s": seconds,
                "worker_rss_mb": statistics.mean(m["rss_mb"] for m in memory),
                "worker_pss_mb": statistics.mean(m["pss_mb"] for m in memory),
            }
            del it
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--pretrain-steps", type=int, default=20, help="gsg pretrain steps per input (0: skip)")
    p.add_argument("--startup-sizes", default="1000,20000", help="dataset sizes of the start-up measurement")
    p.add_argument("--out")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        kb = write_jpegs(root / "folder", args.images)
        write_shards(
            image_folder(root / "folder", "train"),
            root / "shards",
            max_count=500,
            progress=False,
            shuffle_seed=0,
        )
        runs = {side: [] for side in inputs(root, args.batch)}
        for _ in range(args.reps):
            for side, build in inputs(root, args.batch).items():
                runs[side].append(measure(build, args.workers, args.batch))
        cover = coverage(root, args.batch)
        pretrain = (
            {
                side: pretrain_rate(root, side, args.pretrain_steps, args.workers, root / f"run_{side}")
                for side in PRETRAIN_INPUTS
            }
            if args.pretrain_steps
            else {}
        )
        sizes = [int(n) for n in args.startup_sizes.split(",") if n]
        startup = startup_by_size(root, sizes, args.workers, args.batch)
    mean = {side: {k: statistics.mean(r[k] for r in rs) for k in rs[0]} for side, rs in runs.items()}
    result = {
        "command": f"python benchmarks/bench_shards.py --images {args.images} --workers {args.workers} "
        f"--batch {args.batch} --reps {args.reps} --pretrain-steps {args.pretrain_steps} "
        f"--startup-sizes {args.startup_sizes}",
        "cpus": os.cpu_count(),
        "images": args.images,
        "jpeg": f"500x375, quality 90, {kb:.0f} KB mean",
        "workers": args.workers,
        "runs": runs,
        "mean": mean,
        "ratio_images_per_s": {s: mean[s]["images_per_s"] / mean["folder"]["images_per_s"] for s in mean},
        "coverage_2_ranks_x_2_workers": cover,
        "shuffle": shuffle_quality(),
        "pretrain_images_per_s": pretrain,
        "pretrain_setup": PRETRAIN,
        "startup_s_by_size": startup,
    }
    print(
        json.dumps(
            {
                k: result[k]
                for k in (
                    "mean",
                    "ratio_images_per_s",
                    "coverage_2_ranks_x_2_workers",
                    "pretrain_images_per_s",
                    "startup_s_by_size",
                )
            },
            indent=1,
        )
    )
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
