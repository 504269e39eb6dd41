"""``gsg data shard SRC --out DIR``: write a dataset as WebDataset tar shards with an index and manifest."""

from __future__ import annotations

import argparse
import json
import time

PATH = ("data", "shard")
HELP = "write any registry dataset as WebDataset tar shards (original image bytes kept) + index + manifest"
OPTIONS = ("dataset", "progress")


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "source", metavar="SRC", help="registry dataset name (imagefolder, cifar10, fashion_mnist, ...)"
    )
    p.add_argument("--out", required=True, help="shard folder (e.g. ROOT/train; read with data.root=ROOT)")
    p.add_argument("--split", default="train", help="split of SRC to write (default train)")
    p.add_argument("--format", default="webdataset", choices=("webdataset",), help="shard format")
    p.add_argument("--max-count", type=int, default=1000, help="at most N samples per shard (default 1000)")
    p.add_argument(
        "--max-size",
        type=parse_size,
        default=None,
        help="also close a shard at about this size: bytes, or with K/M/G (e.g. 1G)",
    )
    p.add_argument(
        "--shuffle-seed",
        type=int,
        default=0,
        help="write the samples in the order of a permutation with this seed, so each shard is a random "
        "sample of the classes (default 0; streaming reads need it)",
    )
    p.add_argument(
        "--no-shuffle",
        dest="shuffle_seed",
        action="store_const",
        const=None,
        help="write the samples in the dataset's order (e.g. ImageFolder's: class by class)",
    )
    p.add_argument("--num-images", type=int, default=4000, help="synthetic SRC only: number of images")
    p.add_argument("--image-column", default="image", help="hf SRC only: the image column (default image)")
    p.add_argument("--label-column", default="label", help="hf SRC only: the label column (default label)")
    p.set_defaults(func=run)


def parse_size(text: str) -> int:
    """``1G`` -> 2**30, ``500M``, ``64K``, or plain bytes."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    text = text.strip().upper().removesuffix("B")
    try:
        size = int(float(text[:-1]) * units[text[-1]]) if text[-1:] in units else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 1G, 500M or 1000000)") from None
    if size <= 0:
        raise argparse.ArgumentTypeError(f"the size must be positive, not {text!r}")
    return size


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ...data.registry import get_info, open_split
    from ...data.shards import write_shards

    source = open_split(
        get_info(args.source),
        args.data,
        args.split,
        args.download,
        num_images=args.num_images,
        image_column=args.image_column,
        label_column=args.label_column,
    )
    start = time.perf_counter()
    manifest = write_shards(
        source,
        Path(args.out),
        args.max_count,
        list(getattr(source, "classes", []) or []),
        progress=not args.no_progress,
        max_size=args.max_size,
        shuffle_seed=args.shuffle_seed,
    )
    shards = json.loads(manifest.read_text())["shards"]
    print(
        json.dumps(
            {
                "manifest": str(manifest),
                "shards": len(shards),
                "samples": sum(s["samples"] for s in shards),
                "seconds": round(time.perf_counter() - start, 2),
            }
        )
    )
    return 0
