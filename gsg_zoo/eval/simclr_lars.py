"""SimCLR's LARS optimizer and learning-rate schedule, transcribed for semi-supervised fine-tuning.

From github.com/google-research/simclr ``tf2/lars_optimizer.py`` (``LARSOptimizer``: classic momentum,
``eeta`` 0.001, variables whose name matches ``batch_normalization``, ``bias`` or ``head_supervised``
excluded from weight decay and layer adaptation; ``model.py`` ``add_weight_decay`` puts the head's
kernel decay into the loss) and ``tf2/model.py`` (``WarmUpAndCosineDecay``, ``get_train_steps``).
Here a group's ``weight_decay`` and ``adapt`` flag stand for those name rules.
"""

from __future__ import annotations

import math
from typing import Any

import torch

EETA_DEFAULT = 0.001


class SimCLRLARS(torch.optim.Optimizer):
    """``LARSOptimizer._resource_apply_dense`` per parameter. A group's ``weight_decay`` and ``adapt``
    (trust ratio or not) stand for the name rules; ``lr_scale`` (layer-wise decay) is the caller's."""

    def __init__(
        self,
        params: Any,
        lr: float,
        momentum: float = 0.9,
        use_nesterov: bool = False,
        weight_decay: float = 0.0,
        classic_momentum: bool = True,
        eeta: float = EETA_DEFAULT,
    ) -> None:
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, adapt=True)
        super().__init__(params, defaults)
        self.use_nesterov, self.classic_momentum, self.eeta = use_nesterov, classic_momentum, eeta

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._apply(p, group)
        return loss

    def _trust_ratio(self, w: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """``eeta * ||w|| / ||u||`` where both norms are positive, else 1."""
        w_norm, u_norm = torch.linalg.vector_norm(w), torch.linalg.vector_norm(u)
        one = torch.ones_like(w_norm)
        return torch.where(w_norm > 0, torch.where(u_norm > 0, self.eeta * w_norm / u_norm, one), one)

    def _apply(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        lr, m, wd, adapt = group["lr"], group["momentum"], group["weight_decay"], group["adapt"]
        state = self.state[p]
        v = state.setdefault("momentum", torch.zeros_like(p))
        grad = p.grad + wd * p if wd else p.grad
        if self.classic_momentum:
            scaled_lr = lr * self._trust_ratio(p, grad) if adapt else lr
            next_v = m * v + scaled_lr * grad
            update = m * next_v + scaled_lr * grad if self.use_nesterov else next_v
            p.sub_(update)
        else:
            next_v = m * v + grad
            update = m * next_v + grad if self.use_nesterov else next_v
            p.sub_((lr * self._trust_ratio(p, update) if adapt else lr) * update)
        v.copy_(next_v)


def scaled_lr(base_lr: float, batch_size: int, scaling: str) -> float:
    """``WarmUpAndCosineDecay``'s scaled lr: ``linear`` base x batch / 256, ``sqrt`` base x sqrt(batch)."""
    if scaling == "linear":
        return base_lr * batch_size / 256.0
    if scaling == "sqrt":
        return base_lr * math.sqrt(batch_size)
    raise ValueError(f"unknown learning rate scaling {scaling!r}: choose linear or sqrt")


def train_steps(num_examples: int, epochs: int, batch_size: int) -> int:
    """``get_train_steps``: ``num_examples * epochs // batch_size + 1``."""
    return num_examples * epochs // batch_size + 1


def warmup_cosine(step: int, peak_lr: float, warmup_steps: int, total_steps: int) -> float:
    """``WarmUpAndCosineDecay.__call__`` at ``step``: linear warmup, then Keras ``CosineDecay`` to 0."""
    if warmup_steps and step < warmup_steps:
        return step / float(warmup_steps) * peak_lr
    decay_steps = total_steps - warmup_steps
    done = min(step - warmup_steps, decay_steps)
    return peak_lr * 0.5 * (1.0 + math.cos(math.pi * done / decay_steps))
