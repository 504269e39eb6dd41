"""The pretraining loop behind ``gsg pretrain``: one process or many (torchrun), CPU or CUDA.

Run directory layout::

    OUT/config.yaml            fully resolved recipe
    OUT/checkpoints/last.pt    written atomically after every epoch (resume point)
    OUT/checkpoints/epoch_NNNN.pt  every ``train.checkpoint_every`` epochs
    OUT/metrics.jsonl, metrics.csv  one row per epoch
    OUT/summary.json, curves.png    at the end

Exact resume: the data order and every augmentation are pure functions of (seed, epoch, index), and
the pairing RNG is re-seeded from (seed, epoch, rank) at each epoch start, so resuming from the last
epoch checkpoint replays the interrupted epoch bit for bit (on the CPU; CUDA kernels may add
non-determinism unless ``torch.use_deterministic_algorithms`` is set).

Distributed: each rank pairs images within its *local* batch, as the reference implementation does
(GSG's pairing and selection never cross ranks); gradients are averaged by DDP; BatchNorm becomes
SyncBatchNorm on multi-GPU runs (``train.sync_bn``).
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from .checkpoint import load_checkpoint, save_checkpoint
from .data.augment import MultiView, build_augmentation, eval_transform, uint8_transform
from .data.batch_augment import BatchAugment
from .device import resolve_device
from .data.datasets import EpochSeeded, EpochShardSampler, build_dataset, collate_images, collate_views
from .learner import SelfSupervisedLearner
from .normalization import NORMALIZATION
from .monitors import collapse_metrics, knn_top1
from .optim import build_optimizer, effective_lr, lr_at, set_lr
from .recipes import Recipe

log = logging.getLogger("gsg_zoo.pretrain")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf; the last good checkpoint is kept."""


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistInfo:
    """Join the torchrun process group when launched by torchrun (gloo on CPU, nccl on CUDA)."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype or None for fp32."""
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return (seed * 1_000_003 + epoch) * 4099 + rank


class Pretrainer:
    """Builds everything from a :class:`Recipe` and runs (or resumes) the pretraining."""

    def __init__(self, recipe: Recipe, out_dir: str | os.PathLike, progress: bool = True) -> None:
        self.recipe, self.out = recipe, Path(out_dir)
        self.progress = progress
        tc = recipe.train
        self.dist = init_distributed(
            "cuda" if tc.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
        )
        self.device = resolve_device(tc.device, self.dist.local_rank)
        self.amp_dtype = resolve_precision(tc.precision, self.device)
        if tc.batch_size % self.dist.world_size:
            raise ValueError(
                f"train.batch_size {tc.batch_size} is not divisible by world size {self.dist.world_size}"
            )
        self.local_batch = tc.batch_size // self.dist.world_size

        torch.manual_seed(tc.seed)  # identical initialisation on every rank
        self.learner = SelfSupervisedLearner(recipe.learner_config())
        if self._use_sync_bn():
            self.learner = nn.SyncBatchNorm.convert_sync_batchnorm(self.learner)
        self.learner.to(self.device)
        if tc.channels_last:
            self.learner.to(memory_format=torch.channels_last)
        if tc.compile:
            self.learner.encoder.compile()
            self.learner.predictor.compile()
        self.model: nn.Module = self.learner
        if self.dist.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.learner, device_ids=ids)

        self.base_lr = effective_lr(recipe.optim, tc.batch_size)
        modules = dict(self.learner.online_modules().items())
        self.optimizer = build_optimizer(modules, recipe.optim, tc.batch_size)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

        self.train_loader = self._train_loader()
        self.steps_per_epoch = len(self.train_loader)
        if tc.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, tc.max_steps_per_epoch)
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"the dataset has fewer images than one batch of {self.local_batch} per rank; lower train.batch_size"
            )
        self.total_steps = self.steps_per_epoch * tc.epochs
        self.epoch, self.step = 0, 0
        self.history: list[dict[str, Any]] = []
        self.skipped_images = 0
        self._tb = None

    # ------------------------------------------------------------------ setup
    def _use_sync_bn(self) -> bool:
        mode = self.recipe.train.sync_bn
        if mode == "auto":
            return self.dist.world_size > 1 and self.device.type == "cuda"
        return mode == "on" and self.dist.world_size > 1

    def _train_loader(self) -> DataLoader:
        dc, tc = self.recipe.data, self.recipe.train
        aug_args = dc.augment_options()
        self.batch_augment: BatchAugment | None = None
        if dc.batch_augment:  # workers only decode; the views are drawn on the device, per batch
            if dc.augmentation != "cifar":
                raise ValueError(
                    "data.batch_augment supports augmentation=cifar only (no blur on the device)"
                )
            self.batch_augment = BatchAugment(dc.image_size, *NORMALIZATION[dc.normalization], **aug_args)
            views = MultiView(uint8_transform(dc.image_size), 1)
        else:
            aug = build_augmentation(dc.augmentation, dc.image_size, dc.normalization, **aug_args)
            views = MultiView(aug, self.learner.config.num_views)
        ds = build_dataset(
            dc.dataset,
            dc.root,
            dc.split,
            transform=views,
            download=dc.download and self.dist.is_main,
            num_images=dc.num_images,
            **dc.synthetic_options(),
        )
        self.train_dataset = EpochSeeded(ds, tc.seed)
        self.sampler = EpochShardSampler(len(ds), self.dist.rank, self.dist.world_size, seed=tc.seed)
        workers = dc.num_workers
        return DataLoader(
            self.train_dataset,
            batch_size=self.local_batch,
            sampler=self.sampler,
            num_workers=workers,
            collate_fn=collate_views,
            pin_memory=dc.pin_memory and self.device.type == "cuda",
            drop_last=True,
            persistent_workers=dc.persistent_workers and workers > 0,
            prefetch_factor=dc.prefetch_factor if workers > 0 else None,
        )

    # ------------------------------------------------------------------ checkpoints
    @property
    def ckpt_dir(self) -> Path:
        return self.out / "checkpoints"

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": self.recipe.to_dict(),
            "model": self.learner.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "history": self.history,
            "skipped_images": self.skipped_images,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
        }

    def save(self) -> None:
        if not self.dist.is_main:
            return
        state = self.state_dict()
        save_checkpoint(self.ckpt_dir / "last.pt", state)
        every = self.recipe.train.checkpoint_every
        if every and self.epoch % every == 0:
            save_checkpoint(self.ckpt_dir / f"epoch_{self.epoch:04d}.pt", state)

    def resume(self, path: str | os.PathLike | None = None) -> bool:
        """Load ``path`` (default ``OUT/checkpoints/last.pt`` if present). Returns whether it resumed."""
        path = Path(path) if path else self.ckpt_dir / "last.pt"
        if not path.exists():
            return False
        state = load_checkpoint(path)
        from .learner import LearnerConfig

        saved_model = {
            **LearnerConfig().to_dict(),
            **state["config"]["model"],
        }  # older checkpoints lack new keys
        want_model = self.recipe.to_dict()["model"]
        if saved_model != want_model:
            diff = {k: (saved_model.get(k), v) for k, v in want_model.items() if saved_model.get(k) != v}
            raise ValueError(
                f"{path} was trained with a different model (checkpoint vs recipe: {diff}); "
                "use another --out directory or the matching recipe"
            )
        self.learner.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.history = list(state.get("history", []))
        self.skipped_images = int(state.get("skipped_images", 0))
        torch.set_rng_state(state["rng"]["torch"])
        log.info("resumed from %s at epoch %d (step %d)", path, self.epoch, self.step)
        return True

    # ------------------------------------------------------------------ training
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.recipe.train.channels_last else x

    def _check_finite(self, loss_sum: torch.Tensor, n: int) -> None:
        if n and not math.isfinite(float(loss_sum)):
            raise NonFiniteLossError(
                f"loss became non-finite at epoch {self.epoch + 1}, step {self.step}: stopping. The last good "
                f"checkpoint ({self.ckpt_dir / 'last.pt'}, epoch {self.epoch}) is kept; lower optim.lr, use "
                "train.precision=fp32/bf16, or check the data."
            )

    def train_epoch(self) -> dict[str, float]:
        tc = self.recipe.train
        self.learner.train()
        self.sampler.set_epoch(self.epoch)
        torch.manual_seed(_epoch_seed(tc.seed, self.epoch, self.dist.rank))  # pairing RNG
        if not self.recipe.optim.per_step:
            lr = lr_at(self.recipe.optim, self.base_lr, self.epoch, tc.epochs)
            set_lr(self.optimizer, lr, self.base_lr)
        loss_sum = torch.zeros((), device=self.device)
        n_steps = n_images = 0
        data_wait = 0.0
        start = tick = time.perf_counter()
        bar = tqdm(
            total=self.steps_per_epoch,
            desc=f"epoch {self.epoch + 1}/{tc.epochs}",
            disable=not (self.progress and self.dist.is_main),
            mininterval=0.5 if sys.stderr.isatty() else 10,
            leave=False,
        )
        for views, _, skipped in self.train_loader:
            if n_steps >= self.steps_per_epoch:
                break
            data_wait += time.perf_counter() - tick
            self.skipped_images += skipped
            if not views or views[0].shape[0] < 2:
                tick = time.perf_counter()
                continue
            if self.recipe.optim.per_step:
                lr = lr_at(
                    self.recipe.optim, self.base_lr, self.epoch + n_steps / self.steps_per_epoch, tc.epochs
                )
                set_lr(self.optimizer, lr, self.base_lr)
            if self.batch_augment is not None:  # one uint8 batch in; channels_last only for the views
                gen = torch.Generator(self.device)
                gen.manual_seed(_epoch_seed(tc.seed, self.epoch, self.dist.rank) * 100_003 + n_steps)
                images = views[0].to(self.device, non_blocking=True)
                views = self.batch_augment.views(images, self.learner.config.num_views, gen)
            views = [self._to_device(v) for v in views]
            with self._autocast():
                out = self.model(views)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(out.loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.learner.update_target(self.step, self.total_steps)
            loss_sum += out.loss.detach()
            n_steps += 1
            n_images += views[0].shape[0]
            self.step += 1
            if n_steps % tc.log_every == 0:
                self._check_finite(loss_sum, n_steps)
                bar.set_postfix(loss=f"{float(loss_sum) / n_steps:.4f}", lr=f"{lr:.4g}")
            bar.update(1)
            tick = time.perf_counter()
        bar.close()
        self._check_finite(loss_sum, n_steps)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        world = self.dist.world_size
        return {
            "loss": float(loss_sum) / max(n_steps, 1),
            "lr": lr,
            "images_per_s": n_images * world / max(elapsed, 1e-9),
            "data_wait_frac": data_wait / max(elapsed, 1e-9),
            "epoch_time_s": elapsed,
            "steps": n_steps,
        }

    # ------------------------------------------------------------------ monitors
    def _monitor_loaders(self) -> tuple[DataLoader, DataLoader]:
        if hasattr(self, "_mon"):
            return self._mon
        dc, mc = self.recipe.data, self.recipe.monitor
        name, root = mc.dataset or dc.dataset, mc.root or dc.root
        mean, std = NORMALIZATION.get(dc.normalization, NORMALIZATION["imagenet"])
        tf = eval_transform(dc.image_size, mean, std, crop_pct=1.0 if dc.image_size <= 64 else 0.875)
        loaders = []
        for split, limit in ((mc.train_split, mc.train_limit), (mc.test_split, mc.test_limit)):
            ds = build_dataset(
                name, root, split, transform=tf, num_images=limit or 2000, **dc.synthetic_options()
            )
            if limit and len(ds) > limit:
                ds = torch.utils.data.Subset(ds, range(limit))
            loaders.append(
                DataLoader(
                    ds,
                    batch_size=mc.batch_size,
                    num_workers=min(dc.num_workers, 2),
                    collate_fn=collate_images,
                )
            )
        self._mon = (loaders[0], loaders[1])
        return self._mon

    @torch.no_grad()
    def _embed(
        self, loader: DataLoader, projections: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        feats, zs, labels = [], [], []
        for x, y, _ in loader:
            with self._autocast():
                h, z = self.learner.encoder(self._to_device(x))
            feats.append(h.float().cpu())
            labels.append(y)
            if projections:
                zs.append(z.float().cpu())
        return torch.cat(feats), torch.cat(labels), (torch.cat(zs) if projections else None)

    def monitor(self) -> dict[str, float]:
        mc = self.recipe.monitor
        train_loader, test_loader = self._monitor_loaders()
        was_training = self.learner.training
        self.learner.eval()
        try:
            bank, bank_labels, _ = self._embed(train_loader, projections=False)
            test, test_labels, test_z = self._embed(test_loader, projections=True)
        finally:
            self.learner.train(was_training)
        num_classes = int(max(bank_labels.max(), test_labels.max())) + 1
        metrics = {"knn_top1": knn_top1(bank, bank_labels, test, test_labels, num_classes, k=mc.k, t=mc.t)}
        metrics.update(collapse_metrics(test, test_z))
        return metrics

    # ------------------------------------------------------------------ outputs
    def _log_epoch(self, row: dict[str, Any]) -> None:
        self.history.append(row)
        if not self.dist.is_main:
            return
        with open(self.out / "metrics.jsonl", "w") as f:  # rewritten whole: consistent after resume
            for r in self.history:
                f.write(json.dumps(r) + "\n")
        keys = sorted({k for r in self.history for k in r})
        with open(self.out / "metrics.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(self.history)
        if self.recipe.monitor.tensorboard:
            if self._tb is None:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.out / "tb"))
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "epoch":
                    self._tb.add_scalar(k, v, row["epoch"])

    def run(self, resume_from: str | os.PathLike | None = None) -> dict[str, Any]:
        """Train to ``train.epochs`` and write the summary.

        Resumes from ``resume_from`` if given, else from ``OUT/checkpoints/last.pt`` when it exists.
        """
        tc, mc = self.recipe.train, self.recipe.monitor
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.yaml").write_text(yaml.safe_dump(self.recipe.to_dict(), sort_keys=False))
        self.resume(resume_from)
        wall_start = time.perf_counter()
        train_time = sum(r.get("epoch_time_s", 0.0) for r in self.history)
        while self.epoch < tc.epochs:
            stats = self.train_epoch()
            self.epoch += 1
            train_time += stats["epoch_time_s"]
            row: dict[str, Any] = {"epoch": self.epoch, "step": self.step, **stats}
            due = mc.every > 0 and (self.epoch % mc.every == 0) or (mc.every >= 0 and self.epoch == tc.epochs)
            if due and self.dist.is_main:
                row.update(self.monitor())
            row["skipped_images"] = self.skipped_images
            self._log_epoch(row)
            self.save()
            if self.dist.world_size > 1:
                dist.barrier()
            if self.dist.is_main:
                brief = ", ".join(f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float))
                log.info("epoch %d/%d: %s", self.epoch, tc.epochs, brief)
        summary = self.summary(train_time, time.perf_counter() - wall_start)
        if self.dist.is_main:
            (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
            plot_curves(self.history, self.out / "curves.png", title=self.recipe.name)
        return summary

    def summary(self, train_time: float, wall_time: float) -> dict[str, Any]:
        cfg = self.learner.config
        last = self.history[-1] if self.history else {}
        monitored = [r for r in self.history if "knn_top1" in r]
        images = sum(r.get("steps", 0) for r in self.history) * self.recipe.train.batch_size
        return {
            "name": self.recipe.name,
            "method": cfg.method,
            "predictor": cfg.predictor,
            "backbone": cfg.backbone,
            "dataset": self.recipe.data.dataset,
            "epochs": self.epoch,
            "steps": self.step,
            "batch_size": self.recipe.train.batch_size,
            "world_size": self.dist.world_size,
            "device": str(self.device.type),
            "device_name": torch.cuda.get_device_name(self.device)
            if self.device.type == "cuda"
            else _cpu_name(),
            "final_loss": last.get("loss"),
            "knn_top1": monitored[-1]["knn_top1"] if monitored else None,
            "knn_protocol": {
                "k": self.recipe.monitor.k,
                "t": self.recipe.monitor.t,
                "train": self.recipe.monitor.train_split,
                "test": self.recipe.monitor.test_split,
            },  # fmt: skip
            "z_std": monitored[-1].get("z_std") if monitored else None,
            "z_rank": monitored[-1].get("z_rank") if monitored else None,
            "h_rank": monitored[-1].get("h_rank") if monitored else None,
            "train_time_s": train_time,
            "device_hours": train_time * self.dist.world_size / 3600,
            "images_per_s": images / max(train_time, 1e-9),
            "images_seen": images,
            "encoder_passes": images * cfg.num_views,
            "skipped_images": self.skipped_images,
            "wall_time_s_this_process": wall_time,
        }


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" x{os.cpu_count()}"
    return f"cpu x{os.cpu_count()}"


def plot_curves(history: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """PNG of loss, kNN accuracy and collapse indicators over epochs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("loss", "loss"),
        ("knn_top1", "kNN top-1 (%)"),
        ("z_std", "std(normalised z)·√d"),
        ("z_rank", "effective rank"),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
    for ax, (key, label) in zip(axes, panels):
        pts = [(r["epoch"], r[key]) for r in history if r.get(key) is not None]
        if key == "z_rank":
            pts_h = [(r["epoch"], r["h_rank"]) for r in history if r.get("h_rank") is not None]
            if pts_h:
                ax.plot(*zip(*pts_h), marker=".", label="backbone h")
        if pts:
            ax.plot(*zip(*pts), marker=".", label="projection z" if key == "z_rank" else None)
        ax.set_xlabel("epoch")
        ax.set_title(label)
        ax.grid(alpha=0.3)
        if key == "z_rank" and pts:
            ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
