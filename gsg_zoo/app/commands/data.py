"""``gsg data synth``: write the built-in procedural shapes dataset to disk."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

PATH = ("data", "synth")
HELP = "write the built-in synthetic shapes dataset as ImageFolder, COCO instances or mmseg folders"
OPTIONS = ("progress",)
FORMATS = ("imagefolder", "coco", "mmseg")


def register(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        f"{HELP}. Layouts under --out: imagefolder: ROOT/<split>/<class>/<index>.png; "
        "coco: ROOT/<split>/<index>.png + ROOT/annotations/instances_<split>.json; "
        "mmseg: ROOT/img_dir/<split>/ + ROOT/ann_dir/<split>/ (0 = background). Images are a pure "
        "function of (seed, split, index), so re-running reproduces the same files."
    )
    parser.add_argument("--out", required=True, type=Path, help="output root folder")
    parser.add_argument("--format", required=True, choices=FORMATS, help="on-disk layout")
    parser.add_argument("--num-images", type=int, default=1000, help="number of images (default 1000)")
    parser.add_argument(
        "--image-size", type=int, default=64, help="square side in pixels, 32..512 (default 64)"
    )
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    parser.add_argument(
        "--split", default="train", help="split name; also selects the images (default train)"
    )
    parser.add_argument(
        "--num-classes", type=int, default=10, help="use the first N of the 10 shapes (default 10)"
    )
    parser.add_argument(
        "--segmentation",
        choices=("polygon", "rle"),
        default="polygon",
        help="COCO mask encoding (default polygon)",
    )
    parser.add_argument(
        "--grid", type=Path, default=None, help="also save a PNG contact sheet of the first 64 images"
    )
    parser.add_argument("--workers", type=int, default=0, help="render and encode in N processes (default 0)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ...data.synthetic import SyntheticShapes, sample_grid
    from ...data.writers import write_coco, write_imagefolder, write_mmseg

    ds = SyntheticShapes(
        args.num_images, args.image_size, seed=args.seed, split=args.split, num_classes=args.num_classes
    )
    kw = {"progress": not args.no_progress, "workers": args.workers}
    start = time.perf_counter()
    if args.format == "imagefolder":
        written = write_imagefolder(ds, args.out / args.split, **kw)
    elif args.format == "coco":
        written = write_coco(ds, args.out, args.split, segmentation=args.segmentation, **kw)
    else:
        written = write_mmseg(ds, args.out, args.split, **kw)
    seconds = time.perf_counter() - start
    if args.grid is not None:
        args.grid.parent.mkdir(parents=True, exist_ok=True)
        sample_grid(ds, 64).save(args.grid)
    summary = {
        "format": args.format,
        "written": str(written),
        "num_images": len(ds),
        "image_size": ds.image_size,
        "classes": ds.classes,
        "seed": ds.seed,
        "split": ds.split,
        "seconds": round(seconds, 2),
        "images_per_s": round(len(ds) / max(seconds, 1e-9), 1),
    }
    print(json.dumps(summary))
    return 0
