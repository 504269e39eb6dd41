"""``gsg data info PATH_OR_ID``: what a dataset source holds, checked with the readers a run would use."""

from __future__ import annotations

import argparse
import json

PATH = ("data", "info")
HELP = "show what a dataset source holds: format, splits, samples, classes, label and image keys, bytes"
OPTIONS = ("debug",)


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "source",
        metavar="PATH_OR_ID",
        help="a folder, WebDataset shards (folder, DIR/x-{0000..0099}.tar, a list file, a wids index), "
        "a Hugging Face folder or Hub id ORG/NAME",
    )
    p.add_argument("--image-keys", default=None, help="WebDataset: image member extensions, first present")
    p.add_argument("--label-key", default="cls", help="WebDataset: cls, txt, json or none (default cls)")
    p.add_argument("--label-field", default="label", help="WebDataset --label-key json: the label's field")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ...data.info import describe
    from ...data.shard_scan import SampleKeys

    keys = SampleKeys.of(args.image_keys, args.label_key, args.label_field)
    print(json.dumps(describe(args.source, keys), indent=1))
    return 0
