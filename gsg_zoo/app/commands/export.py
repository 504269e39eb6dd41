"""``gsg export CKPT --out DIR``: the backbone as a verified timm Hub folder with a model card."""

from __future__ import annotations

import argparse

PATH = ("export",)
HELP = "export a pretraining checkpoint's backbone for timm / the Hugging Face Hub (verified)"


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ckpt", help="training checkpoint (RUN/checkpoints/last.pt)")
    parser.add_argument("--out", required=True, help="export directory to create")
    parser.add_argument("--name", help="model name (default: METHOD-ARCH)")
    parser.add_argument(
        "--hub-id", help="ORG/NAME the export will be pushed to (used in the card's snippets)"
    )
    parser.add_argument("--license", default="apache-2.0", help="license of the weights (default apache-2.0)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out directory")
    parser.add_argument(
        "--card-dir",
        default=None,
        help="also write the card as CARD_DIR/NAME/README.md (+ curves.png), e.g. model_cards; default: only DIR/README.md",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ...core.layout import PROVENANCE_FILE, read_json
    from ...zoo.cards import write_model_card
    from ...zoo.export import export_checkpoint

    out = export_checkpoint(
        args.ckpt, args.out, args.name, license=args.license, hub_id=args.hub_id, overwrite=args.overwrite
    )
    prov = read_json(out / PROVENANCE_FILE)
    if args.card_dir:
        write_model_card(out, prov["name"], hub_id=args.hub_id, cards_dir=args.card_dir)
    check = prov["reload_check"]
    print(f"exported {prov['name']} ({prov['architecture']}, {prov['method']}) to {out}")
    print(
        f"reload check: timm local-dir in a fresh process, max abs feature diff {check['max_abs_diff']:.3g} "
        f"(<= {check['atol']:g}); {'stock timm only' if check['stock_timm_only'] else 'needs `import gsg_zoo`'}"
    )
    print(f"files: {', '.join(sorted(p.name for p in out.iterdir()))}")
    return 0
