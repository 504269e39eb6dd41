"""The ``gsg`` command line: one module per command in :mod:`gsg_zoo.app.commands`, listed in ``COMMANDS``.

A command module declares ``PATH`` (the words that select it, e.g. ``("transfer", "detection")``),
``HELP``, optionally ``OPTIONS`` (shared option groups of :mod:`gsg_zoo.app.commands._common`) and
``register(parser)``; it imports no framework at module level, its handler imports what it runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from types import ModuleType

from .._version import __version__
from .commands import (
    data,
    data_info,
    data_shard,
    demo,
    eval,
    experiment,
    experiment_batch_size,
    experiment_compare,
    experiment_selection,
    export,
    import_checkpoint,
    pretrain,
    push,
    transfer_classification,
    transfer_detection,
    transfer_segmentation,
    zoo,
)
from .commands._common import parents

#: Every command module (tests/test_cli.py checks that none of gsg_zoo/app/commands is left out).
COMMANDS: tuple[ModuleType, ...] = (
    data,
    data_info,
    data_shard,
    demo,
    eval,
    experiment,
    experiment_batch_size,
    experiment_compare,
    experiment_selection,
    export,
    import_checkpoint,
    pretrain,
    push,
    transfer_classification,
    transfer_detection,
    transfer_segmentation,
    zoo,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gsg", description="gsg-zoo: Guided Stop-Gradient model zoo and toolkit"
    )
    parser.add_argument("--version", action="version", version=f"gsg-zoo {__version__}")
    groups: dict[tuple[str, ...], argparse._SubParsersAction] = {(): parser.add_subparsers(dest="command")}
    for mod in sorted(COMMANDS, key=lambda m: m.PATH):
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
