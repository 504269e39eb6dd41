"""``gsg experiment batch-size``: SimSiam vs SimSiam+GSG over batch sizes at equal epochs."""

from __future__ import annotations

import argparse
import shlex
import sys

PATH = ("experiment", "batch-size")
HELP = "SimSiam vs SimSiam+GSG at several batch sizes, equal epochs (the paper's small-batch claim)"
OPTIONS = ("overrides",)


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/batch_size")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--batch-sizes", default="16,32,64,128", help="comma-separated (default 16,32,64,128)")
    p.add_argument("--methods", default="simsiam,simsiam_gsg", help="comma-separated methods")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument(
        "--images-per-epoch", type=int, default=3200,
        help="images per epoch for every batch size (steps = images / batch; default 3200)",
    )  # fmt: skip
    p.add_argument("--recipe", default="demo_fmnist", help="base recipe (default demo_fmnist: Fashion-MNIST)")
    p.add_argument("--data", metavar="ROOT", help="dataset root of the recipe (= --set data.root=ROOT)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from ..experiments import grid_markdown, run_batch_size

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    overrides = [*([f"data.root={args.data}"] if args.data else []), *args.overrides]
    report = run_batch_size(
        args.out, [int(s) for s in args.seeds.split(",")], [int(b) for b in args.batch_sizes.split(",")],
        args.epochs, args.images_per_epoch, args.recipe, overrides, tuple(args.methods.split(",")),
        command="gsg " + shlex.join(sys.argv[1:]),
    )  # fmt: skip
    print(grid_markdown(report, ("method", "batch")))
    return 0
