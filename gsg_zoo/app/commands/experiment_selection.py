"""``gsg experiment selection``: GSG's nearest-pair selection vs the farthest and a random pair."""

from __future__ import annotations

import argparse

from ._experiment import add_run_arguments, start

PATH = ("experiment", "selection")
HELP = "model.gsg_selection min vs random vs max at equal cost (does the guidance matter?)"
OPTIONS = ("overrides",)


def register(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p, "runs/selection", epochs=3)
    p.add_argument("--rules", default="min,random,max", help="comma-separated gsg_selection rules")
    p.add_argument("--method", default="simsiam_gsg", choices=("simsiam_gsg", "byol_gsg"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..experiments import grid_markdown, run_selection

    seeds, overrides, command = start(args)
    report = run_selection(
        args.out,
        seeds,
        args.epochs,
        args.recipe,
        overrides,
        args.method,
        tuple(args.rules.split(",")),
        command=command,
    )
    print(grid_markdown(report, ("selection",)))
    return 0
