"""Source-only GSG backward vs the reference formulation: kNN accuracy and images/s over seeds.

Runs ``gsg pretrain RECIPE --set method=METHOD --set model.source_only=true|false --set train.seed=S``
for each seed (the two modes interleaved, alternating which goes first, so that load drift on a
shared machine does not favour one), reads each run's ``summary.json`` and writes
``OUT/parity.json`` and ``OUT/parity.md``.

Example (small CPU scale)::

    python benchmarks/source_only_parity.py --out runs/parity --epochs 3 --num-images 2000

BatchNorm runs in train mode here, so the two formulations are not numerically identical (the online
BN sees the regrouped source batches); the claim checked is "equal kNN within seed noise".
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from gsg_zoo.app.experiments import mean_and_sd


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--out", default="runs/source_only_parity", help="output directory")
    p.add_argument("--recipe", default="demo", help="pretraining recipe (default: demo)")
    p.add_argument("--method", default="byol_gsg", choices=["byol_gsg", "simsiam_gsg"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--num-images", type=int, default=2000, help="synthetic training images")
    p.add_argument("--batch", type=int, default=256, help="global batch size")
    p.add_argument("--workers", type=int, default=2, help="data.loader.num_workers")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra recipe overrides for both modes",
    )
    return p.parse_args(argv)


def run_one(args: argparse.Namespace, seed: int, source_only: bool, out: Path) -> dict[str, Any]:
    run_dir = out / f"seed{seed}_{'source_only' if source_only else 'reference'}"
    summary_path = run_dir / "summary.json"
    if summary_path.exists():  # resumable: finished runs are kept
        return json.loads(summary_path.read_text())
    cmd = [
        sys.executable,
        "-m",
        "gsg_zoo",
        "pretrain",
        args.recipe,
        "--out",
        str(run_dir),
        "--no-progress",
        "--set",
        f"method={args.method}",
        "--set",
        f"model.source_only={str(source_only).lower()}",
        "--set",
        f"train.seed={seed}",
        "--set",
        f"train.epochs={args.epochs}",
        "--set",
        f"train.batch_size={args.batch}",
        "--set",
        f"data.synthetic.num_images={args.num_images}",
        "--set",
        f"data.loader.num_workers={args.workers}",
        "--set",
        "train.checkpoint_every=0",
        "--set",
        "monitor.every=0",
    ]
    for o in args.overrides:
        cmd += ["--set", o]
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    summary = json.loads(summary_path.read_text())
    summary["process_wall_s"] = time.perf_counter() - t
    summary_path.write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict[str, Any]]] = {"reference": [], "source_only": []}
    for i, seed in enumerate(args.seeds):
        order = (False, True) if i % 2 == 0 else (True, False)
        for source_only in order:
            label = "source_only" if source_only else "reference"
            print(f"[parity] seed {seed}: {label}", flush=True)
            s = run_one(args, seed, source_only, out)
            runs[label].append(
                {
                    "seed": seed,
                    "knn_top1": s["knn_top1"],
                    "images_per_s": s["images_per_s"],
                    "final_loss": s["final_loss"],
                    "train_time_s": s["train_time_s"],
                }
            )
    result: dict[str, Any] = {
        "config": {k: v for k, v in vars(args).items()},
        "machine": _machine(),
        "runs": runs,
    }
    stats = {}
    for label, rs in runs.items():
        knn_m, knn_s = mean_and_sd([r["knn_top1"] for r in rs])
        ips_m, ips_s = mean_and_sd([r["images_per_s"] for r in rs])
        stats[label] = {
            "knn_top1_mean": knn_m,
            "knn_top1_std": knn_s,
            "images_per_s_mean": ips_m,
            "images_per_s_std": ips_s,
        }
    ratios = [s["images_per_s"] / r["images_per_s"] for s, r in zip(runs["source_only"], runs["reference"])]
    result["stats"] = stats
    result["speedup_per_seed"] = ratios
    result["speedup"] = statistics.fmean(ratios)
    result["knn_delta"] = stats["source_only"]["knn_top1_mean"] - stats["reference"]["knn_top1_mean"]
    (out / "parity.json").write_text(json.dumps(result, indent=2))
    md = to_markdown(result)
    (out / "parity.md").write_text(md)
    print(md)
    return 0


def to_markdown(r: dict[str, Any]) -> str:
    c = r["config"]
    lines = [
        f"Source-only vs reference, {c['method']}, recipe {c['recipe']}, {c['epochs']} epochs, "
        f"{c['num_images']} images, batch {c['batch']}, seeds {c['seeds']} ({r['machine']})",
        "",
        "| mode | kNN top-1 per seed | kNN mean ± std | images/s per seed | images/s mean |",
        "|---|---|---|---|---|",
    ]
    for label, rs in r["runs"].items():
        s = r["stats"][label]
        knn = ", ".join(f"{x['knn_top1']:.2f}" for x in rs)
        ips = ", ".join(f"{x['images_per_s']:.1f}" for x in rs)
        lines.append(
            f"| {label} | {knn} | {s['knn_top1_mean']:.2f} ± {s['knn_top1_std']:.2f} | "
            f"{ips} | {s['images_per_s_mean']:.1f} |"
        )
    lines += [
        "",
        f"speed-up (source-only / reference images/s, same seed, runs back to back): "
        f"{', '.join(f'{x:.2f}x' for x in r['speedup_per_seed'])}; mean {r['speedup']:.2f}x. "
        f"kNN delta (source-only - reference): {r['knn_delta']:+.2f} points.",
    ]
    return "\n".join(lines) + "\n"


def _machine() -> str:
    import os
    import platform

    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()} CPU x{os.cpu_count()}, shared"


if __name__ == "__main__":
    raise SystemExit(main())
