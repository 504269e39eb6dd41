"""The per-shard header index of foreign WebDataset shards: scanned once (in parallel), then cached.

The cache of a folder's shards is ``FOLDER/.gsg-wds-index.json``, or, when the folder is not writable
(and for URLs), a file named after the folder in ``$XDG_CACHE_HOME/gsg-zoo/wds-index`` (default
``~/.cache``). Each shard's entry is keyed by its size and mtime (an object's: size and ETag): a
changed shard is rescanned and named in a log line; a cache of other sample keys is not used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..core.checkpoint import atomic_write
from . import remote
from .shard_scan import SampleKeys, ShardIndex, scan_tar

log = logging.getLogger("gsg_zoo.data")

CACHE_NAME = ".gsg-wds-index.json"
CACHE_FORMAT = "gsg-wds-index/1"
PARALLEL_FROM = 4  # shards: fewer are scanned in this process


def scan_file(path: str, keys: SampleKeys) -> ShardIndex:
    """The index of the shard ``path`` (a local file or a URL; a pool's job)."""
    with remote.open_shard(path) as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(0)
        return scan_tar(f, path, size, keys)


def split_path(path: str) -> tuple[str, str]:
    """``(folder, name)`` of a path or URL."""
    folder, _, name = str(path).rpartition("/")
    return folder or ".", name


def cache_file(folder: str) -> Path:
    """Next to the shards when that folder is writable (local), else in the user cache."""
    if not remote.is_url(folder) and os.access(folder, os.W_OK):
        return Path(folder) / CACHE_NAME
    base = Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "gsg-zoo" / "wds-index"
    where = folder if remote.is_url(folder) else str(Path(folder).resolve())
    digest = hashlib.blake2b(where.encode(), digest_size=8).hexdigest()
    return base / f"{where.rstrip('/').rpartition('/')[2]}-{digest}.json"


def _stamp(path: str) -> list:
    """What tells a changed shard: size and mtime (a URL: size and ETag)."""
    if remote.is_url(path):
        return list(remote.info(path))
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def _load(file: Path, keys: SampleKeys) -> dict[str, dict]:
    """The cached shard entries of ``file`` (empty when absent, unreadable, or of other sample keys)."""
    try:
        cached = json.loads(file.read_text())
    except (OSError, ValueError):
        return {}
    if cached.get("format") != CACHE_FORMAT or cached.get("keys") != asdict(keys) | {
        "image": list(keys.image)
    }:
        return {}
    return cached.get("shards", {})


def _save(file: Path, keys: SampleKeys, shards: dict[str, dict]) -> None:
    doc = {"format": CACHE_FORMAT, "keys": asdict(keys) | {"image": list(keys.image)}, "shards": shards}
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(file, lambda p: Path(p).write_text(json.dumps(doc, separators=(",", ":"))))
    except OSError as err:  # a read-only cache costs a rescan next time, nothing else
        log.warning("cannot write the shard index cache %s: %s", file, err)


def shard_indexes(
    paths: list[str], keys: SampleKeys, progress: bool | None = None, workers: int | None = None
) -> list[ShardIndex]:
    """Each shard's index: from the cache where its size and mtime match, else scanned (and cached)."""
    folders: dict[str, dict[str, dict]] = {}
    out: list[ShardIndex | None] = []
    todo = []
    for p in paths:
        folder, name = split_path(p)
        if folder not in folders:
            folders[folder] = _load(cache_file(folder), keys)
        entry = folders[folder].get(name)
        if entry is not None and entry["stamp"] == _stamp(p):
            out.append(ShardIndex(**entry["index"]))
            continue
        if entry is not None:
            log.info("shard %s changed since it was indexed (size or mtime): rescanning it", p)
        out.append(None)
        todo.append(len(out) - 1)
    if todo:
        for i, index in zip(todo, _scan([paths[i] for i in todo], keys, progress, workers), strict=True):
            out[i] = index
            folder, name = split_path(paths[i])
            folders[folder][name] = {"stamp": _stamp(paths[i]), "index": asdict(index)}
        for folder, entries in folders.items():
            _save(cache_file(folder), keys, entries)
    return out  # type: ignore[return-value]


def _scan(paths: list[str], keys: SampleKeys, progress: bool | None, workers: int | None) -> list[ShardIndex]:
    """Scan ``paths`` with a progress bar, in up to ``workers`` forked processes (default: the CPUs, at
    most 8; forked, not spawned: a spawned worker would import torch through the package first)."""
    from tqdm import tqdm

    workers = workers or min(8, os.cpu_count() or 1)
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=len(paths), desc="indexing shards", unit="shard", disable=not show)
    with bar:
        if workers <= 1 or len(paths) < PARALLEL_FROM:
            results = []
            for p in paths:
                results.append(scan_file(p, keys))
                bar.update()
            return results
        import multiprocessing

        n = min(workers, len(paths))
        if any(remote.is_url(p) for p in paths):  # network-bound: threads (no forked event loops)
            pool_of: Any = ThreadPoolExecutor(n)
        else:
            pool_of = ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("fork"))
        with pool_of as pool:
            results = []
            for index in pool.map(scan_file, paths, [keys] * len(paths), chunksize=4):
                results.append(index)
                bar.update()
            return results
