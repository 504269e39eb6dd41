"""End-to-end images/s of one recipe with a boolean switch off (A) and on (B), interleaved in one process.

Runs :mod:`bench_throughput` (the trainer's own DataLoader and step) ``--reps`` times per side, in the
order A B, B A, A B, ... so that drifts of a shared machine fall on both sides, and reports the mean
ratio B / A with every run. Default: the ImageNet recipe's PIL views vs ``data.batch_augment=true``.

    python benchmarks/throughput_ab.py --reps 4 --out benchmarks/results/throughput_mocov2_batch_augment_cpu.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
from pathlib import Path
from typing import Any

BENCH = [
    "--recipes",
    "mocov2",
    "--method",
    "simsiam_gsg",
    "--workers",
    "2",
    "--batch",
    "16",
    "--steps",
    "12",
    "--warmup",
    "2",
]


def bench_throughput() -> Any:
    spec = importlib.util.spec_from_file_location(
        "bench_throughput", Path(__file__).with_name("bench_throughput.py")
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_throughput"] = module
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--switch", default="data.batch_augment", help="boolean recipe key: A = false, B = true")
    p.add_argument("--reps", type=int, default=4)
    p.add_argument(
        "--bench", nargs=argparse.REMAINDER, default=BENCH, help="bench_throughput arguments (last)"
    )
    p.add_argument("--out", help="write JSON here")
    args = p.parse_args(argv)
    bt, runs = bench_throughput(), {"A": [], "B": []}
    for rep in range(args.reps):
        for side in ("A", "B") if rep % 2 == 0 else ("B", "A"):
            value = "true" if side == "B" else "false"
            runs[side].append(bt.main([*args.bench, "--set", f"{args.switch}={value}"])["results"][0])
    mean = {side: statistics.mean(r["images_per_s"] for r in rs) for side, rs in runs.items()}
    result = {
        "protocol": f"throughput_ab: bench_throughput {' '.join(args.bench)}; A: {args.switch}=false, "
        f"B: {args.switch}=true; {args.reps} runs each, interleaved, one process",
        "images_per_s": {side: [r["images_per_s"] for r in rs] for side, rs in runs.items()},
        "images_per_s_mean": mean,
        "ratio_b_over_a": mean["B"] / mean["A"],
        "runs": runs,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
