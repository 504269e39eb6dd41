"""The one front door from a *model spec* to a backbone: :func:`load_backbone`.

A spec is ``SCHEME:REST`` for a scheme of :data:`SCHEMES` (``import:``, ``random:``, ``zoo:``,
``local-dir:``, ``hf-hub:``), ``pixels``, a directory (a timm export), a checkpoint file, or a plain
timm name; docs/reference/model-specs.md describes each.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from ..config.recipes import upgrade_config
from ..core.checkpoint import CheckpointError, backbone_state_dict, load_checkpoint
from ..core.checksums import verify_listed_files
from ..method import backbones as _backbones  # noqa: F401  (CIFAR-stem registration)
from .preprocessing import trained_data_config

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".tar", ".torch")


def parse_random_spec(spec: str) -> tuple[str, int]:
    """``random:ARCH`` -> (ARCH, 0); ``random:ARCH@SEED`` -> (ARCH, SEED)."""
    arch, _, seed = spec[len("random:") :].partition("@")
    if seed and not seed.isdigit():
        raise ValueError(f"{spec!r}: the seed after @ must be a non-negative integer (random:ARCH@SEED)")
    return arch, int(seed or 0)


def canonical_spec(spec: str) -> str:
    """The spec as results and cards name it: ``random:ARCH`` gets its seed (``random:ARCH@0``)."""
    if spec.startswith("random:"):
        arch, seed = parse_random_spec(spec)
        return f"random:{arch}@{seed}"
    return spec


def load_backbone(
    spec: str, *, device: str | torch.device = "cpu", **timm_kwargs: Any
) -> tuple[nn.Module, dict[str, Any]]:
    """Resolve ``spec`` to ``(model in eval mode, timm data config)``.

    The model returns pooled features unless ``timm_kwargs`` say otherwise (``num_classes=10``,
    ``features_only=True``, ...; timm-backed specs only). The data config is timm's
    (``input_size``, ``interpolation``, ``mean``, ``std``, ``crop_pct``).
    """
    model = build_backbone(spec, **timm_kwargs)
    model.eval().to(device)
    return model, timm.data.resolve_data_config({}, model=model)


def load(name: str, *, device: str | torch.device = "cpu", **timm_kwargs: Any) -> nn.Module:
    """A published zoo checkpoint by name: the model of ``load_backbone(f"zoo:{name}")``."""
    return load_backbone(f"zoo:{name}", device=device, **timm_kwargs)[0]


def build_backbone(spec: str, **timm_kwargs: Any) -> nn.Module:
    """The model a spec names, with its weights (train mode, on the CPU)."""
    scheme, sep, rest = spec.partition(":")
    if sep and scheme in SCHEMES:
        return SCHEMES[scheme](rest, timm_kwargs)
    if spec == "pixels":
        return _without_options(spec, timm_kwargs, RawPixels())
    path = Path(spec)
    if path.is_dir():
        return _local_dir(spec, timm_kwargs)
    if path.suffix in CHECKPOINT_SUFFIXES or path.exists() or os.sep in spec:
        return _without_options(spec, timm_kwargs, backbone_from_checkpoint(path))
    return _timm(spec, pretrained=True, **timm_kwargs)


class RawPixels(nn.Module):
    """The raw-pixel baseline: features are the normalised input image, flattened (``C*H*W`` dims)."""

    pretrained_cfg = {
        "input_size": (3, 32, 32),
        "interpolation": "bilinear",
        "crop_pct": 1.0,
        "mean": timm.data.IMAGENET_DEFAULT_MEAN,
        "std": timm.data.IMAGENET_DEFAULT_STD,
    }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def _imported(path: str, options: dict[str, Any]) -> nn.Module:
    from .importers import load_imported

    return _without_options(f"import:{path}", options, load_imported(path))


def _random(rest: str, options: dict[str, Any]) -> nn.Module:
    arch, seed = parse_random_spec(f"random:{rest}")
    with torch.random.fork_rng(devices=[]):  # a reproducible baseline; the caller's RNG is untouched
        torch.manual_seed(seed)
        return _timm(arch, pretrained=False, **options)


def _zoo(name: str, options: dict[str, Any]) -> nn.Module:
    from .manifest import resolve_zoo_name

    return _timm(resolve_zoo_name(name), pretrained=True, **options)


def _local_dir(path: str, options: dict[str, Any]) -> nn.Module:
    _check_local_dir(Path(path))
    return _timm(f"local-dir:{path}", pretrained=True, **options)


def _hub(repo: str, options: dict[str, Any]) -> nn.Module:
    return _timm(f"hf-hub:{repo}", pretrained=True, **options)


#: ``SCHEME:REST`` specs and their handlers ``(REST, timm options) -> model``.
SCHEMES: dict[str, Callable[[str, dict[str, Any]], nn.Module]] = {
    "import": _imported,
    "random": _random,
    "zoo": _zoo,
    "local-dir": _local_dir,
    "hf-hub": _hub,
}


def _without_options(spec: str, options: dict[str, Any], model: nn.Module) -> nn.Module:
    if options:
        raise ValueError(f"{spec!r} is not a timm model: it takes no timm options (got {sorted(options)})")
    return model


def backbone_from_checkpoint(path: str | os.PathLike) -> nn.Module:
    """The online backbone of a ``gsg pretrain`` checkpoint, as a timm model with loaded weights and the
    training preprocessing as its ``pretrained_cfg`` (see :mod:`gsg_zoo.zoo.preprocessing`).

    A file that is not a gsg-zoo checkpoint is read by :mod:`gsg_zoo.zoo.importers` when its layout is known.
    """
    from ..method.backbones import create_backbone

    try:
        state = load_checkpoint(path)
    except CheckpointError as err:
        return _foreign_backbone(Path(path), err)
    cfg = state["config"]["model"]
    model = create_backbone(cfg["backbone"], zero_init_residual=False, **cfg.get("backbone_kwargs", {}))
    # The preprocessing it was trained with, exactly as its export records it (not timm's defaults).
    model.pretrained_cfg = {
        **model.pretrained_cfg,
        **trained_data_config(cfg["backbone"], upgrade_config(state["config"]).get("data")),
    }
    sd = backbone_state_dict(state)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path}: backbone weights do not match architecture {cfg['backbone']!r} "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    return model


def _foreign_backbone(path: Path, err: CheckpointError) -> nn.Module:
    """A checkpoint file of another code base, or ``err`` (with why the importer refused it too)."""
    from .importers import ForeignCheckpointError, UnsafeCheckpointError, load_imported

    if not path.is_file() or path.suffix == ".safetensors":
        raise err
    try:
        return load_imported(path)
    except UnsafeCheckpointError:
        raise
    except ForeignCheckpointError as foreign:
        raise CheckpointError(f"{err}; nor a checkpoint `gsg import` reads: {foreign}") from foreign


def _check_local_dir(path: Path) -> None:
    if not path.is_dir():
        raise FileNotFoundError(f"model directory not found: {path}")
    if not (path / "config.json").exists():
        raise FileNotFoundError(
            f"{path} has no config.json: expected a timm export (config.json + model.safetensors), "
            "e.g. from `gsg export`"
        )
    verify_listed_files(path)  # a gsg export carries checksums.sha256: refuse damaged weights


def _timm(name: str, pretrained: bool, **options: Any) -> nn.Module:
    try:
        return timm.create_model(name, pretrained=pretrained, **{"num_classes": 0, **options})
    except RuntimeError as err:
        if "Unknown model" in str(err):
            raise ValueError(
                f"{name!r} is not a model spec gsg-zoo understands: not a checkpoint file, directory, "
                f"{', '.join(s + ':' for s in SCHEMES)} spec, pixels, or a timm architecture"
            ) from err
        raise
    except OSError as err:  # offline hub misses (LocalEntryNotFoundError is an OSError)
        raise FileNotFoundError(
            f"could not load {name!r}: {err}. Offline? Put the files in the Hugging Face cache or use local-dir:PATH"
        ) from err
