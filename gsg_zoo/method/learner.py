"""One composable self-supervised learner: SimSiam, BYOL, each with or without GSG and predictor.

Three choices (``target``: stopgrad | ema, ``guidance``: none | gsg, ``predictor``: on | off) replace
the reference code's four classes; each view is its own encoder call (BatchNorm per view-batch, as the
reference). ``source_only`` and the research knobs: docs/reference/internals.md.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .backbones import create_backbone, feature_dim, freeze_patch_embedding
from .ema import MomentumSchedule, ema_momentum, ema_update
from .heads import HEAD_STYLES, prediction_mlp, projection_mlp
from .losses import (
    SELECTIONS,
    Distance,
    Selection,
    gsg_loss,
    gsg_select,
    gsg_sources,
    gsg_targets,
    guided_loss,
    symmetric_negative_cosine,
)
from .pairing import PairingMode, pair_indices

METHODS: dict[str, dict[str, str]] = {
    "simsiam": {"target": "stopgrad", "guidance": "none"},
    "simsiam_gsg": {"target": "stopgrad", "guidance": "gsg"},
    "byol": {"target": "ema", "guidance": "none"},
    "byol_gsg": {"target": "ema", "guidance": "gsg"},
}


@dataclass
class LearnerConfig:
    """Everything that defines the learner's architecture and objective."""

    backbone: str = "resnet18_cifar"
    zero_init_residual: bool = True
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    projector_layers: int = 2
    projector_hidden_dim: int = 2048
    projector_dim: int = 2048
    predictor: bool = True
    predictor_hidden_dim: int = 512
    target: Literal["stopgrad", "ema"] = "stopgrad"
    guidance: Literal["none", "gsg"] = "none"
    pairing: PairingMode = "derangement"
    distance: Distance = "euclidean"
    ema_momentum: float = 0.99
    ema_schedule: MomentumSchedule = "constant"
    source_only: bool = False  # GSG: backward through the two selected source views only
    # research knobs (docs/guides/research-knobs.md)
    gsg_selection: Selection = "min"  # min (the paper) | max | random (uniform, from the pairing generator)
    local_crops: int = 0  # GSG multi-crop: local crops per image, extra sources of image 1's target
    heads: str = "simsiam"  # simsiam | mocov3 (no Linear bias; predictor ends in BN(affine=False))
    freeze_patch_embed: bool = False  # ViT: MoCo v3's --stop-grad-conv1

    @classmethod
    def for_method(cls, method: str, **overrides: Any) -> LearnerConfig:
        """Config of a named method (``simsiam``, ``simsiam_gsg``, ``byol``, ``byol_gsg``)."""
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
        return cls(**{**METHODS[method], **overrides})

    @property
    def method(self) -> str:
        """The method name of ``(target, guidance)``; ValueError for a pair no method has."""
        pair = {"target": self.target, "guidance": self.guidance}
        for name, spec in METHODS.items():
            if spec == pair:
                return name
        raise ValueError(
            f"no method has target={self.target!r} and guidance={self.guidance!r}; "
            f"known: {', '.join(f'{k} ({v})' for k, v in METHODS.items())}"
        )

    @property
    def num_views(self) -> int:
        """Global views per image (the local crops come after them, see :attr:`local_crops`)."""
        return 4 if self.guidance == "gsg" else 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Encoder(nn.Module):
    """Backbone + projector. ``forward`` returns ``(pooled features, projection)``."""

    def __init__(self, backbone: nn.Module, projector: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = projector

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.backbone(x)
        return h, self.projector(h)


@dataclass
class LearnerOutput:
    """What one step produced. Tensors other than ``loss`` are detached."""

    loss: Tensor
    features: list[Tensor]  # pooled backbone features per view (target encoder's when source_only)
    projections: list[Tensor]  # online projections per view (target encoder's when source_only)
    selection: Tensor | None = None  # GSG pair index per sample (0..3)
    pairing: Tensor | None = None  # GSG partner index per sample

    @property
    def selection_counts(self) -> Tensor | None:
        """GSG: how often each of the 4 pairs (:data:`~gsg_zoo.method.losses.PAIRS`) was selected in this batch,
        ``(4,)`` int64 on the device; None without GSG. A one-hot sum, not ``bincount`` (CUDA's reads the
        input's min and max on the host: two syncs a step) nor ``index_add_`` (atomic adds, refused
        under ``torch.use_deterministic_algorithms``)."""
        if self.selection is None:
            return None
        sel = self.selection.view(-1, 1)
        return (sel == torch.arange(4, device=sel.device)).sum(0)


def _check_knobs(config: LearnerConfig) -> None:
    """The research knobs: GSG-only, and in range (errors name the recipe key)."""
    if config.gsg_selection not in SELECTIONS:
        raise ValueError(
            f"model.gsg_selection must be one of {', '.join(SELECTIONS)}, got {config.gsg_selection!r}"
        )
    if (
        isinstance(config.local_crops, bool)
        or not isinstance(config.local_crops, int)
        or config.local_crops < 0
    ):
        raise ValueError(f"model.local_crops must be an integer >= 0, got {config.local_crops!r}")
    if config.heads not in HEAD_STYLES:
        raise ValueError(f"model.heads must be one of {', '.join(HEAD_STYLES)}, got {config.heads!r}")
    if config.guidance != "gsg" and (config.gsg_selection != "min" or config.local_crops):
        raise ValueError(
            f"model.gsg_selection and model.local_crops apply to GSG methods only ({config.method} has no "
            "pair selection); use simsiam_gsg/byol_gsg or leave them at min / 0"
        )


class SelfSupervisedLearner(nn.Module):
    """SimSiam / BYOL with optional GSG guidance and optional predictor."""

    def __init__(self, config: LearnerConfig) -> None:
        super().__init__()
        if config.target not in ("stopgrad", "ema"):
            raise ValueError(f"target must be 'stopgrad' or 'ema', got {config.target!r}")
        if config.guidance not in ("none", "gsg"):
            raise ValueError(f"guidance must be 'none' or 'gsg', got {config.guidance!r}")
        if config.source_only and config.guidance != "gsg":
            raise ValueError(
                f"source_only applies to GSG methods only ({config.method} has no source selection); "
                "set model.source_only=false or use simsiam_gsg/byol_gsg"
            )
        _check_knobs(config)
        self.config = config
        backbone = create_backbone(
            config.backbone, zero_init_residual=config.zero_init_residual, **config.backbone_kwargs
        )
        if config.freeze_patch_embed:
            freeze_patch_embedding(backbone)
        style = HEAD_STYLES[config.heads]
        projector = projection_mlp(
            feature_dim(backbone),
            config.projector_hidden_dim,
            config.projector_dim,
            config.projector_layers,
            last_bias=style["last_bias"],
        )
        self.encoder = Encoder(backbone, projector)
        self.predictor: nn.Module = (
            prediction_mlp(config.projector_dim, config.predictor_hidden_dim, last_bn=style["last_bn"])
            if config.predictor
            else nn.Identity()
        )
        self.target_encoder: Encoder | None = None
        if config.target == "ema":
            self.target_encoder = copy.deepcopy(self.encoder)
            self.target_encoder.requires_grad_(False)

    @property
    def backbone(self) -> nn.Module:
        return self.encoder.backbone

    def online_modules(self) -> nn.ModuleDict:
        """The modules the optimizer trains (everything but the EMA target)."""
        return nn.ModuleDict({"encoder": self.encoder, "predictor": self.predictor})

    @torch.no_grad()
    def update_target(self, step: int, total_steps: int) -> float | None:
        """EMA step for BYOL targets (call after ``optimizer.step()``); returns the momentum used."""
        if self.target_encoder is None:
            return None
        m = ema_momentum(self.config.ema_momentum, step, total_steps, self.config.ema_schedule)
        ema_update(self.target_encoder, self.encoder, m)
        return m

    def _targets(self, views: Sequence[Tensor], online_z: list[Tensor]) -> list[Tensor]:
        if self.target_encoder is None:
            return [z.detach() for z in online_z]
        with torch.no_grad():
            return [self.target_encoder(v)[1] for v in views]

    def forward(self, views: Sequence[Tensor], generator: torch.Generator | None = None) -> LearnerOutput:
        """One training step's loss from the augmented views of a batch.

        ``views``: 2 tensors ``(N, C, H, W)`` for the baselines, 4 for GSG (views 1-2 of each image
        form "image 1", views 3-4, re-indexed by the pairing, form "image 2"), then ``local_crops``
        smaller views of each image (multi-crop GSG: extra sources of image 1's selected target).
        ``generator``: the CPU generator GSG's pairing (and ``gsg_selection: random``) draws from
        (default: the global torch RNG); the trainer passes one seeded per (seed, epoch, rank, step),
        so neither depends on other draws.
        """
        views, local = self._split_views(views)
        if self.config.source_only:
            return self._forward_source_only(views, local, generator)
        feats, zs = zip(*(self.encoder(v) for v in views))
        ps = [self.predictor(z) for z in zs]
        targets = self._targets(views, list(zs))
        out = LearnerOutput(
            loss=torch.zeros(()),
            features=[f.detach() for f in feats],
            projections=[z.detach() for z in zs],
        )
        if self.config.guidance == "none":
            out.loss = symmetric_negative_cosine(ps[0], ps[1], targets[0], targets[1])
            return out
        r = self._pairing(views[0], generator)
        # Image 2 of sample i is image r[i]: views 3 and 4 re-indexed after the encoder (BatchNorm
        # statistics over a view-batch do not depend on its order, so this equals indexing inputs).
        p4 = [ps[0], ps[1], ps[2][r], ps[3][r]]
        z4 = [targets[0], targets[1], targets[2][r], targets[3][r]]
        out.selection = self._select(z4, generator)
        out.pairing = r
        local_p = [self.predictor(self.encoder(v)[1]) for v in local]  # local crops of image 1 (= sample i)
        out.loss = gsg_loss(p4, z4, selection=out.selection, local_p=local_p)
        return out

    def _split_views(self, views: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """``(global views, local crops)``, each list of one shape; ValueError on a wrong count or shape."""
        n, L = self.config.num_views, self.config.local_crops
        views = list(views)
        if len(views) != n + L:
            local = f" + {L} local crops" if L else ""
            raise ValueError(f"{self.config.method} needs {n} views{local} per image, got {len(views)}")
        for group in (views[:n], views[n:]):
            if any(v.shape != group[0].shape for v in group):
                raise ValueError(
                    f"views of a group must have one shape, got {[tuple(v.shape) for v in group]}"
                )
        return views[:n], views[n:]

    def _select(self, z4: Sequence[Tensor], generator: torch.Generator | None) -> Tensor:
        # ``random`` draws after the pairing, from the same generator: one seeded stream per step.
        return gsg_select(z4, self.config.distance, self.config.gsg_selection, generator)

    def _pairing(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        # Sampled on the CPU and copied without a host-device sync; within this (local) batch only.
        return pair_indices(x.shape[0], self.config.pairing, generator).to(x.device, non_blocking=True)

    def _forward_source_only(
        self, views: list[Tensor], local: list[Tensor], generator: torch.Generator | None = None
    ) -> LearnerOutput:
        """GSG with gradient through the two selected source views (and the local crops) only (see the
        module docstring)."""
        target = self.target_encoder if self.target_encoder is not None else self.encoder
        with torch.no_grad():
            feats, zs = zip(*(target(v) for v in views))
        r = self._pairing(views[0], generator)
        z4 = [zs[0], zs[1], zs[2][r], zs[3][r]]
        selection = self._select(z4, generator)
        # Batch A: the image-1 source view of each sample; batch B: the image-2 source view.
        x_a, x_b = gsg_sources((views[0], views[1], views[2][r], views[3][r]), selection)
        t_a, t_b = gsg_targets(z4, selection)  # the positive partners of the sources
        p_a = self.predictor(self.encoder(x_a)[1])
        p_b = self.predictor(self.encoder(x_b)[1])
        local_p = [self.predictor(self.encoder(v)[1]) for v in local]
        return LearnerOutput(
            loss=guided_loss(p_a, t_a, p_b, t_b, local_p),
            features=list(feats),
            projections=list(zs),
            selection=selection,
            pairing=r,
        )
