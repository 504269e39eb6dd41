"""Fine-tuning protocols: a backbone plus a new linear head, trained end to end (``gsg eval finetune``).

``simclr``: SimCLR v2's semi-supervised fine-tuning (google-research/simclr README and ``tf2/run.py``,
``model.py``, ``data_util.py``); ``default``: lightly's ``finetune_eval.py`` settings, for small data.
Each setting beside its reference: docs/reference/protocols.md. The loop: :mod:`.finetune_train`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .lr_decay import param_groups_lrd
from .simclr_lars import SimCLRLARS, scaled_lr, train_steps, warmup_cosine


@dataclass(frozen=True)
class FinetuneProtocol:
    """A protocol's settings (the reference's; ``epochs`` by label fraction in percent)."""

    name: str
    description: str
    optimizer: str  # lars (SimCLR's) | sgd
    base_lr: float
    lr_scaling: str  # sqrt | linear
    batch_size: int
    epochs: dict[float, int]  # fraction (%) -> epochs; others: the nearest fraction's
    weight_decay: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False
    warmup_epochs: float = 0.0
    zero_init_head: bool = False
    sync_bn: bool = False  # under DDP: SimCLR's global BN
    interpolation: str = "bilinear"
    steps_rule: str = "lightly"  # simclr: get_train_steps, WarmUpAndCosineDecay; lightly: see schedule()
    vit_layer_decay: float = 1.0  # layer-wise lr decay for ViTs when --layer-decay is not given


PROTOCOLS: dict[str, FinetuneProtocol] = {
    # README "Semi-supervised learning and fine-tuning the whole network": --optimizer=lars
    # --learning_rate=0.005 --learning_rate_scaling=sqrt --weight_decay=0 --train_epochs=60 (1 %)
    # --train_batch_size=1024 --warmup_epochs=0 --zero_init_logits_layer=True --global_bn=True.
    # 10 % / 100 %: 30 epochs (SimCLR v2 paper, not in the repository; see protocols.md).
    "simclr": FinetuneProtocol(
        name="simclr",
        description="SimCLR v2 semi-supervised fine-tuning (github.com/google-research/simclr): LARS "
        "(eeta 1e-3, BN/bias/head excluded), lr 0.005 x sqrt(batch), batch 1024, no weight decay, no "
        "warmup, per-step cosine over num_examples x epochs // batch + 1 steps, zero-init head, global "
        "BN, random crop (area 0.08-1, bicubic) + flip; eval centre crop 0.875 (none at <= 32 px)",
        optimizer="lars",
        base_lr=0.005,
        lr_scaling="sqrt",
        batch_size=1024,
        epochs={1.0: 60, 10.0: 30, 100.0: 30},
        zero_init_head=True,
        sync_bn=True,
        interpolation="bicubic",
        steps_rule="simclr",
    ),
    # lightly benchmarks/imagenet/resnet50/finetune_eval.py + utils/benchmarking/linear_classifier.py
    # (FinetuneClassifier): SGD(lr 0.05 x batch / 256, momentum 0.9, wd 0), CosineWarmupScheduler without
    # warmup per step over epochs x (N // batch), 30 epochs, RandomResizedCrop + flip, drop_last.
    "default": FinetuneProtocol(
        name="default",
        description="lightly finetune_eval.py (github.com/lightly-ai/lightly): SGD momentum 0.9, lr 0.05 x "
        "batch / 256, no weight decay, per-step cosine without warmup, 30 epochs, batch 256, PyTorch-init "
        "head, RandomResizedCrop + flip; eval Resize + CenterCrop (the model's crop_pct); ViTs: MAE's "
        "layer-wise lr decay 0.75",
        optimizer="sgd",
        base_lr=0.05,
        lr_scaling="linear",
        batch_size=256,
        epochs={100.0: 30},
        vit_layer_decay=0.75,
    ),
}


def epochs_for(protocol: FinetuneProtocol, fraction: float) -> int:
    """The protocol's epochs at ``fraction`` %: its own entry, else the nearest fraction's (log scale)."""
    if fraction in protocol.epochs:
        return protocol.epochs[fraction]
    return protocol.epochs[min(protocol.epochs, key=lambda f: abs(math.log(f / fraction)))]


@dataclass(frozen=True)
class FinetuneConfig:
    """One run's resolved settings: the protocol's unless overridden (``overrides`` names them)."""

    protocol: str
    fraction: float
    epochs: int
    batch_size: int
    base_lr: float
    lr_scaling: str
    optimizer: str
    weight_decay: float
    momentum: float
    nesterov: bool
    warmup_epochs: float
    zero_init_head: bool
    sync_bn: bool
    layer_decay: float
    steps_rule: str
    seed: int = 0
    overrides: tuple[str, ...] = field(default=())

    @property
    def peak_lr(self) -> float:
        return scaled_lr(self.base_lr, self.batch_size, self.lr_scaling)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "overrides": list(self.overrides), "peak_lr": self.peak_lr}


def resolve_config(
    protocol: str,
    fraction: float,
    vit: bool = False,
    seed: int = 0,
    **given: Any,
) -> FinetuneConfig:
    """The protocol's settings at ``fraction``; ``given`` (epochs, batch_size, base_lr, weight_decay,
    layer_decay, warmup_epochs: not None) override them and are listed as overrides (a variant)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown fine-tuning protocol {protocol!r}: choose {', '.join(PROTOCOLS)}")
    p = PROTOCOLS[protocol]
    values: dict[str, Any] = {
        "epochs": epochs_for(p, fraction),
        "batch_size": p.batch_size,
        "base_lr": p.base_lr,
        "weight_decay": p.weight_decay,
        "warmup_epochs": p.warmup_epochs,
        "layer_decay": p.vit_layer_decay if vit else 1.0,
    }
    set_now = {k: v for k, v in given.items() if v is not None}
    unknown = set(set_now) - set(values)
    if unknown:
        raise ValueError(f"unknown fine-tuning settings {sorted(unknown)}")
    overrides = tuple(sorted(k for k, v in set_now.items() if v != values[k]))
    values.update(set_now)
    if values["layer_decay"] != 1.0 and not vit:
        raise ValueError("--layer-decay applies to ViTs (timm blocks + patch_embed) only")
    return FinetuneConfig(
        protocol=protocol,
        fraction=fraction,
        lr_scaling=p.lr_scaling,
        optimizer=p.optimizer,
        momentum=p.momentum,
        nesterov=p.nesterov,
        zero_init_head=p.zero_init_head,
        sync_bn=p.sync_bn,
        steps_rule=p.steps_rule,
        seed=seed,
        overrides=overrides,
        **values,
    )


class Classifier(nn.Module):
    """``head(backbone(x))``: pooled backbone features into a new linear layer."""

    def __init__(self, backbone: nn.Module, dim: int, num_classes: int, zero_init: bool) -> None:
        super().__init__()
        self.backbone, self.head = backbone, nn.Linear(dim, num_classes)
        if zero_init:  # SimCLR --zero_init_logits_layer
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))


def param_groups(model: Classifier, cfg: FinetuneConfig) -> list[dict[str, Any]]:
    """One group per parameter with ``lr_scale`` (MAE's layer-wise decay for ViTs, else 1) and, for
    SimCLR's LARS, its name rules: 1-D parameters (BN, LayerNorm, biases) get no weight decay and no
    trust ratio (``adapt``), the head's kernel its weight decay (run.py adds it to the loss) but no
    trust ratio."""
    if cfg.layer_decay != 1.0:
        nwd = getattr(model.backbone, "no_weight_decay", lambda: set())()
        groups = param_groups_lrd(
            model, cfg.weight_decay, nwd, cfg.layer_decay, prefix="backbone.", blocks=model.backbone.blocks
        )
        groups = [{**g, "params": [p], "names": [n]} for g in groups for p, n in zip(g["params"], g["names"])]
    else:
        groups = [
            {"params": [p], "names": [n], "lr_scale": 1.0, "weight_decay": cfg.weight_decay}
            for n, p in model.named_parameters()
            if p.requires_grad
        ]
    for g in groups:
        one_d = g["params"][0].ndim <= 1
        g["adapt"] = not (one_d or g["names"][0].startswith("head."))
        if one_d and cfg.optimizer == "lars":
            g["weight_decay"] = 0.0
    return groups


def build_optimizer(model: Classifier, cfg: FinetuneConfig) -> torch.optim.Optimizer:
    """SimCLR's LARS or SGD (momentum, optional Nesterov) over :func:`param_groups`."""
    groups = param_groups(model, cfg)
    if cfg.optimizer == "lars":
        return SimCLRLARS(groups, lr=cfg.peak_lr, momentum=cfg.momentum, use_nesterov=cfg.nesterov)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.peak_lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}: choose lars or sgd")


def schedule(cfg: FinetuneConfig, num_examples: int) -> tuple[int, int, int]:
    """``(total steps, steps per epoch, warmup steps)`` of the protocol's step rule.

    simclr: run.py's ``epoch_steps = round(N / B)``, model.py's ``get_train_steps`` and warmup steps;
    lightly: a ``drop_last`` loader, ``estimated_stepping_batches = epochs x (N // B)`` (at least one
    step an epoch: a set smaller than a batch wraps around)."""
    b = cfg.batch_size
    if cfg.steps_rule == "simclr":
        per_epoch = max(int(round(num_examples / b)), 1)
        total = train_steps(num_examples, cfg.epochs, b)
        return total, per_epoch, int(round(cfg.warmup_epochs * num_examples // b))
    per_epoch = max(num_examples // b, 1)
    return per_epoch * cfg.epochs, per_epoch, int(cfg.warmup_epochs * per_epoch)


def lightly_cosine(step: int, max_steps: int, warmup_steps: int, end_value: float = 0.001) -> float:
    """lightly ``utils/scheduler.py`` ``cosine_warmup_schedule`` (start 1, end 0.001, warmup from 0), the
    factor ``CosineWarmupScheduler`` multiplies the lr by at ``step``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    step, max_steps = step - warmup_steps, max_steps - warmup_steps
    if max_steps <= 1 or step >= max_steps - 1:
        return end_value
    return end_value - (end_value - 1.0) * (math.cos(math.pi * step / (max_steps - 1)) + 1) / 2


def set_lr(opt: torch.optim.Optimizer, cfg: FinetuneConfig, step: int, total: int, warmup: int) -> float:
    """The scheduled lr at ``step`` into every group, times its ``lr_scale``; returns the lr."""
    if cfg.steps_rule == "simclr":
        lr = warmup_cosine(step, cfg.peak_lr, warmup, total)
    else:
        lr = cfg.peak_lr * lightly_cosine(step, total, warmup)
    for g in opt.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
    return lr
