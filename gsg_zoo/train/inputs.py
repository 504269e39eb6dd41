"""The pretraining input pipeline: the epoch-seeded multi-view loader, each step's views and seeds.

Every random stream of training has its own seed, a pure function of its key (:func:`stream_seed`):
the data order and the loader's views depend on (seed, epoch, index); the loader's worker seeds on
(seed, epoch, rank) (``DataLoader(generator=...)``, never the global RNG); with ``data.batch_augment``
the loader workers only decode and the views of a batch are drawn on the device from a generator
seeded by (seed, epoch, rank, step), as is the GSG pairing. Nothing depends on what else drew from
the global RNG, so a resumed run replays the interrupted epoch bit for bit.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from ..config.recipes import DataConfig, Recipe, validate_decode
from ..core.distributed import DistInfo
from ..core.normalization import mean_std
from ..data.augment import (
    BYOL_BLUR_P,
    BYOL_SOLARIZE_P,
    MultiView,
    build_augmentation,
    uint8_transform,
    uint8_views,
)
from ..data.batch_augment import BatchAugment, CropBoxes, PackedImages, normalize_uint8
from ..data.pretraining import EpochSeeded, EpochShardSampler, build_dataset, collate_views
from .step import to_device


def stream_seed(seed: int, stream: str, epoch: int, rank: int, step: int = 0) -> int:
    """The 63-bit seed of one random ``stream`` (``"views"``, ``"pairing"``, ``"loader"``, ...) at
    (seed, epoch, rank, step): a hash of the key, so distinct streams and keys never share a seed."""
    key = f"{seed}/{stream}/{epoch}/{rank}/{step}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1


def seeded_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh generator on ``device`` seeded with ``seed``."""
    gen = torch.Generator(device)
    gen.manual_seed(seed)
    return gen


def seed_global_rngs(seed: int, device: torch.device) -> None:
    """Seed the global CPU RNG and, on CUDA, ``device``'s (``torch.manual_seed`` would seed every
    device, ~0.5 ms: too slow for every step)."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        torch.cuda.default_generators[index].manual_seed(seed)


@dataclass
class TrainData:
    """A rank's training loader, its sampler and the device augmentation; :meth:`set_epoch` each epoch."""

    loader: DataLoader
    sampler: EpochShardSampler
    dataset: EpochSeeded
    batch_augment: BatchAugment | None  # None: the loader yields the views
    seed: int = 0
    rank: int = 0
    generator: torch.Generator = field(default_factory=torch.Generator)  # the loader's worker seeds
    local_augment: BatchAugment | None = None  # multi-crop: the device augmentation of the local crops
    local_crops: int = 0
    normalize: tuple[tuple[float, ...], tuple[float, ...]] | None = None  # uint8 PIL views: (mean, std)
    prefetch: bool = False  # CUDA: batches copied to the device on a side stream (device_batches)

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """The epoch's data order from step ``start_step`` on (a run resumed inside the epoch skips the
        batches it already trained on: nothing before them is read), and its worker base seed drawn
        from (seed, epoch, rank).

        A new loader iterator (each epoch without persistent workers, once per process with them)
        draws its worker base seed from ``generator``; what the workers produce does not depend on it
        (:class:`EpochSeeded` seeds every item), but nothing is drawn from the global RNG either.
        """
        self.sampler.set_epoch(epoch, start_step * self.loader.batch_size)
        self.generator.manual_seed(stream_seed(self.seed, "loader", epoch, self.rank))

    def close(self) -> None:
        """Stop the loader's persistent workers now.

        Left to the garbage collector, an abandoned iterator's shutdown can block whatever runs when
        the collection happens (a later run in the same process) for ~5 s per worker.
        """
        iterator = getattr(self.loader, "_iterator", None)  # DataLoader keeps it for persistent workers
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
        self.loader._iterator = None


# blur and solarisation of the device views per augmentation (one value, or one per view parity)
CROP_BOX_VIEWS: dict[str, dict[str, Any]] = {
    "mocov2": {"blur_p": 0.5},  # MoCo-v2: blur p=0.5 on every view
    "byol": {"blur_p": BYOL_BLUR_P, "solarize_p": BYOL_SOLARIZE_P},  # BYOL's asymmetric views
}


def view_transform(dc: DataConfig, num_views: int) -> tuple[MultiView, BatchAugment | None]:
    """Per-image transform of the loader, and the per-batch device augmentation if ``batch_augment``.

    With ``data.decode=device`` the readers leave JPEGs encoded (:func:`reader_encoded`):
    :class:`CropBoxes` packs their bytes and :meth:`PackedImages.crops` decodes them on the device.
    """
    validate_decode(dc)
    aug_args = dc.augment_options()
    if not dc.batch_augment:
        aug = build_augmentation(dc.augmentation, dc.image_size, dc.normalization, **aug_args)
        return MultiView(aug, num_views), None
    mean, std = mean_std(dc.normalization)
    if dc.augmentation == "cifar":  # same-size images: workers only decode, the device crops too
        return MultiView(uint8_transform(dc.image_size), 1), BatchAugment(
            dc.image_size, mean, std, **aug_args
        )
    if dc.augmentation not in CROP_BOX_VIEWS:
        raise ValueError(
            f"data.batch_augment supports augmentation cifar, mocov2 or byol, not {dc.augmentation!r}"
        )
    # workers decode (or, data.decode=device, read JPEG headers) and draw the crop boxes; the device
    # (decodes the JPEGs,) resizes the boxes and does everything after
    return MultiView(CropBoxes(num_views, dc.min_scale), 1), BatchAugment(
        dc.image_size, mean, std, crop=False, **CROP_BOX_VIEWS[dc.augmentation], **aug_args
    )


def reader_encoded(dc: DataConfig) -> bool:
    """Whether the readers leave JPEGs encoded (their ``encoded`` option): ``data.decode=device``."""
    return dc.decode == "device"


def build_train_data(
    recipe: Recipe, dist: DistInfo, device: torch.device, local_batch: int, num_views: int
) -> TrainData:
    """The rank's shard of the recipe's dataset in batches of ``local_batch`` (last partial dropped)."""
    dc, tc = recipe.data, recipe.train
    views, batch_augment = view_transform(dc, num_views)
    views, normalize = loader_uint8_views(dc, views, batch_augment, device)
    if dc.stream.enabled:
        data = build_stream_data(recipe, dist, device, local_batch, views, batch_augment)
        data.normalize, data.prefetch = normalize, recipe.train.prefetch_to_device
        return data

    def build(download: bool) -> Any:
        return build_dataset(
            dc.dataset,
            dc.root,
            dc.split,
            transform=views,
            download=download,
            num_images=dc.synthetic.num_images,
            encoded=reader_encoded(dc),
            **dc.reader_options(),
        )

    ds = build(dc.download) if dist.is_main else None
    dist.barrier()  # rank 0 downloads (if asked) before the others open the files
    ds = ds if dist.is_main else build(False)
    dataset = EpochSeeded(ds, tc.seed, dc.max_consecutive_failures)
    sampler = EpochShardSampler(len(ds), dist.rank, dist.world_size, seed=tc.seed)
    generator = seeded_generator(stream_seed(tc.seed, "loader", 0, dist.rank))
    loader = DataLoader(
        dataset,
        batch_size=local_batch,
        sampler=sampler,
        drop_last=True,
        generator=generator,
        **_loader_options(dc, device),
    )
    local_crops = recipe.learner_config().local_crops
    return TrainData(
        loader,
        sampler,
        dataset,
        batch_augment,
        tc.seed,
        dist.rank,
        generator,
        local_view_augment(dc, local_crops),
        local_crops,
        normalize,
        recipe.train.prefetch_to_device,
    )


def loader_uint8_views(
    dc: DataConfig, views: MultiView, batch_augment: BatchAugment | None, device: torch.device
) -> tuple[MultiView, tuple[tuple[float, ...], tuple[float, ...]] | None]:
    """PIL views: with ``data.uint8_views`` (None: on CUDA) the workers' pipelines end in
    ``PILToTensor`` and :func:`step_views` normalises on the device (the same floats); returns the
    loader's transform and the (mean, std) to apply, None when the loader's views stay float."""
    wanted = dc.uint8_views if dc.uint8_views is not None else device.type == "cuda"
    split = uint8_views(views.transforms) if wanted and batch_augment is None else None
    if split is None:
        return views, None
    transforms, mean, std = split
    return MultiView(transforms, views.num_views), (mean, std)


# --- multi-crop (research knob model.local_crops; docs/guides/research-knobs.md)
def local_view_augment(dc: DataConfig, local_crops: int) -> BatchAugment | None:
    """The device augmentation of the local crops (None without them): the global views' recipe at
    ``data.local_crops.size`` px over areas ``data.local_crops.min_scale``-``max_scale``. Same-size
    images on the device path only (``data.batch_augment: true``, ``augmentation: cifar``)."""
    if local_crops == 0:
        return None
    if not dc.batch_augment or dc.augmentation != "cifar":
        raise ValueError(
            "model.local_crops needs the device augmentation of same-size images: set data.batch_augment=true "
            f"and data.augmentation=cifar (got batch_augment={dc.batch_augment}, augmentation={dc.augmentation})"
        )
    lc = dc.local_crops
    if lc.min_scale > lc.max_scale:
        raise ValueError(
            f"data.local_crops.min_scale={lc.min_scale} exceeds data.local_crops.max_scale={lc.max_scale}"
        )
    size = lc.size or max(8, round(dc.image_size * 96 / 224))
    mean, std = mean_std(dc.normalization)
    options = {**dc.augment_options(), "min_scale": lc.min_scale, "max_scale": lc.max_scale}
    return BatchAugment(size, mean, std, **options)


# --- end multi-crop


# --- streaming shards (data.stream.enabled): the epoch plan lives in the dataset, not in a sampler ---


@dataclass
class StreamTrainData(TrainData):
    """:class:`TrainData` over a :class:`~gsg_zoo.data.stream.ShardStream` (``sampler`` is None)."""

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Stream the epoch from step ``start_step`` on (whole shards skipped, tar headers only inside)."""
        self.dataset.set_epoch(epoch, start_step)
        self.generator.manual_seed(stream_seed(self.seed, "loader", epoch, self.rank))


def build_stream_data(
    recipe: Recipe,
    dist: DistInfo,
    device: torch.device,
    local_batch: int,
    views: MultiView,
    batch_augment: BatchAugment | None,
) -> StreamTrainData:
    from ..data.stream import ShardStream

    dc, seed = recipe.data, recipe.train.seed
    if dc.dataset not in ("webdataset", "hf") or dc.root is None:
        raise ValueError(
            "data.stream.enabled reads WebDataset shards or a Hugging Face dataset's parquet files: set "
            f"data.dataset=webdataset or hf and data.root, not {dc.dataset!r} / {dc.root!r}"
        )
    source, reader = stream_source(dc) if dist.is_main else (None, None)
    dist.barrier()  # rank 0 scans foreign shards (and caches their index) before the others read it
    if source is None:
        source, reader = stream_source(dc)
    args = (views, seed, dist.rank, dist.world_size, local_batch, dc.stream.shuffle_buffer)
    stream = ShardStream(source, *args, reader_encoded(dc), reader)
    generator = seeded_generator(stream_seed(seed, "loader", 0, dist.rank))
    loader = DataLoader(
        stream, batch_size=local_batch, drop_last=True, generator=generator, **_loader_options(dc, device)
    )
    return StreamTrainData(loader, None, stream, batch_augment, seed, dist.rank, generator)  # type: ignore[arg-type]


def stream_source(dc: DataConfig) -> tuple[Any, Any]:
    """What ``data.root`` streams, as ``(ShardSet, segment reader)``: WebDataset shards (reader None: tar
    files) or a Hugging Face dataset's parquet files (:class:`~gsg_zoo.data.hf_stream.ParquetSegmentReader`)."""
    from dataclasses import asdict

    from ..data.hf_stream import ParquetSegmentReader, parquet_source
    from ..data.shards import as_shard_set

    if dc.dataset == "hf":
        source = parquet_source(dc.root, dc.split, dc.hf.image_column, dc.hf.label_column)
        return source, ParquetSegmentReader(source.paths, dc.hf.image_column, dc.hf.label_column)
    return as_shard_set(dc.root, dc.split, **asdict(dc.wds)), None


def _loader_options(dc: DataConfig, device: torch.device) -> dict[str, Any]:
    lo = dc.loader
    workers = lo.num_workers
    return {
        "num_workers": workers,
        "collate_fn": collate_views,
        "pin_memory": lo.pin_memory and device.type == "cuda",
        "persistent_workers": lo.persistent_workers and workers > 0,
        "prefetch_factor": lo.prefetch_factor if workers > 0 else None,
    }


def step_views(
    batch: list[Tensor], data: TrainData, num_views: int, device: torch.device, channels_last: bool, seed: int
) -> list[Tensor]:
    """A loader batch's views on the device: drawn there from the uint8 images with a generator seeded
    by ``seed`` when batch-augmenting, else the loader's views moved (uint8 views: normalised there).
    channels_last only for the views."""
    if data.batch_augment is None and data.normalize is not None:
        moved = [normalize_uint8(v.to(device, non_blocking=True), *data.normalize) for v in batch]
        return [to_device(v, device, channels_last) for v in moved]
    if data.batch_augment is not None:
        images = batch[0].to(device, non_blocking=True)
        generator = seeded_generator(seed, device)
        batch = data.batch_augment.views(images, num_views, generator)
        if data.local_augment is not None:  # multi-crop: the local crops after the global views
            batch += data.local_augment.views(images, data.local_crops, generator)
    return [to_device(v, device, channels_last) for v in batch]


_END = object()  # what the lookahead's fetch returns once the items are exhausted


def ahead(items: Iterable, prepare: Callable[[Any], Any], depth: int = 1) -> Iterator:
    """``prepare(item)`` of every item, in order, each fetched and prepared on one background thread
    while the caller holds the previous ones (``depth`` items in flight; PyTorch ops release the GIL).

    An exception of the fetch or of ``prepare`` is raised to the caller at that item; the thread stops
    when the generator is exhausted, fails or is closed (waiting for the item in flight, if any).
    """
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    iterator, exhausted = iter(items), False

    def fetch() -> Any:  # runs on the pool's one thread: one call at a time, in order
        nonlocal exhausted
        item = _END if exhausted else next(iterator, _END)
        exhausted = item is _END
        return item if exhausted else prepare(item)

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gsg-ahead")
    try:
        pending = deque(pool.submit(fetch) for _ in range(depth))
        while (prepared := pending.popleft().result()) is not _END:
            pending.append(pool.submit(fetch))  # item k + depth, prepared while the caller holds item k
            yield prepared
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _copy_ahead(
    batch: list[Any], device: torch.device, side: torch.cuda.Stream
) -> tuple[list, torch.cuda.Event]:
    """``batch``'s tensors (and a :class:`PackedImages`' pixels) copied to ``device`` and its JPEGs
    decoded there, all queued on ``side``; returns them and an event recorded on ``side`` after them.

    torchvision's CUDA ``decode_jpeg`` (torchvision/csrc/io/image/cuda/decode_jpegs_cuda.cpp) decodes on
    its own stream, allocates its outputs on the caller's current stream (here ``side``) and makes that
    stream wait for its work: the event covers the decode too. Its host work (headers, Huffman decoding
    of progressive JPEGs) runs in the call, on this thread.
    """
    with torch.cuda.stream(side):
        moved = [b.to(device, non_blocking=True) for b in batch]
        moved = [b.decode_ahead() if isinstance(b, PackedImages) else b for b in moved]
        ready = torch.cuda.Event()
        ready.record(side)
    return moved, ready


def _device_tensors(batch: list[Any]) -> Iterator[Tensor]:
    """The device tensors of a moved batch: its tensors, a :class:`PackedImages`' pixels and decoded JPEGs."""
    for b in batch:
        if isinstance(b, PackedImages):
            yield b.pixels
            yield from b.predecoded or ()
        else:
            yield b


def device_batches(
    loader: Iterable, device: torch.device, enabled: bool = True, limit: int | None = None
) -> Iterator:
    """The loader's first ``limit`` (None: all) ``(batch, labels, skipped)`` items. On CUDA batch k + 1
    is prepared on a background thread (:func:`ahead`) while step k runs: its tensors (and a
    :class:`PackedImages`' pixels) copied to ``device`` and its JPEGs decoded there on a side stream that
    the compute stream then waits for on the device (no host wait), so the copy and the decode overlap
    the step still queued. Elsewhere, or not ``enabled``, the items as they come. Not measured on
    hardware (docs/guides/pretraining.md)."""
    items = islice(loader, limit)
    if not enabled or device.type != "cuda":
        yield from items
        return
    side = torch.cuda.Stream(device)

    def prepare(item: tuple[list[Any], Any, int]) -> tuple[list, torch.cuda.Event, Any, int]:
        batch, labels, skipped = item
        return (*_copy_ahead(batch, device, side), labels, skipped)

    with closing(ahead(items, prepare)) as prepared:
        for moved, ready, labels, skipped in prepared:
            compute = torch.cuda.current_stream(device)
            compute.wait_event(ready)
            for t in _device_tensors(moved):  # not reused by the allocator before the compute stream is done
                t.record_stream(compute)
            yield moved, labels, skipped
