"""Backbones from timm, plus CIFAR-stem ResNets registered as timm architectures.

Importing :mod:`gsg_zoo` registers ``resnet18_cifar``, ``resnet34_cifar`` and ``resnet50_cifar``
(3x3 stride-1 stem, no max-pool) with timm, so ``timm.create_model`` builds them and loads their
exported weights (``local-dir:`` / ``hf-hub:``) like any other timm model.
"""

from __future__ import annotations

from typing import Any

import timm
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn

from ..core.normalization import CIFAR_MEAN, CIFAR_STD


class CifarResNet(ResNet):
    """timm ResNet with the CIFAR stem: conv 3x3 stride 1 (64 channels), no max-pool."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conv1 = nn.Conv2d(kwargs.get("in_chans", 3), 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.maxpool = nn.Identity()
        # Each stage's reduction is 4x smaller than with the ImageNet stem.
        for info in self.feature_info:
            info["reduction"] = max(1, info["reduction"] // 4)


def _cifar_cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "num_classes": 0,
        "input_size": (3, 32, 32),
        "pool_size": (4, 4),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": CIFAR_MEAN,
        "std": CIFAR_STD,
        "first_conv": "conv1",
        "classifier": "fc",
        "license": "apache-2.0",
        **kwargs,
    }


# timm reads ``default_cfgs`` of this module when the architectures below are registered.
default_cfgs = generate_default_cfgs({f"resnet{d}_cifar": _cifar_cfg() for d in (18, 34, 50)})


def _create_cifar(
    variant: str, block: type[nn.Module], layers: list[int], pretrained: bool, **kwargs: Any
) -> ResNet:
    kwargs.setdefault("num_classes", 0)
    return build_model_with_cfg(
        CifarResNet,
        variant,
        pretrained,
        block=block,
        layers=layers,
        **kwargs,
    )


@register_model
def resnet18_cifar(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-18 with the CIFAR stem (the GSG paper's CIFAR-10 backbone)."""
    return _create_cifar("resnet18_cifar", BasicBlock, [2, 2, 2, 2], pretrained, **kwargs)


@register_model
def resnet34_cifar(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-34 with the CIFAR stem."""
    return _create_cifar("resnet34_cifar", BasicBlock, [3, 4, 6, 3], pretrained, **kwargs)


@register_model
def resnet50_cifar(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """ResNet-50 with the CIFAR stem."""
    return _create_cifar("resnet50_cifar", Bottleneck, [3, 4, 6, 3], pretrained, **kwargs)


def create_backbone(name: str, *, zero_init_residual: bool = True, **kwargs: Any) -> nn.Module:
    """A randomly initialised timm model by name that returns pooled features (``num_classes=0``);
    weights come through :func:`gsg_zoo.load_backbone`.

    ``zero_init_residual`` zero-initialises the last BN of each residual block (ResNets; the
    SimSiam/GSG ImageNet default). :func:`feature_dim` gives the output width.
    """
    if name.startswith("resnet") or name.startswith("resnext") or name.startswith("wide_resnet"):
        kwargs["zero_init_last"] = zero_init_residual
    try:
        return timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    except RuntimeError as err:
        if "Unknown model" in str(err):
            raise ValueError(f"unknown backbone {name!r}: not a timm architecture ({err})") from err
        raise


def feature_dim(model: nn.Module) -> int:
    """Width of the pooled output of a timm model built with ``num_classes=0``.

    Differs from ``num_features`` for models with a pre-logits head (e.g. MobileNetV3).
    """
    return int(getattr(model, "head_hidden_size", None) or model.num_features)


def freeze_patch_embedding(model: nn.Module) -> None:
    """Freeze a ViT's patch projection: MoCo v3's ``--stop-grad-conv1`` for ViT stability
    (facebookresearch/moco-v3 CONFIG.md ViT recipes). ValueError for a model without ``patch_embed``."""
    patch_embed = getattr(model, "patch_embed", None)
    if patch_embed is None:
        raise ValueError(
            f"model.freeze_patch_embed needs a Vision Transformer backbone (a timm model with patch_embed), "
            f"got {type(model).__name__}"
        )
    patch_embed.requires_grad_(False)


def is_vit(model: nn.Module) -> bool:
    """Whether ``model`` is a token-sequence model (patch embedding; no spatial feature maps)."""
    return hasattr(model, "patch_embed")
