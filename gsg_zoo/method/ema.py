"""Exponential moving average of an encoder (the BYOL target network)."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

MomentumSchedule = Literal["constant", "cosine"]


def ema_momentum(base: float, step: int, total_steps: int, schedule: MomentumSchedule = "constant") -> float:
    """EMA momentum at ``step``.

    ``"constant"``: ``base`` every step (the GSG reference code, 0.99). ``"cosine"``: BYOL's
    ``1 - (1 - base) * (cos(pi * step / total_steps) + 1) / 2``, rising from ``base`` (0.996) to 1.
    """
    if schedule == "constant":
        return base
    if schedule == "cosine":
        frac = min(max(step / max(total_steps, 1), 0.0), 1.0)
        return 1.0 - (1.0 - base) * (math.cos(math.pi * frac) + 1.0) / 2.0
    raise ValueError(f"momentum schedule must be 'constant' or 'cosine', got {schedule!r}")


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """``target <- momentum * target + (1 - momentum) * online`` for every parameter.

    Buffers (BatchNorm running statistics) are not averaged: the target network runs in train mode
    and keeps its own statistics from its own forward passes, as in the reference implementation.
    """
    t_params = list(target.parameters())
    o_params = list(online.parameters())
    if len(t_params) != len(o_params):
        raise ValueError("target and online networks have different parameter lists")
    torch._foreach_lerp_(t_params, [p.detach() for p in o_params], 1.0 - momentum)
