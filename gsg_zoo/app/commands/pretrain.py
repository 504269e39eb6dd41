"""``gsg pretrain RECIPE --out DIR``: pretrain SimSiam/BYOL with or without GSG."""

from __future__ import annotations

import argparse
import os

PATH = ("pretrain",)
HELP = "pretrain a backbone from a recipe (a YAML file of pretrain/); resumes from OUT/checkpoints/last.pt"
OPTIONS = ("dataset", "overrides", "progress")  # --data sets data.root, --download data.download


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", nargs="?", help="shipped recipe name (see --list) or a YAML path")
    p.add_argument("--out", help="run directory (checkpoints, metrics, curves); required to train")
    p.add_argument(
        "--resume",
        metavar="CKPT",
        help="start from this checkpoint when OUT has none (OUT/checkpoints/last.pt always wins)",
    )
    p.add_argument("--print-recipe", action="store_true", help="print the resolved recipe and exit")
    p.add_argument("--list", action="store_true", help="list the shipped recipes and exit")
    p.add_argument(
        "--wandb",
        action="store_true",
        help="also log to Weights & Biases (monitor.wandb=true; WANDB_MODE=offline writes local files)",
    )
    p.set_defaults(func=run, parser=p)


def run(args: argparse.Namespace) -> int:
    if args.list:
        from ...core.resources import list_configs  # not ..recipes: that imports torch

        print("\n".join(list_configs("pretrain", ".yaml")))
        return 0
    if not args.recipe or not (args.out or args.print_recipe):
        args.parser.error("a RECIPE and --out DIR are required (or --list, or RECIPE --print-recipe)")
    if args.out and os.path.exists(args.out) and not os.path.isdir(args.out):
        args.parser.error(f"--out {args.out} is a file; it must name a run directory (new or existing)")
    return train(args)


def train(args: argparse.Namespace) -> int:
    import logging

    import yaml

    from ...config.recipes import load_recipe

    overrides = list(args.overrides)
    if args.data:
        overrides.append(f"data.root={args.data}")
    if args.download:
        overrides.append("data.download=true")
    if getattr(args, "wandb", False):
        overrides.append("monitor.wandb=true")
    try:
        recipe = load_recipe(args.recipe, overrides)
    except ValueError as err:  # a value out of range, an unknown key, a YAML syntax error: usage, exit 2
        if getattr(args, "debug", False):
            raise
        args.parser.error(str(err))
    if args.print_recipe:
        print(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    from ...train.control import preflight
    from ...train.trainer import Pretrainer

    preflight(recipe, args.out)  # everything the run will read, before it starts
    trainer = Pretrainer(recipe, args.out, progress=not args.no_progress)
    try:
        summary = trainer.run(resume_from=args.resume)
    finally:
        trainer.dist.close()
    if trainer.dist.is_main:
        knn = summary["knn_top1"]
        print(
            f"done: {summary['method']} {summary['backbone']} {summary['epochs']} epochs, "
            f"kNN top-1 {knn if knn is None else f'{knn:.2f}%'}, {summary['images_per_s']:.1f} images/s, "
            f"run dir {args.out}"
        )
    return 0
