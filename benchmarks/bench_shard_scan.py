"""The header scan of foreign WebDataset shards (no gsg manifest) and the cached re-open.

    python benchmarks/bench_shard_scan.py --shards 20 --per-shard 1000 --out benchmarks/results/shard_scan_cpu.json

Writes ``--shards`` tars with webdataset's ``ShardWriter`` (``KEY.jpg`` of ``--bytes`` random bytes and
``KEY.cls``), then times ``shard_indexes`` scanning them with 1 and with 2 forked processes (no cache),
and ``shard_set(FOLDER)`` opening the folder from the index cache the scan left. Prints and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write(folder: Path, shards: int, per_shard: int, size: int) -> int:
    """``shards`` x ``per_shard`` samples in ``folder`` (webdataset's ShardWriter); total bytes."""
    import webdataset as wds

    rng = np.random.default_rng(0)
    payload = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    pattern = str(folder / "train-%06d.tar")
    with wds.ShardWriter(pattern, maxcount=per_shard, verbose=0) as sink:
        for i in range(shards * per_shard):
            sink.write({"__key__": f"{i:08d}", "jpg": payload, "cls": str(i % 10).encode()})
    return sum(f.stat().st_size for f in folder.glob("*.tar"))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=int, default=20)
    ap.add_argument("--per-shard", type=int, default=1000)
    ap.add_argument("--bytes", type=int, default=9000, help="bytes per image (ImageNet-wds: ~110 KB)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    from gsg_zoo.data.shard_index import CACHE_NAME, shard_indexes
    from gsg_zoo.data.shard_scan import SampleKeys
    from gsg_zoo.data.shard_sources import shard_set

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        total = write(folder, args.shards, args.per_shard, args.bytes)
        paths = sorted(str(p) for p in folder.glob("*.tar"))
        seconds = {}
        for workers in (1, 2):
            (folder / CACHE_NAME).unlink(missing_ok=True)
            seconds[f"scan_{workers}_process"] = timed(
                lambda w=workers: shard_indexes(paths, SampleKeys(), False, w)
            )
        cache_mb = (folder / CACHE_NAME).stat().st_size / 2**20
        seconds["open_from_cache"] = timed(lambda: shard_set(str(folder)))
    samples = args.shards * args.per_shard
    result = {
        "protocol": "header scan of webdataset ShardWriter tars (bench_shard_scan.py)",
        "command": " ".join(["python", "benchmarks/bench_shard_scan.py", *sys.argv[1:]]),
        "shards": args.shards,
        "samples": samples,
        "bytes": total,
        "cache_mb": round(cache_mb, 2),
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "ms_per_sample_1_process": round(1000 * seconds["scan_1_process"] / samples, 4),
        "context": {
            "cpus": os.cpu_count(),
            "load_average_1min": os.getloadavg()[0],
            "python": platform.python_version(),
        },
    }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
