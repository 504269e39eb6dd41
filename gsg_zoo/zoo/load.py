"""One front door from a *model spec* to a pooled-feature backbone.

A spec is one of:

* a gsg-zoo training checkpoint file (``.../last.pt``, written by ``gsg pretrain``);
* ``import:PATH``, a checkpoint of another SSL code base (GSG authors' / SimSiam, MoCo v2/v3,
  solo-learn, lightly, mmselfsup, VISSL, torchvision/timm: :mod:`gsg_zoo.zoo.importers`); such a file
  passed as a plain path is detected too, when it is not a gsg-zoo checkpoint;
* ``local-dir:PATH`` or a directory holding timm's ``config.json`` + weights (``gsg export``);
* ``hf-hub:ORG/NAME`` (works offline from the Hugging Face cache with ``HF_HUB_OFFLINE=1``);
* ``zoo:NAME``, a checkpoint listed in the zoo manifest (resolved to its ``hf-hub:`` id);
* ``random:ARCH`` / ``random:ARCH@SEED``, a timm architecture initialised from seed 0 / SEED (the usual
  lower baseline, reproducible);
* ``pixels``, the normalised image itself, flattened (the raw-pixel baseline; any ``image_size``);
* a plain timm name (``resnet50``, ``resnet50.a1_in1k``), loaded with its pretrained weights.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

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


def load_backbone(spec: str, *, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Resolve ``spec`` to ``(model in eval mode returning pooled features, data config)``.

    The data config is timm's (``input_size``, ``interpolation``, ``mean``, ``std``, ``crop_pct``).
    """
    model = _build(spec)
    model.eval().to(device)
    return model, timm.data.resolve_data_config({}, model=model)


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


def _build(spec: str) -> nn.Module:
    if spec == "pixels":
        return RawPixels()
    if spec.startswith("import:"):
        from .importers import load_imported

        return load_imported(spec[len("import:") :])
    if spec.startswith("random:"):
        arch, seed = parse_random_spec(spec)
        with torch.random.fork_rng(devices=[]):  # a reproducible baseline; the caller's RNG is untouched
            torch.manual_seed(seed)
            return _timm(arch, pretrained=False)
    if spec.startswith("zoo:"):
        from .manifest import resolve_zoo_name  # the manifest; imported only when asked for

        return _timm(resolve_zoo_name(spec[len("zoo:") :]), pretrained=True)
    if spec.startswith(("local-dir:", "hf-hub:")):
        if spec.startswith("local-dir:"):
            _check_local_dir(Path(spec[len("local-dir:") :]))
        return _timm(spec, pretrained=True)
    path = Path(spec)
    if path.is_dir():
        _check_local_dir(path)
        return _timm(f"local-dir:{path}", pretrained=True)
    if path.suffix in CHECKPOINT_SUFFIXES or path.exists() or os.sep in spec:
        return backbone_from_checkpoint(path)
    return _timm(spec, pretrained=True)


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
        **trained_data_config(cfg["backbone"], state["config"].get("data")),
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


def _timm(name: str, pretrained: bool) -> nn.Module:
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=0)
    except RuntimeError as err:
        if "Unknown model" in str(err):
            raise ValueError(
                f"{name!r} is not a model spec gsg-zoo understands: not a checkpoint file, directory, "
                "local-dir:/hf-hub:/zoo:/random: spec, pixels, or a timm architecture"
            ) from err
        raise
    except OSError as err:  # offline hub misses (LocalEntryNotFoundError is an OSError)
        raise FileNotFoundError(
            f"could not load {name!r}: {err}. Offline? Put the files in the Hugging Face cache or use local-dir:PATH"
        ) from err


def load(name: str, *, device: str | torch.device = "cpu") -> nn.Module:
    """A published zoo checkpoint by name, in eval mode: the model of ``load_backbone(f"zoo:{name}")``."""
    return load_backbone(f"zoo:{name}", device=device)[0]
