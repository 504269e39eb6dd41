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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .checkpoint import CheckpointError, load_checkpoint
from .distributed import DistInfo, agree_max, broadcast_object

#: Recipe keys a resumed run may change (glob patterns over ``section.key``).
MAY_CHANGE: tuple[str, ...] = (
    "name", "paper.*", "train.epochs", "train.checkpoint_every", "train.checkpoint_minutes",
    "train.checkpoint_steps", "train.log_every", "train.device", "train.precision", "train.compile",
    "train.cudnn_benchmark", "train.tf32", "train.dist_timeout_minutes", "monitor.*", "data.root",
    "data.download", "data.num_workers", "data.pin_memory", "data.persistent_workers", "data.prefetch_factor",
    "data.max_consecutive_failures",
)  # fmt: skip

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


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def changed_keys(saved: dict[str, Any], now: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Keys of both resolved recipes whose values differ (a key only one has comes from another
    gsg-zoo version and is not a change)."""
    a, b = flatten(saved), flatten(now)
    return {k: (a[k], b[k]) for k in sorted(a.keys() & b.keys()) if a[k] != b[k]}


#: Keys a resumed run may change only at an epoch boundary: a streamed epoch's plan splits each rank's
#: shards over its loader workers, so the rest of a half-read epoch needs the same worker count.
STREAMING_EPOCH_KEYS: tuple[str, ...] = ("data.num_workers",)


def refused_changes(
    saved: dict[str, Any], now: dict[str, Any], mid_epoch: bool = False
) -> dict[str, tuple[Any, Any]]:
    """The changes outside :data:`MAY_CHANGE` (and, resuming a streamed epoch, of its worker count)."""
    pinned = STREAMING_EPOCH_KEYS if mid_epoch and flatten(now).get("data.streaming") else ()
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
            " (data.num_workers: not inside a streamed epoch)"
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
