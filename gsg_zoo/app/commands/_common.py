"""Options shared by several ``gsg`` commands: one argparse parent parser each, defined once.

A command module lists what it uses in ``OPTIONS`` (its own parser) or passes ``parents(...)`` to the
sub-commands it creates; ``--debug`` comes with every runnable command. Imports nothing heavy.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

MODEL_SPEC_HELP = (
    "model spec: a `gsg pretrain` checkpoint, an export dir or local-dir:PATH, hf-hub:ORG/NAME, zoo:NAME, "
    "random:ARCH[@SEED] (random init, seed 0 unless given), pixels (raw-pixel baseline), import:PATH (another SSL code base's checkpoint, see "
    "`gsg import`) or a timm name"
)


def _debug(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")


def _device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1 ...")


def _progress(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-progress", "--quiet", dest="no_progress", action="store_true", help="no progress bars"
    )


def _dataset(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, metavar="ROOT", help="dataset root in torchvision's layout")
    p.add_argument("--download", action="store_true", help="let torchvision download a missing dataset")


def _features(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("feature extraction (cached per weights, dataset split and transform)")
    g.add_argument(
        "--cache-dir", default=None, help="feature cache (default $GSG_CACHE or ~/.cache/gsg-zoo/features)"
    )
    g.add_argument("--no-cache", action="store_true", help="recompute features and do not store them")
    g.add_argument("--batch-size-extract", type=int, default=256, help="batch size of feature extraction")
    g.add_argument("--workers", type=int, default=None, help="DataLoader workers (default min(8, CPUs))")
    g.add_argument(
        "--amp",
        action="store_true",
        help="bf16 autocast on CUDA (a variant: reference protocols run in fp32, the default)",
    )
    g.add_argument("--no-amp", dest="amp", action="store_false", help=argparse.SUPPRESS)  # fp32: the default
    g.add_argument("--subset", type=int, default=None, help="seeded subset of at most N images per split")


def _overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe value, e.g. --set train.epochs=10 --set model.predictor=false",
    )


OPTION_GROUPS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "debug": _debug,
    "device": _device,
    "progress": _progress,
    "dataset": _dataset,
    "features": _features,
    "overrides": _overrides,
}


def parents(*names: str) -> list[argparse.ArgumentParser]:
    """Parent parsers for ``add_parser(..., parents=...)``: ``--debug`` plus the named option groups."""
    unknown = set(names) - set(OPTION_GROUPS)
    if unknown:
        raise ValueError(f"unknown option groups {sorted(unknown)}; known: {sorted(OPTION_GROUPS)}")
    out = []
    for name in ("debug", *(n for n in names if n != "debug")):
        parent = argparse.ArgumentParser(add_help=False)
        OPTION_GROUPS[name](parent)
        out.append(parent)
    return out


def add_model_argument(p: argparse.ArgumentParser, flag: str = "--model") -> None:
    """The backbone to evaluate or transfer (required)."""
    if flag.startswith("-"):
        p.add_argument(flag, required=True, metavar="SPEC", help=MODEL_SPEC_HELP)
    else:
        p.add_argument(flag, metavar="MODEL_SPEC", help=MODEL_SPEC_HELP)
