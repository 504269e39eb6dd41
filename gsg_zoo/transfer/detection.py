"""Backbone conversion to Detectron2's weight format, detection recipes and result tables.

Torch and numpy only (Detectron2 itself: :mod:`gsg_zoo.transfer.detectron2_train`). The key mapping
is MoCo's ``convert-pretrain-to-detectron2.py``; CIFAR-stem ResNets are refused (no place for 3x3 stem
kernels, feature strides off by 4). The mapping and why: docs/reference/internals.md.
"""

from __future__ import annotations

import json
import math
import pickle
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.normalization import IMAGENET_MEAN, IMAGENET_STD
from ..core.resources import config_dir, list_configs

AUTHOR = "gsg-zoo"

# Detectron2's ResNet depths by block type and blocks per stage.
_DEPTHS = {
    ("bottleneck", (3, 4, 6, 3)): 50,
    ("bottleneck", (3, 4, 23, 3)): 101,
    ("bottleneck", (3, 8, 36, 3)): 152,
    ("basic", (2, 2, 2, 2)): 18,
    ("basic", (3, 4, 6, 3)): 34,
}
_BN_SUFFIXES = ("weight", "bias", "running_mean", "running_var")
_SKIP_REASONS = {"num_batches_tracked": "BN step counter (not a weight)"}
_TARGET_KEY = re.compile(
    r"^(stem\.conv1\.(weight|norm\.(weight|bias|running_mean|running_var))"
    r"|res[2-5]\.\d+\.(conv[1-3]|shortcut)\.(weight|norm\.(weight|bias|running_mean|running_var)))$"
)
_BLOCK_CHILDREN = {"conv1", "bn1", "act1", "conv2", "bn2", "act2", "conv3", "bn3", "act3", "downsample"}
_INERT_CHILDREN = {"se", "aa", "drop_block", "drop_path"}  # allowed only when None/Identity (or train-only)


@dataclass
class Detectron2Weights:
    """A converted backbone: Detectron2 state dict plus the settings it needs."""

    model: dict[str, np.ndarray]
    resnets: dict[str, Any]  # MODEL.RESNETS overrides: DEPTH, RES2_OUT_CHANNELS, ...
    pixel_mean: list[float]  # RGB, 0-255 (MODEL.PIXEL_MEAN with INPUT.FORMAT "RGB")
    pixel_std: list[float]
    skipped: dict[str, str] = field(default_factory=dict)  # source key -> why it was not converted
    source: str = ""

    def config_overrides(self) -> list[str]:
        """``KEY VALUE`` pairs for Detectron2's ``cfg.merge_from_list``."""
        opts = [f"MODEL.RESNETS.{k}" for k in self.resnets]
        vals = [str(v) for v in self.resnets.values()]
        out = [x for pair in zip(opts, vals) for x in pair]
        return out + [
            "MODEL.PIXEL_MEAN",
            str(self.pixel_mean),
            "MODEL.PIXEL_STD",
            str(self.pixel_std),
            "INPUT.FORMAT",
            "RGB",
        ]

    def metadata(self) -> dict[str, Any]:
        meta = asdict(self)
        del meta["model"]
        meta["num_tensors"] = len(self.model)
        meta["config_overrides"] = self.config_overrides()
        return meta


def convert_spec(spec: str) -> Detectron2Weights:
    """Load ``spec`` with :func:`gsg_zoo.zoo.load.load_backbone` and convert it."""
    from ..zoo.load import load_backbone

    model, data_cfg = load_backbone(spec)
    weights = convert_resnet(model, mean=data_cfg.get("mean"), std=data_cfg.get("std"))
    weights.source = spec
    return weights


def convert_resnet(
    model: Any, *, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
) -> Detectron2Weights:
    """Convert a torchvision-layout ResNet module to Detectron2 names (see the module docstring).

    Raises ValueError for anything Detectron2's ResNet cannot load exactly: another architecture, a
    CIFAR or deep stem, SE/anti-aliasing blocks, average-pool shortcuts, or leftover weights.
    """
    if hasattr(model, "patch_embed"):  # research knobs: ViT backbones are for kNN/linear/fine-grained only
        raise ValueError(
            "detection transfer supports ResNet backbones only; this is a Vision Transformer (patch_embed), not a ResNet: "
            "evaluate it with gsg eval knn/linear or the fine-grained suite (docs/guides/research-knobs.md)"
        )
    resnets = _resnet_settings(model)
    converted: dict[str, np.ndarray] = {}
    skipped: dict[str, str] = {}
    unconverted: list[str] = []
    for key, value in model.state_dict().items():
        leaf = key.rsplit(".", 1)[-1]
        if leaf in _SKIP_REASONS:
            skipped[key] = _SKIP_REASONS[leaf]
            continue
        if key.startswith(("fc.", "head.", "classifier.")):
            skipped[key] = "classifier (not part of the backbone)"
            continue
        new = rename_key(key)
        if new is None or not _TARGET_KEY.match(new):
            unconverted.append(key)
            continue
        converted[new] = value.detach().cpu().float().numpy()
    if unconverted:
        raise ValueError(
            f"{len(unconverted)} backbone weights have no Detectron2 ResNet counterpart and would be left "
            f"unloaded: {unconverted[:10]}{' ...' if len(unconverted) > 10 else ''}"
        )
    _check_complete(converted, resnets)
    mean = [round(255.0 * m, 4) for m in (mean or IMAGENET_MEAN)]
    std = [round(255.0 * s, 4) for s in (std or IMAGENET_STD)]
    return Detectron2Weights(converted, resnets, mean, std, skipped)


def rename_key(key: str) -> str | None:
    """torchvision/timm ResNet name -> Detectron2 name, or None if it is not a ResNet weight."""
    if key == "conv1.weight":
        return "stem.conv1.weight"
    m = re.fullmatch(r"bn1\.(\w+)", key)
    if m:
        return f"stem.conv1.norm.{m[1]}"
    if key.startswith("conv1."):
        return None
    m = re.fullmatch(r"layer([1-4])\.(\d+)\.(.+)", key)
    if not m:
        return None
    stage, block, rest = int(m[1]) + 1, m[2], m[3]
    rest = re.sub(r"^bn([1-3])\.", r"conv\1.norm.", rest)
    rest = re.sub(r"^downsample\.0\.", "shortcut.", rest)
    rest = re.sub(r"^downsample\.1\.", "shortcut.norm.", rest)
    return f"res{stage}.{block}.{rest}"


def _resnet_settings(model: Any) -> dict[str, Any]:
    """Check the architecture against Detectron2's ResNet and return its MODEL.RESNETS settings."""
    from torch import nn

    name = type(model).__name__
    layers = [getattr(model, f"layer{i}", None) for i in range(1, 5)]
    conv1, bn1 = getattr(model, "conv1", None), getattr(model, "bn1", None)
    if conv1 is None or any(layer is None for layer in layers):
        raise ValueError(
            f"{name} is not a ResNet (no conv1/layer1-4): Detectron2 detection transfer supports ResNet "
            "backbones with the torchvision layout (resnet18/34/50/101/152, resnext, wide_resnet)"
        )
    if not isinstance(conv1, nn.Conv2d) or not isinstance(bn1, nn.BatchNorm2d):
        raise ValueError(
            f"{name} has a deep stem ({type(conv1).__name__} conv1, e.g. timm's resnet*c/resnet*d): "
            "Detectron2's BasicStem is a single 7x7 stride-2 conv, so these weights cannot be loaded"
        )
    if tuple(conv1.kernel_size) != (7, 7) or tuple(conv1.stride) != (2, 2):
        raise ValueError(
            f"{name} has a {conv1.kernel_size[0]}x{conv1.kernel_size[1]} stride-{conv1.stride[0]} stem "
            "(a CIFAR-stem ResNet): not convertible. Detectron2's BasicStem is a 7x7 stride-2 conv plus a "
            "stride-2 max-pool; 3x3 kernels do not fit it, and a stride-1 stem would shift every feature "
            "stride (res4 at 1/4 instead of 1/16) that anchors and ROI pooling assume. Pre-train a model "
            "with the ImageNet stem (e.g. resnet18/resnet50) for detection transfer"
        )
    if not isinstance(getattr(model, "maxpool", None), nn.MaxPool2d):
        raise ValueError(f"{name} has no stride-2 max-pool after the stem; Detectron2's BasicStem has one")
    kinds, counts = set(), []
    for stage, layer in enumerate(layers, start=2):
        counts.append(len(layer))
        for i, block in enumerate(layer):
            kinds.add(_check_block(block, f"layer{stage - 1}.{i}"))
    if len(kinds) != 1:
        raise ValueError(f"{name} mixes block types {sorted(kinds)}; Detectron2 ResNets use one")
    kind = kinds.pop()
    depth = _DEPTHS.get((kind, tuple(counts)))
    if depth is None:
        raise ValueError(
            f"{name}: {kind} blocks per stage {counts} match no Detectron2 ResNet depth "
            f"(supported: {sorted({d for d in _DEPTHS.values()})})"
        )
    first = layers[0][0]
    settings: dict[str, Any] = {"DEPTH": depth, "STEM_OUT_CHANNELS": conv1.out_channels}
    if kind == "basic":
        settings["RES2_OUT_CHANNELS"] = first.conv2.out_channels  # Detectron2 requires 64 for R18/R34
        if settings["RES2_OUT_CHANNELS"] != 64:
            raise ValueError(
                f"{name}: Detectron2's R18/R34 need 64 res2 channels, got {first.conv2.out_channels}"
            )
    else:
        groups = first.conv2.groups
        settings.update(
            RES2_OUT_CHANNELS=first.conv3.out_channels,
            NUM_GROUPS=groups,
            WIDTH_PER_GROUP=first.conv2.out_channels // groups,
        )
    settings["STRIDE_IN_1X1"] = False  # torchvision/timm put the stride in the 3x3 conv
    return settings


def _check_block(block: Any, where: str) -> str:
    from torch import nn

    children = dict(block.named_children())
    extra = set(children) - _BLOCK_CHILDREN - _INERT_CHILDREN
    if extra:
        raise ValueError(f"{where}: block has modules Detectron2's ResNet lacks: {sorted(extra)}")
    for n in ("se", "aa"):
        if n in children and children[n] is not None and not isinstance(children[n], nn.Identity):
            raise ValueError(
                f"{where}: {n} ({type(children[n]).__name__}) is not supported by Detectron2's ResNet blocks"
            )
    for n in ("act1", "act2", "act3"):
        if n in children and not isinstance(children[n], nn.ReLU):
            raise ValueError(f"{where}: activation {type(children[n]).__name__} (Detectron2 uses ReLU)")
    ds = children.get("downsample")
    if ds is not None and not (
        isinstance(ds, nn.Sequential)
        and len(ds) == 2
        and isinstance(ds[0], nn.Conv2d)
        and isinstance(ds[1], nn.BatchNorm2d)
    ):
        raise ValueError(
            f"{where}: shortcut is not conv1x1+BN (e.g. the average-pool shortcut of resnet*d), "
            "which Detectron2's ResNet cannot represent"
        )
    if "conv3" in children:
        if block.conv1.stride != (1, 1):
            raise ValueError(f"{where}: stride in the 1x1 conv (Caffe-style); expected torchvision style")
        return "bottleneck"
    if block.conv1.groups != 1 or block.conv2.groups != 1:
        raise ValueError(f"{where}: grouped basic blocks are not supported by Detectron2")
    return "basic"


def _check_complete(converted: Mapping[str, np.ndarray], resnets: Mapping[str, Any]) -> None:
    """Every conv of every block (and the stem) must have its weight and all four BN tensors."""
    convs = {k.rsplit(".weight", 1)[0] for k in converted if k.endswith(".weight") and ".norm." not in k}
    missing = [
        f"{c}.norm.{s}" for c in sorted(convs) for s in _BN_SUFFIXES if f"{c}.norm.{s}" not in converted
    ]
    if missing or "stem.conv1.weight" not in converted:
        raise ValueError(f"incomplete ResNet state dict, missing {missing[:8] or ['stem.conv1.weight']}")


def save_detectron2_pkl(weights: Detectron2Weights, path: str | Path) -> tuple[Path, Path]:
    """Write the Detectron2 ``.pkl`` and its ``.json`` metadata next to it; returns both paths."""
    from ..core.checkpoint import atomic_write

    path = Path(path)
    if path.suffix != ".pkl":
        raise ValueError(f"{path}: Detectron2 loads converted weights from a .pkl file; name it FILE.pkl")
    payload = {"model": weights.model, "__author__": AUTHOR, "matching_heuristics": True}

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            pickle.dump(payload, f, protocol=4)

    atomic_write(path, write)
    meta_path = path.with_suffix(".json")
    atomic_write(meta_path, lambda tmp: Path(tmp).write_text(json.dumps(weights.metadata(), indent=2) + "\n"))
    return path, meta_path


# ----------------------------------------------------------------------------------------- recipes


RECIPE_ALIASES = {"synthetic-coco": "synthetic_coco_R_50_C4", "voc": "voc_R_50_C4_24k"}


def detection_recipes() -> list[str]:
    """Names of the recipes in ``configs/detectron2/`` (files not starting with ``Base-``)."""
    return list_configs("detectron2", ".yaml", hidden_prefixes=("Base-",))


def recipe_path(name: str) -> Path:
    """A recipe name (``voc_R_50_C4_24k``) or a path to a recipe YAML."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        if not path.exists():
            raise FileNotFoundError(f"recipe file not found: {path}")
        return path
    path = config_dir("detectron2") / f"{RECIPE_ALIASES.get(name, name).replace('-', '_')}.yaml"
    if not path.exists():
        raise ValueError(f"unknown detection recipe {name!r}; available: {', '.join(detection_recipes())}")
    return path


# ----------------------------------------------------------------------------------------- results

METRIC_ORDER = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def summarize(
    per_seed: Sequence[Mapping[str, Mapping[str, float]]],
) -> dict[str, dict[str, dict[str, float]]]:
    """``{task: {metric: {"mean", "std", "n"}}}`` over seeds; std is the sample std (0 for one seed)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for task in sorted({t for r in per_seed for t in r}):
        metrics = sorted({m for r in per_seed for m in r.get(task, {})}, key=_metric_rank)
        out[task] = {}
        for m in metrics:
            vals = [float(r[task][m]) for r in per_seed if m in r.get(task, {})]
            finite = [v for v in vals if math.isfinite(v)]
            std = statistics.stdev(finite) if len(finite) > 1 else 0.0
            mean = statistics.fmean(finite) if finite else float("nan")
            out[task][m] = {"mean": mean, "std": std, "n": len(finite)}
    return out


def markdown_table(summary: Mapping[str, Mapping[str, Mapping[str, float]]], title: str = "") -> str:
    """A markdown table: one row per task (bbox, segm), ``mean ± std`` of AP, AP50, AP75."""
    cols = ("AP50", "AP", "AP75")
    lines = [f"### {title}", ""] if title else []
    lines += ["| task | " + " | ".join(cols) + " | seeds |", "|---|" + "---|" * (len(cols) + 1)]
    for task, metrics in summary.items():
        cells = []
        for c in cols:
            s = metrics.get(c)
            cells.append("-" if s is None else f"{s['mean']:.1f} ± {s['std']:.1f}")
        n = max((int(s["n"]) for s in metrics.values()), default=0)
        lines.append(f"| {task} | " + " | ".join(cells) + f" | {n} |")
    return "\n".join(lines) + "\n"


def _metric_rank(m: str) -> tuple[int, str]:
    return (METRIC_ORDER.index(m) if m in METRIC_ORDER else len(METRIC_ORDER), m)
