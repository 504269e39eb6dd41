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
    add.add_argument("--card-dir", default=None, help="also write CARD_DIR/NAME.md (default: model_cards/)")
    add.add_argument("--no-card", action="store_true", help="do not write the repository's model card")
    add.set_defaults(func=run_add)
    parser.set_defaults(func=run_list, json=False, manifest=None)


def run_list(args: argparse.Namespace) -> int:
    import json

    from ..zoo import format_table, load_manifest

    entries = load_manifest(args.manifest)
    print(json.dumps(entries, indent=2) if args.json else format_table(entries))
    return 0


def run_add(args: argparse.Namespace) -> int:
    from ..zoo import add_entry, manifest_path

    entry = add_entry(
        args.export_dir,
        args.hub_id,
        name=args.name,
        revision=args.revision,
        replace=args.replace,
        manifest=args.manifest,
    )
    print(f"added {entry['name']} ({entry['hub_id']}@{entry['revision']}) to {manifest_path(args.manifest)}")
    if not args.no_card:
        from ..cards import DEFAULT_CARDS_DIR, write_repo_card

        card = write_repo_card(
            args.export_dir, entry["name"], args.card_dir or DEFAULT_CARDS_DIR, hub_id=entry["hub_id"]
        )
        print(f"wrote {card}")
    return 0
