"""The transfer suite's C sweep: torch L-BFGS (warm-started) vs scikit-learn on the same features.

Features: the built-in synthetic dataset through a small random backbone (extracted once, cached).
Both fit the same 45 values of C (1/C log-spaced in [1e-6, 1e5]) on 80% of train, score the
other 20%, and report the chosen C, its validation accuracy and the sweep time.

    python benchmarks/bench_logreg.py --out runs/bench/logreg.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="random:resnet18_cifar")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--subset", type=int, default=None, help="training images (default 2000)")
    p.add_argument("--num-c", type=int, default=45)
    p.add_argument("--max-iter", type=int, default=1000)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--workers", type=int, default=2, help="feature extraction loader workers")
    p.add_argument("--out", default="runs/bench/logreg.json")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from gsg_zoo.eval.datasets import protocol_indices
    from gsg_zoo.eval.features import ExtractOptions
    from gsg_zoo.eval.logreg import Standardizer, c_grid, sweep_c
    from gsg_zoo.eval.runner import EvalContext

    torch.manual_seed(0)
    ctx = EvalContext.load(
        args.model,
        image_size=args.image_size,
        subset=args.subset,
        options=ExtractOptions(num_workers=args.workers, progress=False),
    )
    train = ctx.features("synthetic", "train", ctx.eval_transform())
    idx = protocol_indices(len(train.feats))
    std = Standardizer.fit(train.feats[idx["train"]])
    xtr, ytr = std(train.feats[idx["train"]]), train.labels[idx["train"]]
    xval, yval = std(train.feats[idx["val"]]), train.labels[idx["val"]]
    cs = c_grid(args.num_c)
    print(f"features {tuple(train.feats.shape)}, {len(cs)} values of C")

    ours = sweep_c(xtr, ytr, xval, yval, "top1", cs, max_iter=args.max_iter)
    print(f"torch L-BFGS : {ours.seconds:7.2f} s  best C {ours.best_C:.3g}  val top-1 {ours.best_val:.2f}")

    t0 = time.perf_counter()
    sk = LogisticRegression(max_iter=args.max_iter, warm_start=True)
    sk_curve = []
    for C in cs:
        sk.set_params(C=C).fit(xtr.numpy(), ytr.numpy())
        sk_curve.append((C, 100.0 * float(np.mean(sk.predict(xval.numpy()) == yval.numpy()))))
    sk_seconds = time.perf_counter() - t0
    sk_best = max(sk_curve, key=lambda cv: cv[1])
    print(f"scikit-learn : {sk_seconds:7.2f} s  best C {sk_best[0]:.3g}  val top-1 {sk_best[1]:.2f}")
    print(f"speed-up: {sk_seconds / ours.seconds:.1f}x")
    summary = {
        "model": args.model,
        "features": list(train.feats.shape),
        "num_c": len(cs),
        "threads": torch.get_num_threads(),
        "torch_lbfgs": {
            "seconds": ours.seconds,
            "best_C": ours.best_C,
            "val_top1": ours.best_val,
            "curve": ours.curve,
        },
        "sklearn": {"seconds": sk_seconds, "best_C": sk_best[0], "val_top1": sk_best[1], "curve": sk_curve},
        "speedup": sk_seconds / ours.seconds,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
