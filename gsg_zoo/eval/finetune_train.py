"""The fine-tuning loop: a step-indexed stream of batches, checkpointed every epoch, resumed exactly.

Step ``s`` takes positions ``[s B, (s + 1) B)`` of the concatenated seeded permutations of the training
set (SimCLR's ``dataset.repeat()``; a batch larger than the set wraps around), or under lightly's rule
batch ``s`` of its epoch's permutation (``drop_last``), and each rank its ``B / world`` slice; every image's augmentation is seeded by (seed, step, position), so a resumed run
replays the interrupted one bit for bit on the CPU, whatever the worker count. DDP averages the
gradients (one step on W ranks is the one-process step on the same batch); AMP: bf16 autocast on CUDA.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset, Sampler

from ..core.checkpoint import atomic_write
from ..core.distributed import DistInfo
from ..data.pretraining import collate_pairs, seeded_item_rngs
from .finetune import Classifier, FinetuneConfig, build_optimizer, schedule, set_lr

log = logging.getLogger("gsg_zoo.eval")


def item_seed(seed: int, step: int, position: int) -> int:
    """The 63-bit seed of one image's augmentation at (seed, step, position in the global batch)."""
    key = f"finetune/{seed}/{step}/{position}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1


def _perm(n: int, seed: int) -> list[int]:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()


def stream_indices(step: int, batch: int, n: int, seed: int, per_epoch: int | None = None) -> list[int]:
    """Dataset indices of global batch ``step``. ``per_epoch`` (a ``drop_last`` loader, ``n >= batch``):
    batch ``step % per_epoch`` of epoch ``step // per_epoch``'s permutation (seeded ``seed + epoch``);
    else positions ``[step B, (step + 1) B)`` of the stream of permutations (pass ``p``: ``seed + p``)."""
    if per_epoch and n >= batch:
        epoch, j = divmod(step, per_epoch)
        return _perm(n, seed + epoch)[j * batch : (j + 1) * batch]
    out, pos, end = [], step * batch, (step + 1) * batch
    while pos < end:
        p, offset = divmod(pos, n)
        perm = _perm(n, seed + p)
        take = min(end - pos, n - offset)
        out += perm[offset : offset + take]
        pos += take
    return out


class StepBatches(Sampler[list[tuple[int, int]]]):
    """This rank's ``(index, item seed)`` lists for global steps ``start .. stop - 1``."""

    def __init__(self, n: int, cfg: FinetuneConfig, info: DistInfo, start: int, stop: int) -> None:
        if cfg.batch_size % info.world_size:
            raise ValueError(f"batch size {cfg.batch_size} is not divisible by the {info.world_size} ranks")
        self.n, self.cfg, self.info, self.start, self.stop = n, cfg, info, start, stop
        self.per_epoch = schedule(cfg, n)[1] if cfg.steps_rule == "lightly" else None

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        b, seed = self.cfg.batch_size, self.cfg.seed
        local = b // self.info.world_size
        lo = self.info.rank * local
        for s in range(self.start, self.stop):
            idx = stream_indices(s, b, self.n, seed, self.per_epoch)[lo : lo + local]
            yield [(i, item_seed(seed, s, lo + j)) for j, i in enumerate(idx)]


class Seeded(Dataset):
    """Index with ``(index, seed)``: the item's augmentation draws from RNGs seeded with ``seed``."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        with seeded_item_rngs(seed):
            return self.dataset[index]


def save_state(path: Path, model: Classifier, opt: torch.optim.Optimizer, step: int, extra: dict) -> None:
    """Model, optimizer, steps done and the run's identity, written atomically (tensors and plain data:
    loadable with ``weights_only=True``)."""
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, **extra}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path: Path, model: Classifier, opt: torch.optim.Optimizer, identity: dict) -> tuple[int, list]:
    """Steps done and the epoch log of the checkpoint at ``path`` (0, [] without one); one of other
    settings is refused naming what differs."""
    if not path.exists():
        return 0, []
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state["identity"] != identity:
        diff = {
            k: (state["identity"].get(k), v) for k, v in identity.items() if state["identity"].get(k) != v
        }
        raise ValueError(
            f"{path} is a fine-tune of other settings (checkpoint vs now: {diff}); delete it or use another --out"
        )
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    log.info("fine-tune: resumed from %s after step %d", path, state["step"])
    return int(state["step"]), list(state["epochs"])


def prepare(model: Classifier, cfg: FinetuneConfig, info: DistInfo, device: torch.device) -> nn.Module:
    """The module to call: on ``device``, SyncBN under DDP on CUDA when the protocol has global BN,
    DDP-wrapped."""
    model.to(device)
    if info.world_size == 1:
        return model
    if cfg.sync_bn and device.type == "cuda":  # torch's SyncBatchNorm runs on GPUs only
        model.backbone = nn.SyncBatchNorm.convert_sync_batchnorm(model.backbone)
        model.to(device)
    elif cfg.sync_bn:
        log.warning("fine-tune: SyncBatchNorm needs CUDA; on the CPU every rank keeps its own BN statistics")
    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)


def finetune(
    model: Classifier,
    train_set: Dataset,
    cfg: FinetuneConfig,
    device: torch.device,
    info: DistInfo | None = None,
    *,
    num_workers: int = 0,
    amp: bool = False,
    progress: bool = True,
    checkpoint: str | os.PathLike | None = None,
    identity: dict[str, Any] | None = None,
    stop_after_epochs: int | None = None,
) -> dict[str, Any]:
    """Train ``model`` (backbone and head) on ``train_set`` under ``cfg``; returns the training log.

    With ``checkpoint``, rank 0 saves after every epoch and a rerun resumes after the last saved step
    (refused when ``cfg`` or ``identity`` differ). ``stop_after_epochs``: return after that many epochs of
    this call (a time-boxed job, or a test of resume)."""
    info = info or DistInfo()
    n = len(train_set)  # type: ignore[arg-type]
    total, per_epoch, warmup = schedule(cfg, n)
    ident = {**cfg.to_dict(), **(identity or {}), "num_train": n}
    ckpt = Path(checkpoint) if checkpoint else None
    torch.manual_seed(cfg.seed)
    opt = build_optimizer(model, cfg)
    start, epochs = load_state(ckpt, model, opt, ident) if ckpt else (0, [])
    net = prepare(model, cfg, info, device)
    done_epochs, t0 = 0, time.perf_counter()
    while start < total and (stop_after_epochs is None or done_epochs < stop_after_epochs):
        stop = min(total, (start // per_epoch + 1) * per_epoch)
        loss = _train_steps(
            net, train_set, cfg, info, start, stop, device, opt, (total, warmup), num_workers, amp, progress
        )
        start, done_epochs = stop, done_epochs + 1
        epochs.append({"epoch": len(epochs) + 1, "step": stop, "loss": loss, "lr": opt.param_groups[0]["lr"]})
        if info.is_main:
            log.info("fine-tune epoch %d: step %d/%d, loss %.4f", len(epochs), stop, total, loss)
            if ckpt:
                save_state(ckpt, model, opt, stop, {"identity": ident, "epochs": epochs})
        info.barrier()
    return {
        "total_steps": total,
        "steps_per_epoch": per_epoch,
        "warmup_steps": warmup,
        "steps_done": start,
        "epochs": epochs,
        "train_seconds_this_run": time.perf_counter() - t0,
    }


def _train_steps(
    net: nn.Module,
    train_set: Dataset,
    cfg: FinetuneConfig,
    info: DistInfo,
    start: int,
    stop: int,
    device: torch.device,
    opt: torch.optim.Optimizer,
    sched: tuple[int, int],
    num_workers: int,
    amp: bool,
    progress: bool,
) -> float:
    """Global steps ``start .. stop - 1``; the mean loss of this rank's batches."""
    from tqdm.auto import tqdm

    cuda = device.type == "cuda"
    sampler = StepBatches(len(train_set), cfg, info, start, stop)  # type: ignore[arg-type]
    loader = DataLoader(
        Seeded(train_set),
        batch_sampler=sampler,
        num_workers=num_workers,
        pin_memory=cuda,
        collate_fn=collate_pairs,
    )
    net.train()
    total = 0.0
    bar = tqdm(
        loader,
        desc=f"fine-tune steps {start + 1}-{stop}",
        disable=not (progress and info.is_main),
        leave=False,
    )
    for i, (images, labels) in enumerate(bar):
        set_lr(opt, cfg, start + i, *sched)
        torch.manual_seed(item_seed(cfg.seed, start + i, -1 - info.rank))  # dropout, drop-path
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and amp):
            logits = net(images)
        loss = F.cross_entropy(logits.float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = float(loss.detach())
        total += value
        bar.set_postfix(loss=f"{value:.3f}")
    return total / max(stop - start, 1)
