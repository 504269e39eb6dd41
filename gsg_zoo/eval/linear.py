"""Linear probes on a frozen backbone.

* ``reference``: the SimSiam/MoCo linear-classification protocol. Frozen backbone in eval mode,
  ``fc`` initialised N(0, 0.01) with zero bias, SGD with momentum 0.9 wrapped in apex LARC (trust
  coefficient 0.001, no clipping; adapts weight and bias, :class:`LARC`) or plain SGD, lr
  ``0.1 x batch / 256``, batch 4096, no weight decay, 90 epochs of per-epoch cosine decay, RandomResizedCrop + flip on training images (re-encoded every epoch),
  Resize + CenterCrop for evaluation.
* ``fast``: the same linear layer and schedule trained on cached centre-crop features (no
  augmentation, no backbone passes after the first; features standardised), or multinomial
  logistic regression by L-BFGS with C chosen on a seeded 20% of train.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..core.checkpoint import atomic_write
from ..core.device import resolve_device
from ..core.distributed import DistInfo
from ..data.pretraining import collate_pairs
from .knn import topk_accuracy

log = logging.getLogger("gsg_zoo.eval")


@dataclass
class LinearConfig:
    epochs: int = 90
    batch_size: int = 4096
    lr: float = 0.1  # base lr: effective lr = lr * batch_size / 256
    weight_decay: float = 0.0
    momentum: float = 0.9
    optimizer: str = "lars"  # lars | sgd
    seed: int = 0

    def effective_lr(self) -> float:
        return self.lr * self.batch_size / 256


def make_classifier(dim: int, num_classes: int) -> nn.Linear:
    """``fc`` initialised as in the protocol: weight N(0, 0.01), bias 0."""
    fc = nn.Linear(dim, num_classes)
    nn.init.normal_(fc.weight, mean=0.0, std=0.01)
    nn.init.zeros_(fc.bias)
    return fc


class LARC:
    """apex's ``LARC`` (github.com/NVIDIA/apex, ``apex/parallel/LARC.py``) in scaling mode around an
    optimizer, as SimSiam's ``main_lincls.py`` builds it: ``LARC(SGD(...), trust_coefficient=.001, clip=False)``.

    Every parameter of every group (the fc weight and its bias) whose weight and gradient norms are
    both nonzero gets its gradient replaced by ``(g + wd p) * tc ||p|| / (||g|| + wd ||p|| + eps)``; the
    group's weight decay is absorbed (set to 0 for the inner step, then restored). A zero parameter
    (the bias at its zero init) takes the inner optimizer's plain step.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        trust_coefficient: float = 0.02,
        clip: bool = True,
        eps: float = 1e-8,
    ) -> None:
        self.optim, self.trust_coefficient, self.clip, self.eps = optimizer, trust_coefficient, clip, eps

    @property
    def param_groups(self) -> list[dict]:
        return self.optim.param_groups

    @property
    def state(self) -> dict:
        return self.optim.state

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optim.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def _adapt(self, group: dict, weight_decay: float) -> None:
        for p in group["params"]:
            if p.grad is None:
                continue
            param_norm, grad_norm = torch.norm(p.data), torch.norm(p.grad.data)
            if param_norm != 0 and grad_norm != 0:
                adaptive_lr = (
                    self.trust_coefficient * param_norm / (grad_norm + param_norm * weight_decay + self.eps)
                )
                if self.clip:
                    adaptive_lr = min(adaptive_lr / group["lr"], 1)
                p.grad.data += weight_decay * p.data
                p.grad.data *= adaptive_lr

    def step(self) -> None:
        weight_decays = []
        for group in self.optim.param_groups:  # absorb weight decay control from the optimizer
            weight_decays.append(group.get("weight_decay", 0))
            group["weight_decay"] = 0
            self._adapt(group, weight_decays[-1])
        self.optim.step()
        for group, wd in zip(self.optim.param_groups, weight_decays):
            group["weight_decay"] = wd


def make_optimizer(fc: nn.Module, cfg: LinearConfig) -> torch.optim.Optimizer | LARC:
    """SimSiam ``main_lincls.py``: SGD(lr, momentum, weight decay), wrapped in apex LARC with ``--lars``."""
    if cfg.optimizer not in ("lars", "sgd"):
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}: choose lars or sgd")
    sgd = torch.optim.SGD(
        fc.parameters(), lr=cfg.effective_lr(), momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    return LARC(sgd, trust_coefficient=0.001, clip=False) if cfg.optimizer == "lars" else sgd


def cosine_lr(cfg: LinearConfig, epoch: int) -> float:
    """SimSiam's per-epoch schedule: ``lr * 0.5 * (1 + cos(pi * epoch / epochs))``."""
    return cfg.effective_lr() * 0.5 * (1.0 + math.cos(math.pi * epoch / cfg.epochs))


def _set_lr(opt: torch.optim.Optimizer | LARC, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


@torch.no_grad()
def evaluate_fc(fc: nn.Module, feats: Tensor, labels: Tensor, batch: int = 65536) -> dict[str, float]:
    device = next(fc.parameters()).device
    logits = torch.cat([fc(feats[i : i + batch].to(device)).cpu() for i in range(0, len(feats), batch)])
    ranked = logits.topk(min(5, logits.shape[1]), dim=1).indices
    return topk_accuracy(ranked, labels)


def train_on_features(
    train_feats: Tensor,
    train_labels: Tensor,
    num_classes: int,
    cfg: LinearConfig,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> nn.Linear:
    """The protocol's fc trained on fixed (cached) features: same init, optimizer and schedule.

    Features are standardised with training statistics first (a parameter-free BatchNorm, as in
    MAE's linear probe), which lets the few steps of small datasets converge; the returned layer has
    the standardisation folded in and takes raw features.
    """
    from tqdm.auto import trange

    device = resolve_device(device)
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    x, y = train_feats.to(device), train_labels.to(device, torch.long)
    mean, std = x.mean(dim=0), x.std(dim=0, unbiased=False).clamp_min(1e-6)
    fc = make_classifier(train_feats.shape[1], num_classes).to(device)
    opt = make_optimizer(fc, cfg)
    x = (x - mean) / std
    for epoch in trange(cfg.epochs, desc="fast linear probe", disable=not progress, unit="epoch"):
        _set_lr(opt, cosine_lr(cfg, epoch))
        perm = torch.randperm(len(x), generator=gen).to(device)
        for i in range(0, len(x), cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            loss = F.cross_entropy(fc(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    with torch.no_grad():  # fold the standardisation into the layer: it takes raw features
        fc.weight.div_(std)
        fc.bias.sub_(fc.weight @ mean)
    return fc.eval()


def train_reference(
    backbone: nn.Module,
    train_set: Dataset,
    dim: int,
    num_classes: int,
    cfg: LinearConfig,
    device: str | torch.device | None = None,
    num_workers: int = 4,
    amp: bool = False,
    progress: bool = True,
    dist: DistInfo | None = None,
    checkpoint: str | os.PathLike | None = None,
    identity: dict[str, Any] | None = None,
) -> nn.Linear:
    """The reference protocol: every epoch re-encodes augmented images through the frozen backbone.

    As SimSiam's ``main_lincls.py`` runs it: a ``DistributedSampler`` (shuffled with ``cfg.seed``, set
    per epoch) deals each rank ``batch_size / world size`` images a step and DDP averages the fc's
    gradients, so a step on W ranks is the one-process step on the same global batch. One process is
    the world of one. Augmentations draw from seeds of (seed, epoch, rank). With ``checkpoint``, rank 0
    writes the fc and optimizer there after every epoch and a rerun resumes from the epoch after it
    (refused when ``cfg`` or ``identity``, e.g. the model and dataset, differ from the checkpoint's).
    """
    info = dist or DistInfo()
    device = resolve_device(device, info.local_rank if info.world_size > 1 else None)
    backbone = backbone.eval().to(device, memory_format=torch.channels_last)
    for p in backbone.parameters():
        p.requires_grad_(False)
    torch.manual_seed(cfg.seed)
    fc = make_classifier(dim, num_classes).to(device)
    opt = make_optimizer(fc, cfg)
    ident = {**asdict(cfg), **(identity or {})}
    start = load_probe(checkpoint, fc, opt, ident) if checkpoint else 0
    model = (
        fc if info.world_size == 1 else DDP(fc, device_ids=[device.index] if device.type == "cuda" else None)
    )
    loader, sampler = reference_loader(train_set, cfg, info, num_workers, device.type == "cuda")
    for epoch in range(start, cfg.epochs):
        _set_lr(opt, cosine_lr(cfg, epoch))
        sampler.set_epoch(epoch)
        torch.manual_seed(cfg.seed + 1000 * epoch + info.rank)  # this epoch's augmentations (and workers)
        _train_epoch(
            backbone,
            model,
            opt,
            loader,
            device,
            amp,
            progress and info.is_main,
            f"linear probe epoch {epoch + 1}/{cfg.epochs}",
        )
        if checkpoint and info.is_main:
            save_probe(checkpoint, fc, opt, ident, epoch + 1)
        info.barrier()
    return fc.eval()


def reference_loader(
    train_set: Dataset, cfg: LinearConfig, info: DistInfo, num_workers: int, pin: bool
) -> tuple[DataLoader, DistributedSampler]:
    """``main_lincls.py``'s loader: a seeded ``DistributedSampler``, ``batch_size / world`` a rank."""
    if cfg.batch_size % info.world_size:
        raise ValueError(f"--batch-size {cfg.batch_size} is not divisible by the {info.world_size} ranks")
    sampler = DistributedSampler(
        train_set, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=cfg.seed
    )
    loader = DataLoader(
        train_set,
        batch_size=cfg.batch_size // info.world_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin,
        collate_fn=collate_pairs,
    )
    return loader, sampler


def _train_epoch(
    backbone: nn.Module,
    model: nn.Module,
    opt: torch.optim.Optimizer | LARC,
    loader: DataLoader,
    device: torch.device,
    amp: bool,
    progress: bool,
    desc: str,
) -> None:
    from tqdm.auto import tqdm

    cuda = device.type == "cuda"
    bar = tqdm(loader, desc=desc, disable=not progress, leave=False)
    for images, labels in bar:
        images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        labels = labels.to(device, non_blocking=True)
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and amp):
            feats = backbone(images)
        loss = F.cross_entropy(model(feats.float()), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")


def _inner(opt: torch.optim.Optimizer | LARC) -> torch.optim.Optimizer:
    return opt.optim if isinstance(opt, LARC) else opt


def save_probe(
    path: str | os.PathLike,
    fc: nn.Module,
    opt: torch.optim.Optimizer | LARC,
    identity: dict[str, Any],
    epochs_done: int,
) -> None:
    """The probe after ``epochs_done`` epochs and what it is a probe of, written atomically."""
    state = {
        "fc": fc.state_dict(),
        "optimizer": _inner(opt).state_dict(),
        "epochs_done": epochs_done,
        "identity": identity,
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_probe(
    path: str | os.PathLike, fc: nn.Module, opt: torch.optim.Optimizer | LARC, identity: dict[str, Any]
) -> int:
    """Restore :func:`save_probe`'s state into ``fc`` and ``opt`` when ``path`` exists; returns the epochs
    done (0 without a checkpoint). A checkpoint of other settings is an error, not silently mixed."""
    path = Path(path)
    if not path.exists():
        return 0
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state["identity"] != identity:
        diff = {
            k: (state["identity"].get(k), v) for k, v in identity.items() if state["identity"].get(k) != v
        }
        raise ValueError(
            f"{path} is a linear probe of other settings (checkpoint vs now: {diff}); "
            "delete it or use another --out"
        )
    fc.load_state_dict(state["fc"])
    _inner(opt).load_state_dict(state["optimizer"])
    log.info("linear probe: resumed from %s after epoch %d", path, state["epochs_done"])
    return int(state["epochs_done"])


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
