"""Pooled-feature extraction with an on-disk cache shared by every probe.

Features of one ``(model weights, dataset split, transform)`` are computed once and stored as a
safetensors file (never pickle) under the cache directory: ``--cache-dir``, else ``$GSG_CACHE``,
else ``~/.cache/gsg-zoo/features``. The file name is a hash of

* the model's weights: SHA-256 over every ``state_dict`` tensor's name, dtype, shape and bytes
  (plus the class name), so a re-trained checkpoint never reuses stale features;
* the dataset identity (name, root, split, length) given by the caller;
* ``repr(transform)`` and the numeric precision (fp32 / bf16 autocast).

Writes are atomic (temporary file + rename), so an interrupted run leaves no partial cache entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ..core.checkpoint import atomic_write
from ..core.device import resolve_device
from ..core.distributed import DistInfo, broadcast_object
from ..data.pretraining import collate_pairs
from .sharding import gather_rows, shard_dataset

CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    """``$GSG_CACHE`` if set, else ``~/.cache/gsg-zoo/features``."""
    env = os.environ.get("GSG_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "gsg-zoo" / "features"


def weights_hash(model: nn.Module) -> str:
    """SHA-256 of a model's class name and every state_dict tensor (name, dtype, shape, raw bytes)."""
    h = hashlib.sha256(type(model).__name__.encode())
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@dataclass
class ExtractOptions:
    """How features are computed (none of it changes the result except ``amp``)."""

    batch_size: int = 256
    num_workers: int | None = None  # None: min(8, cpu count)
    device: str | None = None  # None/"auto": CUDA if available
    amp: bool = False  # bf16 autocast on CUDA, a variant (``--amp``; recorded in the cache key)
    progress: bool = True
    dist: DistInfo = field(default_factory=DistInfo)  # under torchrun: each rank embeds its shard

    def workers(self) -> int:
        return min(8, os.cpu_count() or 1) if self.num_workers is None else self.num_workers

    def resolved_device(self) -> torch.device:
        """The device to run on: under torchrun a CUDA device is the rank's own (``cuda:LOCAL_RANK``)."""
        local_rank = self.dist.local_rank if self.dist.world_size > 1 else None
        return resolve_device(self.device, local_rank)


def precision_tag(options: ExtractOptions) -> str:
    """``"bf16-autocast"`` when ``options.amp`` on a CUDA device, else ``"fp32"`` (what reports print)."""
    return "bf16-autocast" if options.amp and options.resolved_device().type == "cuda" else "fp32"


@dataclass
class Features:
    """Pooled features ``[N, D]`` (float32, CPU) with their labels (``[N]`` or multi-hot ``[N, C]``)."""

    feats: Tensor
    labels: Tensor
    seconds: float = 0.0  # extraction time (0 when read from the cache)
    cached: bool = False
    path: Path | None = None


def extract_features(
    model: nn.Module, dataset: Dataset, options: ExtractOptions | None = None, desc: str = "features"
) -> tuple[Tensor, Tensor]:
    """Run ``model`` (returning pooled features) over ``dataset`` of ``(image tensor, label)``.

    Returns ordinary (not inference-mode) CPU tensors, usable in autograd afterwards. Under torchrun
    (``options.dist``) each rank embeds its contiguous shard and rank 0 gets every row in dataset order
    (the other ranks get empty tensors; :mod:`.sharding`).
    """
    opt = options or ExtractOptions()
    if not len(dataset):  # type: ignore[arg-type]
        raise ValueError(f"{desc}: the dataset is empty")
    shard = shard_dataset(dataset, opt.dist)
    feats, labels = _extract_local(model, shard, opt, desc) if len(shard) else (None, None)  # type: ignore[arg-type]
    return gather_rows(feats, opt.dist), gather_rows(labels, opt.dist)


def _extract_local(
    model: nn.Module, dataset: Dataset, opt: ExtractOptions, desc: str
) -> tuple[Tensor, Tensor]:
    """:func:`extract_features` of one process."""
    from tqdm.auto import tqdm

    device = opt.resolved_device()
    cuda = device.type == "cuda"
    model = model.eval().to(device, memory_format=torch.channels_last)
    loader = DataLoader(
        dataset,
        batch_size=opt.batch_size,
        shuffle=False,
        num_workers=opt.workers(),
        pin_memory=cuda,
        persistent_workers=False,
        collate_fn=collate_pairs,
    )
    feats, labels = [], []
    show = opt.progress and opt.dist.is_main
    for images, targets in tqdm(loader, desc=desc, disable=not show, unit="batch"):
        images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with (
            torch.inference_mode(),
            torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=cuda and opt.amp),
        ):
            out = model(images)
        if out.ndim != 2:
            raise RuntimeError(f"model returned {tuple(out.shape)}; expected pooled features [batch, dim]")
        feats.append(out.float().cpu())
        labels.append(torch.as_tensor(targets))
    if not feats:
        raise ValueError(f"{desc}: the dataset is empty")
    return torch.cat(feats).clone(), torch.cat(labels).clone()  # clone: normal tensors


class FeatureCache:
    """Content-addressed feature store (see the module docstring for the key)."""

    def __init__(self, root: str | os.PathLike | None = None, enabled: bool = True) -> None:
        self.root = Path(root).expanduser() if root else default_cache_dir()
        self.enabled = enabled
        self._hashes: dict[int, str] = {}

    def key(
        self, model: nn.Module, dataset_id: dict[str, Any], transform: Any, amp_tag: str
    ) -> dict[str, Any]:
        if id(model) not in self._hashes:  # hashing a ResNet-50 costs ~0.3 s: once per model
            self._hashes[id(model)] = weights_hash(model)
        return {
            "format": CACHE_FORMAT,
            "weights": self._hashes[id(model)],
            "dataset": dataset_id,
            "transform": repr(transform),
            "precision": amp_tag,
        }

    def path_for(self, key: dict[str, Any]) -> Path:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
        name = str(key["dataset"].get("name", "data")).replace(os.sep, "_")
        split = str(key["dataset"].get("split", "")).replace(os.sep, "_")
        return self.root / f"{name}-{split}-{digest[:24]}.safetensors"

    def get(
        self,
        model: nn.Module,
        dataset: Dataset,
        dataset_id: dict[str, Any],
        transform: Any,
        options: ExtractOptions | None = None,
    ) -> Features:
        """Features of ``dataset`` (already wrapped with ``transform``): from the cache or computed."""
        opt = options or ExtractOptions()
        amp_tag = precision_tag(opt)
        dataset_id = {**dataset_id, "length": len(dataset)}
        key = self.key(model, dataset_id, transform, amp_tag)
        path = self.path_for(key)
        hit = self._read(path) if opt.dist.is_main else None
        if broadcast_object(hit is not None, opt.dist):  # rank 0 decides: every rank extracts, or none
            return hit or Features(torch.empty(0), torch.empty(0), cached=True, path=path)
        desc = f"{dataset_id.get('name', 'data')}/{dataset_id.get('split', '')}"
        t0 = time.perf_counter()
        feats, labels = extract_features(model, dataset, opt, desc=desc)
        seconds = time.perf_counter() - t0
        if self.enabled and opt.dist.is_main:
            tensors = {"features": feats.contiguous(), "labels": labels.contiguous()}
            meta = {"key": json.dumps(key, sort_keys=True, default=str)}
            atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))
        return Features(feats, labels, seconds=seconds, cached=False, path=path if self.enabled else None)

    def _read(self, path: Path) -> Features | None:
        """The cached entry at ``path``; None when absent, disabled or unreadable (then recomputed)."""
        if not (self.enabled and path.exists()):
            return None
        try:
            tensors = load_file(str(path))
            return Features(tensors["features"], tensors["labels"], cached=True, path=path)
        except Exception as err:  # a corrupt entry is recomputed, never trusted
            print(f"feature cache: ignoring unreadable {path} ({type(err).__name__}: {err})")
            return None
