"""``gsg transfer detection {convert,train,recipes}``: object detection transfer with Detectron2."""

from __future__ import annotations

import argparse

from ._common import add_model_argument, parents

PATH = ("transfer", "detection")
HELP = "Detectron2 detection transfer: convert a ResNet backbone, fine-tune on VOC/COCO, report AP"
OPTIONS = ()  # each sub-command has its own options


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="detection_command")
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])

    conv = sub.add_parser(
        "convert", help="convert a ResNet backbone spec to a Detectron2 .pkl", parents=parents()
    )
    add_model_argument(conv, "spec")
    conv.add_argument(
        "--out", required=True, metavar="FILE.pkl", help="output .pkl (a .json with settings beside it)"
    )
    conv.set_defaults(func=_convert)

    train = sub.add_parser(
        "train", help="convert, fine-tune and evaluate over N seeds (Detectron2)", parents=parents()
    )
    add_model_argument(train)
    train.add_argument("--recipe", required=True, help="recipe name in configs/detectron2/ or a YAML path")
    train.add_argument(
        "--data", required=True, metavar="ROOT", help="datasets root (Detectron2 datasets/ layout)"
    )
    train.add_argument("--num-gpus", type=int, default=None, help="GPUs to use (default: all; 0 = CPU)")
    train.add_argument("--seeds", type=int, default=1, help="independent runs; report mean ± std (MoCo: 5)")
    train.add_argument(
        "--opts", nargs="+", default=[], metavar="KEY VALUE", help="Detectron2 config overrides"
    )
    train.add_argument(
        "--out", default=None, metavar="DIR", help="output dir (default runs/detection/RECIPE)"
    )
    train.set_defaults(func=_train)

    rec = sub.add_parser("recipes", help="list the detection recipes", parents=parents())
    rec.set_defaults(func=_recipes)


def _convert(args: argparse.Namespace) -> int:
    from ...transfer.detection import convert_spec, save_detectron2_pkl

    weights = convert_spec(args.spec)
    pkl, meta = save_detectron2_pkl(weights, args.out)
    print(f"wrote {pkl} ({len(weights.model)} tensors) and {meta}")
    print("Detectron2 settings: " + " ".join(weights.config_overrides()))
    print(f"not converted ({len(weights.skipped)}): " + ", ".join(_group_skipped(weights.skipped)))
    return 0


def _train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ...transfer.detection import recipe_path

    recipe_path(args.recipe)  # fail fast on a typo, before importing Detectron2
    try:
        from ...transfer.detectron2_train import train_seeds
    except ImportError as err:
        raise RuntimeError(
            f"Detectron2 is not importable ({err}); install it with: bash tools/install_detectron2.sh $(which python)"
        ) from err
    out = Path(args.out or Path("runs") / "detection" / Path(args.recipe).stem)
    report = train_seeds(
        args.model,
        args.recipe,
        args.data,
        out_dir=out,
        num_gpus=args.num_gpus,
        seeds=args.seeds,
        opts=args.opts,
    )
    print((out / "results.md").read_text())
    print(f"results: {out / 'results.json'}")
    return 0 if report["summary"] else 1


def _recipes(args: argparse.Namespace) -> int:
    from ...core.resources import config_dir
    from ...transfer.detection import detection_recipes

    for name in detection_recipes():
        print(name)
    print(f"(in {config_dir('detectron2')})")
    return 0


def _group_skipped(skipped: dict[str, str]) -> list[str]:
    by_reason: dict[str, int] = {}
    for reason in skipped.values():
        by_reason[reason] = by_reason.get(reason, 0) + 1
    return [f"{n}x {reason}" for reason, n in by_reason.items()] or ["none"]
