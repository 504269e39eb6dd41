"""``gsg transfer segmentation train``: fine-tune a backbone with mmsegmentation (FCN / UperNet)."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

from ._common import add_model_argument, parents

PATH = ("transfer", "segmentation")
HELP = "semantic segmentation transfer with mmsegmentation (VOC12aug/Cityscapes FCN, ADE20K UperNet)"
OPTIONS = ()  # each sub-command has its own options


def register(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="segmentation_command")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    t = sub.add_parser(
        "train", help="export the backbone, fine-tune and evaluate (mIoU, mAcc, aAcc)", parents=parents()
    )
    add_model_argument(t)
    t.add_argument(
        "--recipe",
        required=True,
        help="recipe name (see `gsg transfer segmentation recipes`) or an mmengine .py config",
    )
    t.add_argument("--data", required=True, help="dataset root in the recipe's layout (mmseg's data_root)")
    t.add_argument(
        "--gpus", type=int, default=1, help="processes/GPUs; >1 launches torch.distributed.run (SyncBN)"
    )
    t.add_argument("--iters", type=int, help="training iterations (default: the recipe's)")
    t.add_argument(
        "--cfg-options",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="mmengine config overrides, e.g. train_dataloader.batch_size=4 (lr scales linearly)",
    )
    t.add_argument("--out", help="output directory (default: runs/segmentation/RECIPE-MODEL)")
    t.add_argument(
        "--resume", action="store_true", help="resume from the latest mmengine checkpoint in OUT/mmseg"
    )
    t.add_argument("--exported", help=argparse.SUPPRESS)  # backbone file from the launching process
    t.set_defaults(func=train)

    r = sub.add_parser("recipes", help="list the built-in recipes", parents=parents())
    r.set_defaults(func=recipes)


def recipes(args: argparse.Namespace) -> int:
    from ...transfer.segmentation_recipes import SEGMENTATION_RECIPES

    for recipe in SEGMENTATION_RECIPES.values():
        print(f"{recipe.name:18s} {recipe.description}\n{'':18s} {recipe.path}")
    return 0


def _default_out(recipe: str, model: str) -> Path:
    tag = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(model.rstrip("/")).name or model).strip("-") or "model"
    return Path("runs") / "segmentation" / f"{Path(recipe).stem}-{tag}"


def train(args: argparse.Namespace) -> int:
    if args.gpus < 1:
        raise ValueError(f"--gpus must be >= 1, got {args.gpus}")
    out = Path(args.out) if args.out else _default_out(args.recipe, args.model)
    if args.gpus > 1 and "LOCAL_RANK" not in os.environ:
        return _launch_distributed(args, out)

    from ...transfer import mmseg_compat

    mmseg_compat.apply()  # only when compiled mmcv ops are absent (mmcv-lite)
    from ...transfer import segmentation as seg

    options = seg.parse_cfg_options(args.cfg_options)
    if args.resume:
        options["resume"] = True
    seg.train(
        args.model,
        args.recipe,
        args.data,
        out,
        gpus=args.gpus,
        iters=args.iters,
        cfg_options=options,
        launcher="pytorch" if "LOCAL_RANK" in os.environ else "none",
        exported=args.exported,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        print((out / "results.md").read_text(), end="")
        print(f"results: {out / 'metrics.json'}, {out / 'results.md'}; mmseg logs: {out / 'mmseg'}")
    return 0


def _launch_distributed(args: argparse.Namespace, out: Path) -> int:
    """Export the backbone once, then run one process per GPU under torch.distributed.run."""
    import torch

    available = torch.cuda.device_count()
    if available < args.gpus:
        raise RuntimeError(f"--gpus {args.gpus} needs {args.gpus} CUDA devices; {available} visible")
    from ...transfer.segmentation import export_backbone
    from ...transfer.segmentation_recipes import get_segmentation_recipe

    get_segmentation_recipe(args.recipe)  # fail before exporting
    exported = export_backbone(args.model, out / "backbone.pth").path
    argv = ["transfer", "segmentation", "train", "--model", args.model, "--recipe", args.recipe]
    argv += ["--data", args.data, "--gpus", str(args.gpus), "--out", str(out), "--exported", str(exported)]
    if args.iters is not None:
        argv += ["--iters", str(args.iters)]
    if args.cfg_options:
        argv += ["--cfg-options", *args.cfg_options]
    if args.resume:
        argv.append("--resume")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.gpus}"]
    return subprocess.call([*cmd, "-m", "gsg_zoo", *argv])
