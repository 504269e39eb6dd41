"""Checkpoints of other SSL code bases -> a timm ResNet backbone (``gsg import`` and ``import:PATH`` specs).

A file is loaded with ``torch.load(weights_only=True)`` only (never arbitrary unpickling) and
flattened to dotted keys: nested dicts and lists joined by ``.``, e.g.
``state_dict.module.encoder.conv1.weight``. A :class:`Format` says where its online and target
(momentum) backbones live in that flat namespace, which backbone-relative keys are heads, and how
its names map to timm's. Formats are tried in :data:`FORMATS` order; the first whose backbone is
present (and whose marker matches) reads the file. The kept tensors must fill the timm architecture
exactly (:func:`check_fit`): nothing missing, nothing left over, every shape equal.
"""

from __future__ import annotations

import pickle
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

ENCODERS = ("online", "target")


class ForeignCheckpointError(ValueError):
    """A file that ``gsg import`` cannot turn into a timm backbone (layout, missing or misfit tensors)."""


class UnsafeCheckpointError(ForeignCheckpointError):
    """A file that only arbitrary unpickling (running code from the file) could load."""


# ------------------------------------------------------------------------------------------ renames
_LIGHTLY_POSITIONS = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}
_MM_STEM = {
    "stem.0.conv": "conv1.0",
    "stem.0.bn": "conv1.1",
    "stem.1.conv": "conv1.3",
    "stem.1.bn": "conv1.4",
    "stem.2.conv": "conv1.6",
    "stem.2.bn": "bn1",
}


def _lightly_name(key: str) -> str:
    """``nn.Sequential(*list(resnet.children())[:-1])`` positions -> torchvision names (2, 3, 8: no weights)."""
    head, _, rest = key.partition(".")
    return f"{_LIGHTLY_POSITIONS.get(head, head)}.{rest}" if rest else key


def _mm_name(key: str) -> str:
    """mmpretrain ResNet names -> timm's: the deep stem's ConvModules (``stem.I.conv``/``.bn``)."""
    for old, new in _MM_STEM.items():
        if key.startswith(old + "."):
            return new + key[len(old) :]
    return key


def _mm_avg_down(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ResNetV1d (``avg_down``): mm's stride-1 ``layer1`` shortcut is ``[conv, bn]``, timm's
    ``[Identity, conv, bn]``; the strided ones already agree (``[AvgPool, conv, bn]``)."""
    if not any(re.match(r"layer[2-4]\.0\.downsample\.2\.", k) for k in sd):
        return sd
    shift = {
        "layer1.0.downsample.0.": "layer1.0.downsample.1.",
        "layer1.0.downsample.1.": "layer1.0.downsample.2.",
    }
    out = {}
    for k, v in sd.items():
        old = next((o for o in shift if k.startswith(o)), None)
        out[shift[old] + k[len(old) :] if old else k] = v
    return out


def _same(key: str) -> str:
    return key


def _no_fixup(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return sd


# ------------------------------------------------------------------------------------------ formats
@dataclass(frozen=True)
class Format:
    """Where one code base keeps its backbone(s) in a checkpoint, and how its names map to timm's."""

    name: str
    code: str  # the code base, as the card names it
    reference: str  # the file of that code base the layout was checked against
    online: tuple[str, ...]  # flat-key prefixes of the online backbone (first present wins)
    target: tuple[str, ...] = ()  # of the target / momentum backbone
    heads: tuple[str, ...] = ()  # backbone-relative prefixes that are heads (dropped)
    marker: Callable[[set[str]], bool] = field(default=lambda keys: True)
    rename: Callable[[str], str] = _same
    fixup: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] = _no_fixup
    cifar_stem: bool = True  # a 3x3 stem is gsg-zoo's CIFAR stem (3x3, stride 1, padding 1, no max-pool)


def _has(*prefixes: str) -> Callable[[set[str]], bool]:
    return lambda keys: any(k.startswith(prefixes) for k in keys)


def _positional(prefix: str) -> Callable[[set[str]], bool]:
    return lambda keys: f"{prefix}0.weight" in keys and f"{prefix}4.0.conv1.weight" in keys


_MM_KEYS = (
    "state_dict.neck.",
    "state_dict.head.",
    "state_dict.target_net.",
    "state_dict.data_preprocessor.",
    "state_dict.backbone.stem.",
    "meta.",
)

FORMATS: tuple[Format, ...] = (
    # bych-lee/gsg main_pretrain.py save_checkpoint({epoch, arch, state_dict, optimizer}) of a DDP model;
    # gsg/builder.py: encoder = torchvision arch(num_classes=dim, zero_init_residual=True), encoder.fc =
    # projector MLP, predictor; BYOL/BYOLGSG: encoder_momentum = deepcopy(encoder). SimSiam is the same
    # (facebookresearch/simsiam simsiam/builder.py, main_simsiam.py).
    Format(
        "gsg",
        "the GSG authors' code (bych-lee/gsg) or SimSiam (facebookresearch/simsiam)",
        "bych-lee/gsg gsg/builder.py + main_pretrain.py; facebookresearch/simsiam simsiam/builder.py",
        ("state_dict.module.encoder.", "state_dict.encoder."),
        ("state_dict.module.encoder_momentum.", "state_dict.encoder_momentum."),
        heads=("fc.",),
    ),
    # facebookresearch/moco moco/builder.py: encoder_q/encoder_k = arch(num_classes=dim), fc -> MLP; queue.
    Format(
        "moco",
        "MoCo v1/v2 (facebookresearch/moco)",
        "facebookresearch/moco moco/builder.py",
        ("state_dict.module.encoder_q.", "state_dict.encoder_q."),
        ("state_dict.module.encoder_k.", "state_dict.encoder_k."),
        heads=("fc.",),
    ),
    # facebookresearch/moco-v3 moco/builder.py: base_encoder/momentum_encoder, fc -> MLP, predictor.
    Format(
        "mocov3",
        "MoCo v3 (facebookresearch/moco-v3)",
        "facebookresearch/moco-v3 moco/builder.py",
        ("state_dict.module.base_encoder.", "state_dict.base_encoder."),
        ("state_dict.module.momentum_encoder.", "state_dict.momentum_encoder."),
        heads=("fc.",),
    ),
    # open-mmlab/mmpretrain mmpretrain/models/backbones/resnet.py (ResNet / ResNetV1c / ResNetV1d) and
    # mmpretrain/models/selfsup/byol.py: target_net = CosineEMA(Sequential(backbone, neck)) -> module.0.
    Format(
        "mmselfsup",
        "mmselfsup / mmpretrain (open-mmlab)",
        "open-mmlab/mmpretrain mmpretrain/models/backbones/resnet.py, mmpretrain/models/selfsup/byol.py",
        ("state_dict.backbone.",),
        ("state_dict.target_net.module.0.", "state_dict.target_net.0."),
        marker=_has(*_MM_KEYS),
        rename=_mm_name,
        fixup=_mm_avg_down,
    ),
    # vturrisi/solo-learn solo/methods/base.py: Lightning checkpoint, backbone = torchvision resnet with
    # fc = Identity; BaseMomentumMethod.momentum_backbone. CIFAR: conv1 3x3, stride 1, *padding 2*.
    Format(
        "solo",
        "solo-learn (vturrisi/solo-learn)",
        "vturrisi/solo-learn solo/methods/base.py",
        ("state_dict.backbone.",),
        ("state_dict.momentum_backbone.",),
        marker=lambda keys: "state_dict.backbone.conv1.weight" in keys,
        cifar_stem=False,
    ),
    # lightly-ai/lightly examples/pytorch/simsiam.py, byol.py: backbone = nn.Sequential(*list(
    # resnet.children())[:-1]) (positional keys), BYOL: backbone_momentum = deepcopy(backbone).
    Format(
        "lightly",
        "lightly (lightly-ai/lightly)",
        "lightly-ai/lightly examples/pytorch/simsiam.py, examples/pytorch/byol.py",
        ("backbone.", "state_dict.backbone.", "model.backbone."),
        ("backbone_momentum.", "state_dict.backbone_momentum.", "model.backbone_momentum."),
        marker=lambda keys: any(
            _positional(p)(keys) for p in ("backbone.", "state_dict.backbone.", "model.backbone.")
        ),
        rename=_lightly_name,
    ),
    # facebookresearch/vissl extra_scripts/convert_vissl_to_torchvision.py: classy_state_dict.base_model.
    # model.trunk (or model_state_dict), prefix _feature_blocks.; vissl/models/trunks/resnext.py.
    Format(
        "vissl",
        "VISSL (facebookresearch/vissl)",
        "facebookresearch/vissl extra_scripts/convert_vissl_to_torchvision.py, vissl/models/trunks/resnext.py",
        (
            "classy_state_dict.base_model.model.trunk._feature_blocks.",
            "model_state_dict._feature_blocks.",
            "_feature_blocks.",
        ),
    ),
    # torchvision.models.resnet / timm resnet state dicts (names are the same), classifier fc dropped.
    Format(
        "timm",
        "a plain torchvision / timm ResNet state dict",
        "pytorch/vision torchvision/models/resnet.py; huggingface/pytorch-image-models timm/models/resnet.py",
        ("state_dict.", "model.", "module.", ""),
        heads=("fc.",),
        marker=lambda keys: any(
            f"{p}conv1.weight" in keys or f"{p}conv1.0.weight" in keys
            for p in ("state_dict.", "model.", "module.", "")
        ),
    ),
)
ALIASES = {"simsiam": "gsg"}
FORMAT_NAMES = tuple(f.name for f in FORMATS) + tuple(ALIASES)


def get_format(name: str) -> Format:
    name = ALIASES.get(name, name)
    for fmt in FORMATS:
        if fmt.name == name:
            return fmt
    raise ValueError(f"unknown checkpoint format {name!r}; known: auto, {', '.join(FORMAT_NAMES)}")


# --------------------------------------------------------------------------------------------- load
def _resave_hint(path: Path) -> str:
    return (
        "If you trust the file, re-save its weights alone from a trusted environment, e.g. python -c "
        f"\"import torch; ck = torch.load('{path}', weights_only=False); "
        f"torch.save({{'state_dict': ck['state_dict']}}, '{path.stem}.weights.pth')\" (use the key that "
        "holds the model: state_dict, model, classy_state_dict, ...), and import that file"
    )


def load_weights_only(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU; a file that needs arbitrary unpickling is refused."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UnsafeCheckpointError(
            f"{path}: refused: loading it needs arbitrary unpickling, which can run code from the file "
            f"(torch.load(weights_only=True): {first}). gsg-zoo never does that. {_resave_hint(path)}."
        ) from err
    except Exception as err:  # RuntimeError (not a zip / torch file), EOFError ...
        raise ForeignCheckpointError(
            f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}: {str(err).splitlines()[0]})"
        ) from err


def tensor_leaves(obj: Any, prefix: str = "") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(dotted key -> tensor, top-level scalar metadata such as epoch and arch)`` of a loaded checkpoint."""
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {}
    items = (
        obj.items() if isinstance(obj, Mapping) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    )
    for k, v in items:
        key = f"{prefix}{k}"
        if isinstance(v, torch.Tensor):
            tensors[key] = v
        elif isinstance(v, (Mapping, list, tuple)):
            tensors.update(tensor_leaves(v, key + ".")[0])
        elif not prefix and isinstance(v, (int, float, str, bool)) and len(str(v)) <= 200:
            meta[str(k)] = v
    if isinstance(obj, torch.Tensor):
        raise ForeignCheckpointError("the file holds a single tensor, not a state dict")
    return tensors, meta


# ------------------------------------------------------------------------------------------- detect
def _present(prefixes: tuple[str, ...], keys: set[str]) -> str | None:
    """The first prefix under which a ResNet stem lies (``conv1`` / positional ``0`` / mm ``stem``)."""
    stems = ("conv1.weight", "conv1.0.weight", "0.weight", "stem.0.conv.weight")
    return next((p for p in prefixes if any(p + s in keys for s in stems)), None)


def detect_format(keys: set[str]) -> Format:
    """The first format of :data:`FORMATS` whose online backbone is present and whose marker matches."""
    for fmt in FORMATS:
        if _present(fmt.online, keys) is not None and fmt.marker(keys):
            return fmt
    raise ForeignCheckpointError(
        f"unknown layout: no ResNet backbone of a known format ({', '.join(f.name for f in FORMATS)}); "
        f"found {_summary(keys)}"
    )


def _summary(keys: set[str] | list[str], n: int = 12) -> str:
    groups = Counter(".".join(k.split(".")[:3]) for k in keys)
    shown = ", ".join(f"{g}.* ({c})" for g, c in groups.most_common(n))
    return f"{len(keys)} tensors: {shown or 'none'}" + (" ..." if len(groups) > n else "")


# ------------------------------------------------------------------------------------------ extract
@dataclass(frozen=True)
class ImportedBackbone:
    """One backbone read from a foreign checkpoint, with timm's names, and what was left behind."""

    source: Path
    format: Format
    encoder: str  # online | target
    prefix: str  # where the backbone was in the flat key space
    architecture: str  # the timm architecture it fills exactly
    state_dict: dict[str, torch.Tensor]
    dropped: dict[str, int]  # flat-key group -> tensors not imported (heads, other networks, optimizer)
    metadata: dict[str, Any]  # the file's top-level scalars (epoch, arch, ...)
    notes: tuple[str, ...] = ()  # assumptions the file cannot confirm

    @property
    def conversion(self) -> str:
        """One line: which tensors became which model."""
        renamed = {
            "lightly": "positional names -> torchvision's; ",
            "mmselfsup": "mmpretrain names -> timm's; ",
        }
        return (
            f"{self.encoder} backbone '{self.prefix}*' ({len(self.state_dict)} tensors) -> timm "
            f"{self.architecture}, {renamed.get(self.format.name, '')}strict load: no tensor missing or left over"
        )

    def provenance(self) -> dict[str, Any]:
        """The ``source`` block of an export's ``gsg_export.json``."""
        return {
            "format": self.format.name,
            "code": self.format.code,
            "layout_reference": self.format.reference,
            "encoder": self.encoder,
            "prefix": self.prefix,
            "conversion": self.conversion,
            "dropped": dict(self.dropped),
            "metadata": dict(self.metadata),
            "notes": list(self.notes),
        }


def _group(key: str, prefix: str) -> str:
    """The group a dropped key is counted in: the prefix's shared part plus one name."""
    parts, pre = key.split("."), prefix.split(".")[:-1]
    shared = next((i for i, (a, b) in enumerate(zip(parts, pre)) if a != b), min(len(parts), len(pre)))
    return ".".join(parts[: shared + 1])


def extract(
    tensors: dict[str, torch.Tensor], fmt: Format, encoder: str
) -> tuple[str, dict[str, torch.Tensor], dict[str, int]]:
    """``(prefix, backbone state dict with timm names, dropped groups)`` of one encoder of ``fmt``."""
    if encoder not in ENCODERS:
        raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
    prefixes = fmt.online if encoder == "online" else fmt.target
    if not prefixes:
        raise ForeignCheckpointError(f"{fmt.name} checkpoints hold one backbone: there is no target encoder")
    prefix = _present(prefixes, set(tensors))
    if prefix is None:
        raise ForeignCheckpointError(
            f"no {encoder} backbone of format {fmt.name} (expected '{prefixes[0]}*'); found {_summary(set(tensors))}"
        )
    backbone: dict[str, torch.Tensor] = {}
    dropped: Counter[str] = Counter()
    for key, value in tensors.items():
        rel = key[len(prefix) :] if key.startswith(prefix) else None
        if rel is None:
            dropped[_group(key, prefix)] += 1
        elif rel.startswith(fmt.heads):
            dropped[prefix + rel.split(".")[0] + " (head)"] += 1
        else:
            backbone[fmt.rename(rel)] = value
    return prefix, fmt.fixup(backbone), dict(dropped)


# ------------------------------------------------------------------------------------- architecture
_DEPTHS = {
    (False, (2, 2, 2, 2)): 18,
    (False, (3, 4, 6, 3)): 34,
    (True, (3, 4, 6, 3)): 50,
    (True, (3, 4, 23, 3)): 101,
    (True, (3, 8, 36, 3)): 152,
    (True, (3, 24, 36, 3)): 200,
}


def infer_architecture(sd: dict[str, torch.Tensor], fmt: Format) -> tuple[str, tuple[str, ...]]:
    """``(timm architecture, assumptions)`` of a ResNet state dict with timm names."""
    import timm

    from ..method import backbones  # noqa: F401  (registers gsg-zoo's CIFAR-stem ResNets)

    blocks = tuple(len({k.split(".")[1] for k in sd if k.startswith(f"layer{i}.")}) for i in range(1, 5))
    bottleneck = "layer1.0.conv3.weight" in sd
    depth = _DEPTHS.get((bottleneck, blocks))
    if depth is None:
        raise ForeignCheckpointError(
            f"not a ResNet-18/34/50/101/152/200: {blocks} blocks per stage, "
            f"{'bottleneck' if bottleneck else 'basic'} blocks; found {_summary(list(sd))}"
        )
    notes: tuple[str, ...] = ()
    stem = sd.get("conv1.weight")
    if "conv1.0.weight" in sd:  # mm ResNetV1c / V1d deep stem -> timm's 'c' / 'd' (avg-pool shortcut)
        name = f"resnet{depth}{'d' if 'layer2.0.downsample.2.weight' in sd else 'c'}"
    elif stem is not None and stem.shape[-1] == 3:
        if not fmt.cifar_stem:
            raise ForeignCheckpointError(
                f"{fmt.name}'s CIFAR stem (3x3 conv, stride 1, padding 2, no max-pool: {fmt.reference}) has "
                "no timm or gsg-zoo architecture with the same output; refusing rather than changing features"
            )
        name = f"resnet{depth}_cifar"
        notes = (
            "3x3 stem read as gsg-zoo's CIFAR stem (stride 1, padding 1, no max-pool): the file "
            "records no stride or padding",
        )
    else:
        wide = bottleneck and sd.get("layer1.0.conv1.weight", torch.empty(0)).shape[:1] == (128,)
        name = f"wide_resnet{depth}_2" if wide else f"resnet{depth}"
    if not timm.is_model(name):
        raise ForeignCheckpointError(f"the weights need timm architecture {name!r}, which timm does not have")
    return name, notes


def check_fit(model: torch.nn.Module, sd: dict[str, torch.Tensor], what: str) -> None:
    """Raise unless ``sd`` fills ``model`` exactly: same keys, same shapes."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    shapes = [
        f"{k}: {tuple(sd[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in sd and sd[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        raise ForeignCheckpointError(
            f"{what} does not fit: missing {len(missing)} {missing[:6]}, unexpected {len(unexpected)} "
            f"{unexpected[:6]}, shape mismatch {len(shapes)} {shapes[:4]}; found {_summary(list(sd))}"
        )


# ------------------------------------------------------------------------------------------ public
def read_checkpoint(
    path: str | Path, fmt: str = "auto", *, encoder: str = "online", arch: str | None = None
) -> ImportedBackbone:
    """The backbone of a foreign checkpoint (``fmt``: ``auto`` or a name of :data:`FORMAT_NAMES`)."""
    path = Path(path)
    obj = load_weights_only(path)
    if isinstance(obj, Mapping) and str(obj.get("kind", "")).startswith("gsg-zoo/"):
        raise ForeignCheckpointError(f"{path} is a gsg-zoo checkpoint: export it with `gsg export`")
    tensors, meta = tensor_leaves(obj)
    form = detect_format(set(tensors)) if fmt == "auto" else get_format(fmt)
    try:
        prefix, sd, dropped = extract(tensors, form, encoder)
        architecture, notes = (arch, ()) if arch else infer_architecture(sd, form)
    except ForeignCheckpointError as err:
        raise ForeignCheckpointError(f"{path} ({form.name} format): {err}") from err
    dropped.update({str(k): 0 for k in _untensored(obj, meta, prefix, dropped)})
    return ImportedBackbone(path, form, encoder, prefix, architecture, sd, dropped, meta, notes)


def _untensored(obj: Any, meta: dict[str, Any], prefix: str, dropped: dict[str, int]) -> list[str]:
    """Top-level entries dropped without a tensor (an optimizer that never stepped, a config ...)."""
    if not isinstance(obj, Mapping):
        return []
    seen = [*dropped, prefix]
    return [
        str(k)
        for k, v in obj.items()
        if not isinstance(v, torch.Tensor)
        and str(k) not in meta
        and not any(g == str(k) or g.startswith(f"{k}.") for g in seen)
    ]


def timm_backbone(imported: ImportedBackbone) -> torch.nn.Module:
    """A timm model (``num_classes=0``, eval mode) holding exactly the imported weights; its
    ``pretrained_cfg`` carries gsg-zoo's preprocessing for the architecture (the file records none)."""
    import timm

    from ..method import backbones  # noqa: F401  (CIFAR-stem architectures)
    from .preprocessing import trained_data_config

    try:
        model = timm.create_model(imported.architecture, pretrained=False, num_classes=0)
    except RuntimeError as err:
        raise ForeignCheckpointError(f"unknown architecture {imported.architecture!r}: {err}") from err
    what = f"{imported.source}: the {imported.format.name} {imported.encoder} backbone '{imported.prefix}*'"
    check_fit(model, imported.state_dict, f"{what} on timm {imported.architecture}")
    model.load_state_dict(imported.state_dict, strict=True)
    model.pretrained_cfg = {**model.pretrained_cfg, **trained_data_config(imported.architecture, None)}
    return model.eval()


def load_imported(path: str | Path, fmt: str = "auto", **kwargs: Any) -> torch.nn.Module:
    """``import:PATH`` as a model spec: the foreign checkpoint's backbone as a timm model."""
    return timm_backbone(read_checkpoint(path, fmt, **kwargs))
