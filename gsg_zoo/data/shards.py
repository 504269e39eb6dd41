"""WebDataset tar shards: ``gsg data shard`` writes them, ``data.dataset: webdataset`` reads them.

Layout under ``ROOT``: ``shard-NNNNNN.tar`` files in the WebDataset format (one sample = the members
``KEY.jpg`` (or ``.png``, ...) and ``KEY.cls`` sharing a key; written with ``webdataset.TarWriter``),
each with an index ``shard-NNNNNN.idx.json`` (per sample: key, label, byte offset and size of the
image member, read from the tar headers), and ``manifest.json`` (shards, sample counts, byte sizes,
sha256 per shard, classes).

Reading is by index: a sample's image bytes are one ``seek`` + ``read`` in its shard, so the
dataset is map-style and the pretraining guarantees hold unchanged (the epoch-keyed sampler, views
seeded per item whatever the worker count, exact resume by fast-forwarding the sampler, replacement
of unreadable images). The original image bytes are kept (no re-encode); array datasets (CIFAR,
MNIST, the built-in data) are written as PNG. Shards written by other tools (no manifest) are read the
same way, their counts and offsets from a header scan (:mod:`.shard_sources`, :mod:`.shard_index`).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import random
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ..core.checkpoint import atomic_write
from . import remote
from .images import EncodedImage, open_image
from .shard_scan import IMAGE_EXTENSIONS, SampleKeys
from .shard_sources import MANIFEST, ShardSet, shard_set

log = logging.getLogger("gsg_zoo.data")

FORMAT = "gsg-webdataset/1"


def shard_name(i: int) -> str:
    return f"shard-{i:06d}.tar"


def raw_samples(dataset: Any, indices: list[int]) -> Iterator[tuple[int, bytes, str, int]]:
    """``(index, image bytes, extension, label)`` of ``indices``: a folder's files and a Hugging Face
    dataset's image bytes as they are, other datasets' images encoded as PNG."""
    inner = getattr(dataset, "dataset", dataset)
    files = getattr(inner, "samples", None)  # torchvision ImageFolder: [(path, label)]
    for i in indices:
        if hasattr(inner, "raw"):  # HFImages
            yield i, *inner.raw(i)
        elif files is not None:
            path, label = files[i]
            yield i, Path(path).read_bytes(), Path(path).suffix.lstrip(".").lower() or "jpg", int(label)
        else:
            image, label = inner[i]
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            yield i, buffer.getvalue(), "png", int(label)


def write_order(size: int, shuffle_seed: int | None) -> list[int]:
    """The order samples are written in: the dataset's, or a permutation seeded by ``shuffle_seed``
    (so that each shard is a random sample of the classes, which streaming needs)."""
    order = list(range(size))
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(order)
    return order


def index_tar(path: Path) -> list[dict[str, Any]]:
    """Per sample of a WebDataset tar: key, label and the offset/size of its image member."""
    samples: dict[str, dict[str, Any]] = {}
    with tarfile.open(path) as tar:
        for member in tar:
            key, _, ext = member.name.partition(".")
            entry = samples.setdefault(key, {"key": key})
            if ext in IMAGE_EXTENSIONS:
                entry.update(ext=ext, offset=member.offset_data, size=member.size)
            elif ext == "cls":
                entry["label"] = int(tar.extractfile(member).read().decode())
    return [s for s in samples.values() if "offset" in s]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_shards(
    dataset: Any,
    out: Path,
    max_count: int = 1000,
    classes: list[str] | None = None,
    progress: bool = True,
    max_size: int | None = None,
    shuffle_seed: int | None = None,
) -> Path:
    """Write ``dataset`` as shards of at most ``max_count`` samples and about ``max_size`` bytes, in the
    order of :func:`write_order`; resumable (the shards the manifest lists are kept)."""
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    manifest = _read_manifest(out) or {
        "format": FORMAT,
        "shards": [],
        "classes": classes or [],
        "shuffle_seed": shuffle_seed,
    }
    if manifest.get("shuffle_seed") != shuffle_seed:
        raise ValueError(
            f"{out} was written with shuffle seed {manifest.get('shuffle_seed')}, not {shuffle_seed}: "
            "resume with the same --shuffle-seed, or write to a new folder"
        )
    done = sum(s["samples"] for s in manifest["shards"])
    bar = tqdm(total=len(dataset), initial=done, desc="shards", disable=not progress, unit="img")
    samples = raw_samples(dataset, write_order(len(dataset), shuffle_seed)[done:])
    while done < len(dataset):
        name = shard_name(len(manifest["shards"]))
        count = _write_shard(out, name, samples, max_count, max_size or 1 << 62, bar)
        index = index_tar(out / name)
        atomic_write(
            out / name.replace(".tar", ".idx.json"), lambda p, i=index: Path(p).write_text(json.dumps(i))
        )
        manifest["shards"].append(
            {
                "name": name,
                "samples": count,
                "bytes": (out / name).stat().st_size,
                "sha256": _sha256(out / name),
            }
        )
        atomic_write(out / MANIFEST, lambda p, m=manifest: Path(p).write_text(json.dumps(m, indent=1)))
        done += count
    bar.close()
    return out / MANIFEST


def _write_shard(
    out: Path,
    name: str,
    samples: Iterator[tuple[int, bytes, str, int]],
    max_count: int,
    max_size: int,
    bar: Any,
) -> int:
    """Write the next samples to ``out/name`` (complete files only: written aside, then renamed)."""
    import webdataset as wds

    tmp, count = out / f".{name}.tmp", 0
    with wds.TarWriter(str(tmp)) as sink:
        for index, data, ext, label in samples:
            sink.write({"__key__": f"{index:09d}", ext: data, "cls": label})
            count += 1
            bar.update(1)
            if count == max_count or sink.tarstream.offset >= max_size:  # bytes written so far
                break
    os.replace(tmp, out / name)
    return count


def _read_manifest(root: Path) -> dict[str, Any] | None:
    path = root / MANIFEST if root.is_dir() else root
    return json.loads(path.read_text()) if path.exists() else None


def as_shard_set(source: ShardSet | str | os.PathLike, split: str = "train", **options: Any) -> ShardSet:
    """``source`` itself, or the shards the path or pattern ``source`` names (:func:`.shard_sources.shard_set`)."""
    if isinstance(source, ShardSet):
        return source
    return shard_set(source, split, SampleKeys.of(**{k: options[k] for k in WDS_OPTIONS if k in options}))


WDS_OPTIONS = (
    "image_keys",
    "label_key",
    "label_field",
)  # the recipe's data.wds keys, in SampleKeys.of's order


class ShardImages(Dataset):
    """``(PIL RGB image, label)`` by index over WebDataset shards (a :class:`.shard_sources.ShardSet` or a
    path it is read from); ``None`` for an image that cannot be read or decoded (logged with its shard).
    With ``encoded`` JPEGs are left encoded (:func:`.images.open_image`). ``unlabelled`` says why the
    shards lack labels (None: every sample has one)."""

    def __init__(self, source: ShardSet | str | os.PathLike, encoded: bool = False) -> None:
        self.encoded = encoded
        shards = as_shard_set(source)
        shards.check_sizes()
        self.classes, self.shards, self.items = shards.classes, list(shards.paths), []
        self.unlabelled: str | None = None
        for i, index in enumerate(shards.index()):
            self.items += zip([i] * len(index), index.offsets, index.sizes, index.labels, strict=True)
            if self.unlabelled is None and -1 in index.labels:
                key = index.keys[index.labels.index(-1)]
                self.unlabelled = f"sample {key!r} of {shards.paths[i]} has no label ({_label_hint(shards)})"
        self._files: dict[int, Any] = {}  # open shard files of this process (each worker its own)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def targets(self) -> list[int]:
        return [label for *_, label in self.items]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_files": {}}  # file handles do not cross into worker processes

    def __getitem__(self, index: int) -> tuple[Image.Image | EncodedImage, int] | None:
        shard, offset, size, label = self.items[index]
        try:
            data = self._read(shard, offset, size)
            if len(data) != size:
                raise OSError(f"read {len(data)} of {size} bytes")
            return open_image(data, self.encoded), label
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
            log.warning("unreadable image %d in shard %s: %s", index, self.shards[shard], err)
            return None

    def _read(self, shard: int, offset: int, size: int) -> bytes:
        """One image's bytes: a seek and a read (a URL: one ranged GET, retried)."""
        path = self.shards[shard]
        if remote.is_url(path):
            return remote.read_range(path, offset, size)
        f = self._files.get(shard) or self._files.setdefault(shard, open(path, "rb"))  # noqa: SIM115
        f.seek(offset)
        return f.read(size)


def _label_hint(shards: ShardSet) -> str:
    k = shards.keys
    if k.label == "none":
        return "data.wds.label_key=none"
    field = f" with field {k.field!r}" if k.label == "json" else ""
    return f"no .{k.label} member{field}: set data.wds.label_key (gsg eval: --label-key)"


def open_shards(root: str | os.PathLike, split: str, encoded: bool = False, **options: Any) -> ShardImages:
    """The registry's builder: the shards ``root`` names for ``split`` (:func:`.shard_sources.shard_set`)."""
    return ShardImages(as_shard_set(root, split, **options), encoded)
