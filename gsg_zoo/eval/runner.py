"""High-level evaluators behind ``gsg eval knn``, ``gsg eval linear`` and ``gsg transfer classification``."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..checkpoint import atomic_write
from .datasets import (
    TRANSFER_SUITE,
    build_split,
    eval_transform,
    get_info,
    num_classes_of,
    protocol_indices,
    train_transform,
)
from .features import ExtractOptions, FeatureCache, Features
from .knn import DEFAULT_KS_AND_TS, knn_evaluate
from .linear import LinearConfig, Timer, evaluate_fc, train_on_features, train_reference


@dataclass
class EvalContext:
    """A loaded backbone with its preprocessing and the shared feature cache."""

    spec: str
    model: nn.Module
    data_config: dict[str, Any]
    image_size: int
    cache: FeatureCache
    options: ExtractOptions = field(default_factory=ExtractOptions)
    data_root: str | None = None
    download: bool = False
    subset: int | None = None

    @classmethod
    def load(
        cls,
        spec: str,
        *,
        image_size: int | None = None,
        cache_dir: str | None = None,
        use_cache: bool = True,
        options: ExtractOptions | None = None,
        data_root: str | None = None,
        download: bool = False,
        subset: int | None = None,
    ) -> EvalContext:
        from ..models import load_backbone

        model, cfg = load_backbone(spec)
        size = int(image_size or cfg["input_size"][-1])
        return cls(spec, model, cfg, size, FeatureCache(cache_dir, enabled=use_cache), options or ExtractOptions(),
                   data_root, download, subset)  # fmt: skip

    def eval_transform(self, crop_pct: float | None = None, interpolation: str | None = None) -> Any:
        """Resize(size / crop_pct) + CenterCrop(size): crop_pct 0.875 (224/256) for ImageNet-size inputs,
        1.0 for small (<= 64 px, CIFAR-like) inputs, unless given."""
        crop = crop_pct if crop_pct is not None else (1.0 if self.image_size <= 64 else 0.875)
        interp = interpolation or self.data_config.get("interpolation", "bilinear")
        return eval_transform(
            self.image_size, self.data_config["mean"], self.data_config["std"], crop, interp
        )

    def train_transform(self) -> Any:
        interp = self.data_config.get("interpolation", "bilinear")
        return train_transform(self.image_size, self.data_config["mean"], self.data_config["std"], interp)

    def features(self, dataset: str, split: str, transform: Any) -> Features:
        ds, ident = build_split(dataset, self.data_root, split, transform, download=self.download,
                                image_size=self.image_size, subset=self.subset)  # fmt: skip
        return self.cache.get(self.model, ds, ident, transform, self.options)


def _check_single_label(name: str) -> None:
    if get_info(name).multilabel:
        raise ValueError(f"{name} is multi-label: evaluate it with `gsg transfer classification`")


def run_knn(
    ctx: EvalContext,
    dataset: str,
    ks_and_ts: Sequence[tuple[int, float]] = DEFAULT_KS_AND_TS,
    chunk_size: int = 256,
) -> dict[str, Any]:
    """Weighted kNN on cached centre-crop features; top-1/top-5 per ``(k, T)``."""
    _check_single_label(dataset)
    t0 = time.perf_counter()
    transform = ctx.eval_transform()
    train, test = ctx.features(dataset, "train", transform), ctx.features(dataset, "test", transform)
    num_classes = num_classes_of(dataset, torch.cat([train.labels, test.labels]))
    t1 = time.perf_counter()
    device = ctx.options.device if ctx.options.device not in (None, "auto") else None
    bank = train.feats.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    accs = knn_evaluate(bank, train.labels, test.feats, test.labels, ks_and_ts, num_classes, chunk_size)
    return {
        "evaluator": "knn",
        "model": ctx.spec,
        "dataset": dataset,
        "image_size": ctx.image_size,
        "num_train": len(train.feats),
        "num_test": len(test.feats),
        "num_classes": num_classes,
        "results": [{"k": k, "T": t, **acc} for (k, t), acc in accs.items()],
        "feature_seconds": t1 - t0,
        "features_cached": train.cached and test.cached,
        "knn_seconds": time.perf_counter() - t1,
        "wall_seconds": time.perf_counter() - t0,
    }


def run_linear(
    ctx: EvalContext, dataset: str, protocol: str, cfg: LinearConfig, solver: str = "sgd"
) -> dict[str, Any]:
    """``reference``: augmented images re-encoded every epoch; ``fast``: the fc on cached features
    (``solver`` sgd: same optimizer and schedule; lbfgs: logistic regression with C chosen on a
    seeded 20% of train)."""
    _check_single_label(dataset)
    with Timer() as total:
        test = ctx.features(dataset, "test", ctx.eval_transform())
        if protocol == "reference":
            train_set, _ = build_split(dataset, ctx.data_root, "train", ctx.train_transform(),
                                       download=ctx.download, image_size=ctx.image_size, subset=ctx.subset)  # fmt: skip
            num_classes = _num_classes(dataset, train_set, test.labels)
            dim = test.feats.shape[1]
            fc = train_reference(ctx.model, train_set, dim, num_classes, cfg, ctx.options.device,
                                 ctx.options.workers(), ctx.options.amp, ctx.options.progress)  # fmt: skip
            acc = evaluate_fc(fc, test.feats, test.labels)
            extra: dict[str, Any] = {"num_train": len(train_set)}  # type: ignore[arg-type]
        elif protocol == "fast":
            train = ctx.features(dataset, "train", ctx.eval_transform())
            num_classes = num_classes_of(dataset, torch.cat([train.labels, test.labels]))
            extra = {"num_train": len(train.feats), "features_cached": train.cached and test.cached}
            if solver == "sgd":
                fc = train_on_features(train.feats, train.labels, num_classes, cfg, ctx.options.device,
                                       ctx.options.progress)  # fmt: skip
                acc = evaluate_fc(fc, test.feats, test.labels)
            elif solver == "lbfgs":
                acc, extra["lbfgs"] = _lbfgs_probe(train, test, num_classes, ctx.options.device)
            else:
                raise ValueError(f"unknown fast solver {solver!r}: choose sgd or lbfgs")
        else:
            raise ValueError(f"unknown protocol {protocol!r}: choose reference or fast")
    return {
        "evaluator": "linear",
        "protocol": protocol,
        "solver": solver if protocol == "fast" else cfg.optimizer,
        "model": ctx.spec,
        "dataset": dataset,
        "image_size": ctx.image_size,
        "num_test": len(test.feats),
        "num_classes": num_classes,
        "config": asdict(cfg),
        **acc,
        **extra,
        "wall_seconds": total.seconds,
    }


def _num_classes(dataset: str, train_set: Any, test_labels: Tensor) -> int:
    info = get_info(dataset)
    if info.num_classes is not None:
        return info.num_classes
    base = train_set.dataset
    classes = getattr(base, "classes", None)
    return len(classes) if classes is not None else int(test_labels.max().item() + 1)


def _lbfgs_probe(train: Features, test: Features, num_classes: int, device: str | None) -> tuple[dict, dict]:
    from ..device import resolve_device
    from .knn import topk_accuracy
    from .logreg import Standardizer, c_grid, fit_logreg, sweep_c

    dev = resolve_device(device)
    idx = protocol_indices(len(train.feats))  # seeded 20% validation
    x, y = train.feats.to(dev), train.labels.to(dev)
    std = Standardizer.fit(x[idx["train"]])
    sweep = sweep_c(std(x[idx["train"]]), y[idx["train"]], std(x[idx["val"]]), y[idx["val"]], "top1",
                    c_grid(12), num_classes=num_classes, max_iter=300)  # fmt: skip
    std = Standardizer.fit(x)
    model = fit_logreg(
        std(x), y, sweep.best_C, num_classes=num_classes, init=sweep.models[sweep.best_C], max_iter=300
    )
    scores = model.decision_function(std(test.feats.to(dev))).cpu()
    ranked = scores.topk(min(5, scores.shape[1]), dim=1).indices
    return topk_accuracy(ranked, test.labels), {"best_C": sweep.best_C, "val_top1": sweep.best_val}


def run_transfer(
    ctx: EvalContext,
    datasets: Sequence[str] = TRANSFER_SUITE,
    *,
    num_c: int = 45,
    max_iter: int = 1000,
    dtype: torch.dtype = torch.float32,
    log: Any = print,
) -> dict[str, Any]:
    """The many-shot linear transfer suite: one logistic-regression protocol per dataset.

    Preprocessing: Resize(size, bicubic) + CenterCrop(size) (size 224 unless overridden), the model's
    normalisation. Datasets missing under ROOT are skipped with a message.
    """
    from ..device import resolve_device
    from .logreg import c_grid, transfer_protocol

    transform = ctx.eval_transform(crop_pct=1.0, interpolation="bicubic")
    device = resolve_device(ctx.options.device)
    results: dict[str, Any] = {}
    for name in datasets:
        info = get_info(name)
        if not info.present(ctx.data_root) and not ctx.download:
            msg = f"skipped: {info.title} not found (expected layout {info.layout}, ROOT={ctx.data_root})"
            log(f"{name}: {msg}")
            results[name] = {"skipped": msg}
            continue
        t0 = time.perf_counter()
        feats = {split: ctx.features(name, split, transform) for split in info.splits}
        if info.has_val:
            tr, va = feats["train"], feats["val"]
            train, val = (tr.feats, tr.labels), (va.feats, va.labels)
            trainval = (torch.cat([tr.feats, va.feats]), torch.cat([tr.labels, va.labels]))
        else:
            idx = protocol_indices(len(feats["train"].feats))
            f, lab = feats["train"].feats, feats["train"].labels
            train, val, trainval = (
                (f[idx["train"]], lab[idx["train"]]),
                (f[idx["val"]], lab[idx["val"]]),
                (f, lab),
            )
        test = (feats["test"].feats, feats["test"].labels)
        if info.multilabel:  # classes without a training positive have no binary problem to fit
            keep = train[1].sum(0) > 0
            train, val, trainval, test = ((x, y[:, keep]) for x, y in (train, val, trainval, test))
        num_classes = None if info.multilabel else num_classes_of(name, torch.cat([trainval[1], test[1]]))
        res = transfer_protocol(train, val, trainval, test, info.metric, cs=c_grid(num_c), num_classes=num_classes,
                                multilabel=info.multilabel, device=device, dtype=dtype, max_iter=max_iter,
                                progress=ctx.options.progress, desc=f"{name} C sweep")  # fmt: skip
        res.update(title=info.title, notes=info.notes, wall_seconds=time.perf_counter() - t0,
                   feature_seconds=sum(f.seconds for f in feats.values()))  # fmt: skip
        if name == "sun397":
            res["notes"] = (
                f"{info.notes}; used: {'partition 01' if _sun397_official(ctx) else 'seeded split'}"
            )
        results[name] = res
        log(f"{name}: {info.metric} {res['test']:.2f} (C={res['best_C']:.3g}, {res['wall_seconds']:.1f} s)")
    return {"evaluator": "transfer-classification", "model": ctx.spec, "image_size": ctx.image_size,
            "num_c": num_c, "datasets": results}  # fmt: skip


def _sun397_official(ctx: EvalContext) -> bool:
    from ..data.loaders import sun397_partition

    return sun397_partition(Path(ctx.data_root or ".").expanduser()) is not None


# ----------------------------------------------------------------------------- reports


def knn_markdown(r: dict[str, Any]) -> str:
    lines = [f"kNN on {r['dataset']} ({r['num_train']} train / {r['num_test']} test), model `{r['model']}`", "",
             "| k | T | top-1 | top-5 |", "|---:|---:|---:|---:|"]  # fmt: skip
    lines += [
        f"| {x['k']} | {x['T']} | {x['top1']:.2f} | {x.get('top5', float('nan')):.2f} |" for x in r["results"]
    ]
    return "\n".join(lines) + "\n"


def linear_markdown(r: dict[str, Any]) -> str:
    return (
        "\n".join(
            [
                f"Linear probe on {r['dataset']}, model `{r['model']}`",
                "",
                "| protocol | solver | top-1 | top-5 | wall time (s) |",
                "|---|---|---:|---:|---:|",
                f"| {r['protocol']} | {r['solver']} | {r['top1']:.2f} | {r.get('top5', float('nan')):.2f} | "
                f"{r['wall_seconds']:.1f} |",
            ]  # fmt: skip
        )
        + "\n"
    )


def transfer_markdown(r: dict[str, Any]) -> str:
    from .metrics import METRIC_NAMES

    lines = [f"Linear transfer (L-BFGS logistic regression), model `{r['model']}`, {r['image_size']} px", "",
             "| dataset | metric | test | best C | val | train/val/test | time (s) |",
             "|---|---|---:|---:|---:|---|---:|"]  # fmt: skip
    for name, x in r["datasets"].items():
        if "skipped" in x:
            lines.append(f"| {name} | {x['skipped']} | | | | | |")
            continue
        s = x["sizes"]
        lines.append(f"| {x['title']} | {METRIC_NAMES[x['metric']]} | {x['test']:.2f} | {x['best_C']:.3g} | "
                     f"{x['val']:.2f} | {s['train']}/{s['val']}/{s['test']} | {x['wall_seconds']:.1f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def write_report(out_dir: str | os.PathLike, stem: str, result: dict[str, Any], markdown: str) -> list[Path]:
    """``out_dir/stem.json`` and ``out_dir/stem.md``, written atomically."""
    out = Path(out_dir)
    paths = [out / f"{stem}.json", out / f"{stem}.md"]
    text = json.dumps(result, indent=2, default=str)
    atomic_write(paths[0], lambda tmp: Path(tmp).write_text(text + "\n"))
    atomic_write(paths[1], lambda tmp: Path(tmp).write_text(markdown))
    return paths
