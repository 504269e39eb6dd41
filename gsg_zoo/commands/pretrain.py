"""``gsg pretrain RECIPE --out DIR``: pretrain SimSiam/BYOL with or without GSG."""

from __future__ import annotations

import argparse

PATH = ("pretrain",)
HELP = "pretrain a backbone from a recipe (pretrain/*.yaml); resumes from OUT/checkpoints/last.pt"


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="recipe name in pretrain/ (e.g. demo, cifar10_simsiam_gsg) or a YAML path")
    p.add_argument("--out", required=True, help="run directory (checkpoints, metrics, curves)")
    p.add_argument("--data", help="dataset root (sets data.root)")
    p.add_argument("--download", action="store_true", help="allow torchvision to download the dataset")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, e.g. --set train.epochs=10 --set model.predictor=false")  # fmt: skip
    p.add_argument("--resume", help="resume from this checkpoint instead of OUT/checkpoints/last.pt")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--print-recipe", action="store_true", help="print the resolved recipe and exit")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    import yaml

    from ..recipes import load_recipe

    overrides = list(args.overrides)
    if args.data:
        overrides.append(f"data.root={args.data}")
    if args.download:
        overrides.append("data.download=true")
    recipe = load_recipe(args.recipe, overrides)
    if args.print_recipe:
        print(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    from ..trainer import Pretrainer

    trainer = Pretrainer(recipe, args.out, progress=not args.no_progress)
    summary = trainer.run(resume_from=args.resume)
    if trainer.dist.is_main:
        knn = summary["knn_top1"]
        print(
            f"done: {summary['method']} {summary['backbone']} {summary['epochs']} epochs, "
            f"kNN top-1 {knn if knn is None else f'{knn:.2f}%'}, {summary['images_per_s']:.1f} images/s, "
            f"run dir {args.out}"
        )
    return 0
