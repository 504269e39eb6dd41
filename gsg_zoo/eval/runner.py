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

from ..core.checkpoint import atomic_write
from ..core.distributed import broadcast_object
from .datasets import (
    TRANSFER_SUITE,
    build_split,
    eval_transform,
    get_info,
    num_classes_of,
    protocol_indices,
    train_transform,
)
from .features import ExtractOptions, FeatureCache, Features, precision_tag
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
    size_given: bool = False  # --image-size was passed (else: the model's data config)
    reader: dict[str, Any] = field(default_factory=dict)  # reader options (shards: label_key, ...)

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
        from ..zoo.load import canonical_spec, load_backbone

        model, cfg = load_backbone(spec)
        size = int(image_size or cfg["input_size"][-1])
        return cls(
            canonical_spec(spec),
            model,
            cfg,
            size,
            FeatureCache(cache_dir, enabled=use_cache),
            options or ExtractOptions(),
            data_root,
            download,
            subset,
            image_size is not None,
        )

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

    @property
    def is_main(self) -> bool:
        """Rank 0 (or the only process): the one that scores and reports."""
        return self.options.dist.is_main

    def features(self, dataset: str, split: str, transform: Any) -> Features:
        ds, ident = build_split(
            dataset,
            self.data_root,
            split,
            transform,
            download=self.download,
            image_size=self.image_size,
            subset=self.subset,
            reader=self.reader,
        )
        return self.cache.get(self.model, ds, ident, transform, self.options)


def _check_single_label(name: str) -> None:
    if get_info(name).multilabel:
        raise ValueError(f"{name} is multi-label: evaluate it with `gsg transfer classification`")


#: ``gsg eval knn --protocol``: what each one is (reports and results JSON carry its name and settings)
KNN_PROTOCOLS = {
    "default": "InstDisc/DINO-style weighted kNN: the model's own preprocessing (Resize shorter side to "
    "size / crop_pct, CenterCrop), several (k, T) pairs",
    "gsg": "GSG main_knn.py (github.com/bych-lee/gsg): Resize([256, 256]) square, CenterCrop(224), "
    "ImageNet mean/std, L2-normalised pooled features, k=200, T=0.2, votes exp(sim / T)",
}
GSG_KNN = ((200, 0.2),)


def knn_transform(ctx: EvalContext, protocol: str) -> Any:
    """The protocol's test-time transform: ``gsg`` is square-resize 256 + crop 224 with ImageNet
    statistics (scaled by 256/224 from ``--image-size`` when one is given); ``default`` the model's own."""
    if protocol == "gsg":
        from ..data.augment import square_resize_transform

        size = ctx.image_size if ctx.size_given else 224
        return square_resize_transform(size, int(round(size * 256 / 224)))
    if protocol == "default":
        return ctx.eval_transform()
    raise ValueError(f"unknown kNN protocol {protocol!r}: choose {', '.join(KNN_PROTOCOLS)}")


def run_knn(
    ctx: EvalContext,
    dataset: str,
    ks_and_ts: Sequence[tuple[int, float]] | None = None,
    chunk_size: int = 256,
    protocol: str = "default",
) -> dict[str, Any] | None:
    """Weighted kNN on cached centre-crop features; top-1/top-5 per ``(k, T)`` (see :data:`KNN_PROTOCOLS`).

    Under torchrun every rank extracts a shard of the features; rank 0 scores them (None elsewhere)."""
    _check_single_label(dataset)
    if ks_and_ts is None:
        ks_and_ts = GSG_KNN if protocol == "gsg" else DEFAULT_KS_AND_TS
    elif protocol == "gsg" and tuple(ks_and_ts) != GSG_KNN:
        raise ValueError("--protocol gsg fixes k=200, T=0.2; use --protocol default for other k:T pairs")
    t0 = time.perf_counter()
    transform = knn_transform(ctx, protocol)
    train, test = ctx.features(dataset, "train", transform), ctx.features(dataset, "test", transform)
    if not ctx.is_main:
        return None  # under torchrun rank 0 holds every feature
    num_classes = num_classes_of(dataset, torch.cat([train.labels, test.labels]))
    t1 = time.perf_counter()
    bank = train.feats.to(ctx.options.resolved_device())
    accs = knn_evaluate(bank, train.labels, test.feats, test.labels, ks_and_ts, num_classes, chunk_size)
    return {
        "evaluator": "knn",
        "protocol": protocol,
        "protocol_settings": {
            "description": KNN_PROTOCOLS[protocol],
            "transform": repr(transform),
            "ks_and_ts": [list(kt) for kt in ks_and_ts],
            "weight": "exp(sim / T)",
            "features": "L2-normalised pooled",
            "precision": precision_tag(ctx.options),
        },
        "model": ctx.spec,
        "dataset": dataset,
        "image_size": ctx.image_size,
        "num_train": len(train.feats),
        "num_test": len(test.feats),
        "num_classes": num_classes,
        "world_size": ctx.options.dist.world_size,  # ranks that extracted the features
        "results": [{"k": k, "T": t, **acc} for (k, t), acc in accs.items()],
        "feature_seconds": t1 - t0,
        "features_cached": train.cached and test.cached,
        "knn_seconds": time.perf_counter() - t1,
        "wall_seconds": time.perf_counter() - t0,
    }


def run_linear(
    ctx: EvalContext,
    dataset: str,
    protocol: str,
    cfg: LinearConfig,
    solver: str = "sgd",
    checkpoint: str | os.PathLike | None = None,
) -> dict[str, Any] | None:
    """``reference``: augmented images re-encoded every epoch; ``fast``: the fc on cached features
    (``solver`` sgd: same optimizer and schedule; lbfgs: logistic regression with C chosen on a
    seeded 20% of train).

    Under torchrun features are extracted sharded and the reference probe trains with DDP
    (checkpointed per epoch to ``checkpoint`` and resumed from it when given); rank 0 scores (None
    elsewhere)."""
    _check_single_label(dataset)
    with Timer() as total:
        test = ctx.features(dataset, "test", ctx.eval_transform())
        if protocol == "reference":
            train_set, _ = build_split(
                dataset,
                ctx.data_root,
                "train",
                ctx.train_transform(),
                download=ctx.download,
                image_size=ctx.image_size,
                subset=ctx.subset,
                reader=ctx.reader,
            )
            dist = ctx.options.dist
            shape = (
                (test.feats.shape[1], _num_classes(dataset, train_set, test.labels)) if dist.is_main else None
            )
            dim, num_classes = broadcast_object(shape, dist)
            identity = {
                "model": ctx.spec,
                "dataset": dataset,
                "image_size": ctx.image_size,
                "subset": ctx.subset,
            }
            fc = train_reference(
                ctx.model,
                train_set,
                dim,
                num_classes,
                cfg,
                ctx.options.device,
                ctx.options.workers(),
                ctx.options.amp,
                ctx.options.progress,
                dist,
                checkpoint,
                identity,
            )
            if not dist.is_main:
                return None
            acc = evaluate_fc(fc, test.feats, test.labels)
            extra: dict[str, Any] = {"num_train": len(train_set), "world_size": dist.world_size}  # type: ignore[arg-type]
        elif protocol == "fast":
            train = ctx.features(dataset, "train", ctx.eval_transform())
            if not ctx.is_main:
                return None
            num_classes = num_classes_of(dataset, torch.cat([train.labels, test.labels]))
            extra = {"num_train": len(train.feats), "features_cached": train.cached and test.cached}
            if solver == "sgd":
                fc = train_on_features(
                    train.feats, train.labels, num_classes, cfg, ctx.options.device, ctx.options.progress
                )
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
        "precision": precision_tag(ctx.options),
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
    from ..core.device import resolve_device
    from .knn import topk_accuracy
    from .logreg import Standardizer, c_grid, fit_logreg, sweep_c

    dev = resolve_device(device)
    idx = protocol_indices(len(train.feats))  # seeded 20% validation
    x, y = train.feats.to(dev), train.labels.to(dev)
    std = Standardizer.fit(x[idx["train"]])
    sweep = sweep_c(
        std(x[idx["train"]]),
        y[idx["train"]],
        std(x[idx["val"]]),
        y[idx["val"]],
        "top1",
        c_grid(12),
        num_classes=num_classes,
        max_iter=300,
    )
    std = Standardizer.fit(x)
    model = fit_logreg(
        std(x), y, sweep.best_C, num_classes=num_classes, init=sweep.models[sweep.best_C], max_iter=300
    )
    scores = model.decision_function(std(test.feats.to(dev))).cpu()
    ranked = scores.topk(min(5, scores.shape[1]), dim=1).indices
    return topk_accuracy(ranked, test.labels), {"best_C": sweep.best_C, "val_top1": sweep.best_val}


TRANSFER_SOLVERS = {
    "sklearn": "ssl-transfer linear.py (github.com/linusericsson/ssl-transfer): scikit-learn "
    "LogisticRegression(lbfgs, multinomial, warm_start) on raw features, C = 1/wd for wd in "
    "logspace(-6, 5, 45), largest C first, ties keep the earlier C, refit on train+val from the last state",
    "torch": "variant: torch L-BFGS on z-scored features, max_iter 1000 with tolerance, C swept small to large, "
    "ties keep the smaller C, refit warm-started from the best-C fit",
}


def transfer_splits(info: Any, feats: dict[str, Features]) -> tuple[tuple[Tensor, Tensor], ...]:
    """``(train, val, trainval, test)`` as ssl-transfer's loaders form them: the official val split where
    one exists (trainval = train + val), else its seeded 20% of train (trainval = all of train)."""
    from .many_shot import reference_val_split

    tr = feats["train"]
    if info.has_val:
        va = feats["val"]
        train, val = (tr.feats, tr.labels), (va.feats, va.labels)
        trainval = (torch.cat([tr.feats, va.feats]), torch.cat([tr.labels, va.labels]))
    else:
        t_idx, v_idx = (torch.tensor(i, dtype=torch.long) for i in reference_val_split(len(tr.feats)))
        train, val = (tr.feats[t_idx], tr.labels[t_idx]), (tr.feats[v_idx], tr.labels[v_idx])
        trainval = (tr.feats, tr.labels)
    test = (feats["test"].feats, feats["test"].labels)
    if info.multilabel:  # a class without a training positive has no binary problem to fit
        keep = train[1].sum(0) > 0
        train, val, trainval, test = ((x, y[:, keep]) for x, y in (train, val, trainval, test))
    return train, val, trainval, test


def _fit_transfer(
    name: str, info: Any, splits: tuple, solver: str, num_c: int, max_iter: int, ctx: EvalContext
) -> dict[str, Any]:
    """One dataset's protocol with the chosen solver (:data:`TRANSFER_SOLVERS`)."""
    if solver == "sklearn":
        from .many_shot import as_arrays, reference_protocol

        t0 = time.perf_counter()
        res = reference_protocol(*(as_arrays(*s) for s in splits), metric=info.metric, num_wd=num_c)
        return {**res, "seconds": time.perf_counter() - t0}
    if solver != "torch":
        raise ValueError(f"unknown solver {solver!r}: choose {', '.join(TRANSFER_SOLVERS)}")
    from ..core.device import resolve_device
    from .logreg import c_grid, transfer_protocol

    train, val, trainval, test = splits
    num_classes = None if info.multilabel else num_classes_of(name, torch.cat([trainval[1], test[1]]))
    return transfer_protocol(
        train,
        val,
        trainval,
        test,
        info.metric,
        cs=c_grid(num_c),
        num_classes=num_classes,
        multilabel=info.multilabel,
        device=resolve_device(ctx.options.device),
        max_iter=max_iter,
        progress=ctx.options.progress,
        desc=f"{name} C sweep",
    )


def run_transfer(
    ctx: EvalContext,
    datasets: Sequence[str] = TRANSFER_SUITE,
    *,
    num_c: int = 45,
    solver: str = "sklearn",
    max_iter: int = 1000,
    log: Any = print,
) -> dict[str, Any] | None:
    """The many-shot linear transfer suite (ssl-transfer ``linear.py``): one logistic regression per dataset.

    Preprocessing: Resize(size, bicubic) + CenterCrop(size) (size 224 unless overridden), the model's
    normalisation. ``max_iter`` applies to ``solver="torch"`` only (the reference keeps scikit-learn's
    default). Datasets missing under ROOT are skipped with a message. Under torchrun every rank extracts
    a shard of the features and rank 0 fits (None elsewhere).
    """
    transform = ctx.eval_transform(crop_pct=1.0, interpolation="bicubic")
    results: dict[str, Any] = {}
    for name in datasets:
        info = get_info(name)
        if not info.present(ctx.data_root) and not ctx.download:
            msg = f"skipped: {info.title} not found (expected layout {info.layout}, ROOT={ctx.data_root})"
            if ctx.is_main:
                log(f"{name}: {msg}")
            results[name] = {"skipped": msg}
            continue
        t0 = time.perf_counter()
        feats = {split: ctx.features(name, split, transform) for split in info.splits}
        if not ctx.is_main:  # under torchrun: this rank extracted its shards; rank 0 fits
            continue
        res = _fit_transfer(name, info, transfer_splits(info, feats), solver, num_c, max_iter, ctx)
        res.update(
            title=info.title,
            notes=_dataset_notes(ctx, name, info.notes),
            wall_seconds=time.perf_counter() - t0,
            feature_seconds=sum(f.seconds for f in feats.values()),
        )
        results[name] = res
        log(f"{name}: {info.metric} {res['test']:.2f} (C={res['best_C']:.3g}, {res['wall_seconds']:.1f} s)")
    if not ctx.is_main:
        return None
    out = {
        "evaluator": "transfer-classification",
        "protocol": "ssl-transfer-linear",
        "solver": solver,
        "solver_description": TRANSFER_SOLVERS[solver],
        "precision": precision_tag(ctx.options),
        "model": ctx.spec,
        "image_size": ctx.image_size,
        "num_c": num_c,
        "datasets": results,
        "world_size": ctx.options.dist.world_size,
    }
    if solver == "torch":
        from .agreement import measure

        out["torch_agreement"] = measure(num_wd=num_c, max_iter=max_iter)
    return out


def _dataset_notes(ctx: EvalContext, name: str, notes: str) -> str:
    """The registry's notes plus, for SUN397 and Caltech-101, which split was used."""
    root = Path(ctx.data_root or ".").expanduser()
    if name == "sun397":
        return f"{notes}; used: {'partition 01' if _sun397_official(ctx) else 'seeded split'}"
    if name == "caltech101":
        from ..data.readers import caltech101_split_files

        files = caltech101_split_files(root)
        used = (
            f"split files {files[0]} / {files[1].name}"
            if files
            else "split generated by ssl-transfer's procedure"
        )
        return f"{notes}; used: {used}"
    return notes


def _sun397_official(ctx: EvalContext) -> bool:
    from ..data.readers import sun397_partition

    return sun397_partition(Path(ctx.data_root or ".").expanduser()) is not None


# ----------------------------------------------------------------------------- reports


def knn_markdown(r: dict[str, Any]) -> str:
    settings = r.get("protocol_settings", {})
    lines = [
        f"kNN on {r['dataset']} ({r['num_train']} train / {r['num_test']} test), model `{r['model']}`",
        f"protocol `{r.get('protocol', 'default')}`: {settings.get('description', '')}; "
        f"precision {settings.get('precision', 'fp32')}",
        "",
        "| k | T | top-1 | top-5 |",
        "|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {x['k']} | {x['T']} | {x['top1']:.2f} | {x.get('top5', float('nan')):.2f} |" for x in r["results"]
    ]
    return "\n".join(lines) + "\n"


def linear_markdown(r: dict[str, Any]) -> str:
    return (
        "\n".join(
            [
                f"Linear probe on {r['dataset']}, model `{r['model']}`, precision {r.get('precision', 'fp32')}",
                "",
                "| protocol | solver | top-1 | top-5 | wall time (s) |",
                "|---|---|---:|---:|---:|",
                f"| {r['protocol']} | {r['solver']} | {r['top1']:.2f} | {r.get('top5', float('nan')):.2f} | "
                f"{r['wall_seconds']:.1f} |",
            ]
        )
        + "\n"
    )


def transfer_markdown(r: dict[str, Any]) -> str:
    from .metrics import METRIC_NAMES

    lines = [
        f"Linear transfer (ssl-transfer protocol, solver `{r.get('solver', 'sklearn')}`), model `{r['model']}`, "
        f"{r['image_size']} px, precision {r.get('precision', 'fp32')}",
        f"solver: {r.get('solver_description', '')}",
        "",
        "| dataset | metric | test | best C | val | train/val/test | time (s) |",
        "|---|---|---:|---:|---:|---|---:|",
    ]
    for name, x in r["datasets"].items():
        if "skipped" in x:
            lines.append(f"| {name} | {x['skipped']} | | | | | |")
            continue
        s = x["sizes"]
        lines.append(
            f"| {x['title']} | {METRIC_NAMES[x['metric']]} | {x['test']:.2f} | {x['best_C']:.3g} | "
            f"{x['val']:.2f} | {s['train']}/{s['val']}/{s['test']} | {x['wall_seconds']:.1f} |"
        )
    if "torch_agreement" in r:
        from .agreement import markdown

        lines += ["", markdown(r["torch_agreement"]).rstrip("\n")]
    return "\n".join(lines) + "\n"


def write_report(out_dir: str | os.PathLike, stem: str, result: dict[str, Any], markdown: str) -> list[Path]:
    """``out_dir/stem.json`` and ``out_dir/stem.md``, written atomically."""
    out = Path(out_dir)
    paths = [out / f"{stem}.json", out / f"{stem}.md"]
    text = json.dumps(result, indent=2, default=str)
    atomic_write(paths[0], lambda tmp: Path(tmp).write_text(text + "\n"))
    atomic_write(paths[1], lambda tmp: Path(tmp).write_text(markdown))
    return paths
