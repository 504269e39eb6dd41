"""``gsg experiment claims``: the paper's two qualitative claims at CPU scale, several seeds.

Claim 1 (no predictor): plain SimSiam without a predictor collapses, SimSiam+GSG without one does not
-> effective rank of projections/features and kNN accuracy over training.
Claim 2 (accuracy): SimSiam+GSG beats SimSiam at equal epochs; and at equal *encoder passes* (GSG runs
4 views per image, the baseline 2, so the baseline gets twice the epochs).

``gsg experiment batch-size``: SimSiam vs SimSiam+GSG over batch sizes at equal epochs (the paper's
small-batch claim); ``gsg experiment selection``: GSG's nearest-pair selection against the farthest
pair and a uniformly random pair (the control without guidance), at equal cost; ``gsg experiment
compare``: any named arms (recipe overrides each), e.g. multi-crop or a ViT backbone against GSG.

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


def run_one(base_recipe: str, overrides: list[str], run_dir: Path) -> dict[str, Any]:
    """Pretrain ``run_dir`` (skipped when it has a summary) and return its summary and metric history."""
    from ..config.recipes import load_recipe
    from ..train.trainer import Pretrainer

    if not (run_dir / "summary.json").exists():
        recipe = load_recipe(base_recipe, [*overrides, f"name={run_dir.name}"])
        print(
            f"=== {run_dir.name}: {recipe.train.epochs} epochs x {recipe.train.max_steps_per_epoch} steps "
            f"of {recipe.train.batch_size}",
            flush=True,
        )
        Pretrainer(recipe, run_dir).run()
    summary = json.loads((run_dir / "summary.json").read_text())
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {"summary": summary, "history": history}


def run_claims(
    out: str | Path,
    seeds: list[int],
    epochs: int,
    base_recipe: str = "demo",
    overrides: list[str] | None = None,
    runs: list[str] | None = None,
) -> dict[str, Any]:
    from ..config.recipes import load_recipe
    from ..train.trainer import Pretrainer

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
                    [
                        *(overrides or []),
                        f"method={method}",
                        f"model.predictor={str(predictor).lower()}",
                        f"train.epochs={epochs * mult}",
                        f"train.seed={seed}",
                        f"name={run_id}_seed{seed}",
                        "monitor.every=1",
                    ],
                )
                print(f"=== {run_id} seed {seed}: {recipe.train.epochs} epochs", flush=True)
                Pretrainer(recipe, run_dir).run()
            summary = json.loads((run_dir / "summary.json").read_text())
            history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
            records.append({"run": run_id, "seed": seed, "summary": summary, "history": history})
    report = {
        "epochs": epochs,
        "seeds": seeds,
        "base_recipe": base_recipe,
        "overrides": overrides or [],
        "table": aggregate(records),
        "records": records,
        "version": source_version(),
    }
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
        row: dict[str, Any] = {
            "run": run_id,
            "n": len(rs),
            "epochs": rs[0]["epochs"],
            "encoder_passes": rs[0]["encoder_passes"],
        }
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
    plot_history(records, "run", path, PANELS)


METRICS = ("knn_top1", "z_rank", "h_rank", "z_std", "images_per_s", "train_time_s")


def mean_and_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample std (0 for one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def grid_table(records: list[dict[str, Any]], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """One row per distinct ``keys`` of the records (in first-seen order): mean ± std of the metrics."""
    rows: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for rec in records:
        rows.setdefault(tuple(rec[k] for k in keys), []).append(rec["summary"])
    table = []
    for key, summaries in rows.items():
        row: dict[str, Any] = {
            **dict(zip(keys, key)),
            "n": len(summaries),
            "steps": summaries[0]["steps"],
            "encoder_passes": summaries[0]["encoder_passes"],
        }
        for m in METRICS:
            vals = [float(s[m]) for s in summaries if s.get(m) is not None]
            if vals:
                row[m], row[f"{m}_std"] = mean_and_sd(vals)
        table.append(row)
    return table


def _pm(row: dict[str, Any], key: str, fmt: str = ".1f") -> str:
    return f"{row[key]:{fmt}} ± {row[key + '_std']:{fmt}}" if key in row else "-"


def grid_markdown(report: dict[str, Any], keys: tuple[str, ...]) -> str:
    """The report's table in markdown, with the command that made it."""
    head = " | ".join(keys)
    lines = [
        f"`{report['command']}`",
        "",
        f"Base recipe `{report['base_recipe']}` {report['overrides']}; seeds {report['seeds']}; "
        "mean ± std over seeds at the end of training (kNN: k=200, T=0.1 on the monitor's bank/test subset).",
        "",
        f"| {head} | steps | encoder passes | kNN top-1 (%) | eff. rank z | eff. rank h | images/s | train time (s) |",
        "|" + "---|" * (len(keys) + 7),
    ]
    for r in report["table"]:
        cells = " | ".join(str(r[k]) for k in keys)
        lines.append(
            f"| {cells} | {r['steps']} | {r['encoder_passes']:,} | {_pm(r, 'knn_top1')} | "
            f"{_pm(r, 'z_rank')} | {_pm(r, 'h_rank')} | {_pm(r, 'images_per_s', '.0f')} | "
            f"{_pm(r, 'train_time_s', '.0f')} |"
        )
    return "\n".join(lines) + "\n"


def run_batch_size(
    out: str | Path,
    seeds: list[int],
    batch_sizes: list[int],
    epochs: int,
    images_per_epoch: int,
    base_recipe: str = "demo_fmnist",
    overrides: list[str] | None = None,
    methods: tuple[str, ...] = ("simsiam", "simsiam_gsg"),
    base_lr: float = 0.4,
    command: str = "",
) -> dict[str, Any]:
    """Each method at each batch size for ``epochs`` epochs of ``images_per_epoch`` images (so every
    run sees the same images; steps = images / batch) with the linear lr scaling rule
    ``lr = base_lr x batch / 256`` (0.4: the demo's 0.1 at batch 64)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for seed in seeds:
        for batch in batch_sizes:
            if images_per_epoch % batch:
                raise ValueError(f"images per epoch {images_per_epoch} is not a multiple of batch {batch}")
            for method in methods:
                over = [
                    *(overrides or []),
                    f"method={method}",
                    f"train.batch_size={batch}",
                    f"train.max_steps_per_epoch={images_per_epoch // batch}",
                    f"train.epochs={epochs}",
                    f"train.seed={seed}",
                    "monitor.every=0",
                    "optim.scale_lr=true",
                    f"optim.lr={base_lr}",
                ]
                rec = run_one(base_recipe, over, out / f"{method}_b{batch}_seed{seed}")
                records.append({"method": method, "batch": batch, "seed": seed, **rec})
    report = {
        "command": command,
        "epochs": epochs,
        "images_per_epoch": images_per_epoch,
        "seeds": seeds,
        "base_lr": base_lr,
        "base_recipe": base_recipe,
        "overrides": overrides or [],
        "table": grid_table(records, ("method", "batch")),
        "records": records,
    }
    _write(out, "batch_size", report, ("method", "batch"))
    plot_by(report["table"], "batch", "method", out / "batch_size.png", log_x=True)
    return report


def run_arms(
    out: str | Path,
    name: str,
    arms: dict[str, list[str]],
    seeds: list[int],
    epochs: int,
    base_recipe: str = "demo_fmnist",
    overrides: list[str] | None = None,
    command: str = "",
    key: str = "arm",
    prefix: str = "",
) -> dict[str, Any]:
    """One run per (seed, arm): ``base_recipe`` + ``overrides`` + the arm's overrides, ``epochs`` epochs,
    the kNN monitor every epoch. Writes ``NAME.json``, ``NAME.md`` and ``NAME.png`` (history per arm) in
    ``out``; the table has one row per arm, keyed ``key``. Run directories: ``{prefix}{arm}_seed{seed}``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for seed in seeds:
        for arm, arm_overrides in arms.items():
            over = [
                *(overrides or []),
                *arm_overrides,
                f"train.epochs={epochs}",
                f"train.seed={seed}",
                "monitor.every=1",
            ]
            rec = run_one(base_recipe, over, out / f"{prefix}{arm}_seed{seed}")
            records.append({key: arm, "seed": seed, **rec})
    report = {
        "command": command,
        "epochs": epochs,
        "seeds": seeds,
        "base_recipe": base_recipe,
        "overrides": overrides or [],
        "arms": arms,
        "table": grid_table(records, (key,)),
        "records": records,
    }
    _write(out, name, report, (key,))
    plot_history(records, key, out / f"{name}.png")
    return report


def run_selection(
    out: str | Path,
    seeds: list[int],
    epochs: int,
    base_recipe: str = "demo_fmnist",
    overrides: list[str] | None = None,
    method: str = "simsiam_gsg",
    rules: tuple[str, ...] = ("min", "random", "max"),
    command: str = "",
) -> dict[str, Any]:
    """``method`` with each ``model.gsg_selection`` rule: same views, pairs, steps and encoder passes
    (compute-matched by construction: only the choice of the two sources differs)."""
    arms = {rule: [f"method={method}", f"model.gsg_selection={rule}"] for rule in rules}
    return run_arms(
        out,
        "selection",
        arms,
        seeds,
        epochs,
        base_recipe,
        overrides,
        command,
        "selection",
        prefix=f"{method}_",
    )


def source_version() -> str:
    """gsg-zoo's version and, in a git checkout, its commit (``+dirty`` with uncommitted changes)."""
    import subprocess

    from .._version import __version__

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        dirty = "+dirty" if commit and git("status", "--porcelain", "--untracked-files=no") else ""
    except OSError:  # no git
        commit, dirty = "", ""
    return f"{__version__} {commit}{dirty}".strip()


def _write(out: Path, name: str, report: dict[str, Any], keys: tuple[str, ...]) -> None:
    report.setdefault("version", source_version())
    (out / f"{name}.json").write_text(json.dumps(report, indent=2))
    (out / f"{name}.md").write_text(grid_markdown(report, keys))


def plot_by(table: list[dict[str, Any]], x: str, group: str, path: Path, log_x: bool = False) -> None:
    """kNN top-1 and effective rank of z against ``x``, one line (mean ± std) per ``group``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, title in zip(
        axes, ("knn_top1", "z_rank"), ("kNN top-1 (%)", "effective rank of projections")
    ):
        for i, g in enumerate(dict.fromkeys(r[group] for r in table)):
            rows = [r for r in table if r[group] == g and key in r]
            ax.errorbar(
                [r[x] for r in rows],
                [r[key] for r in rows],
                yerr=[r[key + "_std"] for r in rows],
                color=f"C{i}",
                marker="o",
                capsize=3,
                label=str(g),
            )
        if log_x:
            ax.set_xscale("log", base=2)
        ax.set_title(title)
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


PANELS = (
    ("z_rank", "effective rank of projections"),
    ("h_rank", "effective rank of backbone features"),
    ("knn_top1", "kNN top-1 (%)"),
)


def plot_history(
    records: list[dict[str, Any]], group: str, path: Path, panels: tuple[tuple[str, str], ...] = PANELS[::2]
) -> None:
    """``panels`` (metric, title) over epochs, one colour per ``group`` value, one line per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8))
    groups = list(dict.fromkeys(r[group] for r in records))
    for ax, (key, title) in zip(axes, panels):
        for rec in records:
            pts = [(h["epoch"], h[key]) for h in rec["history"] if h.get(key) is not None]
            first = rec is next(r for r in records if r[group] == rec[group])
            if pts:
                ax.plot(
                    *zip(*pts),
                    color=f"C{groups.index(rec[group])}",
                    alpha=0.7,
                    label=str(rec[group]) if first else None,
                )
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
