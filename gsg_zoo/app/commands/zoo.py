"""``gsg zoo list|add``: the manifest of published checkpoints."""

from __future__ import annotations

import argparse

from ._common import parents

PATH = ("zoo",)
HELP = "list the published checkpoints, or add a pushed export to the manifest"
OPTIONS = ("debug",)  # `gsg zoo` alone lists; its sub-commands have --debug too
MANIFEST_HELP = "manifest file (default: $GSG_ZOO_MANIFEST, else the package's zoo_manifest.json)"


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="zoo_command")
    ls = sub.add_parser("list", help="show the manifest as a table", parents=parents())
    ls.add_argument("--manifest", help=MANIFEST_HELP)
    ls.add_argument("--json", action="store_true", help="print the entries as JSON")
    ls.set_defaults(func=run_list)
    add = sub.add_parser("add", help="add a pushed export (verified) to the manifest", parents=parents())
    add.add_argument("--manifest", help=MANIFEST_HELP)
    add.add_argument("export_dir", help="directory written by `gsg export` and pushed with `gsg push`")
    add.add_argument("--hub-id", required=True, help="Hub repo ORG/NAME it was pushed to")
    add.add_argument("--name", help="zoo name (default: the export's name)")
    add.add_argument("--revision", default="main", help="Hub revision to pin (commit id recommended)")
    add.add_argument("--replace", action="store_true", help="update an existing entry of that name")
    add_card_options(add)
    add.set_defaults(func=run_add)
    build = sub.add_parser(
        "build",
        help="pretrain, evaluate, export, card (and push, manifest) a planned entry",
        parents=parents(),
    )
    build.add_argument(
        "entry", nargs="?", help="a planned entry of gsg_zoo/zoo/zoo_entries.yaml (none: list them)"
    )
    build.add_argument("--out", help="build directory (default runs/zoo/ENTRY); a rerun continues it")
    build.add_argument("--data", metavar="ROOT", help="dataset root for pretraining and the evaluations")
    build.add_argument(
        "--push", action="store_true", help="also push to the entry's hub id and add it to the manifest"
    )
    build.add_argument(
        "--dry-run", action="store_true", help="print the stages and which are done; run nothing"
    )
    build.add_argument(
        "--push-dry-run",
        action="store_true",
        help="run the stages, then plan the upload as `gsg push --dry-run` does (no network)",
    )
    build.set_defaults(func=run_build)
    parser.set_defaults(func=run_list, json=False, manifest=None)


def add_card_options(p: argparse.ArgumentParser) -> None:
    """Options of adding an entry: where its repository card goes."""
    p.add_argument(
        "--card-dir",
        default=None,
        help="write CARD_DIR/NAME/README.md (+ curves.png) (default: the checkout's model_cards/)",
    )
    p.add_argument("--no-card", action="store_true", help="do not write the repository's model card")


def cards_dir(args: argparse.Namespace):  # noqa: ANN201 (Path | None; pathlib not imported at start-up)
    """Where the entry's card goes; a clear error, before anything is written, when there is nowhere."""
    from ...zoo.cards import DEFAULT_CARDS_DIR

    folder = args.card_dir or DEFAULT_CARDS_DIR
    if folder is None and not args.no_card:
        raise ValueError(
            "no model_cards/ folder here (an installed package): pass --card-dir DIR or --no-card"
        )
    return folder


def add_to_zoo(args: argparse.Namespace, hub_id: str, name: str | None, revision: str) -> None:
    """Add a pushed export to the manifest and write its card (checked first)."""
    from ...zoo.cards import write_repo_card
    from ...zoo.manifest import add_entry, manifest_path

    folder = cards_dir(args)
    entry = add_entry(
        args.export_dir,
        hub_id,
        name=name,
        revision=revision,
        replace=args.replace,
        manifest=args.manifest,
    )
    print(f"added {entry['name']} ({entry['hub_id']}@{entry['revision']}) to {manifest_path(args.manifest)}")
    if not args.no_card:
        print(f"wrote {write_repo_card(args.export_dir, entry['name'], folder, hub_id=entry['hub_id'])}")


def run_list(args: argparse.Namespace) -> int:
    import json

    from ...zoo.manifest import format_table, load_manifest

    entries = load_manifest(args.manifest)
    print(json.dumps(entries, indent=2) if args.json else format_table(entries))
    return 0


def run_add(args: argparse.Namespace) -> int:
    add_to_zoo(args, args.hub_id, args.name, args.revision)
    return 0


def run_build(args: argparse.Namespace) -> int:
    """``gsg zoo build ENTRY``: the stages not done yet (pretraining on every torchrun rank)."""
    from pathlib import Path

    from ..zoo_build import Build, planned_entries

    entries = planned_entries()
    if not args.entry:
        print("\n".join(f"{name}: recipe {e.recipe}, hub {e.hub_id}" for name, e in entries.items()))
        return 0
    if args.entry not in entries:
        raise ValueError(f"unknown zoo entry {args.entry!r}; planned: {', '.join(entries)}")
    build = Build(
        entries[args.entry],
        Path(args.out or f"runs/zoo/{args.entry}"),
        args.data,
        args.push,
        args.push_dry_run,
    )
    print(build.describe())
    if args.dry_run:
        return 0
    import torch

    from ...core.distributed import init_distributed

    info = init_distributed("cuda" if torch.cuda.is_available() else "cpu")  # under torchrun: every rank
    try:
        build.run(info.rank, info.barrier)
    finally:
        info.close()
    if info.is_main:
        print(build.describe())
    return 0
