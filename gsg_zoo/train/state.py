"""Where a run resumes from, decided once by rank 0 and checked by every rank, and what may change.

* ``OUT/checkpoints/last.pt`` is the truth when present; ``--resume PATH`` only seeds an empty run
  directory (torchrun restarts workers with the same arguments, so the flag must not win over later
  progress), and a ``--resume`` file that does not exist is an error, never a silent fresh start.
* Rank 0 resolves (path, epoch, step) and broadcasts it; every rank reads the file itself and must find
  the same (epoch, step), else every rank stops with an error saying that the run directory must be on
  storage every node reads (a node-local ``OUT`` would make ranks resume at different epochs and hang).
* On resume the whole resolved recipe is compared with the checkpoint's; only the keys of
  :data:`MAY_CHANGE` may differ (how long to train, how often to save and monitor, how data is
  loaded, where it lives). Any other difference is refused, naming the key and both values.
"""

from __future__ import annotations

import fnmatch
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config.recipes import Recipe, dotted, upgrade_config
from ..core.checkpoint import CheckpointError, load_checkpoint, remove_stale_temps, save_checkpoint
from ..core.distributed import DistInfo, agree_max, broadcast_object
from ..method.learner import SelfSupervisedLearner

#: Recipe keys a resumed run may change (glob patterns over ``section.key``).
MAY_CHANGE: tuple[str, ...] = (
    "name",
    "paper.*",
    "train.epochs",
    "train.checkpoint_every",
    "train.checkpoint_minutes",
    "train.checkpoint_steps",
    "train.log_every",
    "train.device",
    "train.precision",
    "train.compile",
    "train.cudnn_benchmark",
    "train.tf32",
    "train.dist_timeout_minutes",
    "monitor.*",
    "data.root",
    "data.download",
    "data.loader.*",
    "data.max_consecutive_failures",
)

SHARED_STORAGE = (
    "every rank must resume from the same checkpoint: put --out on storage that every node reads "
    "(a shared filesystem), not a node-local path"
)


@dataclass(frozen=True)
class ResumePoint:
    """The checkpoint to load (None: start fresh) and the (epoch, step) it holds."""

    path: str | None = None
    epoch: int = 0
    step: int = 0


def changed_keys(saved: dict[str, Any], now: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Keys of both resolved recipes whose values differ (a key only one has comes from another
    gsg-zoo version and is not a change)."""
    a, b = dotted(saved), dotted(now)
    return {k: (a[k], b[k]) for k in sorted(a.keys() & b.keys()) if a[k] != b[k]}


#: Keys a resumed run may change only at an epoch boundary: a streamed epoch's plan splits each rank's
#: shards over its loader workers, so the rest of a half-read epoch needs the same worker count.
STREAMING_EPOCH_KEYS: tuple[str, ...] = ("data.loader.num_workers",)


def refused_changes(
    saved: dict[str, Any], now: dict[str, Any], mid_epoch: bool = False
) -> dict[str, tuple[Any, Any]]:
    """The changes outside :data:`MAY_CHANGE` (and, resuming a streamed epoch, of its worker count)."""
    pinned = STREAMING_EPOCH_KEYS if mid_epoch and dotted(now).get("data.stream.enabled") else ()
    return {
        k: v
        for k, v in changed_keys(saved, now).items()
        if k in pinned or not any(fnmatch.fnmatch(k, p) for p in MAY_CHANGE)
    }


def check_recipe_unchanged(
    path: str | Path, saved: dict[str, Any], now: dict[str, Any], mid_epoch: bool = False
) -> None:
    refused = refused_changes(saved, now, mid_epoch)
    if refused:
        lines = "\n".join(f"  {k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in refused.items())
        streamed = (
            " (data.loader.num_workers: not inside a streamed epoch)"
            if mid_epoch and set(refused) & set(STREAMING_EPOCH_KEYS)
            else ""
        )
        raise ValueError(
            f"{path} was trained with a different recipe; these keys may not change on resume{streamed}:\n{lines}\n"
            f"Use the original values, or another --out directory to start a new run. Keys that may change: "
            f"{', '.join(MAY_CHANGE)}"
        )


def _point_of(path: Path) -> ResumePoint:
    state = load_checkpoint(path)
    return ResumePoint(str(path), int(state["epoch"]), int(state["step"]))


def resolve_on_main(last: Path, resume_from: str | Path | None) -> ResumePoint | str:
    """Rank 0's decision: the resume point, or an error message every rank will raise."""
    try:
        if last.exists():
            return _point_of(last)
        if resume_from is None:
            return ResumePoint()
        if not Path(resume_from).exists():
            return f"--resume {resume_from}: no such checkpoint (nothing was started)"
        return _point_of(Path(resume_from))
    except CheckpointError as err:
        return str(err)


def decide_resume_point(
    last: Path, resume_from: str | Path | None, info: DistInfo, device: Any
) -> ResumePoint:
    """The resume point every rank agrees on, or ValueError on every rank (never a hang)."""
    decided = broadcast_object(resolve_on_main(last, resume_from) if info.is_main else None, info)
    if isinstance(decided, str):
        raise ValueError(decided)
    problem = ""
    if decided.path is not None and not info.is_main:
        try:
            mine = _point_of(Path(decided.path))
            if (mine.epoch, mine.step) != (decided.epoch, decided.step):
                problem = f"rank {info.rank} reads epoch {mine.epoch} step {mine.step} in {decided.path}"
        except (OSError, CheckpointError) as err:
            problem = f"rank {info.rank} cannot read {decided.path} ({err})"
    elif decided.path is None and not info.is_main and last.exists():
        problem = f"rank {info.rank} finds {last} while rank 0 starts fresh"
    if agree_max([float(bool(problem))], device, info)[0]:
        raise ValueError(
            f"ranks disagree on the resume point{': ' + problem if problem else ''}; {SHARED_STORAGE}"
        )
    return decided


log = logging.getLogger("gsg_zoo.pretrain")

#: The random streams a checkpoint's RNG state drives (2: each stream seeded from its key).
RNG_STREAMS = 2
#: What a checkpoint holds (:meth:`RunState.state_dict`); one without any of them cannot resume exactly.
STATE_KEYS = (
    "config",
    "model",
    "optimizer",
    "scaler",
    "epoch",
    "step",
    "history",
    "skipped_images",
    "rng",
    "rng_streams",
    "epoch_step",
    "partial",
    "world_size",
    "telemetry",
)


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
    saved = saved_config["model"]
    want = recipe.to_dict()["model"]
    if saved != want:
        diff = {k: (saved.get(k), v) for k, v in want.items() if saved.get(k) != v}
        raise ValueError(
            f"{path} was trained with a different model (checkpoint vs recipe: {diff}); "
            "use another --out directory or the matching recipe"
        )


def check_restorable(path: Path, state: dict[str, Any], keys: set[str]) -> None:
    """Refuse a checkpoint that lacks the keys of today's format or drew from other random streams."""
    missing = sorted(keys - set(state))
    if missing:
        raise CheckpointError(
            f"{path} lacks {', '.join(missing)}: it was written by a pre-release gsg-zoo and cannot resume "
            "exactly; start a new run (another --out) or export its weights with `gsg export`"
        )
    if state["rng_streams"] != RNG_STREAMS:
        raise CheckpointError(
            f"{path} drew from random streams {state['rng_streams']}, this gsg-zoo from {RNG_STREAMS}: "
            "the rest of the run would differ from the interrupted one; start a new run (another --out)"
        )


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
    online_probe: Any = None  # monitor.online_linear's OnlineLinearProbe (checkpointed when present)

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
            **({"online_probe": self.online_probe.state_dict()} if self.online_probe is not None else {}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.learner.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        load_scaler_state(self.scaler, state["scaler"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.epoch_step, self.partial = int(state["epoch_step"]), dict(state["partial"])
        if int(state["world_size"]) != self.world_size:
            log.warning(
                "resuming a run of world size %s with %d ranks: the data order per rank changes, so "
                "the result is not bit-identical to an uninterrupted run",
                state["world_size"],
                self.world_size,
            )
        self.history = list(state["history"])
        self.skipped_images = int(state["skipped_images"])
        self.telemetry = dict(state["telemetry"] or {})
        if self.online_probe is not None and state.get("online_probe"):
            self.online_probe.load_state_dict(state["online_probe"])
        elif self.online_probe is not None:  # monitor.* may change on resume: a probe starts here
            log.info("monitor.online_linear: the checkpoint has no online probe; it starts fresh")
        restore_rng(state["rng"])

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
        check_restorable(path, state, set(STATE_KEYS))
        saved = upgrade_config(state["config"])
        check_same_model(path, saved, self.recipe)
        check_recipe_unchanged(path, saved, self.recipe.to_dict(), mid_epoch=bool(state.get("epoch_step")))
        self.load_state_dict(state)
        log.info(
            "resumed from %s at epoch %d, step %d (%d into the epoch)",
            path,
            self.epoch,
            self.step,
            self.epoch_step,
        )
        return True


def load_scaler_state(scaler: torch.amp.GradScaler, saved: dict[str, Any]) -> None:
    """Restore the grad scaler, also across precisions: an fp16 run's scale is dropped when resuming
    in bf16/fp32 (no scaler), and an fp16 run resumed from bf16/fp32 starts with a fresh scale."""
    if scaler.is_enabled() and saved:
        scaler.load_state_dict(saved)
    elif scaler.is_enabled() != bool(saved):
        log.info("resuming with another precision: the grad scaler starts fresh")
