"""Cached fast linear probe vs the reference probe that re-encodes augmented images every epoch.

Both train the same fc with the same optimizer and schedule on the built-in synthetic dataset
through a small random backbone; the fast probe's time includes extracting (and caching) the
features once. Prints the measured speed-up and writes JSON.

    python benchmarks/bench_probe.py --out runs/bench/probe.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="random:resnet18_cifar")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument(
        "--subset", type=int, default=None, help="images per split (default: 2000 train / 1000 test)"
    )
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--optimizer", default="sgd", choices=("sgd", "lars"))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", default="runs/bench/probe.json")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from gsg_zoo.eval.features import ExtractOptions
    from gsg_zoo.eval.linear import LinearConfig
    from gsg_zoo.eval.runner import EvalContext, run_linear

    cfg = LinearConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer)
    results = {}
    for protocol in ("fast", "reference"):
        with tempfile.TemporaryDirectory() as cache_dir:  # empty caches: both pay for their extraction
            torch.manual_seed(0)  # same random backbone for both
            ctx = EvalContext.load(
                args.model,
                image_size=args.image_size,
                cache_dir=cache_dir,
                subset=args.subset,
                options=ExtractOptions(num_workers=args.workers, progress=False),
            )
            results[protocol] = run_linear(ctx, "synthetic", protocol, cfg)
            r = results[protocol]
            print(f"{protocol:9s} top-1 {r['top1']:6.2f}  wall {r['wall_seconds']:7.1f} s")
    speedup = results["reference"]["wall_seconds"] / results["fast"]["wall_seconds"]
    print(
        f"speed-up of the cached fast probe: {speedup:.1f}x "
        f"(top-1 {results['fast']['top1']:.2f} vs {results['reference']['top1']:.2f})"
    )
    summary = {
        "model": args.model,
        "image_size": args.image_size,
        "epochs": args.epochs,
        "threads": torch.get_num_threads(),
        "speedup": speedup,
        "fast": results["fast"],
        "reference": results["reference"],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
