"""Collapse indicators and the kNN monitor used during pretraining."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from ..core.distributed import DistInfo
from ..core.normalization import mean_std
from ..data.augment import eval_transform
from ..data.pretraining import build_dataset, collate_images
from ..data.readers import per_class_split
from ..eval.sharding import gather_rows, shard_dataset
from ..zoo.preprocessing import default_crop_pct
from .step import autocast, to_device

if TYPE_CHECKING:
    from ..config.recipes import DataConfig, MonitorConfig
    from ..method.learner import Encoder, SelfSupervisedLearner
    from .online_probe import OnlineLinearProbe


def normalized_std(z: Tensor) -> float:
    """Mean per-channel std of L2-normalised ``z`` times sqrt(dim): ~1 healthy, ~0 collapsed to a point."""
    zn = F.normalize(z.float(), dim=1)
    return float(zn.std(dim=0).mean() * math.sqrt(z.shape[1]))


def effective_rank(x: Tensor, eps: float = 1e-7) -> float:
    """RankMe (Garrido et al. 2023): exp of the entropy of the L1-normalised singular values.

    Between 1 (rank-one, e.g. collapsed) and ``min(N, D)``; catches dimensional collapse that a
    BatchNorm on the projector's output hides from :func:`normalized_std`.
    """
    s = torch.linalg.svdvals(x.float())
    p = s / (s.sum() + eps) + eps
    return float(torch.exp(-(p * p.log()).sum()))


def collapse_metrics(features: Tensor, projections: Tensor) -> dict[str, float]:
    return {
        "z_std": normalized_std(projections),
        "z_rank": effective_rank(projections),
        "h_rank": effective_rank(features),
    }


def knn_top1(
    bank: Tensor,
    bank_labels: Tensor,
    query: Tensor,
    query_labels: Tensor,
    num_classes: int,
    k: int = 200,
    t: float = 0.1,
) -> float:
    """Weighted kNN top-1 accuracy (%) (cosine, weights exp(s/T)); see :mod:`gsg_zoo.eval.knn`."""
    from ..eval.knn import knn_evaluate

    return knn_evaluate(bank, bank_labels, query, query_labels, [(k, t)], num_classes)[(k, t)]["top1"]


def monitor_due(every: int, epoch: int, epochs: int) -> bool:
    """``monitor.every``: N > 0 every N epochs and at the end; 0 at the end only; -1 never."""
    return (every > 0 and epoch % every == 0) or (every >= 0 and epoch == epochs)


def dataset_labels(ds: Any) -> list[int]:
    """Every label of a dataset without decoding its images (``targets`` / ``labels``), else by reading."""
    inner = getattr(ds, "dataset", ds)  # Transformed wraps the reader
    for name in ("targets", "labels"):
        labels = getattr(inner, name, None)
        if labels is not None:
            return [int(y) for y in labels]
    return [int(ds[i][1]) for i in range(len(ds))]


def stratified_subset(labels: list[int], limit: int, seed: int = 0) -> list[int]:
    """At most ``limit`` sorted indices, ``limit // classes`` of each class (fewer where a class has
    fewer), drawn with ``seed``."""
    per_class = max(limit // len(set(labels)), 1)
    first, _ = per_class_split(labels, per_class, seed, n_second=0)
    return first[:limit]


class KnnMonitor:
    """kNN top-1 and collapse indicators of a learner on the monitor's labelled splits.

    The bank (``monitor.train_split``) and queries (``monitor.test_split``) are stratified subsets of
    at most ``train_limit``/``test_limit`` images: the same number per class, drawn with seed 0 (the
    first N images of a class-ordered folder such as ImageNet's would hold only a few classes), resized
    and normalised like the training data; their loaders are built on first use. Under torchrun every
    rank embeds a contiguous shard of both subsets; rank 0 gathers the rows and runs the kNN on its
    training device (the other ranks get ``{}``).
    """

    def __init__(self, data: DataConfig, monitor: MonitorConfig, dist: DistInfo | None = None) -> None:
        self.data, self.config, self.dist = data, monitor, dist or DistInfo()
        self._loaders: tuple[DataLoader, DataLoader] | None = None
        self._sizes: dict[str, tuple[int, int]] = {}  # split -> (images, classes)

    def loaders(self) -> tuple[DataLoader, DataLoader]:
        """This rank's shards of the bank and the queries."""
        if self._loaders is None:
            mc = self.config
            bank, test = ((mc.train_split, mc.train_limit), (mc.test_split, mc.test_limit))
            self._loaders = (self._loader(*bank), self._loader(*test))
        return self._loaders

    def _loader(self, split: str, limit: int | None) -> DataLoader:
        dc, mc = self.data, self.config
        crop_pct = default_crop_pct(dc.image_size)
        tf = eval_transform(dc.image_size, *mean_std(dc.normalization), crop_pct=crop_pct)
        ds = build_dataset(
            mc.dataset or dc.dataset,
            mc.root or dc.root,
            split,
            transform=tf,
            num_images=limit or 2000,
            **dc.reader_options(),
        )
        labels = dataset_labels(ds)
        if limit and len(ds) > limit:
            keep = stratified_subset(labels, limit)
            ds, labels = torch.utils.data.Subset(ds, keep), [labels[i] for i in keep]
        self._sizes[split] = (len(labels), len(set(labels)))
        return DataLoader(
            shard_dataset(ds, self.dist),
            batch_size=mc.batch_size,
            num_workers=dc.loader.num_workers,
            collate_fn=collate_images,
            pin_memory=torch.cuda.is_available(),
        )

    def protocol(self) -> str:
        """What the monitor measures, as the metrics and the curves name it."""
        self.loaders()
        mc, size = self.config, self.data.image_size
        (nb, cb), (nq, cq) = self._sizes[mc.train_split], self._sizes[mc.test_split]
        return (
            f"weighted kNN k={mc.k} T={mc.t}: bank {nb} {mc.train_split} images ({cb} classes), "
            f"queries {nq} {mc.test_split} images ({cq} classes), stratified seed 0, {size} px"
        )

    def __call__(
        self,
        learner: SelfSupervisedLearner,
        device: torch.device,
        amp_dtype: torch.dtype | None,
        channels_last: bool,
        probe: OnlineLinearProbe | None = None,
    ) -> dict[str, Any]:
        """Embed both splits with the learner's online encoder (in eval mode, restored after); score them
        on rank 0 (``{}`` on the other ranks), and the online ``probe`` on the queries when given."""
        train_loader, test_loader = self.loaders()
        was_training = learner.training
        learner.eval()
        try:
            bank, bank_labels, _ = embed(learner.encoder, train_loader, device, amp_dtype, channels_last)
            test, test_labels, test_z = embed(
                learner.encoder, test_loader, device, amp_dtype, channels_last, projections=True
            )
        finally:
            learner.train(was_training)
        bank, bank_labels, test, test_labels, test_z = (
            gather_rows(t, self.dist) for t in (bank, bank_labels, test, test_labels, test_z)
        )
        if not self.dist.is_main:
            return {}
        num_classes = int(max(bank_labels.max(), test_labels.max())) + 1
        mc = self.config
        top1 = knn_top1(bank.to(device), bank_labels, test, test_labels, num_classes, k=mc.k, t=mc.t)
        out = {"knn_top1": top1, **collapse_metrics(test, test_z), "monitor_protocol": self.protocol()}
        if probe is not None:
            out["online_linear_top1"] = probe.top1(test, test_labels)
        return out


@torch.no_grad()
def embed(
    encoder: Encoder,
    loader: DataLoader,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    channels_last: bool,
    projections: bool = False,
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """Features ``(N, F)``, labels ``(N,)`` and (if ``projections``) projections ``(N, D)``, on the CPU;
    None for an empty loader (a rank whose shard is empty)."""
    feats, zs, labels = [], [], []
    for x, y, _ in loader:
        with autocast(device.type, amp_dtype):
            h, z = encoder(to_device(x, device, channels_last))
        feats.append(h.float().cpu())
        labels.append(y)
        if projections:
            zs.append(z.float().cpu())
    if not feats:
        return None, None, None
    return torch.cat(feats), torch.cat(labels), (torch.cat(zs) if projections else None)
