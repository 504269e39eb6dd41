"""Peer parity: SimSiam and BYOL from lightly against gsg-zoo's, on Fashion-MNIST, scored by `gsg eval knn`.

lightly (PyPI ``lightly``; ``pip install -e .[bench]``, never a runtime dependency) is used as its
documentation shows: its own heads (``SimSiamProjectionHead``/``SimSiamPredictionHead``,
``BYOLProjectionHead``/``BYOLPredictionHead``), loss (``NegativeCosineSimilarity``), transforms
(``SimSiamTransform``, ``BYOLTransform``), momentum helpers (``update_momentum``, ``cosine_schedule``)
and the plain training loop of lightly's examples ``examples/pytorch/simsiam.py`` and
``examples/pytorch/byol.py`` (included by docs/source/examples/simsiam.rst and byol.rst,
github.com/lightly-ai/lightly). gsg-zoo trains through ``Pretrainer`` (what ``gsg pretrain`` runs).

Aligned (:data:`CONFIG`): backbone (timm ResNet-10-T from ``gsg_zoo.method.backbones.create_backbone``,
zero-init residual BN), data (all 60,000 Fashion-MNIST training images, shuffled, 28 px zero-padded to
32 by the same reader), image size 32, batch 64, ``--steps`` steps (one truncated epoch), SGD (lr 0.1,
momentum 0.9, weight decay 5e-4 on every parameter) with a per-step cosine to 0, head widths, the
augmentation (crop 0.2-1, flip 0.5, colour jitter 0.4/0.4/0.4/0.1 at p 0.8, grey 0.2, no blur, no
solarisation, CIFAR mean/std), BYOL's EMA (cosine from 0.99 to 1 per step), 2 loader workers, fp32,
NCHW, seeds. :data:`DIFFERENCES` lists what stays different. Both backbones are exported as timm
local-dir folders with the same data config and scored by the same ``gsg eval knn`` call (seeded
subsets of ``--eval-subset`` train and test images, k=200, T=0.1). images/s: training images over
the wall time of the training loop (loader start included), measured in the same process and run.

    python benchmarks/peer_parity.py --data /usr/share/datasets/fashion-mnist --steps 150 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

CONFIG: dict[str, Any] = {
    "arch": "resnet10t",
    "image_size": 32,
    "batch": 64,
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "proj_hidden": 512,
    "proj_dim": 512,
    "pred_hidden": 128,
    "ema_base": 0.99,
    "workers": 2,
    "min_scale": 0.2,
    "jitter": 0.4,
    "hue": 0.1,
    "grayscale_p": 0.2,
    "knn_k": 200,
    "knn_t": 0.1,
}
DIFFERENCES = [
    "SimSiam projector: gsg-zoo's last Linear has a bias (then BN without affine, which removes it); "
    "lightly's has none",
    "BYOL projector: gsg-zoo's ends in BatchNorm without affine (its SimSiam-style projector); "
    "lightly's BYOLProjectionHead ends in a plain Linear",
    "BYOL EMA: lightly's loop updates the target before each step's forward (example order), "
    "gsg-zoo after optimizer.step(); both follow the same cosine 0.99 -> 1",
    "augmentation code: gsg-zoo's torchvision pipeline vs lightly's transforms (same operations and "
    "strengths, drawn from different random streams); lightly's BYOLTransform keeps its two view "
    "pipelines, set equal here (blur 0, solarisation 0, saturation 0.4)",
    "random streams: same seeds, but data order, augmentation draws and initial weights come from "
    "each library's own use of them (not the same images in the same order)",
]
METHODS = ("simsiam", "byol")
LIBRARIES = ("gsg_zoo", "lightly")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist", help="Fashion-MNIST root")
    p.add_argument("--out", default="runs/peer_parity", help="run directories")
    p.add_argument("--results", default="benchmarks/results", help="where peer_parity.{json,md} go")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--eval-subset", type=int, default=5000, help="seeded train and test images for kNN")
    p.add_argument(
        "--warmup-steps",
        type=int,
        default=20,
        help="untimed steps of every (library, method) first, so no measured run is the process's "
        "cold start (0: none)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="CONFIG override (smoke tests), e.g. --set batch=8",
    )
    return p.parse_args(argv)


def config_with(overrides: list[str]) -> dict[str, Any]:
    cfg = dict(CONFIG)
    for item in overrides:
        key, value = item.split("=", 1)
        cfg[key] = type(CONFIG[key])(value)
    return cfg


# ----------------------------------------------------------------------------- gsg-zoo


def gsg_overrides(method: str, seed: int, steps: int, root: str, cfg: dict[str, Any]) -> list[str]:
    """The ``demo_fmnist`` recipe set to :data:`CONFIG` (``--set`` values of ``gsg pretrain``)."""
    return [
        f"method={method}",
        f"model.backbone={cfg['arch']}",
        f"model.projector_layers={3 if method == 'simsiam' else 2}",
        f"model.projector_hidden_dim={cfg['proj_hidden']}",
        f"model.projector_dim={cfg['proj_dim']}",
        f"model.predictor_hidden_dim={cfg['pred_hidden']}",
        "model.ema_schedule=cosine",
        f"model.ema_momentum={cfg['ema_base']}",
        f"data.root={root}",
        f"data.image_size={cfg['image_size']}",
        "data.batch_augment=false",
        f"data.jitter={cfg['jitter']}",
        f"data.hue={cfg['hue']}",
        f"data.min_scale={cfg['min_scale']}",
        f"data.grayscale_p={cfg['grayscale_p']}",
        "data.normalization=cifar",
        f"data.loader.num_workers={cfg['workers']}",
        f"optim.lr={cfg['lr']}",
        f"optim.momentum={cfg['momentum']}",
        f"optim.weight_decay={cfg['weight_decay']}",
        "optim.scale_lr=false",
        "optim.fix_predictor_lr=false",
        "optim.warmup_epochs=0",
        "optim.per_step=true",
        "optim.schedule=cosine",
        "train.epochs=1",
        f"train.max_steps_per_epoch={steps}",
        f"train.batch_size={cfg['batch']}",
        f"train.seed={seed}",
        "train.device=cpu",
        "train.precision=fp32",
        "train.channels_last=false",
        "monitor.every=-1",
    ]


def train_gsg_zoo(method: str, seed: int, steps: int, root: str, out: Path, cfg: dict[str, Any]) -> dict:
    """gsg-zoo's ``method`` through ``Pretrainer``, exported as a timm local-dir folder."""
    from gsg_zoo.config.recipes import load_recipe
    from gsg_zoo.train.trainer import Pretrainer
    from gsg_zoo.zoo.export import export_checkpoint

    recipe = load_recipe("demo_fmnist", gsg_overrides(method, seed, steps, root, cfg))
    summary = Pretrainer(recipe, out / "run", progress=False).run()
    export = export_checkpoint(
        out / "run" / "checkpoints" / "last.pt",
        out / "export",
        name=f"parity-gsg-{method}",
        overwrite=True,
        verify=False,
    )
    (epoch,) = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    return {
        "export": str(export),
        "images_per_s": epoch["images_per_s"],
        "train_s": epoch["epoch_time_s"],
        "steps": summary["steps"],
    }


# ----------------------------------------------------------------------------- lightly


class LightlySimSiam(nn.Module):
    """lightly's SimSiam example model (examples/pytorch/simsiam.py), heads at :data:`CONFIG`'s widths."""

    def __init__(self, backbone: nn.Module, dim: int, cfg: dict[str, Any]) -> None:
        from lightly.models.modules import SimSiamPredictionHead, SimSiamProjectionHead

        super().__init__()
        self.backbone = backbone
        self.projection_head = SimSiamProjectionHead(dim, cfg["proj_hidden"], cfg["proj_dim"])
        self.prediction_head = SimSiamPredictionHead(cfg["proj_dim"], cfg["pred_hidden"], cfg["proj_dim"])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.projection_head(self.backbone(x).flatten(start_dim=1))
        return z.detach(), self.prediction_head(z)


class LightlyBYOL(nn.Module):
    """lightly's BYOL example model (examples/pytorch/byol.py), heads at :data:`CONFIG`'s widths."""

    def __init__(self, backbone: nn.Module, dim: int, cfg: dict[str, Any]) -> None:
        from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
        from lightly.models.utils import deactivate_requires_grad

        super().__init__()
        self.backbone = backbone
        self.projection_head = BYOLProjectionHead(dim, cfg["proj_hidden"], cfg["proj_dim"])
        self.prediction_head = BYOLPredictionHead(cfg["proj_dim"], cfg["pred_hidden"], cfg["proj_dim"])
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prediction_head(self.projection_head(self.backbone(x).flatten(start_dim=1)))

    def forward_momentum(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection_head_momentum(self.backbone_momentum(x).flatten(start_dim=1)).detach()


def lightly_transform(method: str, cfg: dict[str, Any]) -> Any:
    """lightly's own SimSiam / BYOL transform, at :data:`CONFIG`'s strengths (no blur, no solarisation)."""
    from lightly.transforms import BYOLTransform, BYOLView1Transform, BYOLView2Transform, SimSiamTransform

    from gsg_zoo.core.normalization import CIFAR_MEAN, CIFAR_STD

    common = {
        "input_size": cfg["image_size"],
        "cj_prob": 0.8,
        "cj_strength": 1.0,
        "cj_bright": cfg["jitter"],
        "cj_contrast": cfg["jitter"],
        "cj_sat": cfg["jitter"],
        "cj_hue": cfg["hue"],
        "min_scale": cfg["min_scale"],
        "random_gray_scale": cfg["grayscale_p"],
        "gaussian_blur": 0.0,
        "hf_prob": 0.5,
        "normalize": {"mean": list(CIFAR_MEAN), "std": list(CIFAR_STD)},
    }
    if method == "simsiam":
        return SimSiamTransform(**common)
    views = (BYOLView1Transform, BYOLView2Transform)
    return BYOLTransform(*(view(**common, solarization_prob=0.0) for view in views))


def lightly_step(
    model: nn.Module,
    method: str,
    views: list[torch.Tensor],
    criterion: nn.Module,
    step: int,
    steps: int,
    cfg: dict[str, Any],
) -> torch.Tensor:
    """One step's loss, as lightly's examples compute it."""
    x0, x1 = views
    if method == "simsiam":
        (z0, p0), (z1, p1) = model(x0), model(x1)
        return 0.5 * (criterion(z0, p1) + criterion(z1, p0))
    from lightly.models.utils import update_momentum
    from lightly.utils.scheduler import cosine_schedule

    m = cosine_schedule(step, steps, cfg["ema_base"], 1.0)
    update_momentum(model.backbone, model.backbone_momentum, m=m)
    update_momentum(model.projection_head, model.projection_head_momentum, m=m)
    p0, z0, p1, z1 = model(x0), model.forward_momentum(x0), model(x1), model.forward_momentum(x1)
    return 0.5 * (criterion(p0, z1) + criterion(p1, z0))


def train_lightly(method: str, seed: int, steps: int, root: str, out: Path, cfg: dict[str, Any]) -> dict:
    """lightly's ``method`` with its plain loop; the backbone exported as a timm local-dir folder."""
    from lightly.loss import NegativeCosineSimilarity

    from gsg_zoo.data.pretraining import build_dataset
    from gsg_zoo.method.backbones import create_backbone, feature_dim

    torch.manual_seed(seed)
    backbone = create_backbone(cfg["arch"], zero_init_residual=True)
    model = (LightlySimSiam if method == "simsiam" else LightlyBYOL)(backbone, feature_dim(backbone), cfg)
    dataset = build_dataset(
        "fashion_mnist", root, "train", transform=lightly_transform(method, cfg), image_size=cfg["image_size"]
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=cfg["batch"],
        shuffle=True,
        drop_last=True,
        num_workers=cfg["workers"],
        generator=torch.Generator().manual_seed(seed),
    )
    criterion = NegativeCosineSimilarity()
    optimizer = torch.optim.SGD(
        model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"]
    )
    start, images, losses = time.perf_counter(), 0, []
    for step, (views, _) in zip(range(steps), loader):
        for group in optimizer.param_groups:  # the per-step cosine gsg-zoo's optim.per_step uses
            group["lr"] = cfg["lr"] * 0.5 * (1.0 + math.cos(math.pi * step / steps))
        loss = lightly_step(model, method, views, criterion, step, steps, cfg)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        images, losses = images + views[0].shape[0], [*losses, float(loss.detach())]
    elapsed = time.perf_counter() - start
    export = export_lightly_backbone(model.backbone, out / "export", cfg)
    return {
        "export": str(export),
        "images_per_s": images / elapsed,
        "train_s": elapsed,
        "steps": len(losses),
        "final_loss": losses[-1] if losses else None,
    }


def export_lightly_backbone(backbone: nn.Module, out: Path, cfg: dict[str, Any]) -> Path:
    """The backbone as a timm local-dir folder with gsg-zoo's data config of this training data."""
    from timm.models import save_for_hf

    from gsg_zoo.zoo.preprocessing import trained_data_config

    data = {"image_size": cfg["image_size"], "normalization": "cifar"}
    backbone.pretrained_cfg = {**backbone.pretrained_cfg, **trained_data_config(cfg["arch"], data)}
    out.mkdir(parents=True, exist_ok=True)
    save_for_hf(backbone.eval(), str(out), model_config={"num_classes": 0}, safe_serialization=True)
    return out


# ----------------------------------------------------------------------------- scoring and report


def score(export: str, root: str, subset: int, out: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """``gsg eval knn`` on an export (in this process, through the command line's own entry point)."""
    from gsg_zoo.app.cli import main

    k, t = cfg["knn_k"], cfg["knn_t"]
    argv = [
        "eval",
        "knn",
        "--model",
        export,
        "--dataset",
        "fashion_mnist",
        "--data",
        root,
        "--subset",
        str(subset),
        "--image-size",
        str(cfg["image_size"]),
        "--knn",
        f"{k}:{t}",
        "--no-cache",
        "--workers",
        "0",
        "--no-progress",
        "--out",
        str(out),
    ]
    if main(argv) != 0:
        raise RuntimeError(f"gsg {' '.join(argv)} failed")
    result = json.loads((out / "knn_fashion_mnist.json").read_text())
    return {
        "knn_top1": result["results"][0]["top1"],
        "num_train": result["num_train"],
        "num_test": result["num_test"],
        "transform": result["protocol_settings"]["transform"],
    }


def run_one(lib: str, method: str, seed: int, args: argparse.Namespace, cfg: dict[str, Any]) -> dict:
    out = Path(args.out) / f"{lib}_{method}_seed{seed}"
    train = train_gsg_zoo if lib == "gsg_zoo" else train_lightly
    print(f"=== {lib} {method} seed {seed}: {args.steps} steps", flush=True)
    trained = train(method, seed, args.steps, args.data, out, cfg)
    scored = score(trained["export"], args.data, args.eval_subset, out / "eval", cfg)
    print(f"    kNN {scored['knn_top1']:.2f}, {trained['images_per_s']:.1f} images/s", flush=True)
    return {"library": lib, "method": method, "seed": seed, **trained, **scored}


def warm_up(args: argparse.Namespace, cfg: dict[str, Any]) -> None:
    """Train every (library, method) for ``--warmup-steps`` untimed steps (results discarded): the first
    run of a process pays one-off costs (allocator, thread pools, page cache) the others do not."""
    for method in args.methods:
        for lib in LIBRARIES:
            train = train_gsg_zoo if lib == "gsg_zoo" else train_lightly
            train(method, 0, args.warmup_steps, args.data, Path(args.out) / f"warmup_{lib}_{method}", cfg)


def aggregate(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample std over seeds of kNN and images/s, per (method, library)."""
    from gsg_zoo.app.experiments import mean_and_sd

    def stats(rs: list[dict[str, Any]], key: str) -> dict[str, float]:
        mean, sd = mean_and_sd([r[key] for r in rs])
        return {f"{key}_mean": mean, f"{key}_std": sd}

    rows = []
    for method in dict.fromkeys(r["method"] for r in records):
        for lib in LIBRARIES:
            rs = [r for r in records if r["method"] == method and r["library"] == lib]
            if rs:
                rows.append(
                    {
                        "method": method,
                        "library": lib,
                        "seeds": [r["seed"] for r in rs],
                        **stats(rs, "knn_top1"),
                        **stats(rs, "images_per_s"),
                    }
                )
    return rows


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Peer parity: gsg-zoo vs lightly {report['lightly_version']} on Fashion-MNIST",
        "",
        f"{report['steps']} steps at batch {report['config']['batch']} (after {report['warmup_steps']} untimed "
        f"warm-up steps per library and method), seeds {report['seeds']}; "
        f"kNN top-1 (k={report['config']['knn_k']}, T={report['config']['knn_t']}) by `gsg eval knn` "
        f"on {report['eval_subset']} train / {report['eval_subset']} test images; machine: {report['machine']}",
        "",
        "| method | library | kNN top-1 (mean ± std) | images/s (mean ± std) |",
        "|---|---|---|---|",
    ]
    for r in report["table"]:
        lines.append(
            f"| {r['method']} | {r['library']} | {r['knn_top1_mean']:.2f} ± {r['knn_top1_std']:.2f} | "
            f"{r['images_per_s_mean']:.1f} ± {r['images_per_s_std']:.1f} |"
        )
    lines += ["", "Stays different:", *[f"- {d}" for d in report["differences"]], ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import lightly

    args, t0 = parse_args(argv), time.perf_counter()
    cfg = config_with(args.overrides)
    if args.warmup_steps:
        warm_up(args, cfg)
    records = [
        run_one(lib, method, seed, args, cfg)
        for seed in args.seeds
        for method in args.methods
        for lib in (LIBRARIES if seed % 2 == 0 else LIBRARIES[::-1])
    ]
    report = {
        "lightly_version": lightly.__version__,
        "torch": torch.__version__,
        "steps": args.steps,
        "warmup_steps": args.warmup_steps,
        "seeds": args.seeds,
        "eval_subset": args.eval_subset,
        "config": cfg,
        "differences": DIFFERENCES,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, load {_load()}",
        "table": aggregate(records),
        "records": records,
        "wall_s": time.perf_counter() - t0,
    }
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    (results / "peer_parity.json").write_text(json.dumps(report, indent=2) + "\n")
    (results / "peer_parity.md").write_text(markdown(report))
    print(markdown(report))
    return report


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


if __name__ == "__main__":
    main(sys.argv[1:])
