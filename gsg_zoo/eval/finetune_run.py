"""``gsg eval finetune``: the label subset, the protocol's transforms, training, scoring and the report."""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any

import torch
from torch.utils.data import Subset

from ..data.pretraining import Transformed
from .datasets import build_split, eval_transform, get_info, train_transform
from .features import extract_features, precision_tag
from .finetune import PROTOCOLS, Classifier, FinetuneConfig
from .finetune_train import finetune
from .knn import topk_accuracy
from .label_subsets import LabelSubset, choose_subset, dataset_labels
from .runner import EvalContext


def _reader_view(base: Any) -> tuple[list[int], list[tuple[str, int]] | None, list[str] | None]:
    """Labels of a training split and, for an image folder, its ``samples`` and ``classes`` (a seeded
    ``--subset`` of one keeps its chosen rows)."""
    inner, rows = (base.dataset, list(base.indices)) if isinstance(base, Subset) else (base, None)
    labels = dataset_labels(inner)
    samples, classes = getattr(inner, "samples", None), getattr(inner, "classes", None)
    if rows is not None:
        labels = [labels[i] for i in rows]
        samples = [samples[i] for i in rows] if samples is not None else None
    return labels, samples, classes


def transforms(ctx: EvalContext, protocol: str) -> tuple[Any, Any]:
    """``(train, test)`` transforms: SimCLR's random crop + flip and centre crop 0.875 (none at <= 32 px),
    bicubic; ``default``: RandomResizedCrop + flip and the model's own eval transform."""
    mean, std = ctx.data_config["mean"], ctx.data_config["std"]
    if protocol == "simclr":
        size = ctx.image_size
        crop = 1.0 if size <= 32 else 0.875  # tf2/data.py: no test crop for image_size <= 32
        return train_transform(size, mean, std, "bicubic"), eval_transform(size, mean, std, crop, "bicubic")
    return ctx.train_transform(), ctx.eval_transform()


def _num_classes(dataset: str, labels: list[int], classes: list[str] | None) -> int:
    """The registry's class count, else the folder's classes, else the largest label + 1."""
    return get_info(dataset).num_classes or (len(classes) if classes else max(labels) + 1)


def label_subset(
    ctx: EvalContext, dataset: str, cfg: FinetuneConfig, subset_file: str | None
) -> tuple[Any, LabelSubset, dict]:
    """The training split restricted to the chosen labels, the choice, and the split's identity."""
    train, ident = build_split(
        dataset,
        ctx.data_root,
        "train",
        None,
        download=ctx.download,
        image_size=ctx.image_size,
        subset=ctx.subset,
    )
    labels, samples, classes = _reader_view(train.dataset)
    chosen = choose_subset(labels, cfg.fraction, cfg.seed, samples, classes, subset_file)
    ident = {**ident, "num_classes": _num_classes(dataset, labels, classes)}
    return Subset(train.dataset, chosen.indices), chosen, ident


def _digest(values: list[int]) -> str:
    return hashlib.sha256(json.dumps(values).encode()).hexdigest()[:16]


def run_finetune(
    ctx: EvalContext,
    dataset: str,
    cfg: FinetuneConfig,
    checkpoint: str | os.PathLike | None = None,
    subset_file: str | None = None,
    stop_after_epochs: int | None = None,
) -> dict[str, Any] | None:
    """Fine-tune ``ctx.model`` with a new head on ``cfg.fraction`` % of ``dataset``'s training labels,
    score the test split; the report on rank 0 (None on other ranks; None too when stopped early)."""
    if get_info(dataset).multilabel:
        raise ValueError(f"{dataset} is multi-label: fine-tuning trains a single-label head")
    t0 = time.perf_counter()
    train_tf, test_tf = transforms(ctx, cfg.protocol)
    base, chosen, ident = label_subset(ctx, dataset, cfg, subset_file)
    test, _ = build_split(
        dataset,
        ctx.data_root,
        "test",
        test_tf,
        download=ctx.download,
        image_size=ctx.image_size,
        subset=ctx.subset,
    )
    num_classes = ident["num_classes"]
    device, dist = ctx.options.resolved_device(), ctx.options.dist
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        dim = _feature_dim(ctx)
        model = Classifier(ctx.model, dim, num_classes, cfg.zero_init_head)
    identity = {
        "model": ctx.spec,
        "dataset": dataset,
        "image_size": ctx.image_size,
        "subset": ctx.subset,
        "train": ident,
        "label_subset": _digest(chosen.indices),
        "transform": repr(train_tf),
    }
    log = finetune(
        model,
        Transformed(base, train_tf),
        cfg,
        device,
        dist,
        num_workers=ctx.options.workers(),
        amp=ctx.options.amp,
        progress=ctx.options.progress,
        checkpoint=checkpoint,
        identity=identity,
        stop_after_epochs=stop_after_epochs,
    )
    if log["steps_done"] < log["total_steps"]:
        return None
    logits, test_labels = extract_features(model.eval(), test, ctx.options, desc="fine-tune test")
    if not dist.is_main:
        return None
    ranked = logits.topk(min(5, logits.shape[1]), dim=1).indices
    return {
        "evaluator": "finetune",
        "protocol": cfg.protocol,
        "protocol_settings": {
            "description": PROTOCOLS[cfg.protocol].description,
            **cfg.to_dict(),
            "train_transform": repr(train_tf),
            "test_transform": repr(test_tf),
            "precision": precision_tag(ctx.options),
        },
        "model": ctx.spec,
        "dataset": dataset,
        "fraction": cfg.fraction,
        "label_subset": chosen.record(with_indices=chosen.method == "class-balanced"),
        "image_size": ctx.image_size,
        "num_train": len(base),
        "num_test": len(test_labels),
        "num_classes": num_classes,
        "world_size": dist.world_size,
        **topk_accuracy(ranked, test_labels),
        "training": log,
        "wall_seconds": time.perf_counter() - t0,
    }


@torch.no_grad()
def _feature_dim(ctx: EvalContext) -> int:
    """Width of the backbone's pooled features (its ``num_features``, else one forward pass)."""
    dim = getattr(ctx.model, "num_features", None)
    if isinstance(dim, int) and dim > 0:
        return dim
    was = ctx.model.training
    out = ctx.model.eval()(torch.zeros(1, 3, ctx.image_size, ctx.image_size))
    ctx.model.train(was)
    return int(out.shape[1])


def finetune_markdown(r: dict[str, Any]) -> str:
    s, sub = r["protocol_settings"], r["label_subset"]
    how = sub["method"] + (f", seed {sub['seed']}" if sub.get("seed") is not None else "")
    lines = [
        f"Fine-tuning on {r['dataset']} at {r['fraction']:g} % of the labels ({r['num_train']} images, "
        f"{how}), model `{r['model']}`, precision {s['precision']}",
        f"protocol `{r['protocol']}`: {s['description']}"
        + (f"; overridden: {', '.join(s['overrides'])}" if s["overrides"] else ""),
        "",
        "| protocol | fraction | epochs | steps | batch | peak lr | top-1 | top-5 | wall time (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {r['protocol']} | {r['fraction']:g} % | {s['epochs']} | {r['training']['total_steps']} | "
        f"{s['batch_size']} | {s['peak_lr']:.4g} | {r['top1']:.2f} | {r.get('top5', float('nan')):.2f} | "
        f"{r['wall_seconds']:.1f} |",
    ]
    return "\n".join(lines) + "\n"
