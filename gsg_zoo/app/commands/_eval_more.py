"""``gsg eval finetune`` and ``gsg eval embed``: their options and handlers (``eval.py`` registers them
and hands over its ``closing_context`` and ``report_stem``, so this module never imports it)."""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: eval.py's (closing_context, report_stem)
Helpers = tuple[Callable[[argparse.Namespace], Any], Callable[[argparse.Namespace], str]]


def register_finetune(
    sub: Any, common: Callable, parents: list[argparse.ArgumentParser], helpers: Helpers
) -> None:
    ft = sub.add_parser(
        "finetune",
        help="fine-tune the backbone with a new linear head (SimCLR semi-supervised 1 %% / 10 %%, or default)",
        parents=parents,
    )
    common(ft)
    ft.add_argument(
        "--protocol",
        choices=("simclr", "default"),
        default="default",
        help="simclr: SimCLR v2's semi-supervised fine-tuning (LARS, lr 0.005 x sqrt(batch), batch 1024, "
        "60 epochs at 1 %%, 30 at 10 %%); default: lightly's finetune_eval.py (SGD, 30 epochs, batch 256)",
    )
    ft.add_argument(
        "--fraction",
        type=float,
        default=100.0,
        metavar="PCT",
        help="percent of the training labels, in (0, 100]; ImageNet folders at 1 / 10: SimCLR's lists",
    )
    ft.add_argument(
        "--subset-file",
        default=None,
        metavar="FILE",
        help="image file names to train on, one a line (image-folder datasets)",
    )
    g = ft.add_argument_group("overrides (a variant of the protocol, named in the report)")
    g.add_argument("--epochs", type=int, default=None)
    g.add_argument("--batch-size", type=int, default=None, help="global batch size")
    g.add_argument(
        "--lr", dest="base_lr", type=float, default=None, help="base lr (scaled as the protocol does)"
    )
    g.add_argument("--wd", dest="weight_decay", type=float, default=None, help="weight decay")
    g.add_argument("--warmup-epochs", type=float, default=None)
    g.add_argument("--layer-decay", type=float, default=None, help="ViTs: layer-wise lr decay (MAE's rule)")
    ft.add_argument("--seed", type=int, default=0, help="head init, data order, augmentation, label subset")
    ft.add_argument("--stop-after-epochs", type=int, default=None, help=argparse.SUPPRESS)  # time-boxed jobs
    ft.epilog = (
        "with --out DIR the run is checkpointed after every epoch to DIR/STEM.ckpt.pt and a rerun resumes "
        "from it; under torchrun the batch is split over the ranks (DDP, SyncBN for simclr)"
    )
    ft.set_defaults(func=functools.partial(_finetune, helpers=helpers))


def register_embed(
    sub: Any, common: Callable, parents: list[argparse.ArgumentParser], helpers: Helpers
) -> None:
    em = sub.add_parser(
        "embed", help="2-D embedding plot of the features (t-SNE, or UMAP with umap-learn)", parents=parents
    )
    common(em)
    em.add_argument("--split", default="test", help="the split to embed (default test)")
    em.add_argument(
        "--method", choices=("tsne", "umap"), default="tsne", help="umap needs the umap extra (umap-learn)"
    )
    em.add_argument("--points", type=int, default=2000, help="at most this many images (class-stratified)")
    em.add_argument("--seed", type=int, default=0)
    em.set_defaults(func=functools.partial(_embed, helpers=helpers))


def _finetune(args: argparse.Namespace, helpers: Helpers) -> int:
    from ...eval.finetune import resolve_config
    from ...eval.finetune_run import finetune_markdown, run_finetune
    from ...eval.label_subsets import check_fraction
    from ...eval.lr_decay import is_vit

    closing_context, report_stem = helpers
    check_fraction(args.fraction)  # before loading a model
    names = ("epochs", "batch_size", "base_lr", "weight_decay", "warmup_epochs", "layer_decay")
    ckpt = Path(args.out) / f"{report_stem(args)}.ckpt.pt" if args.out else None
    with closing_context(args) as ctx:
        cfg = resolve_config(
            args.protocol, args.fraction, is_vit(ctx.model), args.seed, **{k: getattr(args, k) for k in names}
        )
        result = run_finetune(ctx, args.dataset, cfg, ckpt, args.subset_file, args.stop_after_epochs)
    return 0 if result is None else _report(args, report_stem(args), result, finetune_markdown(result))


def _embed(args: argparse.Namespace, helpers: Helpers) -> int:
    from ...eval.embed import embed_markdown, run_embed

    closing_context, report_stem = helpers
    with closing_context(args) as ctx:
        result = run_embed(ctx, args.dataset, args.split, args.method, args.points, args.seed, args.out)
    return 0 if result is None else _report(args, report_stem(args), result, embed_markdown(result))


def _report(args: argparse.Namespace, stem: str, result: dict[str, Any], md: str) -> int:
    from ...eval.runner import write_report

    print(md)
    if args.out:
        for p in write_report(args.out, stem, result, md):
            print(f"wrote {p}")
    return 0
