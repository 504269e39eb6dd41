"""Streaming a Hugging Face dataset's parquet files: ``data.dataset: hf`` with ``data.stream.enabled``.

The split's parquet files are the shards of :class:`.stream.ShardStream`: their row counts (parquet
footers, read through fsspec: local paths or the Hub's ``hf://`` URLs) make its epoch plan, and each
segment's rows are read front to back through ``datasets``' own streaming (``load_dataset("parquet",
data_files=FILE, streaming=True)``), so equal steps per rank, seeded views and exact resume inside an
epoch hold as for WebDataset shards. A Hub id streams from the Hub with network, from its local
snapshot offline; a ``save_to_disk`` folder is memory-mapped and read by index instead.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .hf import cell_bytes, hub_snapshot, is_saved, split_data_files
from .shard_scan import SampleKeys
from .shard_sources import ShardSet

IMAGE, LABEL = "image", "cls"  # the sample keys the reader gives ShardStream
Sample = dict[str, Any]
_BATCH = 64  # rows per arrow batch read


def split_files(root: str | os.PathLike, split: str) -> list[str]:
    """The parquet files of ``split`` in the folder, snapshot or Hub dataset ``root``, in ``datasets``'
    order (that of the map-style reader); ValueError / FileNotFoundError naming ``root`` and the fix."""
    path = Path(root).expanduser()
    if is_saved(path):
        raise ValueError(
            f"{root} is a save_to_disk folder (memory-mapped arrow files, read by index): set "
            "data.stream.enabled=false for it, or stream the parquet files `Dataset.to_parquet` writes"
        )
    name = str(path) if path.is_dir() else str(hub_snapshot(str(root)) or root)
    _, paths = split_data_files(name, split, root)
    other = [p for p in paths if not p.endswith(".parquet")]
    if other:
        raise ValueError(
            f"{root} (split {split!r}) has files that are not parquet ({other[0]}, ...): streaming reads "
            "parquet; set data.stream.enabled=false, or write shards with `gsg data shard hf`"
        )
    return paths


@contextlib.contextmanager
def _parquet(path: str) -> Iterator[Any]:
    """``pyarrow.parquet.ParquetFile`` of a local path or fsspec URL (only its footer is read)."""
    import fsspec
    import pyarrow.parquet as pq

    with fsspec.open(path, "rb") as f:
        yield pq.ParquetFile(f)


def parquet_source(
    root: str | os.PathLike, split: str, image_column: str = "image", label_column: str = "label"
) -> ShardSet:
    """The split's parquet files as a :class:`ShardSet` (kind ``parquet``): rows from the footers, the
    classes from the ``datasets`` features the first file's schema carries."""
    import datasets

    paths, counts = split_files(root, split), []
    features = None
    for path in paths:
        with _parquet(path) as pf:
            counts.append(pf.metadata.num_rows)
            features = features or datasets.Features.from_arrow_schema(pf.schema_arrow)
    where = f"{root} (split {split!r})"
    if image_column not in features:
        raise ValueError(
            f"{where} has columns {list(features)}, not {image_column!r}: set data.hf.image_column"
        )
    labelled = label_column in features
    names = getattr(features[label_column], "names", None) if labelled else None
    keys = SampleKeys((IMAGE,), LABEL if labelled else "none")
    return ShardSet(paths, counts, [None] * len(paths), keys, str(root), "parquet", list(names or []))


class ParquetSegmentReader:
    """Reads segments of parquet files as :class:`.stream.SegmentReader` reads tar shards, through
    ``datasets``' streaming: samples ``{"__key__", "image": bytes, "cls": b"LABEL"}``."""

    def __init__(self, paths: list[str], image_column: str = "image", label_column: str = "label") -> None:
        self.paths, self.image_column, self.label_column = list(paths), image_column, label_column

    def stream(self, segment: Any, begin: int = 0) -> Iterator[Sample]:
        """The segment's samples from position ``begin`` on (the rows before it are read, not decoded)."""
        got = begin
        for row in self._rows(segment.shard, segment.start + begin, len(segment) - begin):
            yield self._sample(segment.shard, segment.start + got, row)
            got += 1
        if got < len(segment):
            self._short(segment)

    def fetch(self, segment: Any, wanted: Callable[[int], bool]) -> Iterator[tuple[int, Sample]]:
        """``(position, sample)`` of the ``wanted`` positions of the segment."""
        i = -1
        for i, row in enumerate(self._rows(segment.shard, segment.start, len(segment))):
            if wanted(i):
                yield i, self._sample(segment.shard, segment.start + i, row)
        if i + 1 < len(segment):
            self._short(segment)

    def _rows(self, shard: int, start: int, count: int) -> Iterator[dict[str, Any]]:
        import datasets

        path = self.paths[shard]
        try:
            rows = datasets.load_dataset("parquet", data_files=[path], split="train", streaming=True)
            columns = [c for c in (self.image_column, self.label_column) if c in rows.column_names]
            rows = rows.select_columns(columns).cast_column(self.image_column, datasets.Image(decode=False))
            # ``iter`` (not ``__iter__``): inside a DataLoader worker ``__iter__`` splits the file's
            # rows between the workers, while the segment plan already gave this worker its rows.
            for batch in rows.skip(start).take(count).iter(batch_size=_BATCH):
                yield from (dict(zip(batch, cells)) for cells in zip(*batch.values()))
        except (OSError, ValueError) as err:
            raise RuntimeError(f"parquet file {path} cannot be read ({err}); re-download it") from err

    def _sample(self, shard: int, row: int, cells: dict[str, Any]) -> Sample:
        sample: Sample = {"__key__": f"{shard}:{row}", IMAGE: cell_bytes(cells[self.image_column])}
        if self.label_column in cells and cells[self.label_column] is not None:
            sample[LABEL] = str(int(cells[self.label_column])).encode()
        return sample

    def _short(self, segment: Any) -> None:
        raise RuntimeError(
            f"parquet file {self.paths[segment.shard]} has fewer than the {segment.stop} rows its footer "
            "listed when the run started: it changed; re-download it"
        )
