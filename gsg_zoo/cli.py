"""The ``gsg`` command line.

Commands live in :mod:`gsg_zoo.commands`, one module each. A module declares ``PATH`` (the words
that select it, e.g. ``("transfer", "detection")``), ``HELP`` and ``register(parser)``, which adds its
arguments (or its own sub-commands) and sets ``parser.set_defaults(func=...)``. Modules must import
nothing heavy at module level, so ``gsg --help`` stays fast; handlers import torch when they run.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from . import commands as _commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gsg", description="gsg-zoo: Guided Stop-Gradient model zoo and toolkit"
    )
    parser.add_argument("--version", action="version", version="gsg-zoo 0.1.0")
    groups: dict[tuple[str, ...], argparse._SubParsersAction] = {(): parser.add_subparsers(dest="command")}
    modules = [
        importlib.import_module(f"{_commands.__name__}.{m.name}")
        for m in pkgutil.iter_modules(_commands.__path__)
    ]
    for mod in sorted(modules, key=lambda m: m.PATH):
        *parents, leaf = mod.PATH
        for depth in range(len(parents)):
            key = tuple(parents[: depth + 1])
            if key not in groups:
                group = groups[key[:-1]].add_parser(key[-1], help=f"{key[-1]} commands")
                group.set_defaults(func=_print_help(group))
                groups[key] = group.add_subparsers(dest="_".join(key))
        sub = groups[tuple(parents)].add_parser(leaf, help=mod.HELP, description=mod.HELP)
        mod.register(sub)
    return parser


def _print_help(p: argparse.ArgumentParser):
    return lambda args: (p.print_help(), 2)[1]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        if getattr(args, "debug", False):
            raise
        print(f"gsg: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
