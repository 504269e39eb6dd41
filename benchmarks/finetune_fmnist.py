"""Fine-tuning at 1 %, 10 % and 100 % of Fashion-MNIST's labels: the demo backbone vs random init.

Runs ``gsg eval finetune`` (protocol ``default``) once per backbone, seed and fraction, each in its own
process (a rerun resumes or skips finished runs), then writes one JSON with every command, result and
the pretraining run's online-probe curve (``tools/results_tables.py`` renders it).

    python -m gsg_zoo pretrain demo_fmnist --out runs/i36/pretrain --set monitor.online_linear=true
    python benchmarks/finetune_fmnist.py --pretrained runs/i36/pretrain --out runs/i36/ft \\
        --json benchmarks/results/finetune_fmnist.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

DATA = "/usr/share/datasets/fashion-mnist"
#: The demo's evaluation images (seeded subsets of 5,000 train / 5,000 test, gsg_zoo/app/demo.py EVAL_SUBSET)
#: and a batch of 64 (lr 0.05 x 64 / 256 by the protocol's rule): CPU-sized budgets, overrides of the
#: protocol that each report names.
COMMON = ["--subset", "5000", "--batch-size", "64"]
SETTINGS = {  # fraction -> its epochs
    1: ["--epochs", "30"],  # 50 images (5 a class): 30 steps (a set smaller than a batch wraps around)
    10: ["--epochs", "10"],  # 500 images: 70 steps
    100: ["--epochs", "1"],  # 5,000 images: 78 steps
}


def command(spec: str, fraction: int, seed: int, out: Path) -> list[str]:
    return [
        "gsg", "eval", "finetune", "--model", spec, "--dataset", "fashion_mnist", "--data", DATA,
        "--image-size", "32", "--fraction", str(fraction), "--seed", str(seed), "--workers", "0",
        "--no-cache", "--quiet", *COMMON, *SETTINGS[fraction], "--out", str(out),
    ]  # fmt: skip


def run(cmd: list[str], report: Path) -> dict:
    """The report of ``cmd`` (run now unless it exists)."""
    if not report.exists():
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        subprocess.run([sys.executable, "-m", "gsg_zoo", *cmd[1:]], check=True, env=env)
    return json.loads(report.read_text())


def probe_curve(run_dir: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    keys = ("epoch", "step", "knn_top1", "online_linear_top1", "online_linear_train_top1")
    return [{k: r.get(k) for k in keys} for r in rows]


def monitor_protocol(run_dir: Path) -> str:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return next(r["monitor_protocol"] for r in reversed(rows) if r.get("monitor_protocol"))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pretrained", type=Path, required=True, help="the demo_fmnist run directory")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--only", choices=("random", "pretrained"), default=None, help="run one backbone's runs")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    backbones = {"pretrained": lambda s: str(args.pretrained / "checkpoints" / "last.pt"),
                 "random": lambda s: f"random:resnet10t@{s}"}  # fmt: skip
    runs = []
    for name, spec in backbones.items():
        if args.only and name != args.only:
            continue
        for frac in SETTINGS:
            for seed in seeds:
                out = args.out / f"{name}_s{seed}"
                cmd = command(spec(seed), frac, seed, out)
                r = run(cmd, out / f"finetune_default_fashion_mnist_{frac}pct.json")
                runs.append({"backbone": name, "fraction": frac, "seed": seed, "command": " ".join(cmd),
                             "top1": r["top1"], "top5": r["top5"], "num_train": r["num_train"],
                             "num_test": r["num_test"], "steps": r["training"]["total_steps"],
                             "overrides": r["protocol_settings"]["overrides"], "wall_seconds": r["wall_seconds"]})  # fmt: skip
    if args.only:
        return
    summary = {
        f"{b}_{f}": {
            "mean": statistics.mean(v),
            "sd": statistics.stdev(v) if len(v) > 1 else 0.0,
            "n": len(v),
        }
        for b in backbones
        for f in SETTINGS
        if (v := [r["top1"] for r in runs if r["backbone"] == b and r["fraction"] == f])
    }
    result = {
        "pretraining": {
            "command": "gsg pretrain demo_fmnist --out runs/i36/pretrain --set monitor.online_linear=true",
            "curve": probe_curve(args.pretrained),
            "monitor_protocol": monitor_protocol(args.pretrained),
            "online_probe": json.loads((args.pretrained / "summary.json").read_text())["online_probe"][
                "protocol"
            ],
        },
        "protocol": "default",
        "settings": {"common": COMMON, **{str(f): s for f, s in SETTINGS.items()}},
        "runs": runs,
        "summary": summary,
    }
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
