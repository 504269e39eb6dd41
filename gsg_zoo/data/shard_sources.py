"""Where WebDataset shards come from: ``data.root`` as a folder, a pattern, a list file or an index.

:func:`shard_set` turns ``data.root`` (and the split) into a :class:`ShardSet`: the shard files, their
sample counts and sizes, and (on demand) each shard's header index. Counts come from, in this order,
a gsg ``manifest.json``, a wids shard-index JSON (``wids-shard-index-v1``) naming the same shards, or
a header scan (:mod:`.shard_index`, cached). Accepted: a folder (its ``<split>/`` or its ``*.tar``,
those named after the split when the names carry one), a brace pattern (``a-{0000..0099}.tar``),
several joined by ``::``, a glob, a text file of one path or pattern a line, a wids JSON, one ``.tar``;
and URLs of object stores (:mod:`.remote`): patterns, a ``.tar``, a prefix.
"""

from __future__ import annotations

import glob
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import remote
from .shard_index import shard_indexes
from .shard_scan import SampleKeys, ShardIndex

MANIFEST = "manifest.json"
WIDS_KIND = "wids-shard-index-v1"
SPLIT_WORDS = {"test": ("test", "validation", "val"), "val": ("val", "validation")}
KNOWN_SPLITS = ("train", "test", "val", "validation", "valid", "dev")


@dataclass
class ShardSet:
    """Shard files with their sample counts and byte sizes (``None``: not known before a scan)."""

    paths: list[str]
    counts: list[int]
    sizes: list[int | None]
    keys: SampleKeys
    source: str  # what data.root named, for errors and ``gsg data info``
    kind: str  # gsg | wids | scan
    classes: list[str] = field(default_factory=list)
    indexes: list[ShardIndex] | None = None  # loaded by :meth:`index`

    @property
    def total(self) -> int:
        return sum(self.counts)

    def index(self, progress: bool | None = None) -> list[ShardIndex]:
        """Each shard's header index (gsg: its ``.idx.json``; else the cache or a scan)."""
        if self.indexes is None:
            if self.kind == "gsg":
                self.indexes = [_gsg_index(Path(p)) for p in self.paths]
            else:
                self.indexes = shard_indexes(self.paths, self.keys, progress)
                if self.kind == "wids":
                    _check_counts(self)
        return self.indexes

    def check_sizes(self) -> None:
        """ValueError naming the first shard missing or of another size than listed."""
        for path, want in zip(self.paths, self.sizes, strict=True):
            if want is None:
                continue
            if remote.is_url(path):
                size = remote.info(path)[0]
            else:
                size = os.path.getsize(path) if os.path.exists(path) else None
            if size != want:
                fix = "re-run `gsg data shard`" if self.kind == "gsg" else f"update or remove {self.source}"
                raise ValueError(
                    f"shard {path} is {'missing' if size is None else f'{size} bytes'}, {self.source} "
                    f"says {want}: truncated or replaced; {fix}"
                )


def _gsg_index(path: Path) -> ShardIndex:
    entries = json.loads(path.with_name(path.name.replace(".tar", ".idx.json")).read_text())
    return ShardIndex(
        [s["key"] for s in entries],
        [s["offset"] for s in entries],
        [s["size"] for s in entries],
        [s.get("label", -1) for s in entries],
    )


def _check_counts(shards: ShardSet) -> None:
    for path, want, index in zip(shards.paths, shards.counts, shards.indexes or [], strict=True):
        if want != len(index):
            raise ValueError(
                f"{path} holds {len(index)} samples, {shards.source} says {want}: update or remove it"
            )


def shard_set(root: str | os.PathLike, split: str = "train", keys: SampleKeys | None = None) -> ShardSet:
    """The shards ``root`` names for ``split`` (see the module); FileNotFoundError / ValueError say why not."""
    keys, text = keys or SampleKeys(), os.path.expanduser(str(root))
    if remote.is_url(text):
        return _url(text, split, keys)
    path = Path(text)
    if path.is_dir():
        return _folder(path, split, keys)
    if path.name == MANIFEST and path.is_file():
        return _manifest(path.parent, keys)
    if path.suffix == ".json" and path.is_file():
        return _wids(path, keys)
    if path.suffix == ".tar" and path.is_file():
        return scanned([str(path)], text, keys)
    if path.is_file():
        return scanned(_list_file(path), text, keys)
    if "::" in text or any(c in text for c in "{*?["):
        return scanned(expand(text), text, keys)
    raise FileNotFoundError(
        f"{text}: no such folder, shard, list file or pattern; give a folder of .tar shards, a pattern "
        "such as DIR/train-{0000..0099}.tar, or a text file listing the shards"
    )


def expand(pattern: str, base: Path | None = None) -> list[str]:
    """Shard paths of a ``::``-joined list of brace patterns and globs; every one must exist."""
    import braceexpand

    out = []
    for part in pattern.split("::"):
        part = os.path.expanduser(part.strip())
        if base is not None and not os.path.isabs(part) and not remote.is_url(part):
            part = str(base / part)
        url = remote.is_url(part)
        names = list(braceexpand.braceexpand(part))
        if any(c in part for c in "*?["):
            names = [f for name in names for f in (remote.glob(name) if url else sorted(glob.glob(name)))]
        missing = [n for n in names if not (remote.exists(n) if url else os.path.isfile(n))]
        if not names or missing:
            some = (
                f"{len(missing)} of its {len(names)} shards are missing, e.g. {missing[0]}"
                if missing
                else "it matches nothing"
            )
            raise FileNotFoundError(f"pattern {part}: {some}; check the folder and the range")
        out += names
    return out


def _list_file(path: Path) -> list[str]:
    """A text file of shard paths or patterns, one a line (``#`` comments; relative to the file)."""
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        raise ValueError(f"{path} is neither a .tar shard nor a text file listing shards") from None
    entries = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not entries:
        raise ValueError(f"{path} lists no shards: one path or pattern a line")
    return [p for entry in entries for p in expand(entry, path.parent)]


def scanned(paths: list[str], source: str, keys: SampleKeys, wids: dict[str, Any] | None = None) -> ShardSet:
    """A set whose counts come from ``wids`` (path -> entry) when it names every shard, else a scan."""
    if not paths:
        raise FileNotFoundError(f"{source}: no .tar shards there")
    if wids and all(os.path.abspath(p) in wids for p in paths):
        entries = [wids[os.path.abspath(p)] for p in paths]
        counts, sizes = [int(e["nsamples"]) for e in entries], [e.get("filesize") for e in entries]
        return ShardSet(paths, counts, sizes, keys, source, "wids")
    shards = ShardSet(paths, [], [None] * len(paths), keys, source, "scan")
    shards.counts = [len(index) for index in shards.index()]
    return shards


def _url(url: str, split: str, keys: SampleKeys) -> ShardSet:
    """A URL: a pattern, one ``.tar``, or a prefix ("folder") whose ``*.tar`` (or ``<split>/*.tar``) are read."""
    if "::" in url or any(c in url for c in "{*?[") or url.endswith(".tar"):
        return scanned(expand(url), url, keys)
    base = url.rstrip("/")
    tars = remote.glob(f"{base}/{split}/*.tar") or _split_tars(remote.glob(f"{base}/*.tar"), split, base)
    return scanned(tars, url, keys)


def _folder(path: Path, split: str, keys: SampleKeys) -> ShardSet:
    for folder in (path / split, path):
        if (folder / MANIFEST).is_file():
            return _manifest(folder, keys)
    folder = path / split if (path / split).is_dir() else path
    tars = sorted(str(p) for p in folder.glob("*.tar"))
    if folder == path:
        tars = _split_tars(tars, split, path)
    return scanned(tars, str(path), keys, _wids_near(folder))


def _split_tars(tars: list[str], split: str, folder: Path | str) -> list[str]:
    """The tars named after ``split`` when the names carry splits (``in1k-train-0000.tar``), else all."""

    def words(p: str) -> set[str]:
        return set(re.split(r"[-_.]", Path(p).name.lower()))

    named = sorted({w for p in tars for w in words(p) if w in KNOWN_SPLITS})
    if not named:
        return tars
    for word in SPLIT_WORDS.get(split, (split,)):
        chosen = [p for p in tars if word in words(p)]
        if chosen:
            return chosen
    raise ValueError(
        f"{folder} has shards of the splits {', '.join(named)}, not {split!r}: choose one of those "
        "(data.split, --split) or point at the shards with a pattern"
    )


def _manifest(folder: Path, keys: SampleKeys) -> ShardSet:
    manifest = json.loads((folder / MANIFEST).read_text())
    shards = manifest["shards"]
    return ShardSet(
        [str(folder / s["name"]) for s in shards],
        [s["samples"] for s in shards],
        [s["bytes"] for s in shards],
        keys,
        str(folder / MANIFEST),
        "gsg",
        manifest.get("classes", []),
    )


def _wids_entries(file: Path) -> dict[str, Any] | None:
    """wids shard-index JSON ``file`` as absolute shard path -> entry, or None if it is not one."""
    try:
        doc = json.loads(file.read_text()) if file.stat().st_size < 64 << 20 else {}
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("__kind__") != WIDS_KIND:
        return None
    base = Path(os.path.expanduser(doc.get("base_path") or str(file.parent)))
    return {os.path.abspath(base / e["url"]): e for e in doc.get("shardlist", [])}


def _wids_near(folder: Path) -> dict[str, Any]:
    """Every wids shard index among the JSON files of ``folder``, merged."""
    out: dict[str, Any] = {}
    for file in sorted(f for f in folder.glob("*.json") if not f.name.startswith(".")):  # not our cache
        out.update(_wids_entries(file) or {})
    return out


def _wids(file: Path, keys: SampleKeys) -> ShardSet:
    entries = _wids_entries(file)
    if entries is None:
        raise ValueError(f"{file} is not a wids shard index ({WIDS_KIND}) nor a gsg {MANIFEST}")
    missing = [p for p in entries if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"{file} lists {len(missing)} shards that do not exist, e.g. {missing[0]}")
    return scanned(list(entries), str(file), keys, entries)
