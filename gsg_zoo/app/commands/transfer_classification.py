"""``gsg transfer classification``: the many-shot linear transfer suite (Ericsson et al. 2021)."""

from __future__ import annotations

import argparse

from ...data.registry import TRANSFER_SUITE
from ._common import add_model_argument

PATH = ("transfer", "classification")
HELP = f"linear transfer to {len(TRANSFER_SUITE)} classification datasets (ssl-transfer's scikit-learn logistic regression)"
OPTIONS = ("dataset", "device", "progress", "features")  # --data: the root of every dataset


def register(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(func=_run)
    suite = ",".join(TRANSFER_SUITE)
    add_model_argument(parser)
    parser.add_argument("--datasets", default=suite, help=f"comma-separated subset of {suite}")
    parser.add_argument(
        "--out", default=None, metavar="DIR", help="write transfer_classification.{json,md} here"
    )
    parser.add_argument(
        "--image-size", type=int, default=224, help="resize + centre-crop size (protocol: 224)"
    )
    parser.add_argument(
        "--num-c", type=int, default=45, help="number of log-spaced 1/C values in [1e-6, 1e5] (reference: 45)"
    )
    parser.add_argument(
        "--solver",
        choices=("sklearn", "torch"),
        default="sklearn",
        help="sklearn: the reference (ssl-transfer linear.py, scikit-learn lbfgs on raw features); "
        "torch: a variant (torch L-BFGS, z-scored features), its agreement printed in the report",
    )
    parser.add_argument("--max-iter", type=int, default=1000, help="--solver torch: L-BFGS iterations per C")


def _run(args: argparse.Namespace) -> int:
    from ...eval.datasets import get_info
    from ...eval.runner import run_transfer, transfer_markdown, write_report
    from .eval import closing_context

    if not args.data:
        raise ValueError("--data ROOT is required: the folder holding every dataset in torchvision's layout")
    names = [n.strip().lower() for n in args.datasets.split(",") if n.strip()]
    for n in names:
        get_info(n)  # unknown names fail before the model loads
    with closing_context(args) as ctx:
        result = run_transfer(ctx, names, num_c=args.num_c, solver=args.solver, max_iter=args.max_iter)
    if result is None:  # a torchrun rank other than 0: rank 0 reports
        return 0
    md = transfer_markdown(result)
    print(md)
    if args.out:
        for p in write_report(args.out, "transfer_classification", result, md):
            print(f"wrote {p}")
    done = [r for r in result["datasets"].values() if "skipped" not in r]
    return 0 if done else 1
