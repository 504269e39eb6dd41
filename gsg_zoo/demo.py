"""The end-to-end demo behind ``make demo``: pretrain, evaluate, export, reload, card."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


def run_demo(
    out: str | Path, recipe_name: str = "demo", overrides: list[str] | None = None
) -> dict[str, Any]:
    """Run every stage of the demo under ``out`` and return a summary (also ``out/demo_summary.json``)."""
    from .cards import write_model_card
    from .eval.features import ExtractOptions
    from .eval.linear import LinearConfig
    from .eval.runner import EvalContext, run_knn, run_linear
    from .export import export_checkpoint
    from .recipes import load_recipe
    from .trainer import Pretrainer

    out = Path(out)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    recipe = load_recipe(recipe_name, overrides)
    size = recipe.data.image_size
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
    cache = str(out / "feature_cache")
    opts = ExtractOptions(num_workers=0)
    evals: dict[str, Any] = {}
    linear_cfg = LinearConfig(epochs=30, batch_size=256, lr=0.1, optimizer="sgd")
    for label, spec in (("pretrained", str(ckpt)), ("random_init", f"random:{arch}"), ("pixels", "pixels")):
        ctx = EvalContext.load(spec, image_size=size, cache_dir=cache, options=opts)
        evals[label] = {
            "knn": run_knn(ctx, "synthetic"),
            "linear_fast": run_linear(ctx, "synthetic", "fast", linear_cfg),
        }
    timings["eval_s"] = time.perf_counter() - t
    (out / "eval.json").write_text(json.dumps(evals, indent=2, default=str))

    print(f"[3/5] exporting the backbone and reloading it through timm local-dir: -> {out / 'export'}")
    t = time.perf_counter()
    export_dir = export_checkpoint(ckpt, out / "export", name=name, overwrite=True, verify=True)
    timings["export_s"] = time.perf_counter() - t

    print("[4/5] writing the model card")
    knn, rand_knn, pix_knn = (_knn_at(evals[m]["knn"], 200, 0.1) for m in evals)
    lin, rand_lin, pix_lin = (_linear_top1(evals[m]["linear_fast"]) for m in evals)
    random_name, pixels_name = f"{arch}, random init (same protocol)", "raw pixels (same protocol)"
    results = {
        "results": [
            {"task": "knn", "dataset": "synthetic", "metric": "top1", "value": knn, "split": "test",
             "protocol": "k=200, T=0.1, cosine; bank 2000 train images, 1000 test (gsg eval knn)",
             "baselines": {random_name: rand_knn, pixels_name: pix_knn}},
            {"task": "linear", "dataset": "synthetic", "metric": "top1", "value": lin, "split": "test",
             "protocol": "fast linear probe on cached features (gsg eval linear --protocol fast)",
             "baselines": {random_name: rand_lin, pixels_name: pix_lin}},
        ]
    }  # fmt: skip
    card = write_model_card(export_dir, name, results, cards_dir=out / "model_cards")

    print("[5/5] checking the reload through timm (fresh process, feature equality) ... done during export")
    summary = {
        "knn_top1_pretrained": knn,
        "knn_top1_random_init": rand_knn,
        "linear_fast_top1_pretrained": lin,
        "linear_fast_top1_random_init": rand_lin,
        "knn_top1_pixels": pix_knn,
        "linear_fast_top1_pixels": pix_lin,
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


def _knn_at(result: dict[str, Any], k: int, t: float) -> float:
    return next(r["top1"] for r in result["results"] if r["k"] == k and r["T"] == t)


def _linear_top1(result: dict[str, Any]) -> float:
    for key in ("top1", "test_top1", "accuracy"):
        if key in result:
            return float(result[key])
    raise KeyError(f"no top-1 in linear result keys {sorted(result)}")


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
