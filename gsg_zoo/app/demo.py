"""The end-to-end demo behind ``make demo``: pretrain, evaluate (and a t-SNE plot), export, reload, card.

Data: Fashion-MNIST when it is found (``--data ROOT``; else ``$GSG_DATA/fashion-mnist``, Debian's
``/usr/share/datasets/fashion-mnist``, ``~/.cache/gsg-zoo/data/fashion-mnist``) or, with
``download=True``, downloaded; otherwise the built-in synthetic data. Which one and why is printed.
The pretrained backbone and both baselines (random init, raw pixels) are scored on the same images
with the same preprocessing (the pretrained backbone's) and the same kNN and fast linear protocols.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..zoo.report_results import card_results, knn_top1_at

LABELS = ("pretrained", "random_init", "pixels")  # the backbones compared, under the same protocols
KNN_K, KNN_T = 200, 0.1
DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
CACHE_FMNIST = Path("~/.cache/gsg-zoo/data/fashion-mnist")  # where a download goes without $GSG_DATA
EVAL_SUBSET = 5000  # Fashion-MNIST: seeded subsets of 5,000 train (kNN bank, probe) and 5,000 test images
RECIPES = {"fashion_mnist": "demo_fmnist", "synthetic": "demo"}
EMBED_POINTS = 1000  # the t-SNE plot of the pretrained backbone's test features (a few seconds on a CPU)


@dataclass(frozen=True)
class DemoData:
    """The demo's data source: ``dataset`` (fashion_mnist | synthetic), its ``root`` and why it was chosen."""

    dataset: str
    root: str | None
    why: str


def fmnist_candidates(data_root: str | None = None) -> list[Path]:
    """Where the demo looks for Fashion-MNIST: ``data_root`` alone if given, else the default places."""
    if data_root:
        return [Path(data_root).expanduser()]
    env = os.environ.get("GSG_DATA")
    return [
        *([Path(env).expanduser() / "fashion-mnist"] if env else []),
        DEBIAN_FMNIST,
        CACHE_FMNIST.expanduser(),
    ]


def has_fmnist(root: Path) -> bool:
    """Both splits of Fashion-MNIST are under ``root`` (torchvision's layout or the four files)."""
    from ..data.mnist import find_split

    return all(find_split(root, "FashionMNIST", train) is not None for train in (True, False))


def choose_data(data_root: str | None = None, download: bool = False, synthetic: bool = False) -> DemoData:
    """Fashion-MNIST if found (or downloaded with ``download``), else the built-in data; with the reason."""
    if synthetic:
        return DemoData("synthetic", None, "the built-in data was asked for (--synthetic)")
    candidates = fmnist_candidates(data_root)
    found = next((c for c in candidates if has_fmnist(c)), None)
    if found is not None:
        return DemoData("fashion_mnist", str(found), f"Fashion-MNIST found in {found}")
    looked = ", ".join(str(c) for c in candidates)
    if not download:
        return DemoData(
            "synthetic", None, f"no Fashion-MNIST in {looked}; --download or --data ROOT to use it"
        )
    target = candidates[0] if data_root or os.environ.get("GSG_DATA") else CACHE_FMNIST.expanduser()
    error = download_fmnist(target)
    if error is None:
        return DemoData("fashion_mnist", str(target), f"Fashion-MNIST downloaded to {target}")
    return DemoData("synthetic", None, f"no Fashion-MNIST in {looked} and the download failed: {error}")


def download_fmnist(target: Path, timeout: float = 5.0) -> str | None:
    """Download Fashion-MNIST (torchvision's mirror and checksums) into ``target``; the error, or None."""
    from urllib.parse import urlparse

    from ..data.mnist import FashionMNIST

    host = urlparse(FashionMNIST.mirrors[0]).hostname or ""
    try:
        socket.create_connection((host, 80), timeout=timeout).close()
    except OSError as err:
        return f"offline? cannot reach {host} ({err})"
    try:
        FashionMNIST(target, train=True, download=True)
    except (OSError, RuntimeError) as err:
        return str(err).strip().splitlines()[0]
    return None


def run_demo(
    out: str | Path,
    recipe_name: str | None = None,
    overrides: list[str] | None = None,
    data: DemoData | None = None,
) -> dict[str, Any]:
    """Run every stage of the demo under ``out`` and return a summary (also ``out/demo_summary.json``).

    ``data``: the data source (default :func:`choose_data`); ``recipe_name``: default ``demo_fmnist``
    for Fashion-MNIST, ``demo`` for the built-in data. Evaluation reads the recipe's dataset.
    """
    from ..config.recipes import load_recipe
    from ..train.trainer import Pretrainer
    from ..zoo.export import export_checkpoint

    out, t0 = Path(out), time.perf_counter()
    data = data or choose_data()
    root = [f"data.root={data.root}"] if data.root else []
    recipe = load_recipe(recipe_name or RECIPES[data.dataset], [*root, *(overrides or [])])
    dataset, arch = recipe.data.dataset, recipe.learner_config().backbone
    name = f"gsg-demo-{recipe.method.replace('_', '-')}-{arch}"
    if dataset != data.dataset:
        data = DemoData(dataset, recipe.data.root, f"recipe {recipe.name} reads {dataset}")
    print(f"data: {dataset} ({data.why})")
    print(
        f"[1/5] pretraining {recipe.name} ({recipe.method}, {recipe.train.epochs} epochs) -> {out / 'pretrain'}"
    )
    Pretrainer(recipe, out / "pretrain").run()
    ckpt = out / "pretrain" / "checkpoints" / "last.pt"
    timings = {"pretrain_s": time.perf_counter() - t0}

    print(
        "[2/5] evaluating kNN and the fast linear probe (pretrained vs random init vs raw pixels, same protocol), "
        "t-SNE plot of the pretrained features"
    )
    t = time.perf_counter()
    evals = evaluate_backbones(
        out, ckpt, arch, recipe.data.image_size, dataset, recipe.data.root, recipe.train.seed
    )
    timings["eval_s"] = time.perf_counter() - t
    t = time.perf_counter()
    embedding = embed_pretrained(
        out, ckpt, recipe.data.image_size, dataset, recipe.data.root, recipe.train.seed
    )
    timings["embed_s"] = time.perf_counter() - t

    print(f"[3/5] exporting the backbone and reloading it through timm local-dir: -> {out / 'export'}")
    t = time.perf_counter()
    export_dir = export_checkpoint(ckpt, out / "export", name=name, overwrite=True, verify=True)
    timings["export_s"] = time.perf_counter() - t

    print("[4/5] writing the model card")
    summary = _summarize(evals, recipe.method, data)
    card = _write_card(export_dir, name, evals, arch, out)
    print("[5/5] checking the reload through timm (fresh process, feature equality) ... done during export")
    summary.update(
        {
            "run_dir": str(out / "pretrain"),
            "export_dir": str(export_dir),
            "model_card": str(card),
            "curves": str(out / "pretrain" / "curves.png"),
            "embedding": embedding,
            "timings_s": {**timings, "total_s": time.perf_counter() - t0},
        }
    )
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2))
    _print_summary(summary)
    return summary


def _summarize(evals: dict[str, dict[str, Any]], method: str, data: DemoData) -> dict[str, Any]:
    """The demo's numbers: kNN and fast-linear top-1 of each backbone, the data and the protocol."""
    knn = {label: knn_top1_at(evals[label]["knn"], KNN_K, KNN_T) for label in LABELS}
    lin = {label: float(evals[label]["linear_fast"]["top1"]) for label in LABELS}
    first = evals["pretrained"]["knn"]
    return {
        **{f"knn_top1_{label}": knn[label] for label in LABELS},
        **{f"linear_fast_top1_{label}": lin[label] for label in LABELS},
        "method": method,
        "data": asdict(data),
        "eval": {
            "dataset": first["dataset"],
            "split": "test",
            "num_train": first["num_train"],
            "num_test": first["num_test"],
            "transform": first["protocol_settings"]["transform"],
            "random_init": evals["random_init"]["knn"]["model"],
        },  # random:ARCH@SEED
    }


def _write_card(export_dir: Path, name: str, evals: dict[str, dict[str, Any]], arch: str, out: Path) -> Path:
    """The card: the pretrained backbone's results, random init and raw pixels as same-protocol baselines."""
    from ..zoo.cards import write_model_card

    seed = evals["random_init"]["knn"]["model"].rpartition("@")[2]  # random:ARCH@SEED
    names = {
        "random_init": f"{arch}, random init seed {seed} (same protocol)",
        "pixels": "raw pixels (same protocol)",
    }
    subset = evals["pretrained"]["knn"]["dataset"] != "synthetic"  # seeded subsets of EVAL_SUBSET images
    results = [
        r
        for task in ("knn", "linear_fast")
        for r in card_results(evals["pretrained"][task], subset, {names[b]: evals[b][task] for b in names})
    ]
    return write_model_card(export_dir, name, {"results": results}, cards_dir=out / "model_cards")


def embed_pretrained(
    out: Path, ckpt: Path, size: int, dataset: str, root: str | None, seed: int = 0
) -> str | None:
    """The t-SNE plot of :data:`EMBED_POINTS` test images of the pretrained backbone (its cached
    evaluation features) under ``out/embed``; the PNG's path (None on ranks other than 0)."""
    from ..eval.embed import embed_markdown, run_embed
    from ..eval.features import ExtractOptions
    from ..eval.runner import EvalContext, write_report

    subset = None if dataset == "synthetic" else EVAL_SUBSET
    ctx = EvalContext.load(
        str(ckpt),
        image_size=size,
        cache_dir=str(out / "feature_cache"),
        options=ExtractOptions(num_workers=0),
        data_root=root,
        subset=subset,
    )
    result = run_embed(ctx, dataset, "test", "tsne", EMBED_POINTS, seed, out / "embed")
    if result is None:
        return None
    write_report(out / "embed", f"embed_tsne_{dataset}", result, embed_markdown(result))
    return result["png"]


def evaluate_backbones(
    out: Path,
    ckpt: Path,
    arch: str,
    size: int,
    dataset: str = "synthetic",
    root: str | None = None,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """kNN and the fast linear probe of each of ``LABELS`` on ``dataset`` (``out/eval.json``).

    One protocol for all three: the same images (the synthetic protocol's splits, or seeded subsets of
    :data:`EVAL_SUBSET` train and test images) and the same preprocessing, the pretrained backbone's
    (its normalisation and interpolation replace the baselines' timm defaults). Checked, not assumed.
    The random-init weights are drawn with ``seed`` (the pretraining seed).
    """
    import torch

    from ..eval.features import ExtractOptions
    from ..eval.linear import LinearConfig
    from ..eval.runner import EvalContext, run_knn, run_linear

    specs = {"pretrained": str(ckpt), "random_init": f"random:{arch}@{seed}", "pixels": "pixels"}
    opts = ExtractOptions(num_workers=0)
    subset = None if dataset == "synthetic" else EVAL_SUBSET
    linear_cfg = LinearConfig(epochs=30, batch_size=256, lr=0.1, optimizer="sgd")
    evals: dict[str, dict[str, Any]] = {}
    preprocessing: dict[str, Any] = {}
    for label in LABELS:
        with torch.random.fork_rng(devices=[]):  # the random init: drawn from the seed, not the RNG's state
            torch.manual_seed(seed)
            ctx = EvalContext.load(
                specs[label],
                image_size=size,
                cache_dir=str(out / "feature_cache"),
                options=opts,
                data_root=root,
                subset=subset,
            )
        preprocessing = preprocessing or {k: ctx.data_config[k] for k in ("mean", "std", "interpolation")}
        ctx.data_config = {**ctx.data_config, **preprocessing}
        evals[label] = {
            "knn": run_knn(ctx, dataset),
            "linear_fast": run_linear(ctx, dataset, "fast", linear_cfg),
        }
    check_same_protocol(evals)
    (out / "eval.json").write_text(json.dumps(evals, indent=2, default=str))
    return evals


#: what must be equal across the compared backbones' results
SAME = {
    "knn": ("dataset", "image_size", "num_train", "num_test", "num_classes", "protocol_settings"),
    "linear_fast": ("dataset", "image_size", "num_train", "num_test", "num_classes", "config", "protocol"),
}


def check_same_protocol(evals: dict[str, dict[str, Any]]) -> None:
    """ValueError unless every backbone was scored on the same data with the same settings."""
    for task, keys in SAME.items():
        for key in keys:
            values = {label: json.dumps(evals[label][task][key], default=str) for label in evals}
            if len(set(values.values())) > 1:
                raise ValueError(f"demo: {task} {key} differs between backbones: {values}")


ROWS = {"pretrained": "{method} pretrained", "random_init": "random init", "pixels": "raw pixels"}


def summary_table(s: dict[str, Any]) -> str:
    """The printed table: one row per backbone, kNN and fast-linear top-1 to one decimal."""
    ev = s["eval"]
    lines = [
        f"{ev['dataset']} test: {ev['num_test']} images, kNN bank / probe training: {ev['num_train']} train images",
        f"| backbone | kNN top-1 (k={KNN_K}, T={KNN_T}) | fast linear top-1 |",
        "|---|---|---|",
    ]
    for label, row in ROWS.items():
        knn, lin = s[f"knn_top1_{label}"], s[f"linear_fast_top1_{label}"]
        lines.append(f"| {row.format(method=s['method'])} | {knn:.1f} | {lin:.1f} |")
    gains = [f"{s['knn_top1_pretrained'] - s[f'knn_top1_{b}']:+.1f} kNN vs {ROWS[b]}" for b in LABELS[1:]]
    return "\n".join([*lines, "pretrained: " + ", ".join(gains)])


def _print_summary(s: dict[str, Any]) -> None:
    print("\n=== gsg-zoo demo ===")
    print(f"data: {s['data']['dataset']} ({s['data']['why']})")
    print(summary_table(s))
    print(f"\nrun dir (checkpoints, metrics.jsonl, curves.png): {s['run_dir']}")
    export = s["export_dir"]
    print(f"timm export (load with timm.create_model('local-dir:{export}', pretrained=True)): {export}")
    print(f"model card: {s['model_card']}")
    if s.get("embedding"):
        print(f"t-SNE of {EMBED_POINTS} test images (coordinates beside it as JSON): {s['embedding']}")
    times = ", ".join(f"{k} {v:.0f}" for k, v in s["timings_s"].items())
    print(f"wall time: {s['timings_s']['total_s']:.0f} s ({times})")
