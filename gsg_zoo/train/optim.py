"""Optimizers and schedules for pretraining: SGD/LARS, cosine with warmup, fixed predictor lr."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..config.recipes import OptimConfig


class LARS(torch.optim.Optimizer):
    """LARS (You et al.) as in the SimSiam/MoCo-v3 code: SGD-momentum with a layer-wise trust ratio.

    Parameters of ``ndim <= 1`` (biases, norms) are excluded from weight decay and adaptation.
    """

    def __init__(
        self,
        params: Any,
        lr: float = 0.0,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        trust_coefficient: float = 0.001,
    ) -> None:
        super().__init__(
            params,
            dict(lr=lr, weight_decay=weight_decay, momentum=momentum, trust_coefficient=trust_coefficient),
        )

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = closure() if closure is not None else None
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                dp = p.grad
                if p.ndim > 1:
                    dp = dp.add(p, alpha=g["weight_decay"])
                    p_norm, u_norm = torch.norm(p), torch.norm(dp)
                    q = torch.where(
                        (p_norm > 0) & (u_norm > 0),
                        g["trust_coefficient"] * p_norm / u_norm,
                        torch.ones_like(p_norm),
                    )
                    dp = dp.mul(q)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"]
                mu.mul_(g["momentum"]).add_(dp)
                p.add_(mu, alpha=-g["lr"])
        return loss


def effective_lr(cfg: OptimConfig, global_batch: int) -> float:
    return cfg.lr * global_batch / 256 if cfg.scale_lr else cfg.lr


def param_groups(modules: dict[str, nn.Module], cfg: OptimConfig) -> list[dict[str, Any]]:
    """Groups named ``<module>`` / ``<module>_no_wd``; the predictor's carry ``fix_lr``."""
    groups = []
    for name, module in modules.items():
        decay, no_decay = [], []
        for p in module.parameters():
            if not p.requires_grad:
                continue
            (no_decay if cfg.wd_exclude_bn_bias and p.ndim <= 1 else decay).append(p)
        fix = cfg.fix_predictor_lr and name == "predictor"
        if decay:
            groups.append({"name": name, "params": decay, "weight_decay": cfg.weight_decay, "fix_lr": fix})
        if no_decay:
            groups.append({"name": f"{name}_no_wd", "params": no_decay, "weight_decay": 0.0, "fix_lr": fix})
    return groups


def sgd_fused(cfg: OptimConfig, params: list[nn.Parameter]) -> bool:
    """``optim.fused``: None = fused SGD when every parameter is on CUDA (and ``optim.foreach`` is not
    set), else the foreach implementation."""
    if cfg.fused is not None:
        return cfg.fused
    return cfg.foreach is None and bool(params) and all(p.device.type == "cuda" for p in params)


def build_optimizer(
    modules: dict[str, nn.Module], cfg: OptimConfig, global_batch: int
) -> torch.optim.Optimizer:
    groups = param_groups(modules, cfg)
    lr = effective_lr(cfg, global_batch)
    if cfg.optimizer == "sgd":
        fused = sgd_fused(cfg, [p for g in groups for p in g["params"]])
        return torch.optim.SGD(
            groups,
            lr=lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            foreach=None if fused else (True if cfg.foreach is None else cfg.foreach),
            fused=fused or None,
        )
    if cfg.optimizer == "lars":
        return LARS(groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":  # ViT recipes: MoCo v3's AdamW (torch defaults betas 0.9/0.999, eps 1e-8)
        return torch.optim.AdamW(groups, lr=lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"optimizer must be 'sgd', 'lars' or 'adamw', got {cfg.optimizer!r}")


def lr_at(cfg: OptimConfig, base_lr: float, progress_epochs: float, total_epochs: int) -> float:
    """Learning rate at a fractional epoch: linear warmup, then cosine (or constant) decay.

    MoCo v3's ``adjust_learning_rate``: per step (``per_step``) the warmup is ``lr * progress / warmup``;
    per epoch it is ``lr * (epoch + 1) / (warmup + 1)`` (its per-epoch version), so that the first epoch
    does not train at lr 0.
    """
    if progress_epochs < cfg.warmup_epochs:
        if cfg.per_step:
            return base_lr * progress_epochs / cfg.warmup_epochs
        return base_lr * (progress_epochs + 1) / (cfg.warmup_epochs + 1)
    if cfg.schedule == "constant":
        return base_lr
    if cfg.schedule != "cosine":
        raise ValueError(f"schedule must be 'cosine' or 'constant', got {cfg.schedule!r}")
    span = max(total_epochs - cfg.warmup_epochs, 1e-8)
    frac = min(max((progress_epochs - cfg.warmup_epochs) / span, 0.0), 1.0)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * frac))


def set_lr(optimizer: torch.optim.Optimizer, lr: float, base_lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = base_lr if g.get("fix_lr") else lr
