"""``gsg experiment claims``: reproduce the paper's qualitative claims at CPU scale."""

from __future__ import annotations

import argparse

PATH = ("experiment", "claims")
HELP = "SimSiam vs SimSiam+GSG, with and without predictor, at equal epochs and equal encoder passes"
OPTIONS = ("overrides",)


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/claims")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--epochs", type=int, default=4, help="epochs of the 1x runs (the 2x baseline doubles it)")
    p.add_argument(
        "--recipe",
        default="demo",
        help="base recipe (default: demo, the built-in data; demo_fmnist: Fashion-MNIST)",
    )
    p.add_argument("--runs", help="comma-separated subset of run ids")
    p.add_argument("--data", metavar="ROOT", help="dataset root of the recipe (= --set data.root=ROOT)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from ..experiments import run_claims

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    seeds = [int(s) for s in args.seeds.split(",")]
    overrides = [*([f"data.root={args.data}"] if args.data else []), *args.overrides]
    report = run_claims(
        args.out, seeds, args.epochs, args.recipe, overrides, args.runs.split(",") if args.runs else None
    )
    from ..experiments import claims_markdown

    print(claims_markdown(report))
    return 0
