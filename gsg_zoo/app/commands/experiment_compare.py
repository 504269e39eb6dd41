"""``gsg experiment compare``: named arms, each a list of recipe overrides, over seeds."""

from __future__ import annotations

import argparse
import shlex

from ._experiment import add_run_arguments, start

PATH = ("experiment", "compare")
HELP = "named arms (recipe overrides each) over seeds: multi-crop, a ViT backbone, any knob"
OPTIONS = ("overrides",)


def parse_arm(text: str) -> tuple[str, list[str]]:
    """``NAME=KEY=VALUE KEY=VALUE ...`` (shell-quoted values) -> (NAME, [KEY=VALUE, ...])."""
    name, sep, rest = text.partition("=")
    overrides = shlex.split(rest)
    if not sep or not name.isidentifier() or any("=" not in o for o in overrides):
        raise argparse.ArgumentTypeError(
            f"--arm {text!r}: expected NAME=KEY=VALUE KEY=VALUE ... (NAME a word; no overrides: NAME=)"
        )
    return name, overrides


def register(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p, "runs/compare", epochs=3)
    p.add_argument("--name", default="compare", help="report file name (NAME.json/.md/.png)")
    p.add_argument(
        "--arm",
        dest="arms",
        action="append",
        type=parse_arm,
        required=True,
        metavar="NAME=OVERRIDES",
        help="an arm: NAME=KEY=VALUE KEY=VALUE ... (repeat for each arm)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..experiments import grid_markdown, run_arms

    seeds, overrides, command = start(args)
    arms = dict(args.arms)
    if len(arms) != len(args.arms):
        raise ValueError("--arm names must differ")
    report = run_arms(args.out, args.name, arms, seeds, args.epochs, args.recipe, overrides, command)
    print(grid_markdown(report, ("arm",)))
    return 0
