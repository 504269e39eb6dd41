"""Arguments and set-up shared by the ``gsg experiment`` commands."""

from __future__ import annotations

import argparse
import shlex
import sys


def add_run_arguments(p: argparse.ArgumentParser, out: str, epochs: int, recipe: str = "demo_fmnist") -> None:
    """``--out``, ``--seeds``, ``--epochs``, ``--recipe`` and ``--data``."""
    p.add_argument("--out", default=out)
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--recipe", default=recipe, help=f"base recipe (default {recipe})")
    p.add_argument("--data", metavar="ROOT", help="dataset root of the recipe (= --set data.root=ROOT)")


def start(args: argparse.Namespace) -> tuple[list[int], list[str], str]:
    """Log set-up; returns (seeds, recipe overrides, the command line as typed)."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    overrides = [*([f"data.root={args.data}"] if args.data else []), *args.overrides]
    return [int(s) for s in args.seeds.split(",")], overrides, "gsg " + shlex.join(sys.argv[1:])
