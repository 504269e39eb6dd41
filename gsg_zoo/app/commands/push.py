"""``gsg push DIR --repo ORG/NAME``: upload a verified export to the Hugging Face Hub."""

from __future__ import annotations

import argparse

from .zoo import add_card_options, add_to_zoo, cards_dir

PATH = ("push",)
HELP = "push an export directory to the Hugging Face Hub (checksums verified first)"


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("export_dir", help="directory written by `gsg export`")
    parser.add_argument("--repo", required=True, help="Hub model repo ORG/NAME")
    parser.add_argument("--revision", help="branch to commit to (created if missing; default main)")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--message", help="commit message (default: describes the export)")
    parser.add_argument(
        "--dry-run", action="store_true", help="print files, sizes, sha256 and message; no network"
    )
    parser.add_argument(
        "--zoo-name", help="after a successful push, add the export to the zoo manifest under this name"
    )
    parser.add_argument("--manifest", help="zoo manifest for --zoo-name (default: the package's)")
    add_card_options(parser)
    parser.set_defaults(func=run, replace=False)


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from ...zoo.hub import push_export

    if args.zoo_name:
        cards_dir(args)  # fail before uploading, not after
    plan, commit = push_export(
        args.export_dir,
        args.repo,
        revision=args.revision,
        private=args.private,
        commit_message=args.message,
        dry_run=args.dry_run,
    )
    readme = Path(args.export_dir) / "README.md"
    if f"hf-hub:{args.repo}" not in readme.read_text():
        print(
            f"note: README.md's usage snippets do not name hf-hub:{args.repo}; re-export with "
            f"`--hub-id {args.repo}` to include them",
            file=sys.stderr,
        )
    if args.dry_run:
        print("dry run: nothing uploaded, no network used")
        print(plan.describe())
        return 0
    print(plan.describe())
    print(f"pushed: commit {commit['oid']} ({commit['url']})")
    if args.zoo_name:
        add_to_zoo(args, args.repo, args.zoo_name, commit["oid"] or "main")
    return 0
