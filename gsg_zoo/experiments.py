"""``gsg experiment claims``: the paper's two qualitative claims at CPU scale, several seeds.

Claim 1 (no predictor): plain SimSiam without a predictor collapses, SimSiam+GSG without one does not
-> effective rank of projections/features and kNN accuracy over training.
Claim 2 (accuracy): SimSiam+GSG beats SimSiam at equal epochs; and at equal *encoder passes* (GSG runs
4 views per image, the baseline 2, so the baseline gets twice the epochs).

Every run is a normal ``gsg pretrain`` run directory (resumable: finished runs are skipped).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

#: (run id, method, predictor, epoch multiplier)
CLAIM_RUNS: tuple[tuple[str, str, bool, int], ...] = (
    ("simsiam_nopred", "simsiam", False, 1),
    ("simsiam_gsg_nopred", "simsiam_gsg", False, 1),
    ("simsiam", "simsiam", True, 1),
    ("simsiam_gsg", "simsiam_gsg", True, 1),
    ("simsiam_2x_epochs", "simsiam", True, 2),
)


def run_claims(
    out: str | Path,
    seeds: list[int],
    epochs: int,
    base_recipe: str = "demo",
    overrides: list[str] | None = None,
    runs: list[str] | None = None,
) -> dict[str, Any]:
    from .recipes import load_recipe
    from .trainer import Pretrainer

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    selected = [r for r in CLAIM_RUNS if runs is None or r[0] in runs]
    records: list[dict[str, Any]] = []
    for seed in seeds:
        for run_id, method, predictor, mult in selected:
            run_dir = out / f"{run_id}_seed{seed}"
            if not (run_dir / "summary.json").exists():
                recipe = load_recipe(
                    base_recipe,
                    [*(overrides or []), f"method={method}", f"model.predictor={str(predictor).lower()}",
                     f"train.epochs={epochs * mult}", f"train.seed={seed}", f"name={run_id}_seed{seed}",
                     "monitor.every=1"],
                )  # fmt: skip
                print(f"=== {run_id} seed {seed}: {recipe.train.epochs} epochs", flush=True)
                Pretrainer(recipe, run_dir).run()
            summary = json.loads((run_dir / "summary.json").read_text())
            history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
            records.append({"run": run_id, "seed": seed, "summary": summary, "history": history})
    report = {"epochs": epochs, "seeds": seeds, "base_recipe": base_recipe, "overrides": overrides or [],
              "table": aggregate(records), "records": records}  # fmt: skip
    (out / "claims.json").write_text(json.dumps(report, indent=2))
    (out / "claims.md").write_text(claims_markdown(report))
    plot_claims(records, out / "claims.png")
    return report


def aggregate(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample std over seeds of the final metrics of each run id."""
    rows = []
    for run_id, *_ in CLAIM_RUNS:
        rs = [r["summary"] for r in records if r["run"] == run_id]
        if not rs:
            continue
        row: dict[str, Any] = {"run": run_id, "n": len(rs), "epochs": rs[0]["epochs"],
                               "encoder_passes": rs[0]["encoder_passes"]}  # fmt: skip
        for key in ("knn_top1", "z_rank", "h_rank", "z_std", "images_per_s", "train_time_s"):
            vals = [float(s[key]) for s in rs if s.get(key) is not None]
            if vals:
                row[key] = statistics.fmean(vals)
                row[f"{key}_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        rows.append(row)
    return rows


def claims_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"Seeds {report['seeds']}, base recipe `{report['base_recipe']}` {report['overrides']}; "
        "mean ± std over seeds of the final epoch.",
        "",
        "| run | epochs | encoder passes | kNN top-1 (%) | eff. rank z | eff. rank h | std(z̄)·√d | images/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["table"]:

        def pm(k: str, fmt: str = ".1f", r: dict[str, Any] = r) -> str:
            return f"{r[k]:{fmt}} ± {r[k + '_std']:{fmt}}" if k in r else "-"

        lines.append(
            f"| {r['run']} | {r['epochs']} | {r['encoder_passes']:,} | {pm('knn_top1')} | {pm('z_rank')} | "
            f"{pm('h_rank')} | {pm('z_std', '.2f')} | {pm('images_per_s', '.0f')} |"
        )
    return "\n".join(lines) + "\n"


def plot_claims(records: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    for ax, key, title in zip(axes, ("z_rank", "h_rank", "knn_top1"),
                              ("effective rank of projections", "effective rank of backbone features", "kNN top-1 (%)")):  # fmt: skip
        for run_id, *_ in CLAIM_RUNS:
            for i, rec in enumerate(r for r in records if r["run"] == run_id):
                pts = [(h["epoch"], h[key]) for h in rec["history"] if h.get(key) is not None]
                if pts:
                    ax.plot(*zip(*pts), color=f"C{[c[0] for c in CLAIM_RUNS].index(run_id)}", alpha=0.7,
                            label=run_id if i == 0 else None)  # fmt: skip
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
