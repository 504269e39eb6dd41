"""End-to-end throughput with data loading: images/s and the fraction of step time spent waiting for data.

Builds the trainer (:class:`gsg_zoo.train.trainer.Pretrainer`) from a recipe on the built-in synthetic
dataset, so the DataLoader is exactly the trainer's (EpochSeeded multi-view dataset, workers,
pinning, prefetch, collate), and runs its training step for each ``num_workers`` value. Also
measures the loader alone (no model): the images/s the data pipeline can feed.

Recipes: ``cifar`` (``cifar10_<method>``: 32 px, CIFAR augmentation) and ``mocov2``
(``imagenet_<method>``: 224 px, MoCo-v2 augmentation with blur). ``--backbone auto`` keeps the
recipe's backbone on CUDA and uses ``resnet10t`` on the CPU (ResNet-50 at 224 px with 4 views
takes seconds per image on a laptop CPU).

Examples::

    python benchmarks/bench_throughput.py --out throughput.json
    python benchmarks/bench_throughput.py --recipes mocov2 --workers 0 2 4 8 --batch 128 --steps 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from typing import Any

import torch

RECIPES = {"cifar": "cifar10_{method}", "mocov2": "imagenet_{method}"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("Examples::")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    p.add_argument("--method", default="simsiam_gsg", choices=["simsiam", "simsiam_gsg", "byol", "byol_gsg"])
    p.add_argument(
        "--workers", type=int, nargs="+", default=[0, 1, 2], help="num_workers values (default 0 1 2)"
    )
    p.add_argument("--batch", type=int, default=32, help="batch size (default 32)")
    p.add_argument("--steps", type=int, default=4, help="timed steps after warmup (default 4)")
    p.add_argument("--warmup", type=int, default=1, help="untimed first steps (worker start-up; default 1)")
    p.add_argument("--backbone", default="auto", help="auto: the recipe's on CUDA, resnet10t on CPU")
    p.add_argument("--source-only", action="store_true", help="model.source_only=true (GSG methods)")
    p.add_argument("--device", default="auto", help="train.device (auto, cpu, cuda)")
    p.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads in the main process (0: default)"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra recipe overrides, e.g. --set train.precision=bf16",
    )
    p.add_argument("--out", help="write the results as JSON here")
    return p.parse_args(argv)


def _recipe(args: argparse.Namespace, name: str, workers: int) -> Any:
    from gsg_zoo.config.recipes import load_recipe

    recipe_name = RECIPES[name].format(method=args.method)
    overrides = [
        "data.dataset=synthetic",
        f"data.synthetic.num_images={args.batch * (args.warmup + args.steps) + args.batch}",
        f"data.loader.num_workers={workers}",
        f"train.batch_size={args.batch}",
        f"train.device={args.device}",
        "train.epochs=1",
        "monitor.every=-1",
    ]
    if args.source_only:
        overrides.append("model.source_only=true")
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if args.backbone != "auto":
        overrides.append(f"model.backbone={args.backbone}")
    elif not cuda:
        overrides.append("model.backbone=resnet10t")
    return load_recipe(recipe_name, overrides + list(args.overrides))


def measure(args: argparse.Namespace, name: str, workers: int) -> dict[str, Any]:
    from gsg_zoo.train.trainer import Pretrainer

    recipe = _recipe(args, name, workers)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Pretrainer(recipe, tmp, progress=False)
        waits, steps = time_steps(trainer, args.warmup, args.steps)
        # The data pipeline alone: a second pass over the same loader, without the model.
        loader_times = time_loader(trainer.train_loader, args.warmup, args.steps)
        device = trainer.device.type
        del trainer
    total = sum(steps)
    return {
        "recipe": name,
        "recipe_name": recipe.name,
        "image_size": recipe.data.image_size,
        "augmentation": recipe.data.augmentation,
        "backbone": recipe.learner_config().backbone,
        "method": recipe.method,
        "source_only": args.source_only,
        "device": device,
        "num_workers": workers,
        "batch": args.batch,
        "images_per_s": args.batch * len(steps) / total,
        "data_wait_frac": sum(waits) / total,
        "step_s_median": statistics.median(steps),  # host seconds (no per-step synchronisation)
        "loader_only_images_per_s": args.batch * len(loader_times) / sum(loader_times),
    }


def time_steps(trainer: Any, warmup: int, n: int) -> tuple[list[float], list[float]]:
    """Seconds waiting for each batch and host seconds of each whole step (wait included), after
    ``warmup`` steps, of the trainer's loader and training step.

    No synchronisation per step (one after the warm-up, one at the end), so the device may run behind
    the host as in the trainer: the steps' seconds add up to the timed span, the last step's holding
    the final wait for the device; images/s is the trainer's, not a sum of synchronised steps.
    """
    from gsg_zoo.train.inputs import device_batches, step_views
    from gsg_zoo.train.step import train_step

    learner, opt, device = trainer.learner, trainer.optimizer, trainer.device
    learner.train()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    num_views, channels_last = learner.config.num_views, trainer.recipe.train.channels_last
    waits, steps = [], []
    tick = time.perf_counter()
    batches = device_batches(trainer.train_loader, device, trainer.data.prefetch)
    for i, (batch, _, _) in enumerate(batches):
        got = time.perf_counter()
        views = step_views(batch, trainer.data, num_views, device, channels_last, seed=i)
        train_step(
            trainer.model,
            views,
            opt,
            ema=learner,
            step=i,
            total_steps=100,
            scaler=trainer.scaler,
            amp_dtype=trainer.amp_dtype,
        )
        if i + 1 == warmup or len(steps) + 1 == n:
            sync()  # the warm-up's work done before the clock starts; the last step's before it stops
        done = time.perf_counter()
        if i >= warmup:
            waits.append(got - tick)
            steps.append(done - tick)
        tick = done
        if len(steps) >= n:
            break
    return waits, steps


def time_loader(loader: Any, warmup: int, n: int) -> list[float]:
    """Seconds per batch of the loader alone, after ``warmup`` batches."""
    times, tick = [], time.perf_counter()
    for i, _ in enumerate(loader):
        now = time.perf_counter()
        if i >= warmup:
            times.append(now - tick)
        tick = now
        if len(times) >= n:
            break
    return times


def to_markdown(result: dict[str, Any]) -> str:
    c = result["config"]
    lines = [
        f"End-to-end throughput ({c['method']}{' source-only' if c['source_only'] else ''}, batch {c['batch']}, "
        f"{c['steps']} steps after {c['warmup']} warm-up, {result['machine']}, main-process threads "
        f"{result['threads']}); loader-only = the same DataLoader without the model.",
        "",
        "| recipe | size | backbone | workers | images/s | data wait % of step | loader-only images/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["results"]:
        lines.append(
            f"| {r['recipe_name']} ({r['augmentation']}) | {r['image_size']} | {r['backbone']} | {r['num_workers']} | "
            f"{r['images_per_s']:.1f} | {100 * r['data_wait_frac']:.1f} | {r['loader_only_images_per_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import os
    import platform

    from tqdm import tqdm

    if args.threads:
        torch.set_num_threads(args.threads)
    runs = [(r, w) for r in args.recipes for w in args.workers]
    rows = [measure(args, r, w) for r, w in tqdm(runs, desc="bench_throughput")]
    machine = (
        torch.cuda.get_device_name(0)
        if rows and rows[0]["device"] == "cuda"
        else f"{platform.machine()} CPU, {os.cpu_count()} cores"
    )
    config = {k: v for k, v in vars(args).items() if k != "out"}
    result = {"config": config, "machine": machine, "threads": torch.get_num_threads(), "results": rows}
    print(to_markdown(result))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
