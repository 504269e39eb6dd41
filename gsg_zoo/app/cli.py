"""The ``gsg`` command line.

Commands live in :mod:`gsg_zoo.app.commands`, one module each. A module declares ``PATH`` (the words
that select it, e.g. ``("transfer", "detection")``), ``HELP``, optionally ``OPTIONS`` (shared option
groups of :mod:`gsg_zoo.app.commands._common`; default ``("debug",)``; ``()`` for a module that creates
its own sub-commands with ``_common.parents(...)``) and ``register(parser)``, which adds its own
arguments and sets ``parser.set_defaults(func=...)``. Neither the commands nor ``import gsg_zoo`` import
torch at module level, so help, usage errors and recipe listings answer at once; handlers import what
they need when they run.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence

from .._version import __version__
from . import commands as _commands
from .commands._common import parents


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gsg", description="gsg-zoo: Guided Stop-Gradient model zoo and toolkit"
    )
    parser.add_argument("--version", action="version", version=f"gsg-zoo {__version__}")
    groups: dict[tuple[str, ...], argparse._SubParsersAction] = {(): parser.add_subparsers(dest="command")}
    modules = [
        importlib.import_module(f"{_commands.__name__}.{m.name}")
        for m in pkgutil.iter_modules(_commands.__path__)
        if not m.name.startswith("_")
    ]
    for mod in sorted(modules, key=lambda m: m.PATH):
        *words, leaf = mod.PATH
        for depth in range(len(words)):
            key = tuple(words[: depth + 1])
            if key not in groups:
                group = groups[key[:-1]].add_parser(key[-1], help=f"{key[-1]} commands")
                group.set_defaults(func=_print_help(group))
                groups[key] = group.add_subparsers(dest="_".join(key))
        options = getattr(mod, "OPTIONS", ("debug",))
        sub = groups[tuple(words)].add_parser(
            leaf, help=mod.HELP, description=mod.HELP, parents=parents(*options) if options else []
        )
        mod.register(sub)
    return parser


def _print_help(p: argparse.ArgumentParser):
    return lambda args: (p.print_help(), 2)[1]


def main(argv: Sequence[str] | None = None) -> int:
    """Run a ``gsg`` command. Under torchrun, errors propagate through torch's ``record`` so that the
    launcher's failure summary carries the traceback (instead of a one-line message and exit code 1)."""
    if os.environ.get("TORCHELASTIC_ERROR_FILE"):
        from torch.distributed.elastic.multiprocessing.errors import record

        return record(lambda: _main(argv, reraise=True))()
    return _main(argv)


def _main(argv: Sequence[str] | None, reraise: bool = False) -> int:
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
        code = getattr(err, "exit_code", None)  # e.g. a non-finite loss: its own code, no traceback needed
        if code is None and (reraise or getattr(args, "debug", False)):
            raise
        print(f"gsg: error: {err}", file=sys.stderr)
        return code or 1


if __name__ == "__main__":
    sys.exit(main())
