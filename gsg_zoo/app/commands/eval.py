"""``gsg eval knn|linear|finetune|embed``: probes of a frozen backbone, fine-tuning and embedding plots.

One process on one device by default; under ``torchrun`` every rank extracts a shard of the features
(rank 0 scores and reports) and the reference linear probe and fine-tuning train with DDP."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ...data.registry import dataset_names
from ._common import add_model_argument, parents

PATH = ("eval",)
HELP = "evaluate a backbone: weighted kNN, linear probe, fine-tuning, embedding plot"
OPTIONS = ()  # each probe has its own options

#: the datasets the probes read, from the registry (their ROOT layouts: docs/reference/datasets.md)
DATASET_HELP = "one of " + ", ".join(dataset_names(multilabel=False))


#: shared option groups of each probe (gsg_zoo.app.commands._common)
PROBE_OPTIONS = ("dataset", "device", "progress", "features")


def _common(p: argparse.ArgumentParser) -> None:
    add_model_argument(p)
    p.add_argument("--dataset", required=True, help=DATASET_HELP)
    p.add_argument(
        "--image-size", type=int, default=None, help="input size (default: the model's data config)"
    )
    p.add_argument("--out", default=None, metavar="DIR", help="write results as JSON + markdown here")
    g = p.add_argument_group("WebDataset shards (the recipe's data.wds keys)")
    g.add_argument("--image-keys", default=None, help="image member extensions, first present (jpg,png,...)")
    g.add_argument("--label-key", choices=("cls", "txt", "json"), default="cls", help="label member (cls)")
    g.add_argument("--label-field", default="label", help="--label-key json: the label's field (label)")


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="eval_command")
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])

    knn = sub.add_parser(
        "knn",
        help="weighted kNN (cosine, several k/T pairs)",
        description=__doc__,
        parents=parents(*PROBE_OPTIONS),
    )
    _common(knn)
    knn.add_argument(
        "--protocol",
        choices=("default", "gsg"),
        default="default",
        help="default: InstDisc/DINO style, the model's preprocessing, several k:T pairs; "
        "gsg: GSG's main_knn.py (Resize([256,256]) + CenterCrop(224), ImageNet mean/std, k=200, T=0.2)",
    )
    knn.add_argument(
        "--knn", default=None, help="comma-separated k:T pairs (default protocol: 200:0.1,20:0.07,200:0.2)"
    )
    knn.add_argument("--chunk-size", type=int, default=256, help="test queries per similarity chunk")
    knn.set_defaults(func=_knn)

    lin = sub.add_parser(
        "linear",
        help="linear probe (reference protocol or fast cached-feature probe)",
        parents=parents(*PROBE_OPTIONS),
    )
    _common(lin)
    lin.add_argument(
        "--protocol",
        choices=("reference", "fast"),
        default="reference",
        help="reference: augmented images through the frozen backbone every epoch (SimSiam); "
        "fast: the fc on cached centre-crop features",
    )
    lin.add_argument(
        "--solver",
        choices=("sgd", "lbfgs"),
        default="sgd",
        help="fast protocol only: sgd = same optimizer/schedule as reference; lbfgs = logistic regression",
    )
    lin.add_argument("--optimizer", choices=("lars", "sgd"), default="lars")
    lin.add_argument("--epochs", type=int, default=90)
    lin.add_argument("--batch-size", type=int, default=4096)
    lin.add_argument("--lr", type=float, default=0.1, help="base lr; effective lr = lr * batch / 256")
    lin.add_argument("--wd", type=float, default=0.0, help="weight decay")
    lin.add_argument("--momentum", type=float, default=0.9)
    lin.add_argument("--seed", type=int, default=0)
    lin.epilog = (
        "reference protocol with --out DIR: the probe is checkpointed after every epoch to "
        "DIR/linear_reference_DATASET.probe.pt and a rerun resumes from it"
    )
    lin.set_defaults(func=_linear)
    from ._eval_more import register_embed, register_finetune

    helpers = (closing_context, report_stem)
    register_finetune(sub, _common, parents(*PROBE_OPTIONS), helpers)
    register_embed(sub, _common, parents(*PROBE_OPTIONS), helpers)


def parse_ks_and_ts(text: str) -> list[tuple[int, float]]:
    try:
        pairs = [(int(k), float(t)) for k, t in (item.split(":") for item in text.split(",") if item.strip())]
    except ValueError:
        raise ValueError(
            f"--knn expects comma-separated k:T pairs like 200:0.1,20:0.07, got {text!r}"
        ) from None
    if not pairs:
        raise ValueError("--knn is empty")
    return pairs


def context(args: argparse.Namespace):
    """The loaded model and extraction options. Launched by torchrun, it creates the process group and
    shards; called inside a process group someone else created (e.g. ``gsg zoo build``'s rank-0 stages),
    it runs in this one process."""
    import torch
    import torch.distributed

    from ...core.distributed import DistInfo, init_distributed
    from ...eval.features import ExtractOptions
    from ...eval.runner import EvalContext

    cuda = args.device in (None, "auto", "cuda") and torch.cuda.is_available()
    info = DistInfo() if torch.distributed.is_initialized() else init_distributed("cuda" if cuda else "cpu")
    opts = ExtractOptions(
        batch_size=args.batch_size_extract,
        num_workers=args.workers,
        device=args.device,
        amp=args.amp,
        progress=not args.no_progress,
        dist=info,
    )
    ctx = EvalContext.load(
        args.model,
        image_size=args.image_size,
        cache_dir=args.cache_dir,
        use_cache=not args.no_cache,
        options=opts,
        data_root=args.data,
        download=args.download,
        subset=args.subset,
    )
    if getattr(args, "dataset", None) == "webdataset":  # (gsg transfer classification shares this)
        ctx.reader = {
            "image_keys": args.image_keys,
            "label_key": args.label_key,
            "label_field": args.label_field,
        }
    return ctx


@contextlib.contextmanager
def closing_context(args: argparse.Namespace) -> Iterator[Any]:
    """:func:`context`, leaving the process group it joined when done (torchrun expects it)."""
    ctx = context(args)
    try:
        yield ctx
    finally:
        ctx.options.dist.close()


def report_stem(args: argparse.Namespace) -> str:
    """The file name (no suffix) of the report ``args`` write under ``--out``."""
    if args.eval_command == "linear":
        return f"linear_{args.protocol}_{args.dataset}"
    if args.eval_command == "finetune":
        return f"finetune_{args.protocol}_{args.dataset}_{args.fraction:g}pct"
    if args.eval_command == "embed":
        return f"embed_{args.method}_{args.dataset}"
    return f"knn_{args.dataset}" if args.protocol == "default" else f"knn_{args.protocol}_{args.dataset}"


def run(argv: list[str]) -> tuple[int, argparse.Namespace]:
    """``gsg eval ARGV`` in this process (``argv`` without the leading ``eval``): exit status and args."""
    parser = argparse.ArgumentParser(prog="gsg eval")
    register(parser)
    args = parser.parse_args(argv)
    return args.func(args), args


def _knn(args: argparse.Namespace) -> int:
    from ...eval.runner import knn_markdown, run_knn, write_report

    pairs = parse_ks_and_ts(args.knn) if args.knn is not None else None
    with closing_context(args) as ctx:
        result = run_knn(ctx, args.dataset, pairs, chunk_size=args.chunk_size, protocol=args.protocol)
    if result is None:  # a torchrun rank other than 0: rank 0 reports
        return 0
    md = knn_markdown(result)
    print(md)
    if args.out:
        for p in write_report(args.out, report_stem(args), result, md):
            print(f"wrote {p}")
    return 0


def _linear(args: argparse.Namespace) -> int:
    from ...eval.linear import LinearConfig
    from ...eval.runner import linear_markdown, run_linear, write_report

    cfg = LinearConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.wd,
        momentum=args.momentum,
        optimizer=args.optimizer,
        seed=args.seed,
    )
    ckpt = Path(args.out) / f"linear_reference_{args.dataset}.probe.pt" if args.out else None
    with closing_context(args) as ctx:
        result = run_linear(ctx, args.dataset, args.protocol, cfg, solver=args.solver, checkpoint=ckpt)
    if result is None:
        return 0
    md = linear_markdown(result)
    print(md)
    if args.out:
        for p in write_report(args.out, report_stem(args), result, md):
            print(f"wrote {p}")
    return 0
