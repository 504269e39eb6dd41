"""``gsg experiment selection``: GSG's nearest-pair selection vs the farthest and a random pair."""

from __future__ import annotations

import argparse
import shlex
import sys

PATH = ("experiment", "selection")
HELP = "model.gsg_selection min vs random vs max at equal cost (does the guidance matter?)"
OPTIONS = ("overrides",)


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/selection")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--rules", default="min,random,max", help="comma-separated gsg_selection rules")
    p.add_argument("--method", default="simsiam_gsg", choices=("simsiam_gsg", "byol_gsg"))
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--recipe", default="demo_fmnist", help="base recipe (default demo_fmnist: Fashion-MNIST)")
    p.add_argument("--data", metavar="ROOT", help="dataset root of the recipe (= --set data.root=ROOT)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from ..experiments import grid_markdown, run_selection

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    overrides = [*([f"data.root={args.data}"] if args.data else []), *args.overrides]
    report = run_selection(
        args.out, [int(s) for s in args.seeds.split(",")], args.epochs, args.recipe, overrides,
        args.method, tuple(args.rules.split(",")), command="gsg " + shlex.join(sys.argv[1:]),
    )  # fmt: skip
    print(grid_markdown(report, ("selection",)))
    return 0
