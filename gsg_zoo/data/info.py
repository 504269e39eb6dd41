"""What a dataset source holds, for ``gsg data info PATH_OR_ID``: format, splits, samples, classes, keys.

:func:`describe` recognises the formats the readers take, in this order: a Hugging Face ``save_to_disk``
folder, WebDataset shards (a gsg manifest, ``.tar`` files, a pattern, a list file, a wids index), a
folder of parquet files or a Hub id (``hf``), a torchvision ImageFolder (``ROOT/<split>/<class>/``) and
an unlabeled image folder (``folder``). Each split is opened by the reader training would use, so what
it reports (or the error it raises) is what a run would see.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path
from typing import Any

from . import remote
from .shard_scan import SampleKeys, samples_of
from .shard_sources import KNOWN_SPLITS, MANIFEST, shard_set


def describe(source: str, keys: SampleKeys | None = None) -> dict[str, Any]:
    """``{"source", "format", "dataset", "splits": {name: {...}}}`` for ``source`` (see the module)."""
    path = Path(os.path.expanduser(source))
    kind = detect(path, source)
    splits = {
        "webdataset": lambda: _shard_splits(path, source, keys or SampleKeys()),
        "hf": lambda: _hf_splits(source),
        "imagefolder": lambda: _imagefolder_splits(path),
        "folder": lambda: _folder_splits(path),
    }[kind]()
    return {"source": source, "format": FORMATS[kind], "dataset": kind, "splits": splits}


FORMATS = {
    "webdataset": "WebDataset tar shards",
    "hf": "Hugging Face dataset",
    "imagefolder": "ImageFolder (ROOT/<split>/<class>/<image>)",
    "folder": "unlabeled image folder",
}


def detect(path: Path, source: str) -> str:
    """The registry name of the reader for ``source``; FileNotFoundError when none applies."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    if path.is_dir():
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            return "hf"
        if any(path.glob(f"*/{MANIFEST}")) or (path / MANIFEST).exists() or _tars(path):
            return "webdataset"
        if any(path.rglob("*.parquet")) or (path / "README.md").exists():
            return "hf"
        classes = [c for d in _dirs(path) for c in _dirs(d)]
        if classes and all(any(f.suffix.lower() in IMG_EXTENSIONS for f in c.iterdir()) for c in classes):
            return "imagefolder"
        return "folder"
    if path.is_file() or remote.is_url(source) or "::" in source or any(c in source for c in "{*?["):
        return "webdataset"
    if source.count("/") == 1:
        return "hf"  # a Hub id
    raise FileNotFoundError(f"{source}: no such folder, file, pattern or Hub id (ORG/NAME)")


def _dirs(path: Path) -> list[Path]:
    return sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))


def _tars(path: Path) -> list[Path]:
    return sorted(path.glob("*.tar")) or sorted(path.glob("*/*.tar"))


def _shard_splits(path: Path, source: str, keys: SampleKeys) -> dict[str, Any]:
    if not path.is_dir():
        return {"(given)": _shards(source, "train", keys)}
    names = [d.name for d in _dirs(path) if (d / MANIFEST).exists() or any(d.glob("*.tar"))]
    if not names:
        words = {
            w
            for p in path.glob("*.tar")
            for w in p.name.lower().replace("_", "-").replace(".", "-").split("-")
        }
        names = [w for w in KNOWN_SPLITS if w in words] or ["train"]
    return {name: _shards(str(path), name, keys) for name in names}


def _shards(source: str, split: str, keys: SampleKeys) -> dict[str, Any]:
    shards = shard_set(source, split, keys)
    labels = [y for index in shards.index() for y in index.labels]
    with remote.open_shard(shards.paths[0]) as f, tarfile.open(fileobj=f, mode="r:") as tar:
        first = next(samples_of(tar), ("", []))
    members = sorted(m.name[len(first[0]) + 1 :].lower() for m in first[1])
    return {
        "samples": shards.total,
        "shards": len(shards.paths),
        "bytes": sum(remote.info(p)[0] if remote.is_url(p) else os.path.getsize(p) for p in shards.paths),
        "classes": len({y for y in labels if y >= 0}),
        "unlabelled": sum(y < 0 for y in labels),
        "image_key": keys.image_of(members),
        "label_key": keys.label if keys.label != "json" else f"json:{keys.field}",
        "members": members,
        "counts_from": shards.kind,
    }


def _hf_splits(source: str) -> dict[str, Any]:
    import datasets

    from .hf import load_split

    path = Path(os.path.expanduser(source))
    if (path / "dataset_dict.json").exists():
        names = list(datasets.load_from_disk(str(path)))
    elif path.is_dir():
        names = list(datasets.load_dataset_builder(str(path)).config.data_files or {})
    else:
        names = ["train", "test"]
    out = {}
    for name in names:
        table = load_split(source, name)
        features = table.features
        image = next((k for k, v in features.items() if type(v).__name__ == "Image"), None)
        label = next((k for k, v in features.items() if type(v).__name__ == "ClassLabel"), None)
        out[name] = {
            "samples": len(table),
            "bytes": sum(os.path.getsize(f["filename"]) for f in table.cache_files) or None,
            "classes": len(features[label].names) if label else None,
            "image_key": image,
            "label_key": label,
            "columns": table.column_names,
        }
    return out


def _imagefolder_splits(path: Path) -> dict[str, Any]:
    from .readers import image_folder

    out = {}
    for split in _dirs(path):
        images = image_folder(path, split.name)
        out[split.name] = {
            "samples": len(images),
            "bytes": sum(os.path.getsize(p) for p, _ in images.samples),
            "classes": len(images.classes),
            "label_key": "the class folder",
        }
    return out


def _folder_splits(path: Path) -> dict[str, Any]:
    from .readers import image_files

    files = image_files(path)
    if not files:
        raise FileNotFoundError(f"{path}: no dataset found (no shards, parquet files or image files)")
    return {"(all)": {"samples": len(files), "bytes": sum(p.stat().st_size for p in files), "classes": 0}}
