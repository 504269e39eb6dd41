"""Training checkpoints: atomic writes, safe loads (``weights_only=True``), clear errors."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_KIND = "gsg-zoo/pretrain"
FORMAT_VERSION = 1
BACKBONE_PREFIX = "encoder.backbone."
TEMP_SUFFIX = ".tmp"


class CheckpointError(ValueError):
    """A file is not the checkpoint that was expected."""


FILE_MODE = 0o644


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Any) -> None:
    """Call ``write(tmp_path)`` then rename into ``path``: a crash never leaves a partial file.

    A process killed before the rename keeps the previous ``path`` and may leave its temporary file
    ``.NAME.*.tmp`` behind (:func:`remove_stale_temps`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, FILE_MODE & ~_umask())  # mkstemp makes 0600; others of the group must read results
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def remove_stale_temps(directory: str | os.PathLike) -> None:
    """Delete the temporary files that writes killed before their rename left in ``directory``.

    Only for a directory that one process writes (a run's checkpoints): a concurrent write's
    temporary file would be deleted too.
    """
    for tmp in Path(directory).glob(f".*{TEMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write a training checkpoint atomically. ``state`` must hold only tensors and plain data."""
    state = {"kind": CHECKPOINT_KIND, "format_version": FORMAT_VERSION, **state}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a gsg-zoo training checkpoint safely, or explain what the file is instead."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        hint = " (it holds config.json: pass it as local-dir:PATH)" if (path / "config.json").exists() else ""
        raise CheckpointError(f"{path} is a directory, not a training checkpoint file{hint}")
    if path.suffix == ".safetensors":
        raise CheckpointError(
            f"{path} is a safetensors weight file (an exported backbone), not a training checkpoint; "
            "load its folder with local-dir:DIR"
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # pickle.UnpicklingError, RuntimeError (zip), EOFError...
        raise CheckpointError(
            f"{path} is not a loadable gsg-zoo checkpoint (refused by torch.load(weights_only=True): "
            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        ) from err
    if not isinstance(state, dict) or state.get("kind") != CHECKPOINT_KIND:
        found = state.get("kind") if isinstance(state, dict) else type(state).__name__
        keys = f" with keys {sorted(state)[:6]}" if isinstance(state, dict) else ""
        raise CheckpointError(
            f"{path} is not a gsg-zoo pretraining checkpoint (kind={found!r}{keys}); expected kind "
            f"{CHECKPOINT_KIND!r} as written by `gsg pretrain`"
        )
    if state.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format {state['format_version']}, newer than this gsg-zoo ({FORMAT_VERSION})"
        )
    return state


def backbone_state_dict(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The online backbone's weights from a loaded checkpoint, with timm's parameter names."""
    sd = {k[len(BACKBONE_PREFIX) :]: v for k, v in state["model"].items() if k.startswith(BACKBONE_PREFIX)}
    if not sd:
        raise CheckpointError(f"checkpoint holds no '{BACKBONE_PREFIX}*' weights")
    return sd
