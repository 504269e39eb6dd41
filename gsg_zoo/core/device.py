"""Device selection shared by training, evaluation and the benchmarks."""

from __future__ import annotations

import torch


def resolve_device(name: str | None = "auto", local_rank: int | None = None) -> torch.device:
    """``auto``/None/"": CUDA when available, else CPU; ``cuda`` takes ``cuda:local_rank`` under DDP.

    With ``local_rank`` given, a CUDA device also becomes the process's current device.
    """
    if name in (None, "", "auto"):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and local_rank is not None:
        if not torch.cuda.is_available():
            raise RuntimeError("device cuda requested but no CUDA device is available")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but no CUDA device is available")
    return device
