"""``gsg demo``: the README's main command, end to end on Fashion-MNIST when found, else the built-in data."""

from __future__ import annotations

import argparse

PATH = ("demo",)
HELP = (
    "pretrain SimSiam+GSG on Fashion-MNIST (when found, else the built-in data), evaluate against random "
    "init and raw pixels, export, reload through timm, write the card"
)
OPTIONS = ("overrides", "dataset")


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    p.add_argument(
        "--recipe",
        default=None,
        help="pretraining recipe (default: demo_fmnist on Fashion-MNIST, demo on the built-in data)",
    )
    p.add_argument(
        "--synthetic", action="store_true", help="use the built-in data even if Fashion-MNIST is found"
    )
    p.epilog = (
        "Fashion-MNIST is looked for in --data ROOT, else $GSG_DATA/fashion-mnist, "
        "/usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist) and ~/.cache/gsg-zoo/data/fashion-mnist; "
        "--download fetches it when missing; without it (or offline) the demo uses the built-in data."
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from ..demo import choose_data, run_demo

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    data = choose_data(args.data, args.download, args.synthetic)
    run_demo(args.out, args.recipe, args.overrides, data)
    return 0
