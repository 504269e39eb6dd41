"""The pretraining loop behind ``gsg pretrain``: one process or many (torchrun), CPU or CUDA.

:class:`Pretrainer` only orchestrates: :mod:`.inputs` (loader and step views), :mod:`.step` (one
optimisation step), :mod:`.state` (checkpoint and resume), :mod:`.monitor` (kNN and collapse),
:mod:`.log` (epoch and step rows, summary, plot). Every random stream is seeded from its key, so a
resumed run replays the interrupted one bit for bit on the CPU. The run folder and resume guarantees:
docs/guides/pretraining.md and docs/guides/checkpoints.md.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from ..config.recipes import Recipe
from ..core.device import resolve_device
from ..core.distributed import agree_max, broadcast_object, gather_objects, init_distributed, sum_over_ranks
from ..method.learner import SelfSupervisedLearner
from .control import (
    EXIT_NONFINITE,
    PREEMPTED_MARKER,
    Preempted,
    RunLock,
    StopSignals,
    nonfinite_message,
    write_nonfinite_marker,
    write_preempted_marker,
)
from .inputs import (
    build_train_data,
    device_batches,
    seed_global_rngs,
    seeded_generator,
    step_views,
    stream_seed,
)
from .log import RunLog, RunTelemetry, configure_rank_logging, console_is_tty, run_summary
from .monitor import KnnMonitor, monitor_due
from .online_probe import OnlineLinearProbe, probe_classes
from .optim import build_optimizer, effective_lr, lr_at, set_lr
from .state import RunState, decide_resume_point
from .step import configure_backends, resolve_precision, train_step

log = logging.getLogger("gsg_zoo.pretrain")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf; the last good checkpoint is kept (the CLI exits with
    :data:`~gsg_zoo.train.control.EXIT_NONFINITE`)."""

    exit_code = EXIT_NONFINITE


@dataclass
class EpochTally:
    """Running totals of one epoch; a mid-epoch checkpoint keeps them (:meth:`to_state`)."""

    loss_sum: Tensor  # scalar on the device: summed without a host sync
    steps: int = 0
    images: int = 0
    data_wait: float = 0.0  # seconds spent waiting for the loader
    skipped: int = 0  # unreadable images replaced on this rank
    start: float = field(default_factory=time.perf_counter)

    def to_state(self) -> dict[str, Any]:
        """This rank's totals (the loss as a float: float32 -> float64 is exact)."""
        return {
            "loss_sum": float(self.loss_sum),
            "steps": self.steps,
            "images": self.images,
            "data_wait": self.data_wait,
            "skipped": self.skipped,
            "elapsed": time.perf_counter() - self.start,
        }

    @classmethod
    def from_state(
        cls, state: dict[str, Any], device: torch.device, rank: int = 0, world: int = 1
    ) -> EpochTally:
        """A fresh tally (empty ``state``), or this rank's part of the one a mid-epoch checkpoint saved
        (``{"ranks": [per-rank totals]}``; resumed on another world size, rank 0 carries the sums)."""
        if not state:
            return cls(torch.zeros((), device=device))
        parts = state.get("ranks", [state])  # a single tally: written before per-rank totals were kept
        if len(parts) == world:
            own = parts[rank]
        else:
            own = {**parts[0], **{k: sum(p[k] for p in parts) * (rank == 0) for k in ADDITIVE}}
        loss = torch.as_tensor(own["loss_sum"], dtype=torch.float32).to(device)
        return cls(
            loss,
            own["steps"],
            own["images"],
            own["data_wait"],
            own["skipped"],
            time.perf_counter() - own["elapsed"],
        )


ADDITIVE = ("loss_sum", "images", "data_wait", "skipped")  #: tally fields that add up over ranks


class Pretrainer:
    """Builds everything from a :class:`Recipe` and runs (or resumes) the pretraining."""

    def __init__(self, recipe: Recipe, out_dir: str | os.PathLike, progress: bool = True) -> None:
        self.recipe, self.out, self.progress = recipe, Path(out_dir), progress
        tc = recipe.train
        configure_backends(tc.cudnn_benchmark, tc.tf32, tc.deterministic)  # before any CUDA work
        cuda = tc.device in ("auto", "cuda") and torch.cuda.is_available()
        self.dist = init_distributed("cuda" if cuda else "cpu", tc.dist_timeout_minutes)
        configure_rank_logging(self.dist)
        self.device = resolve_device(tc.device, self.dist.local_rank)
        self.amp_dtype = resolve_precision(tc.precision, self.device)
        self.global_batch = global_batch_size(tc.batch_size, tc.batch_size_per_device, self.dist.world_size)
        self.local_batch = local_batch_size(self.global_batch, self.dist.world_size)
        self.learner, self.model = self._build_model()
        self.base_lr = effective_lr(recipe.optim, self.global_batch)
        modules = dict(self.learner.online_modules().items())
        self.optimizer = build_optimizer(modules, recipe.optim, self.global_batch)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.data = build_train_data(
            recipe, self.dist, self.device, self.local_batch, self.learner.config.num_views
        )
        self.train_loader = self.data.loader
        self.steps_per_epoch = steps_per_epoch(
            len(self.train_loader), tc.max_steps_per_epoch, self.local_batch
        )
        self.total_steps = self.steps_per_epoch * tc.epochs
        self.online_probe = self._build_probe() if recipe.monitor.online_linear else None
        self.state = RunState(
            recipe,
            self.learner,
            self.optimizer,
            self.scaler,
            world_size=self.dist.world_size,
            online_probe=self.online_probe,
        )
        self.run_log = RunLog(self.out, recipe.monitor.tensorboard, enabled=self.dist.is_main)
        self.knn_monitor = KnnMonitor(recipe.data, recipe.monitor, self.dist)
        self.telemetry = RunTelemetry(recipe, self.dist, self.device, self.total_steps, self.out, progress)
        self.signals, self.lock = StopSignals(), RunLock(self.out)
        self._last_save = time.monotonic()

    # ------------------------------------------------------------------ setup
    def _build_model(self) -> tuple[SelfSupervisedLearner, nn.Module]:
        """The learner (identical initialisation on every rank) and the module to call: DDP or itself."""
        tc = self.recipe.train
        torch.manual_seed(tc.seed)
        learner = SelfSupervisedLearner(self.recipe.learner_config())
        if self._use_sync_bn():
            learner = nn.SyncBatchNorm.convert_sync_batchnorm(learner)
        learner.to(self.device)
        if tc.channels_last:
            learner.to(memory_format=torch.channels_last)
        if tc.compile:
            learner.encoder.compile()
            learner.predictor.compile()
        if self.dist.world_size == 1:
            return learner, learner
        ids = [self.device.index] if self.device.type == "cuda" else None
        ddp = nn.parallel.DistributedDataParallel(
            learner,
            device_ids=ids,
            gradient_as_bucket_view=tc.ddp_gradient_as_bucket_view,
            static_graph=tc.ddp_static_graph,
            broadcast_buffers=tc.ddp_broadcast_buffers,
        )
        return learner, ddp

    def _build_probe(self) -> OnlineLinearProbe:
        """``monitor.online_linear``: the head over the backbone's pooled features (its own seed stream)."""
        from ..method.backbones import feature_dim

        mc, tc = self.recipe.monitor, self.recipe.train
        classes = mc.online_linear_classes or probe_classes(self.recipe.data.dataset, self.data.dataset)
        dim = feature_dim(self.learner.backbone)
        return OnlineLinearProbe(dim, classes, mc.online_linear_lr, self.device, self.dist, tc.seed)

    def _use_sync_bn(self) -> bool:
        mode = self.recipe.train.sync_bn
        if mode == "auto":
            return self.dist.world_size > 1 and self.device.type == "cuda"
        return mode == "on" and self.dist.world_size > 1

    # ------------------------------------------------------------------ checkpoints
    @property
    def ckpt_dir(self) -> Path:
        return self.out / "checkpoints"

    def state_dict(self) -> dict[str, Any]:
        return self.state.state_dict()

    def save(self) -> None:
        if self.dist.is_main:
            self.state.save(self.ckpt_dir)

    def resume(self, path: str | os.PathLike | None = None) -> bool:
        """Resume from ``OUT/checkpoints/last.pt`` when present, else from ``path`` (which must exist),
        decided by rank 0 and checked by every rank (:func:`.state.decide_resume_point`). Returns whether it resumed."""
        point = decide_resume_point(self.ckpt_dir / "last.pt", path, self.dist, self.device)
        return point.path is not None and self.state.resume(point.path)

    def _claim_run_dir(self) -> None:
        """Rank 0 takes the run directory's lock and checks for a non-finite marker; every rank learns
        the verdict (no rank trains while another stops)."""
        verdict = None
        if self.dist.is_main:
            verdict = nonfinite_message(self.out)
            if verdict is None:
                try:
                    self.lock.acquire()
                except RuntimeError as err:
                    verdict = f"locked: {err}"
                else:
                    (self.out / PREEMPTED_MARKER).unlink(missing_ok=True)  # this run continues that one
        verdict = broadcast_object(verdict, self.dist)
        if verdict and verdict.startswith("locked: "):
            raise RuntimeError(verdict.removeprefix("locked: "))
        if verdict:
            raise NonFiniteLossError(verdict)

    # ------------------------------------------------------------------ training
    def _lr(self, n_steps: int) -> float:
        """The scheduled lr ``n_steps`` into the current epoch."""
        progress = self.state.epoch + n_steps / self.steps_per_epoch
        return lr_at(self.recipe.optim, self.base_lr, progress, self.recipe.train.epochs)

    def _fail_nonfinite(self) -> None:
        message = (
            f"loss became non-finite at epoch {self.state.epoch + 1}, step {self.state.step}: stopping. "
            f"The last good checkpoint ({self.ckpt_dir / 'last.pt'}, epoch {self.state.epoch}) is kept; "
            "lower optim.lr, use train.precision=fp32/bf16, or check the data."
        )
        if self.dist.is_main:
            write_nonfinite_marker(self.out, message)
        raise NonFiniteLossError(message)

    def _is_check_step(self, epoch_steps: int) -> bool:
        """Check steps (the same on every rank): every ``train.log_every`` steps of the epoch, and every
        ``train.checkpoint_steps`` global steps."""
        every = self.recipe.train.checkpoint_steps
        return epoch_steps % self.recipe.train.log_every == 0 or bool(every and self.state.step % every == 0)

    def _check(self, tally: EpochTally) -> None:
        """Agree with every rank on a non-finite loss, a stop signal and a due checkpoint; act on them."""
        tc = self.recipe.train
        timed = tc.checkpoint_minutes and time.monotonic() - self._last_save >= 60 * tc.checkpoint_minutes
        stepped = bool(tc.checkpoint_steps and self.state.step % tc.checkpoint_steps == 0)
        local = [
            float(not math.isfinite(float(tally.loss_sum))),
            float(self.signals.requested is not None),
            float(stepped or bool(timed and self.dist.is_main)),
        ]
        nonfinite, stop, save = agree_max(local, self.device, self.dist)
        if nonfinite:
            self._fail_nonfinite()
        if tally.steps >= self.steps_per_epoch:
            return  # the epoch's own checkpoint follows; a stop is acted on after it (in run)
        if save or stop:
            self.state.epoch_step = tally.steps
            self.state.partial = {"ranks": gather_objects(tally.to_state(), self.dist)}
            self.save()
            self.dist.barrier()
        if stop:
            self._preempt()

    def _preempt(self) -> None:
        """After the checkpoint: rank 0 leaves the preemption marker, every rank exits with 75."""
        if self.dist.is_main:
            write_preempted_marker(self.out, self.signals.requested, self.state.epoch, self.state.step)
        raise Preempted()

    def _stop_agreed(self) -> bool:
        return bool(agree_max([float(self.signals.requested is not None)], self.device, self.dist)[0])

    def _start_epoch(self) -> float:
        """Train mode, the epoch's data order from the step a checkpoint stopped at, worker seeds, and
        the per-epoch lr; returns the lr."""
        self.learner.train()
        self.data.set_epoch(self.state.epoch, self.state.epoch_step)
        lr = self._lr(0)
        if not self.recipe.optim.per_step:
            set_lr(self.optimizer, lr, self.base_lr)
        return lr

    def _progress_bar(self) -> tqdm:
        return tqdm(
            total=self.steps_per_epoch,
            desc=f"epoch {self.state.epoch + 1}/{self.recipe.train.epochs}",
            disable=not (self.progress and self.dist.is_main and console_is_tty()),  # else: step log lines
            mininterval=0.5,
            leave=False,
        )

    def _seeds(self, n_steps: int) -> Callable[[str], int]:
        """The seed of each random stream of step ``n_steps`` of this rank's current epoch."""
        seed, epoch, rank = self.recipe.train.seed, self.state.epoch, self.dist.rank
        return lambda stream: stream_seed(seed, stream, epoch, rank, n_steps)

    def _step(
        self, batch: list[Tensor], n_steps: int, labels: Tensor | None = None
    ) -> tuple[Any, int, float | None]:
        """One optimisation step on a loader batch (then the online probe's on its labels); returns the
        learner's output, images and per-step lr."""
        lr = None
        if self.recipe.optim.per_step:
            lr = self._lr(n_steps)
            set_lr(self.optimizer, lr, self.base_lr)
        seed = self._seeds(n_steps)
        seed_global_rngs(seed("global"), self.device)  # for anything else that draws (dropout, drop-path)
        views = step_views(
            batch,
            self.data,
            self.learner.config.num_views,
            self.device,
            self.recipe.train.channels_last,
            seed("views"),
        )
        out = train_step(
            self.model,
            views,
            self.optimizer,
            ema=self.learner,
            step=self.state.step,
            total_steps=self.total_steps,
            scaler=self.scaler,
            amp_dtype=self.amp_dtype,
            generator=seeded_generator(seed("pairing")),
        )
        self.state.step += 1
        if self.online_probe is not None and labels is not None:
            self.online_probe.step(out.features[0], labels)
        return out, views[0].shape[0], lr

    def train_epoch(self) -> dict[str, float]:
        """The epoch's remaining steps (all of them unless resumed inside it), at most ``steps_per_epoch``.

        Every batch is full: an unreadable image is replaced in the dataset (:class:`EpochSeeded`).
        """
        lr = self._start_epoch()
        tally = EpochTally.from_state(self.state.partial, self.device, self.dist.rank, self.dist.world_size)
        bar, tick = self._progress_bar(), time.perf_counter()
        bar.update(tally.steps)
        self.telemetry.steps.restart()
        remaining = max(self.steps_per_epoch - tally.steps, 0)  # the lookahead fetches no batch past them
        batches = device_batches(self.train_loader, self.device, self.data.prefetch, limit=remaining)
        for batch, labels, skipped in batches if tally.steps < self.steps_per_epoch else ():
            wait = time.perf_counter() - tick
            tally.data_wait += wait
            tally.skipped += skipped
            out, images, step_lr = self._step(batch, tally.steps, labels)
            loss = out.loss.detach()
            lr = lr if step_lr is None else step_lr
            tally.loss_sum += loss
            tally.steps, tally.images = tally.steps + 1, tally.images + images
            bar.update(1)
            epoch = self.state.epoch + tally.steps / self.steps_per_epoch
            self.telemetry.step(
                loss,
                images,
                wait,
                out,
                self.state.step,
                epoch,
                lr,
                epoch_end=tally.steps >= self.steps_per_epoch,
            )
            if self._is_check_step(tally.steps):
                self._check(tally)
                bar.set_postfix(loss=f"{float(tally.loss_sum) / tally.steps:.4f}", lr=f"{lr:.4g}")
            if tally.steps >= self.steps_per_epoch:
                break  # before fetching a batch that would not be used
            tick = time.perf_counter()
        bar.close()
        self._check(tally)
        return self._epoch_stats(tally, lr)

    def _epoch_stats(self, tally: EpochTally, lr: float) -> dict[str, float]:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - tally.start
        world = self.dist.world_size  # loss, images and data wait: all ranks', not rank 0's
        loss, images, waited, skipped = sum_over_ranks(
            [float(tally.loss_sum), tally.images, tally.data_wait, tally.skipped], self.device, self.dist
        )
        return {
            "loss": loss / max(tally.steps * world, 1),
            "lr": lr,
            "images_per_s": images / max(elapsed, 1e-9),
            "data_wait_frac": waited / world / max(elapsed, 1e-9),
            "epoch_time_s": elapsed,
            "steps": tally.steps,
            "skipped": skipped,  # all ranks' (counted into skipped_images)
        }

    # ------------------------------------------------------------------ monitors and outputs
    def monitor(self) -> dict[str, Any]:
        """kNN top-1 and collapse indicators of the current encoder on rank 0, ``{}`` on the others (every
        rank must call it: each embeds a shard; see :class:`KnnMonitor`)."""
        return self.knn_monitor(
            self.learner,
            self.device,
            self.amp_dtype,
            self.recipe.train.channels_last,
            self._probe_for_monitor(),
        )

    def _probe_for_monitor(self) -> OnlineLinearProbe | None:
        """The online probe, when the monitor's test images share the training data's classes."""
        mc, dc = self.recipe.monitor, self.recipe.data
        same = (mc.dataset or dc.dataset) == dc.dataset and (mc.root or dc.root) == dc.root
        return self.online_probe if same else None

    def _finish_epoch(self, stats: dict[str, float]) -> None:
        """Count the epoch, checkpoint, then monitor when due (a slow or failing monitor never costs the
        epoch) and checkpoint again with its values, log the row, and wait for every rank."""
        tc, st = self.recipe.train, self.state
        st.epoch, st.epoch_step, st.partial = st.epoch + 1, 0, {}
        st.skipped_images += int(stats.pop("skipped"))
        row: dict[str, Any] = {
            "epoch": st.epoch,
            "step": st.step,
            **stats,
            "skipped_images": st.skipped_images,
        }
        if self.online_probe is not None:  # every rank: the counts are summed over ranks
            row.update(self.online_probe.epoch_metrics())
        st.history.append(row)
        self.save()
        self._last_save = time.monotonic()
        self.lock.refresh()
        if monitor_due(self.recipe.monitor.every, st.epoch, tc.epochs):  # every rank embeds a shard
            row.update(self.monitor())
            self.save()
        self.run_log.epoch(st.history)
        self.telemetry.epoch(row)
        self.dist.barrier()
        if self.dist.is_main:
            brief = ", ".join(f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float))
            log.info("epoch %d/%d: %s", st.epoch, tc.epochs, brief)

    def run(self, resume_from: str | os.PathLike | None = None) -> dict[str, Any]:
        """Train to ``train.epochs`` and write the summary.

        Resumes from ``OUT/checkpoints/last.pt`` when it exists, else from ``resume_from`` if given.
        SIGTERM/SIGUSR1 save at the next check step and raise :class:`~gsg_zoo.train.control.Preempted`.
        """
        self._claim_run_dir()
        wall_start = time.perf_counter()
        try:
            self.resume(resume_from)
            self.run_log.start(self.recipe.to_dict())  # after the resume check: a refused run writes nothing
            self.telemetry.start(self.state)
            train_time = sum(r.get("epoch_time_s", 0.0) for r in self.state.history)
            self.signals.install()
            while self.state.epoch < self.recipe.train.epochs:
                stats = self.train_epoch()
                train_time += stats["epoch_time_s"]
                self._finish_epoch(stats)
                if self.state.epoch < self.recipe.train.epochs and self._stop_agreed():
                    self._preempt()  # the epoch's checkpoint is written; a finished run just ends
        finally:
            self.signals.restore()
            self.data.close()
            self.lock.release()
            self.telemetry.close()
        summary = self.summary(train_time, time.perf_counter() - wall_start)
        self.run_log.finish(summary, self.state.history, title=self.recipe.name)
        return summary

    def summary(self, train_time: float, wall_time: float) -> dict[str, Any]:
        return run_summary(self.state, self.dist.world_size, self.device, train_time, wall_time)


SMALL_LOCAL_BATCH = 16  # BatchNorm statistics per view-batch (and GSG's pairing) get noisy below this


def global_batch_size(batch_size: int, per_device: int | None, world_size: int) -> int:
    """``train.batch_size``, or ``train.batch_size_per_device`` x world size when that is set."""
    return per_device * world_size if per_device else batch_size


def local_batch_size(batch_size: int, world_size: int) -> int:
    """Each rank's share of the global batch (at least 2: GSG pairs images within the local batch)."""
    if batch_size % world_size:
        raise ValueError(
            f"train.batch_size {batch_size} is not divisible by the world size {world_size} (e.g. after an "
            "elastic restart with fewer ranks): launch a world size that divides it, or set "
            "train.batch_size_per_device so that the global batch follows the world size"
        )
    local = batch_size // world_size
    if local < 2:
        raise ValueError(f"{local} image(s) per rank: GSG pairs images within each rank's batch; use >= 2")
    if local < SMALL_LOCAL_BATCH:
        log.warning(
            "%d images per rank: BatchNorm statistics and GSG's pairing use the local batch; "
            "per-device batches under %d are noisy",
            local,
            SMALL_LOCAL_BATCH,
        )
    return local


def steps_per_epoch(num_batches: int, max_steps: int | None, local_batch: int) -> int:
    """The loader's batches, capped by ``train.max_steps_per_epoch``; at least one."""
    steps = min(num_batches, max_steps) if max_steps else num_batches
    if steps == 0:
        raise ValueError(
            f"the dataset has fewer images than one batch of {local_batch} per rank; lower train.batch_size"
        )
    return steps
