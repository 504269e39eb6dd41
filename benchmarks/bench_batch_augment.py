"""Views per second: the PIL pipeline (per image, as DataLoader workers run it) vs BatchAugment.

Both draw the CIFAR recipe's views (crop 0.2-1, jitter, grayscale, flip, normalise) of 32-px images,
in one process and one thread count, so the ratio is taken in one run. BatchAugment runs on the device
given (CPU here; on CUDA it frees the loader workers entirely).

    python benchmarks/bench_batch_augment.py --out benchmarks/results/batch_augment_cpu.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from gsg_zoo.core.normalization import CIFAR_MEAN, CIFAR_STD
from gsg_zoo.data.augment import cifar_transform
from gsg_zoo.data.batch_augment import BatchAugment
from gsg_zoo.data.synthetic import SyntheticShapes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--views", type=int, default=4)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", help="write JSON here (and a .md beside it)")
    args = p.parse_args(argv)

    ds = SyntheticShapes(args.batch, image_size=args.size)
    pil = [ds[i][0] for i in range(args.batch)]
    uint8 = torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in pil])
    tf = cifar_transform(args.size)
    dev = torch.device(args.device)
    batch_aug = BatchAugment(args.size, CIFAR_MEAN, CIFAR_STD)
    x = uint8.to(dev)
    gen = torch.Generator(dev).manual_seed(0)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def time_it(fn) -> float:
        fn()  # warm-up
        sync()
        best = float("inf")
        for _ in range(args.repeats):
            t = time.perf_counter()
            fn()
            sync()
            best = min(best, time.perf_counter() - t)
        return best

    t_pil = time_it(lambda: [[tf(im) for _ in range(args.views)] for im in pil])
    t_batch = time_it(lambda: batch_aug.views(x, args.views, gen))
    n = args.batch * args.views
    result = {
        "size": args.size,
        "batch": args.batch,
        "views": args.views,
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "pil_views_per_s": n / t_pil,
        "batch_views_per_s": n / t_batch,
        "speedup": t_pil / t_batch,
    }
    md = (
        f"Views/s at {args.size} px, batch {args.batch} x {args.views} views, {result['threads']} threads, "
        f"best of {args.repeats}:\n\n| pipeline | device | views/s |\n|---|---|---|\n"
        f"| PIL per image (torchvision) | cpu, 1 process | {result['pil_views_per_s']:.0f} |\n"
        f"| BatchAugment | {dev} | {result['batch_views_per_s']:.0f} |\n\n"
        f"BatchAugment / PIL: {result['speedup']:.2f}x\n"
    )
    print(md)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
        out.with_suffix(".md").write_text(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
