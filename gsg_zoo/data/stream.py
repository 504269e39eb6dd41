"""Streaming WebDataset shards (``data.dataset: webdataset`` with ``data.stream.enabled: true``; parquet
files of ``data.dataset: hf`` through :mod:`.hf_stream`).

Each loader worker reads its own shards front to back through a shuffle buffer; every choice is a pure
function of (seed, epoch, world size, rank, worker count) and the manifest's counts, so a run resumed at
any step replays the epoch exactly. The plan, step by step: docs/reference/internals.md.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import io
import logging
import multiprocessing
import os
import random
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from PIL import UnidentifiedImageError
from torch.utils.data import IterableDataset, get_worker_info

from .images import open_image
from .pretraining import seeded_item_rngs
from .remote import open_shard
from .shard_scan import samples_of
from .shard_sources import ShardSet
from .shards import as_shard_set

log = logging.getLogger("gsg_zoo.data")

Sample = dict[str, Any]  # webdataset's: ``__key__`` and one bytes value per member extension


def plan_seed(seed: int, *key: object) -> int:
    """A 63-bit seed hashed from ``(seed, *key)``."""
    text = "/".join(map(str, (seed, *key))).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


@dataclass(frozen=True)
class Segment:
    """Samples ``start:stop`` (in file order) of shard ``shard`` (its index in the manifest)."""

    shard: int
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


def shard_order(num_shards: int, seed: int, epoch: int) -> list[int]:
    order = list(range(num_shards))
    random.Random(plan_seed(seed, "shards", epoch)).shuffle(order)
    return order


def cut(counts: list[int], order: list[int], lo: int, hi: int) -> list[Segment]:
    """Samples ``lo:hi`` of the shards concatenated in ``order``, as per-shard segments."""
    segments, begin = [], 0
    for shard in order:
        end = begin + counts[shard]
        if end > lo and begin < hi:
            segments.append(Segment(shard, max(lo, begin) - begin, min(hi, end) - begin))
        begin = end
    return segments


def steps_per_rank(total: int, world: int, batch: int) -> int:
    return (total // world) // batch


def rank_range(total: int, world: int, rank: int, batch: int) -> tuple[int, int]:
    """The first ``steps x batch`` samples of rank ``rank``'s equal share of the epoch's stream."""
    lo = rank * (total // world)
    return lo, lo + steps_per_rank(total, world, batch) * batch


def worker_batches(steps: int, workers: int, worker: int) -> int:
    """How many of a rank's ``steps`` batches worker ``worker`` yields (batches ``worker``, ``+workers``, ...)."""
    return (steps - worker + workers - 1) // workers


def worker_range(lo: int, steps: int, batch: int, workers: int, worker: int) -> tuple[int, int]:
    begin = lo + sum(worker_batches(steps, workers, w) for w in range(worker)) * batch
    return begin, begin + worker_batches(steps, workers, worker) * batch


def buffer_order(n: int, size: int, seed: int) -> list[int]:
    """The order in which a shuffle buffer of ``size`` emits stream positions ``0..n-1``.

    Fill the buffer, then each new position replaces a random buffered one, which is emitted; the rest
    leave in a random order at the end. Position ``i`` is emitted only after position ``size + i - 1``
    has been read, so a reader holds at most ``size + 1`` samples.
    """
    rng, buf, out = random.Random(seed), list(range(min(size, n))), []
    for p in range(len(buf), n):
        j = rng.randrange(len(buf))
        out.append(buf[j])
        buf[j] = p
    rng.shuffle(buf)
    return out + buf


@dataclass(frozen=True)
class EpochPlan:
    """The pure function (epoch, rank, worker) -> this worker's segments and emission order."""

    counts: tuple[int, ...]
    seed: int
    world: int
    batch: int
    buffer: int

    @property
    def steps(self) -> int:
        return steps_per_rank(sum(self.counts), self.world, self.batch)

    def segments(self, epoch: int, rank: int, workers: int, worker: int) -> list[Segment]:
        lo, _ = rank_range(sum(self.counts), self.world, rank, self.batch)
        begin, end = worker_range(lo, self.steps, self.batch, workers, worker)
        return cut(list(self.counts), shard_order(len(self.counts), self.seed, epoch), begin, end)

    def order(self, n: int, epoch: int, rank: int, worker: int) -> list[int]:
        return buffer_order(n, self.buffer, plan_seed(self.seed, "buffer", epoch, rank, worker))

    def rank_indices(self, epoch: int, rank: int, workers: int) -> list[int]:
        """The global indices (places in the manifest) of the rank's epoch, in the order the loader
        yields them (its workers' batches in turn); computed without reading anything."""
        bases = [sum(self.counts[:i]) for i in range(len(self.counts))]
        per_worker = []
        for w in range(workers):
            stream = [
                bases[s.shard] + i
                for s in self.segments(epoch, rank, workers, w)
                for i in range(s.start, s.stop)
            ]
            per_worker.append([stream[p] for p in self.order(len(stream), epoch, rank, w)])
        b = self.batch
        return [
            i for step in range(self.steps) for i in per_worker[step % workers][step // workers * b :][:b]
        ]


def walk(f: io.BufferedReader) -> Iterator[tuple[str, list[tarfile.TarInfo], tarfile.TarFile]]:
    """``(key, members, tar)`` per sample from ``f``'s position on, reading tar headers only (``f`` must
    be seekable), grouped as webdataset groups them; a member's bytes are ``tar.extractfile(member).read()``."""
    with tarfile.open(fileobj=f, mode="r:") as tar:  # closing it leaves f open
        for key, members in samples_of(tar):
            yield key, members, tar


def skip_samples(f: io.BufferedReader, count: int) -> int:
    """Move ``f`` (at a sample's first tar header) ``count`` samples on, reading tar headers only;
    returns how many it skipped (fewer at the end of the shard)."""
    skipped = 0
    if count:
        for _, members, _ in walk(f):
            if skipped == count:
                f.seek(members[0].offset)  # TarInfo offsets are file positions
                return skipped
            skipped += 1
        f.seek(0, io.SEEK_END)
    return skipped


def stream_samples(f: io.BufferedReader, url: str) -> Iterator[Sample]:
    """Samples from ``f``'s position on, through webdataset's tar iterator."""
    from webdataset.tariterators import group_by_keys, tar_file_expander

    yield from group_by_keys(tar_file_expander([{"url": url, "stream": f}]))


def fetch_samples(
    f: io.BufferedReader, count: int, wanted: Callable[[int], bool]
) -> Iterator[tuple[int, Sample]]:
    """``(i, sample)`` of the ``wanted`` ones of the next ``count`` samples (tar headers only for the
    others); ``(count, {})`` last if the shard ended before."""
    i = 0
    for key, members, tar in walk(f):
        if i == count:
            return
        if wanted(i):
            sample: Sample = {"__key__": key}
            for m in members:
                sample[m.name[len(key) + 1 :].lower()] = tar.extractfile(m).read()
            yield i, sample
        i += 1
    if i < count:
        yield count, {}


class SegmentReader:
    """Reads segments of a worker's stream: sequentially from a position on, or only some positions."""

    def __init__(self, paths: list[str], fix: str = "re-run `gsg data shard` for it") -> None:
        self.paths, self.fix = list(paths), fix

    def stream(self, segment: Segment, begin: int = 0) -> Iterator[Sample]:
        """The segment's samples from position ``begin`` on (tar headers only before it)."""
        with self._open(segment) as (f, path):
            got = skip_samples(f, segment.start + begin) - segment.start
            for sample in stream_samples(f, str(path)) if got == begin else ():
                if got == len(segment):
                    return
                yield sample
                got += 1
            if got < len(segment):
                self._short(path, segment)

    def fetch(self, segment: Segment, wanted: Callable[[int], bool]) -> Iterator[tuple[int, Sample]]:
        """``(position, sample)`` of the ``wanted`` positions of the segment, tar headers only for the others."""
        with self._open(segment) as (f, path):
            if skip_samples(f, segment.start) < segment.start:
                self._short(path, segment)
            for i, sample in fetch_samples(f, len(segment), wanted):
                if not sample:
                    self._short(path, segment)
                yield i, sample

    @contextlib.contextmanager
    def _open(self, segment: Segment) -> Iterator[tuple[io.BufferedReader, str]]:
        path = self.paths[segment.shard]
        try:
            with open_shard(path) as f:  # a URL: ranged reads, retried and resumed (:mod:`.remote`)
                yield f, path
        except (tarfile.TarError, OSError, ValueError) as err:
            raise RuntimeError(f"shard {path} is damaged ({err}); {self.fix}") from err

    def _short(self, path: str, segment: Segment) -> None:
        raise RuntimeError(
            f"shard {path} has fewer than the {segment.stop} samples its index lists: damaged; {self.fix}"
        )


class ShardStream(IterableDataset):
    """A rank's epoch of ``(transform(image), label)`` items streamed from WebDataset shards (see the module).

    ``reader`` reads the shards' segments (default: tar files). ``transform`` runs with the RNGs seeded
    by (seed, epoch, global index); an image that cannot be
    decoded is logged with its shard and yields ``None`` (dropped and counted by the collate). With
    ``encoded`` JPEGs are left encoded (:func:`.images.open_image`).
    """

    def __init__(
        self,
        source: ShardSet | str | os.PathLike,
        transform: Callable | None,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        batch: int = 1,
        buffer: int = 1000,
        encoded: bool = False,
        reader: SegmentReader | None = None,
    ) -> None:
        shards = as_shard_set(source)
        shards.check_sizes()
        counts = shards.counts
        self.base = [sum(counts[:i]) for i in range(len(counts))]  # global index of each shard's first sample
        self.classes, self.keys, self.source = shards.classes, shards.keys, shards.source
        self.plan = EpochPlan(tuple(counts), seed, world, batch, buffer)
        fix = "re-run `gsg data shard` for it" if shards.kind == "gsg" else "re-download or rewrite it"
        self.reader = reader or SegmentReader(shards.paths, fix)  # parquet: .hf_stream.ParquetSegmentReader
        self.transform, self.seed, self.rank, self.encoded = transform, seed, rank, encoded
        self.state = multiprocessing.RawArray("q", 2)  # (epoch, start step), seen by persistent workers
        if self.plan.steps == 0:
            raise ValueError(
                f"{sum(counts)} samples in {shards.source} are fewer than one batch of {batch} on each "
                f"of {world} ranks; lower train.batch_size"
            )

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """The epoch to stream from its step ``start_step`` on (the rank's batches before it are skipped)."""
        self.state[0], self.state[1] = epoch, start_step

    def __len__(self) -> int:
        return self.plan.steps * self.plan.batch

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        workers, physical = (info.num_workers, info.id) if info else (1, 0)
        epoch, start = self.state[0], self.state[1]
        # the DataLoader takes batches from its workers in turn, from worker 0: the worker whose batch
        # comes next (at ``start``) plays that part
        worker = (physical + start) % workers
        done = max(0, start - worker + workers - 1) // workers * self.plan.batch
        segments = self.plan.segments(epoch, self.rank, workers, worker)
        bases = [sum(len(s) for s in segments[:i]) for i in range(len(segments))]
        order = self.plan.order(sum(len(s) for s in segments), epoch, self.rank, worker)
        yield from self._emit(segments, bases, order, done, epoch)

    def _emit(
        self, segments: list[Segment], bases: list[int], order: list[int], done: int, epoch: int
    ) -> Iterator[Any]:
        """The items of ``order[done:]``: what the buffer held at ``done`` read back, then the stream on."""
        n = len(order)
        read_to = min(self.plan.buffer + done, n) if done else 0  # positions the buffer had read by then
        held = {p for p in order[done:] if p < read_to}
        pending: dict[int, tuple[int, Sample]] = {}
        for seg, base in zip(segments, bases, strict=True):
            if any(base <= p < base + len(seg) for p in held):  # other shards are skipped whole
                for i, sample in self.reader.fetch(seg, lambda j, b=base: b + j in held):
                    pending[base + i] = (self.base[seg.shard] + seg.start + i, sample)
        source = self._stream(segments, bases, read_to)
        for p in order[done:]:
            while p not in pending:
                q, item = next(source)
                pending[q] = item
            yield self._item(*pending.pop(p), epoch)

    def _stream(
        self, segments: list[Segment], bases: list[int], begin: int
    ) -> Iterator[tuple[int, tuple[int, Sample]]]:
        """``(stream position, (global index, sample))`` from stream position ``begin`` on."""
        for seg, base in zip(segments, bases, strict=True):
            if base + len(seg) <= begin:
                continue
            first = max(0, begin - base)
            for i, sample in enumerate(self.reader.stream(seg, first), first):
                yield base + i, (self.base[seg.shard] + seg.start + i, sample)

    def _item(self, index: int, sample: Sample, epoch: int) -> Any:
        ext = self.keys.image_of(sample)
        shard = self.reader.paths[bisect.bisect_right(self.base, index) - 1]
        label = self.keys.label_of(sample.__getitem__, sample, f"{shard}: sample {sample.get('__key__')!r}")
        try:
            if ext is None:
                raise ValueError(f"no image member ({', '.join(self.keys.image)})")
            image = open_image(sample[ext], self.encoded)
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
            log.warning("unreadable image %s in %s: %s", sample.get("__key__"), shard, err)
            return None
        if self.transform is None:
            return image, label
        with seeded_item_rngs((self.seed * 1_000_003 + epoch) * 10_000_019 + index):  # EpochSeeded's seeding
            return self.transform(image), label
