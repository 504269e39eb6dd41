"""The kNN monitor at the ImageNet recipe's settings scaled down, the old monitor against today's, and the cost
of the step telemetry.

    python benchmarks/bench_monitor.py --out benchmarks/results/monitor_cpu.json

Writes a class-ordered JPEG ImageFolder (``--classes`` classes, ``--per-class`` train and
``--val-per-class`` val images each, ``--size`` px), builds the ``imagenet_simsiam_gsg`` recipe with
``--backbone`` at ``--image-size`` px and ``monitor.train_limit/test_limit = --bank/--queries`` (k=20,
T=0.07 as the recipe), and times one monitor call after an untimed first call (loaders built):

* ``old``: the old monitor: the first ``--bank`` images (``Subset(range(N))``), 2 loader
  workers, rank 0 only, kNN on the CPU (re-implemented here; it also reports how many classes its
  bank holds);
* ``new``: :class:`gsg_zoo.train.monitor.KnnMonitor` in one process, and under ``torchrun`` on 2 ranks
  (gloo), each embedding a shard, same worker count.

Telemetry: the time of :meth:`StepTelemetry.record` per step plus one row (all-reduce skipped in one
process) and its writes (steps.jsonl, TensorBoard) every ``train.log_every`` = 20 steps, as a fraction of
a measured training step of the same learner at ``--batch`` images.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Subset

from gsg_zoo.config.recipes import load_recipe
from gsg_zoo.core.distributed import init_distributed
from gsg_zoo.core.normalization import mean_std
from gsg_zoo.data.augment import eval_transform
from gsg_zoo.data.pretraining import build_dataset, collate_images
from gsg_zoo.method.learner import SelfSupervisedLearner
from gsg_zoo.train.log import StepSinks, StepTelemetry
from gsg_zoo.train.monitor import KnnMonitor, collapse_metrics, dataset_labels, embed, knn_top1
from gsg_zoo.train.step import train_step
from gsg_zoo.zoo.preprocessing import default_crop_pct

CPU = torch.device("cpu")


def write_folder(root: Path, classes: int, per_class: dict[str, int], size: int) -> None:
    """JPEGs in class order (as ImageNet's files sort), one colour pattern per class plus noise."""
    rng = np.random.default_rng(0)
    for split, n in per_class.items():
        for c in range(classes):
            folder = root / split / f"n{c:04d}"
            folder.mkdir(parents=True, exist_ok=True)
            base = rng.integers(0, 255, (1, 1, 3))
            for i in range(n):
                img = np.clip(base + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(folder / f"{i}.jpg", quality=85)


def recipe_for(args: argparse.Namespace, root: Path):
    return load_recipe(
        "imagenet_simsiam_gsg",
        [
            f"model.backbone={args.backbone}",
            "model.projector_hidden_dim=512",
            "model.projector_dim=512",
            "model.predictor_hidden_dim=128",
            f"data.root={root}",
            f"data.image_size={args.image_size}",
            f"data.loader.num_workers={args.workers}",
            f"monitor.train_limit={args.bank}",
            f"monitor.test_limit={args.queries}",
            f"monitor.batch_size={args.monitor_batch}",
        ],
    )


class OldMonitor:
    """The old monitor: first-N subsets, 2 workers, rank 0 only, kNN on the CPU."""

    def __init__(self, recipe) -> None:
        dc, mc = recipe.data, recipe.monitor
        tf = eval_transform(
            dc.image_size, *mean_std(dc.normalization), crop_pct=default_crop_pct(dc.image_size)
        )
        self.mc, self.loaders, self.classes = mc, [], []
        for split, limit in ((mc.train_split, mc.train_limit), (mc.test_split, mc.test_limit)):
            ds = build_dataset(dc.dataset, dc.root, split, transform=tf)
            keep = range(min(limit, len(ds)))
            self.classes.append(len({dataset_labels(ds)[i] for i in keep}))
            ds = Subset(ds, keep) if len(ds) > limit else ds
            workers = min(dc.loader.num_workers, 2)
            self.loaders.append(
                DataLoader(ds, batch_size=mc.batch_size, num_workers=workers, collate_fn=collate_images)
            )

    def __call__(self, learner) -> dict:
        learner.eval()
        bank, bank_labels, _ = embed(learner.encoder, self.loaders[0], CPU, None, False)
        test, test_labels, test_z = embed(
            learner.encoder, self.loaders[1], CPU, None, False, projections=True
        )
        learner.train()
        n = int(max(bank_labels.max(), test_labels.max())) + 1
        top1 = knn_top1(bank, bank_labels, test, test_labels, n, k=self.mc.k, t=self.mc.t)
        return {"knn_top1": top1, **collapse_metrics(test, test_z), "bank_classes": self.classes[0]}


def timed(call, reps: int) -> tuple[float, dict]:
    call()  # untimed: builds loaders, warms caches
    times, out = [], {}
    for _ in range(reps):
        t0 = time.perf_counter()
        out = call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def learner_of(recipe) -> SelfSupervisedLearner:
    torch.manual_seed(0)
    return SelfSupervisedLearner(recipe.learner_config())


def run_ranks(args: argparse.Namespace, root: Path) -> dict:
    """This script under torchrun (2 gloo ranks): the new monitor's time on rank 0."""
    out = root / "ranks.json"
    same = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if v is not None and k != "out"]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--standalone",
        __file__,
        *same,
        f"--ranks-child={root}",
    ]
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": str(max(1, args.threads // 2))})
    return json.loads(out.read_text())


def ranks_child(args: argparse.Namespace) -> None:
    root = Path(args.ranks_child)
    info = init_distributed("cpu", 10.0)
    recipe = recipe_for(args, root)
    monitor, learner = KnnMonitor(recipe.data, recipe.monitor, info), learner_of(recipe)
    seconds, metrics = timed(lambda: monitor(learner, CPU, None, False), args.reps)
    if info.is_main:
        (root / "ranks.json").write_text(json.dumps({"seconds": seconds, **metrics}))
    info.close()


def telemetry_cost(args: argparse.Namespace, recipe, tmp: Path) -> dict:
    """Seconds per step of the telemetry (record every step, a row and its writes every 20) vs a step."""
    learner = learner_of(recipe)
    opt = torch.optim.SGD(learner.parameters(), lr=0.01)
    views = [torch.randn(args.batch, 3, args.image_size, args.image_size) for _ in range(4)]
    for _ in range(2):
        out = train_step(learner, views, opt)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        out = train_step(learner, views, opt)
    step_s = (time.perf_counter() - t0) / args.steps
    tel, sinks, every = (
        StepTelemetry(init_distributed("cpu"), CPU, 10_000),
        StepSinks(tmp, True, None, False),
        20,
    )
    loss, counts = out.loss.detach(), out.selection_counts
    t0 = time.perf_counter()
    for i in range(1, 20 * every + 1):
        tel.record(loss, args.batch, 0.001, counts)
        if i % every == 0:
            sinks.write(tel.row(i, i / 100, 0.1))
    per_step = (time.perf_counter() - t0) / (20 * every)
    sinks.close()
    return {
        "step_s": step_s,
        "telemetry_s_per_step": per_step,
        "overhead_frac": per_step / step_s,
        "log_every": every,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--per-class", type=int, default=40, help="train images per class (the bank is a subset)")
    p.add_argument("--val-per-class", type=int, default=5)
    p.add_argument("--size", type=int, default=96, help="JPEG side (px)")
    p.add_argument("--image-size", type=int, default=64, help="the monitor's centre crop (px)")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--bank", type=int, default=2000)
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--monitor-batch", type=int, default=250)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--batch", type=int, default=32, help="telemetry: training batch")
    p.add_argument("--steps", type=int, default=5, help="telemetry: timed training steps")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--ranks-child", help=argparse.SUPPRESS)
    p.add_argument("--out")
    args = p.parse_args(argv)
    if args.ranks_child:
        return ranks_child(args) or {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_folder(root, args.classes, {"train": args.per_class, "val": args.val_per_class}, args.size)
        recipe = recipe_for(args, root)
        old, learner = OldMonitor(recipe), learner_of(recipe)
        new = KnnMonitor(recipe.data, recipe.monitor)
        results = {
            "old_1_process": dict(zip(("seconds", "metrics"), timed(lambda: old(learner), args.reps))),
            "new_1_process": dict(
                zip(("seconds", "metrics"), timed(lambda: new(learner, CPU, None, False), args.reps))
            ),
        }
        ranks = run_ranks(args, root)
        results["new_2_ranks"] = {"seconds": ranks.pop("seconds"), "metrics": ranks}
        results["telemetry"] = telemetry_cost(args, recipe, root)
    report = {
        "command": "python benchmarks/bench_monitor.py " + " ".join(argv or sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared)",
        "torch": torch.__version__,
        "settings": {k: v for k, v in vars(args).items() if k != "ranks_child"},
        "results": results,
    }
    md = markdown(report)
    print(md)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        Path(args.out).with_suffix(".md").write_text(md)
    return report


def markdown(r: dict) -> str:
    s, res = r["settings"], r["results"]
    lines = [
        f"kNN monitor, {s['bank']} bank / {s['queries']} queries of a class-ordered {s['classes']}-class JPEG "
        f"ImageFolder ({s['size']} px files, {s['image_size']} px crops), {s['backbone']}, {s['workers']} workers, "
        f"{r['machine']}",
        "",
        "| monitor | seconds per call | kNN top-1 | classes in the bank |",
        "|---|---:|---:|---:|",
    ]
    for key, label in (
        ("old_1_process", "old: first N, rank 0 only"),
        ("new_1_process", "new: stratified, 1 process"),
        ("new_2_ranks", "new: stratified, 2 ranks (gloo)"),
    ):
        m = res[key]["metrics"]
        classes = m.get("bank_classes", s["classes"])
        lines.append(f"| {label} | {res[key]['seconds']:.2f} | {m['knn_top1']:.2f} | {classes} |")
    t = res["telemetry"]
    lines += [
        "",
        f"Step telemetry: {1e3 * t['telemetry_s_per_step']:.3f} ms per step (log_every {t['log_every']}) "
        f"vs a {1e3 * t['step_s']:.0f} ms training step: {100 * t['overhead_frac']:.3f} % overhead.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
