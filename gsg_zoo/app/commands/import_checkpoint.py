"""``gsg import PATH --out DIR``: another code base's SSL checkpoint as a verified timm export."""

from __future__ import annotations

import argparse

PATH = ("import",)
HELP = (
    "convert an SSL checkpoint of another code base (GSG authors' / SimSiam, MoCo v2/v3, solo-learn, "
    "lightly, mmselfsup, VISSL, torchvision/timm) into a verified timm export"
)
FORMATS = ("auto", "gsg", "simsiam", "moco", "mocov3", "solo", "lightly", "mmselfsup", "vissl", "timm")


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="the checkpoint file (e.g. checkpoint_0099.pth.tar)")
    parser.add_argument("--out", required=True, help="export directory to create")
    parser.add_argument(
        "--format", default="auto", choices=FORMATS, help="source layout (default: detect it)"
    )
    parser.add_argument(
        "--encoder",
        default="online",
        choices=("online", "target"),
        help="online backbone (default) or the target/momentum one (BYOL, MoCo, solo-learn, lightly, mm)",
    )
    parser.add_argument("--arch", help="timm architecture (default: inferred from the weights)")
    parser.add_argument("--name", help="model name (default: FORMAT-ARCH)")
    parser.add_argument("--method", help="training method, as you know it (the files do not record it)")
    parser.add_argument(
        "--hub-id", help="ORG/NAME the export will be pushed to (used in the card's snippets)"
    )
    parser.add_argument("--license", default="apache-2.0", help="license of the weights (default apache-2.0)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out directory")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ...core.layout import PROVENANCE_FILE, read_json
    from ...zoo.export import import_checkpoint

    out = import_checkpoint(
        args.path,
        args.out,
        args.name,
        fmt=args.format,
        encoder=args.encoder,
        arch=args.arch,
        method=args.method,
        license=args.license,
        hub_id=args.hub_id,
        overwrite=args.overwrite,
    )
    prov = read_json(out / PROVENANCE_FILE)
    src, check = prov["source"], prov["reload_check"]
    print(f"imported {prov['name']} ({prov['architecture']}) from {src['format']}: {src['conversion']}")
    print("dropped: " + ("; ".join(f"{g} ({n} tensors)" for g, n in src["dropped"].items()) or "nothing"))
    print(
        f"reload check: timm local-dir in a fresh process, max abs feature diff {check['max_abs_diff']:.3g} "
        f"(<= {check['atol']:g}); files in {out}: {', '.join(sorted(p.name for p in out.iterdir()))}"
    )
    return 0
