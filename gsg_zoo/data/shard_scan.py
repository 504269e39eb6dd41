"""Header-only scans of WebDataset tars written by any tool, and the index they give, cached.

One pass over a tar's headers (``tarfile``: image members are skipped by a seek, only the small label
members are read) gives each sample's key, the offset and size of its image member, and its label.
Members are grouped into samples as webdataset groups them (``base_plus_ext``, regular files only,
``__x__`` meta members skipped), so the counts are those the streamed reader sees. Torch-free, so the
scan runs in worker processes. Caching and the parallel scan: :mod:`.shard_index`.
"""

from __future__ import annotations

import json
import re
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp")  # an image member: the first of these present
LABEL_KEYS = ("cls", "txt", "json", "none")
_META = re.compile(r"__[^/]*__($|/)")  # webdataset's skip_meta


class ShardError(ValueError):
    """A shard that cannot be read as WebDataset samples; the message names it and what to do."""


@dataclass(frozen=True)
class SampleKeys:
    """Which member of a sample is its image (the first of ``image`` present) and where its label is:
    ``cls`` or ``txt`` (an integer), ``json`` (its field ``field``) or ``none`` (unlabelled)."""

    image: tuple[str, ...] = IMAGE_EXTENSIONS
    label: str = "cls"
    field: str = "label"

    @classmethod
    def of(cls, image_keys: Any = None, label_key: str = "cls", label_field: str = "label") -> SampleKeys:
        """From the recipe's ``data.wds`` values (``image_keys`` a list or ``"jpg,png"``)."""
        keys = image_keys.split(",") if isinstance(image_keys, str) else list(image_keys or IMAGE_EXTENSIONS)
        if label_key not in LABEL_KEYS:
            raise ValueError(f"data.wds.label_key={label_key!r} is not one of {', '.join(LABEL_KEYS)}")
        return cls(tuple(k.strip().lower().lstrip(".") for k in keys if k.strip()), label_key, label_field)

    def image_of(self, exts: Any) -> str | None:
        """The image member's extension among a sample's ``exts``, or None."""
        return next((e for e in self.image if e in exts), None)

    def label_of(self, read: Callable[[str], bytes], exts: Any, where: str) -> int:
        """The label (-1 when the sample has no label member); ``read(ext)`` gives a member's bytes."""
        if self.label == "none" or self.label not in exts:
            return -1
        raw = read(self.label)
        try:
            value = json.loads(raw)[self.field] if self.label == "json" else raw.decode().strip()
            return int(value)
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
            what = f"field {self.field!r} of its .json" if self.label == "json" else f"its .{self.label}"
            raise ShardError(
                f"{where}: {what} is not an integer class index ({err!r}); set data.wds.label_key "
                "(cls, txt, json + data.wds.label_field) or data.wds.label_key=none"
            ) from err


@dataclass
class ShardIndex:
    """One shard's samples in file order: keys, image offsets and sizes, labels (-1: none)."""

    keys: list[str] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.keys)


def samples_of(tar: tarfile.TarFile) -> Iterator[tuple[str, list[tarfile.TarInfo]]]:
    """``(key, members)`` per sample, in file order, as webdataset groups them (headers only)."""
    from webdataset.tariterators import base_plus_ext

    key, members = None, []
    for member in tar:
        tar.members = []  # keep no list of the whole shard's headers
        if not member.isreg() or _META.match(member.name):
            continue
        prefix = base_plus_ext(member.name)[0]
        if prefix is None:
            continue
        if prefix != key and members:
            yield key, members  # type: ignore[misc]
            members = []
        key = prefix
        members.append(member)
    if members:
        yield key, members  # type: ignore[misc]


def member_ext(member: tarfile.TarInfo, key: str) -> str:
    return member.name[len(key) + 1 :].lower()


def scan_tar(f: IO[bytes], name: str, size: int, keys: SampleKeys) -> ShardIndex:
    """The index of the tar ``f`` (``size`` bytes, named ``name`` in errors); ShardError for a file
    that is no tar, is cut short, mixes the members of its samples or has a sample without image."""
    index, seen = ShardIndex(), set()
    try:
        with tarfile.open(fileobj=f, mode="r:") as tar:
            for key, members in samples_of(tar):
                by_ext = {member_ext(m, key): m for m in members}
                if key in seen or len(by_ext) < len(members):
                    raise ShardError(
                        f"{name}: the members of sample {key!r} are not next to each other (mixed member "
                        "keys); webdataset needs each sample's files in a row: rewrite the tar sorted by "
                        "name (tar --sort=name) or with webdataset.ShardWriter"
                    )
                seen.add(key)
                image = keys.image_of(by_ext)
                if image is None:
                    raise ShardError(
                        f"{name}: sample {key!r} has no image member ({', '.join(keys.image)}), only "
                        f"{', '.join(sorted(by_ext))}: set data.wds.image_keys to its image's extension"
                    )
                where = f"{name}: sample {key!r}"
                label = keys.label_of(lambda e, m=by_ext: tar.extractfile(m[e]).read(), by_ext, where)
                index.keys.append(key)
                index.offsets.append(by_ext[image].offset_data)
                index.sizes.append(by_ext[image].size)
                index.labels.append(label)
            end = tar.offset
    except tarfile.TarError as err:
        raise ShardError(
            f"{name} is not a tar file ({err}): re-download it, or remove it from the list"
        ) from err
    _check_end(f, name, size, end, index)
    return index


def _check_end(f: IO[bytes], name: str, size: int, end: int, index: ShardIndex) -> None:
    """A tar ends at end-of-file or in zero blocks; tarfile stops quietly at a bad header or a cut."""
    last = index.offsets[-1] + index.sizes[-1] if index.keys else 0
    f.seek(min(end, size))
    tail = f.read(512)
    if last > size or end > size or tail.strip(b"\0"):
        cut = f"it ends at byte {size}" if max(last, end) > size else f"unreadable header at byte {end}"
        raise ShardError(
            f"{name} is truncated or damaged ({cut}, after {len(index)} samples): re-download or rewrite it"
        )
