"""The end-to-end demo behind ``make demo``: pretrain, evaluate, export, reload, card."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

LABELS = ("pretrained", "random_init", "pixels")  # the backbones compared, under the same protocols
KNN_K, KNN_T = 200, 0.1


def run_demo(
    out: str | Path, recipe_name: str = "demo", overrides: list[str] | None = None
) -> dict[str, Any]:
    """Run every stage of the demo under ``out`` and return a summary (also ``out/demo_summary.json``)."""
    from .cards import write_model_card
    from .export import export_checkpoint
    from .recipes import load_recipe
    from .trainer import Pretrainer

    out = Path(out)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    recipe = load_recipe(recipe_name, overrides)
    arch = recipe.learner_config().backbone
    name = f"gsg-demo-{recipe.method.replace('_', '-')}-{arch}"

    print(
        f"[1/5] pretraining {recipe.name} ({recipe.method}, {recipe.train.epochs} epochs) -> {out / 'pretrain'}"
    )
    Pretrainer(recipe, out / "pretrain").run()
    ckpt = out / "pretrain" / "checkpoints" / "last.pt"
    timings["pretrain_s"] = time.perf_counter() - t0

    print(
        "[2/5] evaluating kNN and the fast linear probe (pretrained vs random init vs raw pixels, same protocol)"
    )
    t = time.perf_counter()
    evals = evaluate_backbones(out, ckpt, arch, recipe.data.image_size)
    timings["eval_s"] = time.perf_counter() - t

    print(f"[3/5] exporting the backbone and reloading it through timm local-dir: -> {out / 'export'}")
    t = time.perf_counter()
    export_dir = export_checkpoint(ckpt, out / "export", name=name, overwrite=True, verify=True)
    timings["export_s"] = time.perf_counter() - t

    print("[4/5] writing the model card")
    knn = {label: knn_top1(evals[label]["knn"], KNN_K, KNN_T) for label in LABELS}
    lin = {label: float(evals[label]["linear_fast"]["top1"]) for label in LABELS}
    card = write_model_card(export_dir, name, card_results(knn, lin, arch), cards_dir=out / "model_cards")

    print("[5/5] checking the reload through timm (fresh process, feature equality) ... done during export")
    summary = {
        **{f"knn_top1_{label}": knn[label] for label in LABELS},
        **{f"linear_fast_top1_{label}": lin[label] for label in LABELS},
        "method": recipe.method,
        "run_dir": str(out / "pretrain"),
        "export_dir": str(export_dir),
        "model_card": str(card),
        "curves": str(out / "pretrain" / "curves.png"),
        "timings_s": {**timings, "total_s": time.perf_counter() - t0},
    }
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2))
    _print_summary(summary)
    return summary


def evaluate_backbones(out: Path, ckpt: Path, arch: str, size: int) -> dict[str, dict[str, Any]]:
    """kNN and the fast linear probe of each of ``LABELS`` on the built-in data (``out/eval.json``)."""
    from .eval.features import ExtractOptions
    from .eval.linear import LinearConfig
    from .eval.runner import EvalContext, run_knn, run_linear

    specs = {"pretrained": str(ckpt), "random_init": f"random:{arch}", "pixels": "pixels"}
    opts = ExtractOptions(num_workers=0)
    linear_cfg = LinearConfig(epochs=30, batch_size=256, lr=0.1, optimizer="sgd")
    evals: dict[str, dict[str, Any]] = {}
    for label in LABELS:
        ctx = EvalContext.load(
            specs[label], image_size=size, cache_dir=str(out / "feature_cache"), options=opts
        )
        evals[label] = {
            "knn": run_knn(ctx, "synthetic"),
            "linear_fast": run_linear(ctx, "synthetic", "fast", linear_cfg),
        }
    (out / "eval.json").write_text(json.dumps(evals, indent=2, default=str))
    return evals


def card_results(knn: dict[str, float], lin: dict[str, float], arch: str) -> dict[str, Any]:
    """The card's results: the pretrained backbone's numbers, random init and raw pixels as baselines."""
    names = {"random_init": f"{arch}, random init (same protocol)", "pixels": "raw pixels (same protocol)"}
    return {
        "results": [
            {"task": "knn", "dataset": "synthetic", "metric": "top1", "value": knn["pretrained"],
             "split": "test", "k": KNN_K, "t": KNN_T,
             "protocol": f"k={KNN_K}, T={KNN_T}, cosine; bank 2000 train images, 1000 test (gsg eval knn)",
             "baselines": {names[b]: knn[b] for b in names}},
            {"task": "linear", "dataset": "synthetic", "metric": "top1", "value": lin["pretrained"],
             "split": "test", "protocol_name": "fast",
             "protocol": "fast linear probe on cached features (gsg eval linear --protocol fast)",
             "baselines": {names[b]: lin[b] for b in names}},
        ]
    }  # fmt: skip


def knn_top1(result: dict[str, Any], k: int, t: float) -> float:
    """Top-1 of ``run_knn``'s result at ``(k, T)``."""
    return next(r["top1"] for r in result["results"] if r["k"] == k and r["T"] == t)


def _print_summary(s: dict[str, Any]) -> None:
    print("\n=== gsg-zoo demo ===")
    print("| backbone | kNN top-1 (k=200, T=0.1) | fast linear top-1 |\n|---|---|---|")
    print(
        f"| {s['method']} pretrained | {s['knn_top1_pretrained']:.1f} | {s['linear_fast_top1_pretrained']:.1f} |"
    )
    print(f"| random init | {s['knn_top1_random_init']:.1f} | {s['linear_fast_top1_random_init']:.1f} |")
    print(f"| raw pixels | {s['knn_top1_pixels']:.1f} | {s['linear_fast_top1_pixels']:.1f} |")
    print(f"\nrun dir (checkpoints, metrics.jsonl, curves.png): {s['run_dir']}")
    print(
        f"timm export (load with timm.create_model('local-dir:{s['export_dir']}', pretrained=True)): {s['export_dir']}"
    )
    print(f"model card: {s['model_card']}")
    print(
        f"wall time: {s['timings_s']['total_s']:.0f} s ({', '.join(f'{k} {v:.0f}' for k, v in s['timings_s'].items())})"
    )
