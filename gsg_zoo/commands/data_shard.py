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
    p.add_argument("--max-count", type=int, default=1000, help="samples per shard (default 1000)")
    p.add_argument("--num-images", type=int, default=4000, help="synthetic SRC only: number of images")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..data.registry import get_info, open_split
    from ..data.shards import write_shards

    source = open_split(
        get_info(args.source), args.data, args.split, args.download, num_images=args.num_images
    )
    start = time.perf_counter()
    manifest = write_shards(source, Path(args.out), args.max_count, list(getattr(source, "classes", []) or []),
                            progress=not args.no_progress)  # fmt: skip
    shards = json.loads(manifest.read_text())["shards"]
    print(json.dumps({"manifest": str(manifest), "shards": len(shards), "samples": sum(s["samples"] for s in shards),
                      "seconds": round(time.perf_counter() - start, 2)}))  # fmt: skip
    return 0
