"""How fast the built-in data can be learnt: labels vs SimSiam+GSG for the same wall-clock budget.

For each variant of the synthetic data (``full``: every nuisance; ``flat``: flat background, no
clutter; ``flat_grey``: that, in grey), the same backbone is trained for ``--seconds`` of wall-clock
time twice, with the same views (the recipe's per-batch augmentation), optimizer and lr schedule
(the recipe's epochs mapped onto the time budget):

* ``supervised``: cross-entropy of a linear head on one view per image (an upper reference: what the
  backbone can learn about shape in that time when it is told the shape);
* ``ssl``: the recipe's learner (the demo recipe: SimSiam+GSG, 4 views).

Reports the weighted kNN top-1 (cosine, the recipe's k and T) on the rendered test split for raw
pixels, the random-init backbone, and both trained backbones, with the steps each took. Writes
``OUT.json`` and ``OUT.md`` (also printed). Example (the README's table, ~16 min on 2 CPU cores)::

    python benchmarks/learnability.py --out benchmarks/results/learnability_demo_150s

``--set KEY=VALUE`` overrides the recipe (e.g. ``--set data.min_scale=0.6``).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from gsg_zoo.config.recipes import Recipe, load_recipe
from gsg_zoo.core.device import resolve_device
from gsg_zoo.core.normalization import mean_std
from gsg_zoo.data.batch_augment import BatchAugment
from gsg_zoo.data.synthetic import SyntheticShapes
from gsg_zoo.method.backbones import feature_dim
from gsg_zoo.method.learner import SelfSupervisedLearner
from gsg_zoo.train.monitor import knn_top1
from gsg_zoo.train.optim import build_optimizer, lr_at, set_lr
from gsg_zoo.train.step import train_step

VARIANTS: dict[str, dict[str, bool]] = {
    "full": {},
    "flat": {"textured_background": False, "clutter": False},
    "flat_grey": {"textured_background": False, "clutter": False, "grayscale": True},
}
OBJECTIVES = ("supervised", "ssl")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/learnability", help="writes OUT.json and OUT.md")
    p.add_argument(
        "--recipe", default="demo", help="pretraining recipe on the synthetic data (default: demo)"
    )
    p.add_argument("--seconds", type=float, default=150.0, help="training budget per run (wall clock)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=list(OBJECTIVES))
    p.add_argument("--num-images", type=int, default=None, help="training images (default: the recipe's)")
    p.add_argument("--bank", type=int, default=2000, help="kNN bank: the first N training images")
    p.add_argument("--test", type=int, default=1000, help="test images")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="recipe override, repeatable (e.g. train.seed=1, data.min_scale=0.6)",
    )
    return p.parse_args(argv)


def render(n: int, split: str, size: int, seed: int, variant: str) -> tuple[Tensor, Tensor]:
    """``n`` images of a variant as uint8 ``(n, 3, size, size)`` and their labels."""
    ds = SyntheticShapes(n, size, seed=seed, split=split, **VARIANTS[variant])
    images = np.stack([np.asarray(ds[i][0]) for i in range(n)])
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets)


class Normalize:
    """uint8 images to the recipe's normalised float tensors (what the kNN monitor feeds)."""

    def __init__(self, normalization: str, device: torch.device) -> None:
        mean, std = mean_std(normalization)
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1)

    def __call__(self, x: Tensor) -> Tensor:
        return (x.to(self.mean.device).float() / 255 - self.mean) / self.std


@torch.no_grad()
def features(backbone: nn.Module, images: Tensor, normalize: Normalize, batch: int = 500) -> Tensor:
    was_training = backbone.training
    backbone.eval()
    out = torch.cat(
        [backbone(normalize(images[i : i + batch])).float().cpu() for i in range(0, len(images), batch)]
    )
    backbone.train(was_training)
    return out


def supervised_loss(backbone: nn.Module, head: nn.Module, labels: Tensor) -> Callable[[list[Tensor]], Tensor]:
    """The supervised objective as a step's model: cross-entropy of a linear head on the first view."""
    return lambda views: F.cross_entropy(head(backbone(views[0])), labels)


def train(
    objective: str, recipe: Recipe, images: Tensor, labels: Tensor, seconds: float, device: torch.device
) -> tuple[nn.Module, int]:
    """Train a fresh backbone for ``seconds``; returns it and the number of optimizer steps."""
    torch.manual_seed(recipe.train.seed)
    learner = SelfSupervisedLearner(recipe.learner_config()).to(device)
    modules: dict[str, nn.Module] = dict(learner.online_modules())
    if objective == "supervised":
        head = nn.Linear(feature_dim(learner.backbone), int(labels.max()) + 1).to(device)
        modules = {"backbone": learner.backbone, "head": head}
    batch = recipe.train.batch_size
    opt = build_optimizer(modules, recipe.optim, batch)
    base_lr = opt.param_groups[0]["lr"]
    dc = recipe.data
    aug = BatchAugment(dc.image_size, *mean_std(dc.normalization), **dc.augment_options())
    gen = torch.Generator().manual_seed(recipe.train.seed)
    epochs = recipe.train.epochs  # the recipe's schedule, stretched over the time budget
    steps, start = 0, time.perf_counter()
    with tqdm(
        total=round(seconds), desc=objective, bar_format="{l_bar}{bar}| {n}/{total} s", leave=False
    ) as bar:
        while (elapsed := time.perf_counter() - start) < seconds:
            set_lr(opt, lr_at(recipe.optim, base_lr, epochs * elapsed / seconds, epochs), base_lr)
            idx = torch.randint(0, len(images), (batch,), generator=gen)
            x = images[idx].to(device, non_blocking=True)
            if objective == "supervised":  # the trainer's step, with a linear head's loss on one view
                classify = supervised_loss(learner.backbone, head, labels[idx].to(device))
                loss = train_step(classify, [aug(x)], opt)
            else:  # the trainer's step (EMA at steps / 10**9, i.e. the recipe's base momentum)
                views = aug.views(x, learner.config.num_views)
                loss = train_step(learner, views, opt, ema=learner, step=steps + 1, total_steps=10**9).loss
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{objective}: non-finite loss at step {steps}")
            steps += 1
            bar.update(round(time.perf_counter() - start) - bar.n)
    return learner.backbone, steps


def measure_variant(
    variant: str, recipe: Recipe, args: argparse.Namespace, n: int, device: torch.device
) -> dict[str, Any]:
    """One table row: kNN of raw pixels, random init and each trained backbone on one data variant."""
    normalize = Normalize(recipe.data.normalization, device)
    size, seed = recipe.data.synthetic.image_size or recipe.data.image_size, recipe.data.synthetic.seed
    xtr, ytr = render(n, "train", size, seed, variant)
    xte, yte = render(args.test, "val", size, seed, variant)
    bank, bank_y = xtr[: args.bank], ytr[: args.bank]

    def score(backbone: nn.Module | None) -> float:
        if backbone is None:  # raw pixels
            fb, ft = normalize(bank).flatten(1).cpu(), normalize(xte).flatten(1).cpu()
        else:
            fb, ft = features(backbone, bank, normalize), features(backbone, xte, normalize)
        acc = knn_top1(fb, bank_y, ft, yte, int(ytr.max()) + 1, k=recipe.monitor.k, t=recipe.monitor.t)
        return round(acc, 2)

    row: dict[str, Any] = {"variant": variant, **VARIANTS[variant], "pixels": score(None)}
    torch.manual_seed(recipe.train.seed)
    row["random_init"] = score(SelfSupervisedLearner(recipe.learner_config()).backbone.to(device))
    for objective in args.objectives:
        backbone, row[f"{objective}_steps"] = train(objective, recipe, xtr, ytr, args.seconds, device)
        row[objective] = score(backbone)
    return row


def run(args: argparse.Namespace) -> dict[str, Any]:
    recipe = load_recipe(args.recipe, args.overrides)
    if recipe.data.dataset != "synthetic":
        raise SystemExit(
            f"recipe {args.recipe!r} trains on {recipe.data.dataset!r}; this needs the synthetic data"
        )
    device = resolve_device(args.device, 0)
    n = args.num_images or recipe.data.synthetic.num_images
    rows = []
    for variant in args.variants:
        rows.append(measure_variant(variant, recipe, args, n, device))
        print(json.dumps(rows[-1]), flush=True)
    return {
        "recipe": recipe.name,
        "method": recipe.method,
        "backbone": recipe.learner_config().backbone,
        "seconds": args.seconds,
        "num_images": n,
        "bank": min(args.bank, n),
        "test": args.test,
        "knn": {"k": recipe.monitor.k, "t": recipe.monitor.t},
        "overrides": args.overrides,
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "rows": rows,
    }


def markdown(result: dict[str, Any]) -> str:
    objectives = [o for o in OBJECTIVES if o in result["rows"][0]]
    names = {"supervised": "with labels", "ssl": result["method"]}
    head = ["variant", "raw pixels", "random init", *(f"{names[o]} (steps)" for o in objectives)]
    lines = [
        f"kNN top-1 (%) after {result['seconds']:.0f} s of training per run, {result['backbone']}, "
        f"{result['num_images']} training images, bank {result['bank']}, {result['test']} test images, "
        f"k={result['knn']['k']} T={result['knn']['t']}, {result['device']}",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in result["rows"]:
        cells = [r["variant"], f"{r['pixels']:.1f}", f"{r['random_init']:.1f}"]
        cells += [f"{r[o]:.1f} ({r[f'{o}_steps']})" for o in objectives]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    result = run(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    md = markdown(result)
    out.with_suffix(".md").write_text(md)
    print(md)
    return result


if __name__ == "__main__":
    main()
