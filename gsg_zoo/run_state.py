"""What a pretraining run checkpoints, and how it saves and resumes it.

A checkpoint holds the resolved recipe, the learner's weights (online and EMA target), the
optimiser and grad-scaler states, the counters and per-epoch history, the global RNG states, and
``rng_streams``: the version of the random streams the run drew from. Training randomness itself is
not restored but re-derived from (seed, epoch, rank, step) (:mod:`.train_data`), so (epoch, steps into
the epoch) is the resume point: a checkpoint written inside an epoch (by time, or on preemption) also
holds the epoch's partial totals, and the resumed run fast-forwards the data to that step. Files are
written atomically (:func:`gsg_zoo.checkpoint.save_checkpoint`) and loaded safely.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .checkpoint import load_checkpoint, remove_stale_temps, save_checkpoint
from .learner import LearnerConfig, SelfSupervisedLearner
from .recipes import Recipe
from .resume_point import check_recipe_unchanged

log = logging.getLogger("gsg_zoo.pretrain")

# 2: each random stream seeded from its key (issue 18); absent (1): the pairing drew from the global RNG.
RNG_STREAMS = 2


def rng_state() -> dict[str, Any]:
    """The torch CPU RNG state and one CUDA RNG state per visible device (none without CUDA)."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(saved: dict[str, Any]) -> None:
    """Restore :func:`rng_state`'s states; CUDA ones per device, for the devices both runs have."""
    torch.set_rng_state(saved["torch"])
    cuda_states = saved.get("cuda") or []
    if not torch.cuda.is_available():
        return
    for index, state in enumerate(cuda_states[: torch.cuda.device_count()]):
        torch.cuda.set_rng_state(state, index)


def check_same_model(path: Path, saved_config: dict[str, Any], recipe: Recipe) -> None:
    """Refuse to resume a checkpoint whose model differs from the recipe's."""
    saved = {**LearnerConfig().to_dict(), **saved_config["model"]}  # older checkpoints lack new keys
    want = recipe.to_dict()["model"]
    if saved != want:
        diff = {k: (saved.get(k), v) for k, v in want.items() if saved.get(k) != v}
        raise ValueError(
            f"{path} was trained with a different model (checkpoint vs recipe: {diff}); "
            "use another --out directory or the matching recipe"
        )


def warn_other_streams(streams: int, epoch: int) -> None:
    """Say that a checkpoint of other random streams resumes, but not bit for bit."""
    if streams != RNG_STREAMS:
        log.warning(
            "this checkpoint was written by a gsg-zoo with other random streams (rng_streams=%d, now %d): "
            "it resumes at epoch %d, but the epochs after it draw other pairings and views than the "
            "interrupted run would have (not bit-identical to an uninterrupted run of either version)",
            streams, RNG_STREAMS, epoch,
        )  # fmt: skip


@dataclass(eq=False)
class RunState:
    """The objects a run trains plus its progress: everything a checkpoint saves and restores."""

    recipe: Recipe
    learner: SelfSupervisedLearner
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    epoch: int = 0  # epochs completed
    step: int = 0  # optimiser steps taken
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per completed epoch
    skipped_images: int = 0  # unreadable images replaced so far (all ranks)
    epoch_step: int = 0  # steps done inside the current epoch (0 at an epoch boundary)
    partial: dict[str, Any] = field(default_factory=dict)  # the current epoch's running totals
    world_size: int = 1
    telemetry: dict[str, Any] = field(
        default_factory=dict
    )  # e.g. the W&B run id (a resumed run continues it)

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
            "rng": rng_state(),
            "rng_streams": RNG_STREAMS,
            "epoch_step": self.epoch_step,
            "partial": self.partial,
            "world_size": self.world_size,
            "telemetry": self.telemetry,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.learner.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        load_scaler_state(self.scaler, state["scaler"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.epoch_step, self.partial = int(state.get("epoch_step", 0)), dict(state.get("partial") or {})
        if int(state.get("world_size", self.world_size)) != self.world_size:
            log.warning("resuming a run of world size %s with %d ranks: the data order per rank changes, so "
                        "the result is not bit-identical to an uninterrupted run", state["world_size"],
                        self.world_size)  # fmt: skip
        self.history = list(state.get("history", []))
        self.skipped_images = int(state.get("skipped_images", 0))
        self.telemetry = dict(state.get("telemetry") or {})
        restore_rng(state["rng"])
        warn_other_streams(int(state.get("rng_streams", 1)), self.epoch)

    def save(self, ckpt_dir: Path) -> None:
        """``ckpt_dir/last.pt``, and at an epoch end ``epoch_NNNN.pt`` every ``train.checkpoint_every``
        epochs."""
        state = self.state_dict()
        remove_stale_temps(ckpt_dir)  # left by a run killed during a write
        save_checkpoint(ckpt_dir / "last.pt", state)
        every = self.recipe.train.checkpoint_every
        if every and self.epoch % every == 0 and not self.epoch_step:
            save_checkpoint(ckpt_dir / f"epoch_{self.epoch:04d}.pt", state)

    def resume(self, path: str | os.PathLike) -> bool:
        """Load the checkpoint at ``path`` if it exists (same model and recipe, up to the keys that may
        change); returns whether it did."""
        path = Path(path)
        if not path.exists():
            return False
        state = load_checkpoint(path)
        check_same_model(path, state["config"], self.recipe)
        check_recipe_unchanged(
            path, state["config"], self.recipe.to_dict(), mid_epoch=bool(state.get("epoch_step"))
        )
        self.load_state_dict(state)
        log.info("resumed from %s at epoch %d, step %d (%d into the epoch)", path, self.epoch, self.step,
                 self.epoch_step)  # fmt: skip
        return True


def load_scaler_state(scaler: torch.amp.GradScaler, saved: dict[str, Any]) -> None:
    """Restore the grad scaler, also across precisions: an fp16 run's scale is dropped when resuming
    in bf16/fp32 (no scaler), and an fp16 run resumed from bf16/fp32 starts with a fresh scale."""
    if scaler.is_enabled() and saved:
        scaler.load_state_dict(saved)
    elif scaler.is_enabled() != bool(saved):
        log.info("resuming with another precision: the grad scaler starts fresh")
