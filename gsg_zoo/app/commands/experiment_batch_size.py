"""``gsg experiment batch-size``: SimSiam vs SimSiam+GSG over batch sizes at equal epochs."""

from __future__ import annotations

import argparse

from ._experiment import add_run_arguments, start

PATH = ("experiment", "batch-size")
HELP = "SimSiam vs SimSiam+GSG at several batch sizes, equal epochs (the paper's small-batch claim)"
OPTIONS = ("overrides",)


def register(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p, "runs/batch_size", epochs=2)
    p.add_argument("--batch-sizes", default="16,32,64,128", help="comma-separated (default 16,32,64,128)")
    p.add_argument("--methods", default="simsiam,simsiam_gsg", help="comma-separated methods")
    p.add_argument(
        "--images-per-epoch",
        type=int,
        default=3200,
        help="images per epoch for every batch size (steps = images / batch; default 3200)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..experiments import grid_markdown, run_batch_size

    seeds, overrides, command = start(args)
    report = run_batch_size(
        args.out,
        seeds,
        [int(b) for b in args.batch_sizes.split(",")],
        args.epochs,
        args.images_per_epoch,
        args.recipe,
        overrides,
        tuple(args.methods.split(",")),
        command=command,
    )
    print(grid_markdown(report, ("method", "batch")))
    return 0
