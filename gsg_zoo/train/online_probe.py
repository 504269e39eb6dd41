"""The online linear probe (``monitor.online_linear=true``): the quickest read of a run, as solo-learn,
lightly and stable-pretraining report it.

A linear head on the detached pooled backbone features of each step's first view (what the learner
returned), trained on the step's labels with its own SGD (``monitor.online_linear_lr``, momentum 0.9,
no weight decay, constant lr); nothing flows back and nothing is drawn from the global RNGs, so the SSL
weights stay bit-identical. Its running top-1 over an epoch's training batches and, when the kNN
monitor runs, its top-1 on the monitor's test images (eval mode) go to the epoch rows. Under torchrun
the head's gradients are averaged over the ranks. Its state is checkpointed with the run.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.distributed import DistInfo, sum_over_ranks


def _seed(seed: int) -> int:
    return (
        int.from_bytes(hashlib.blake2b(f"{seed}/online_linear".encode(), digest_size=8).digest(), "little")
        >> 1
    )


class OnlineLinearProbe:
    """Head, optimizer and this epoch's running counts (see the module docstring)."""

    def __init__(
        self, dim: int, num_classes: int, lr: float, device: torch.device, dist_info: DistInfo, seed: int = 0
    ) -> None:
        gen = torch.Generator().manual_seed(_seed(seed))  # its own stream: the global RNGs are untouched
        self.head = nn.Linear(dim, num_classes)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(num_classes, dim, generator=gen) * 0.01)
            self.head.bias.zero_()
        self.head.to(device)
        self.opt = torch.optim.SGD(self.head.parameters(), lr=lr, momentum=0.9)
        self.device, self.dist, self.num_classes = device, dist_info, num_classes
        self.counts = torch.zeros(4, device=device)  # correct, seen, loss sum, steps: no host sync a step

    def step(self, features: Tensor, labels: Tensor) -> None:
        """One SGD step of the head on ``features`` (detached here too) and their ``labels``."""
        if labels.numel() and int(labels.min()) < 0:  # the loader's CPU labels: no device sync
            raise ValueError(
                "monitor.online_linear needs labelled training data; this data has unlabelled images (-1): "
                "set monitor.online_linear=false"
            )
        if int(labels.max()) >= self.num_classes:
            raise ValueError(
                f"label {int(labels.max())} >= monitor.online_linear_classes={self.num_classes}: raise it"
            )
        labels = labels.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, enabled=False):
            logits = self.head(features.detach().float())
            loss = F.cross_entropy(logits, labels)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.dist.world_size > 1:
            for p in self.head.parameters():
                dist.all_reduce(p.grad, op=dist.ReduceOp.AVG)
        self.opt.step()
        self.counts[0] += (logits.argmax(1) == labels).sum()
        self.counts[1] += labels.numel()
        self.counts[2] += loss.detach()
        self.counts[3] += 1

    def epoch_metrics(self) -> dict[str, float]:
        """This epoch's running train top-1 and loss over every rank's batches; the counts restart."""
        correct, seen, loss, steps = sum_over_ranks(self.counts.tolist(), self.device, self.dist)
        self.counts.zero_()
        if not seen:
            return {}
        return {
            "online_linear_train_top1": 100.0 * correct / seen,
            "online_linear_loss": loss / max(steps, 1),
        }

    @torch.no_grad()
    def top1(self, features: Tensor, labels: Tensor) -> float:
        """Top-1 (%) of the head on held-out ``features``."""
        pred = self.head(features.to(self.device).float()).argmax(1).cpu()
        return 100.0 * float((pred == labels).float().mean())

    def state_dict(self) -> dict[str, Any]:
        return {
            "head": self.head.state_dict(),
            "optimizer": self.opt.state_dict(),
            "counts": self.counts.cpu(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.head.load_state_dict(state["head"])
        self.opt.load_state_dict(state["optimizer"])
        self.counts.copy_(state["counts"])


def probe_classes(dataset: str, data: Any) -> int:
    """The training data's class count: the registry's, else the reader's ``classes``; else an error
    asking for ``monitor.online_linear_classes``."""
    from ..data.registry import DATASETS

    info = DATASETS.get(dataset)
    if info is not None and info.num_classes:
        return info.num_classes
    while data is not None:
        classes = getattr(data, "classes", None)
        if classes:
            return len(classes)
        data = getattr(data, "dataset", None)
    raise ValueError(
        f"monitor.online_linear: the class count of {dataset} is unknown; set monitor.online_linear_classes"
    )
