"""``gsg demo``: the README's main command, end to end on the built-in data."""

from __future__ import annotations

import argparse

PATH = ("demo",)
HELP = "pretrain SimSiam+GSG on the built-in data, evaluate, export, reload through timm, write the card"
OPTIONS = ("overrides",)


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    p.add_argument("--recipe", default="demo", help="pretraining recipe (default: demo)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from ..demo import run_demo

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    run_demo(args.out, args.recipe, args.overrides)
    return 0
