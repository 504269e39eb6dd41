"""Pretraining recipes: YAML files with optional ``base:`` inheritance and ``--set key=value`` overrides.

A recipe is nested typed sections (``data.loader.num_workers``); unknown keys are refused naming the
known ones, and keys of the older flat layout (:data:`RENAMED`) are refused naming their new place.
Stored configs (a checkpoint's ``config``) are read back through :func:`upgrade_config`.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from ..core.resources import config_dir, list_configs
from ..method.learner import METHODS, LearnerConfig


@dataclass
class SyntheticConfig:
    """``data.dataset=synthetic``: the built-in procedural data; the nuisance switches serve ablations."""

    num_images: int = 4000
    image_size: int | None = None  # rendered size (defaults to data.image_size)
    seed: int = 0
    textured_background: bool = True
    clutter: bool = True
    grayscale: bool = False


@dataclass
class LoaderConfig:
    """The training DataLoader's options (a resumed run may change them)."""

    num_workers: int = 2
    pin_memory: bool = True
    persistent_workers: bool = True
    prefetch_factor: int = 2


@dataclass
class HFConfig:
    """``data.dataset=hf``: the image and label columns of the Hugging Face dataset."""

    image_column: str = "image"
    label_column: str = "label"


@dataclass
class WdsConfig:
    """``data.dataset=webdataset``: which member of a sample is its image and where its label is."""

    image_keys: list[str] = field(
        default_factory=lambda: ["jpg", "jpeg", "png", "webp", "bmp"]
    )  # first present
    label_key: str = "cls"  # cls | txt (an integer) | json (its field label_field) | none (unlabelled)
    label_field: str = "label"  # label_key=json: the field holding the class index


@dataclass
class StreamConfig:
    """``data.dataset=webdataset`` or ``hf``: stream the shards or parquet files (sequential reads, shuffle buffer)."""

    enabled: bool = False
    shuffle_buffer: int = 1000  # samples in each loader worker's shuffle buffer


@dataclass
class LocalCropsConfig:
    """Multi-crop GSG (``model.local_crops > 0``): the local crops' side and area range (DINO's 0.05-0.4)."""

    size: int | None = None  # default: image_size x 96/224 (DINO/SwAV's 96 px at 224), >= 8
    min_scale: float = 0.05
    max_scale: float = 0.4


@dataclass
class DataConfig:
    dataset: str = (
        "synthetic"  # synthetic | cifar10 | cifar100 | stl10 | imagefolder | folder | webdataset | hf
    )
    root: str | None = None
    split: str = "train"
    download: bool = False
    image_size: int = 32
    augmentation: str = "cifar"  # cifar | mocov2 | byol (BYOL's asymmetric views, a named variant)
    normalization: str = "cifar"  # cifar | imagenet
    # PIL views: the workers ship uint8 views, normalised on the device (the same floats, bit for bit;
    # a quarter of the bytes through pinning and the copy). None: on CUDA only (docs/guides/pretraining.md)
    uint8_views: bool | None = None
    min_scale: float = 0.2
    jitter: float = 0.4  # colour jitter strength of brightness, contrast and saturation (applied p=0.8)
    saturation: float | None = None  # colour jitter of saturation, if not ``jitter`` (BYOL: 0.2)
    hue: float = 0.1  # colour jitter of hue (at most 0.5)
    grayscale_p: float = 0.2
    batch_augment: bool = False  # views drawn on the device (cifar: from uint8 images; else from crop boxes)
    decode: str = "worker"  # worker | device: JPEGs decoded on the training device (crop-box batch_augment)
    max_consecutive_failures: int = 50  # unreadable images in a row (each replaced) before the run stops
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    hf: HFConfig = field(default_factory=HFConfig)
    wds: WdsConfig = field(default_factory=WdsConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    local_crops: LocalCropsConfig = field(default_factory=LocalCropsConfig)

    def augment_options(self) -> dict[str, Any]:
        """Keyword options of the view augmentation (``build_augmentation`` and ``BatchAugment``)."""
        return {
            "min_scale": self.min_scale,
            "jitter": self.jitter,
            "hue": self.hue,
            "grayscale_p": self.grayscale_p,
            **({"saturation": self.saturation} if self.saturation is not None else {}),
        }

    def synthetic_options(self) -> dict[str, Any]:
        """Keyword options of the built-in dataset for :func:`~gsg_zoo.data.pretraining.build_dataset`."""
        s = self.synthetic
        return {
            "image_size": s.image_size or self.image_size,
            "seed": s.seed,
            "textured_background": s.textured_background,
            "clutter": s.clutter,
            "grayscale": s.grayscale,
        }

    def reader_options(self) -> dict[str, Any]:
        """Options of the dataset readers: the built-in data's, the Hugging Face columns, the shards' keys."""
        return {**self.synthetic_options(), **asdict(self.hf), **asdict(self.wds)}


@dataclass
class OptimConfig:
    optimizer: str = "sgd"  # sgd | lars | adamw
    lr: float = 0.05  # base lr; effective lr = lr * batch / 256 when scale_lr
    scale_lr: bool = True
    momentum: float = 0.9
    weight_decay: float = 1e-4
    wd_exclude_bn_bias: bool = False
    fix_predictor_lr: bool = True
    schedule: str = "cosine"  # cosine | constant
    warmup_epochs: float = 0.0
    per_step: bool = False  # False: the reference's per-epoch cosine; True: updated every step
    # None: foreach on every device type (torch's own default picks it on CUDA only; on CPU it was
    # measured faster too, benchmarks/README.md "CPU options")
    foreach: bool | None = None
    # SGD: None = fused (one kernel for every parameter) when the parameters are on CUDA, else foreach;
    # not measured on hardware (docs/guides/pretraining.md "Throughput")
    fused: bool | None = None


@dataclass
class TrainConfig:
    epochs: int = 800
    batch_size: int = 512  # global batch (split evenly across ranks)
    batch_size_per_device: int | None = None  # if set: global batch = this x world size (lr follows it)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto (bf16/fp16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16
    channels_last: bool = True
    compile: bool = False
    sync_bn: str = "auto"  # auto (on for multi-GPU) | on | off
    checkpoint_every: int = 50  # also writes checkpoints/last.pt every epoch
    checkpoint_minutes: float = 30.0  # also save last.pt inside an epoch this often (0: only at epoch ends)
    checkpoint_steps: int = 0  # also save last.pt every N global steps (0: off)
    max_steps_per_epoch: int | None = None  # truncate epochs (smoke tests)
    log_every: int = 20  # steps between check steps: finite loss, preemption, time-based saves, progress
    dist_timeout_minutes: float = 30.0  # collective timeout of the process group
    cudnn_benchmark: bool = True  # CUDA: let cuDNN pick the fastest kernels (off when deterministic)
    tf32: bool | None = None  # CUDA: TF32 matmuls and convolutions (None: PyTorch's defaults)
    deterministic: bool = False  # torch.use_deterministic_algorithms + CUBLAS_WORKSPACE_CONFIG (slower)
    # CUDA: each batch copied to the device on a side stream, overlapping the queued step (not measured
    # on hardware)
    prefetch_to_device: bool = True
    # DistributedDataParallel's options (multi-process runs; not measured on hardware)
    ddp_gradient_as_bucket_view: bool = True  # gradients are views of the all-reduce buckets: no copy
    ddp_static_graph: bool = False  # the same graph every step (lets DDP skip unused-parameter checks)
    ddp_broadcast_buffers: bool = True  # rank 0's buffers (BN running stats) to every rank each forward


@dataclass
class MonitorConfig:
    every: int = 1  # epochs between kNN/collapse monitors (0: only at the end, -1: never)
    dataset: str | None = None  # default: data.dataset
    root: str | None = None  # default: data.root
    train_split: str = "train"
    test_split: str = "test"
    train_limit: int | None = 2000  # synthetic: bank size; others: first N (None: all)
    test_limit: int | None = 1000
    k: int = 200
    t: float = 0.1
    batch_size: int = 256
    tensorboard: bool = True  # epoch (OUT/tb) and step (OUT/tb/steps) scalars, when tensorboard is installed
    wandb: bool = False  # Weights & Biases (WANDB_MODE=offline: local files); the run id is checkpointed
    wandb_project: str = "gsg-zoo"
    online_linear: bool = (
        False  # a linear head on detached features, its own SGD (gsg_zoo/train/online_probe.py)
    )
    online_linear_lr: float = 0.1
    online_linear_classes: int | None = None  # default: the dataset's class count


#: ``model`` keys a recipe sets: :class:`LearnerConfig` but ``target`` and ``guidance`` (``method`` sets those)
MODEL_KEYS: tuple[str, ...] = tuple(
    f.name for f in fields(LearnerConfig) if f.name not in ("target", "guidance")
)


@dataclass
class Recipe:
    name: str = "unnamed"
    method: str = "simsiam_gsg"
    model: LearnerConfig = field(default_factory=LearnerConfig)  # target and guidance: from ``method``
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    paper: dict[str, Any] = field(default_factory=dict)  # expected numbers of the paper (documentation)

    def learner_config(self) -> LearnerConfig:
        """``model`` with the target and guidance of ``method``."""
        spec = LearnerConfig.for_method(self.method)
        return replace(self.model, target=spec.target, guidance=spec.guidance)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["model"] = self.learner_config().to_dict()  # fully resolved
        return d


#: Keys of the flat ``data`` layout -> their place in the nested sections. Recipes and ``--set`` giving
#: an old key are refused naming the new one; stored configs are upgraded (:func:`upgrade_config`).
RENAMED: dict[str, str] = {
    "data.num_images": "data.synthetic.num_images",
    "data.synthetic_image_size": "data.synthetic.image_size",
    "data.synthetic_seed": "data.synthetic.seed",
    "data.synthetic_textured_background": "data.synthetic.textured_background",
    "data.synthetic_clutter": "data.synthetic.clutter",
    "data.synthetic_grayscale": "data.synthetic.grayscale",
    "data.num_workers": "data.loader.num_workers",
    "data.pin_memory": "data.loader.pin_memory",
    "data.persistent_workers": "data.loader.persistent_workers",
    "data.prefetch_factor": "data.loader.prefetch_factor",
    "data.image_column": "data.hf.image_column",
    "data.label_column": "data.hf.label_column",
    "data.streaming": "data.stream.enabled",
    "data.shuffle_buffer": "data.stream.shuffle_buffer",
    "data.local_crop_size": "data.local_crops.size",
    "data.local_min_scale": "data.local_crops.min_scale",
    "data.local_max_scale": "data.local_crops.max_scale",
}


def upgrade_config(config: dict[str, Any]) -> dict[str, Any]:
    """A stored config (a checkpoint's ``Recipe.to_dict()``) in today's layout: a copy with the keys of
    :data:`RENAMED` moved to their new place (a config of today's layout comes back equal)."""
    out = copy.deepcopy(config)
    for old, new in RENAMED.items():
        section, leaf = old.split(".")
        node = out.get(section)
        if not isinstance(node, dict) or leaf not in node:
            continue
        value = node.pop(leaf)
        *parents, new_leaf = new.split(".")
        target = out
        for k in parents:
            target = target.setdefault(k, {})
        target.setdefault(new_leaf, value)
    return out


def dotted(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as recipe keys: ``{"data": {"loader": {"num_workers": 2}}}`` ->
    ``{"data.loader.num_workers": 2}`` (an empty section stays one key)."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(dotted(v, key + "."))
        else:
            out[key] = v
    return out


def _is_section(f: dataclasses.Field[Any]) -> bool:
    """A field holding a nested section (a dataclass), not a value."""
    return dataclasses.is_dataclass(f.default_factory)


def key_defaults(section: Any = None, prefix: str = "") -> dict[str, Any]:
    """Every recipe key (``data.loader.num_workers``) with its default, nested sections flattened."""
    if section is None:
        section = Recipe()
    out: dict[str, Any] = {}
    for f in fields(section):
        key, value = f"{prefix}{f.name}", getattr(section, f.name)
        if key == "model":
            out.update({f"model.{k}": getattr(value, k) for k in MODEL_KEYS})
        elif _is_section(f):
            out.update(key_defaults(value, f"{key}."))
        else:
            out[key] = value
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        merge = isinstance(v, dict) and v and isinstance(out.get(k), dict)  # {} replaces
        out[k] = _merge(out[k], v) if merge else v
    return out


def list_recipes() -> list[str]:
    """Names of the shipped recipes (``pretrain/*.yaml`` without the ``_base`` files)."""
    return list_configs("pretrain", ".yaml")


def resolve_recipe_path(name_or_path: str) -> Path:
    """A recipe file: a path to a user's YAML, or the name of a shipped recipe."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    shipped = config_dir("pretrain")
    for cand in (shipped / name_or_path, shipped / f"{name_or_path}.yaml"):
        if cand.is_file():
            return cand
    raise FileNotFoundError(
        f"recipe {name_or_path!r} is neither a file nor a shipped recipe; shipped: {', '.join(list_recipes())}"
    )


def load_raw(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise ValueError(f"{path}: YAML syntax error at {where}: {err.problem}") from err
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a recipe is a YAML mapping (key: value), not {type(raw).__name__}")
    base = raw.pop("base", None)
    return _merge(load_raw((path.parent / base).resolve()), raw) if base else raw


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["train.epochs=3", "data.loader.num_workers=0"]`` -> nested dict (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--set expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        node = out
        *parents, leaf = key.strip().split(".")
        for k in parents:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {key.strip()}: {k} is given a value elsewhere, not keys")
        node[leaf] = yaml.safe_load(value)
    return out


def _coerce(value: Any, type_name: str, key: str) -> Any:
    """YAML 1.1 reads ``1e30`` as a string: convert numbers for numeric fields; errors name ``key``."""
    if not isinstance(value, str):
        return value
    for name, cast in (("float", float), ("int", int)):
        if type_name.startswith(name):
            try:
                return cast(value)
            except ValueError as err:
                raise ValueError(f"{key}: expected a number of type {type_name}, got {value!r}") from err
    return value


def _section(cls: type, value: Any, key: str, exclude: tuple[str, ...] = ()) -> Any:
    """The section ``cls`` at ``key`` from a mapping; nested sections recurse, and unknown or renamed
    keys are refused naming the known ones or the new one."""
    known = {f.name: f for f in fields(cls) if f.name not in exclude}
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ValueError(f"{key} is a section: give its keys ({', '.join(known)}), not {value!r}")
    for k in value:
        if f"{key}.{k}" in RENAMED:
            raise ValueError(f"{key}.{k} was renamed: use {RENAMED[f'{key}.{k}']}")
    unknown = set(value) - set(known)
    if unknown:
        raise ValueError(f"unknown {key} option(s) {sorted(unknown)}; known: {sorted(known)}")
    kwargs = {}
    for k, v in value.items():
        f, path = known[k], f"{key}.{k}"
        kwargs[k] = _section(f.default_factory, v, path) if _is_section(f) else _coerce(v, str(f.type), path)
    return cls(**kwargs)


def recipe_from_dict(raw: dict[str, Any]) -> Recipe:
    sections = {"data": DataConfig, "optim": OptimConfig, "train": TrainConfig, "monitor": MonitorConfig}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key in sections:
            kwargs[key] = _section(sections[key], value, key)
        elif key == "model":
            kwargs[key] = _section(LearnerConfig, value, key, exclude=("target", "guidance"))
        elif key in {f.name for f in fields(Recipe)}:
            kwargs[key] = value
        else:
            raise ValueError(f"unknown recipe section {key!r}")
    recipe = Recipe(**kwargs)
    if recipe.method not in METHODS:
        raise ValueError(f"unknown method {recipe.method!r}; choose one of {sorted(METHODS)}")
    validate(recipe)
    return recipe


# (key, test, allowed range as said in the error); None values are allowed where the default is None
RULES: tuple[tuple[str, Any, str], ...] = (
    ("train.epochs", lambda v: v >= 1, ">= 1"),
    ("train.batch_size", lambda v: v >= 2, ">= 2 (GSG pairs images within a batch; BatchNorm needs 2)"),
    ("train.batch_size_per_device", lambda v: v >= 2, ">= 2"),
    ("train.max_steps_per_epoch", lambda v: v >= 1, ">= 1"),
    ("train.log_every", lambda v: v >= 1, ">= 1"),
    ("train.checkpoint_every", lambda v: v >= 0, ">= 0"),
    ("train.checkpoint_minutes", lambda v: v >= 0, ">= 0"),
    ("train.checkpoint_steps", lambda v: v >= 0, ">= 0"),
    ("train.dist_timeout_minutes", lambda v: v > 0, "> 0"),
    ("optim.lr", lambda v: v > 0, "> 0"),
    ("data.image_size", lambda v: v >= 8, ">= 8"),
    ("data.loader.num_workers", lambda v: v >= 0, ">= 0"),
    ("data.loader.prefetch_factor", lambda v: v >= 1, ">= 1"),
    ("data.min_scale", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("data.jitter", lambda v: v >= 0, ">= 0"),
    ("data.hue", lambda v: 0 <= v <= 0.5, "in [0, 0.5]"),
    ("data.grayscale_p", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("data.synthetic.num_images", lambda v: v >= 2, ">= 2"),
    ("data.max_consecutive_failures", lambda v: v >= 1, ">= 1"),
    ("monitor.every", lambda v: v >= -1, ">= -1 (-1: never, 0: at the end)"),
    ("monitor.k", lambda v: v >= 1, ">= 1"),
    ("monitor.t", lambda v: v > 0, "> 0"),
    ("monitor.batch_size", lambda v: v >= 1, ">= 1"),
    ("monitor.train_limit", lambda v: v >= 1, ">= 1 (or null: all)"),
    ("monitor.test_limit", lambda v: v >= 1, ">= 1 (or null: all)"),
    ("optim.momentum", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("optim.weight_decay", lambda v: v >= 0, ">= 0"),
    ("optim.warmup_epochs", lambda v: v >= 0, ">= 0"),
    ("data.saturation", lambda v: v >= 0, ">= 0"),
    ("data.synthetic.image_size", lambda v: v >= 8, ">= 8"),
    ("data.local_crops.size", lambda v: v >= 8, ">= 8"),
    ("data.local_crops.min_scale", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("data.local_crops.max_scale", lambda v: 0 < v <= 1, "in (0, 1]"),
)
# (key, allowed values): a misspelt choice would otherwise fall back to a default without a word
CHOICES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("train.precision", ("auto", "fp32", "bf16", "fp16")),
    ("train.sync_bn", ("auto", "on", "off")),
    ("optim.optimizer", ("sgd", "lars", "adamw")),
    ("optim.schedule", ("cosine", "constant")),
    ("data.decode", ("worker", "device")),
    ("data.wds.label_key", ("cls", "txt", "json", "none")),
)
CROP_BOX_AUGMENTATIONS = ("mocov2", "byol")  # data.batch_augment: workers draw crop boxes of any-size images


def _value(recipe: Recipe, key: str) -> Any:
    """The value at a dotted key (``data.loader.num_workers``)."""
    node: Any = recipe
    for name in key.split("."):
        node = getattr(node, name)
    return node


def validate(recipe: Recipe) -> None:
    """Range-check every value before anything runs; the error names the key, the value and the range."""
    for key, ok, allowed in RULES:
        value = _value(recipe, key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{key}: expected a number, got {value!r}")
        if not ok(value):
            raise ValueError(f"{key}={value!r} is out of range: it must be {allowed}")
    validate_choices(recipe)


def validate_choices(recipe: Recipe) -> None:
    """Every named choice is one the code knows. YAML reads a bare ``on``/``off`` as a boolean:
    ``train.sync_bn`` takes those back to the words."""
    if isinstance(recipe.train.sync_bn, bool):
        recipe.train.sync_bn = "on" if recipe.train.sync_bn else "off"
    for key, allowed in CHOICES:
        value = _value(recipe, key)
        if value not in allowed:
            raise ValueError(f"{key}={value!r} is not one of {', '.join(allowed)}")
    validate_decode(recipe.data)


def validate_decode(dc: DataConfig) -> None:
    """``data.decode=device`` hands JPEG bytes to the crop-box path only: ValueError naming the keys."""
    if dc.decode == "device" and not (dc.batch_augment and dc.augmentation in CROP_BOX_AUGMENTATIONS):
        raise ValueError(
            "data.decode=device needs data.batch_augment=true and data.augmentation "
            f"{' or '.join(CROP_BOX_AUGMENTATIONS)} (got batch_augment={dc.batch_augment}, "
            f"augmentation={dc.augmentation})"
        )


def load_recipe(name_or_path: str, overrides: list[str] | None = None) -> Recipe:
    """Load a recipe by name (``pretrain/NAME.yaml``) or path and apply ``key=value`` overrides."""
    raw = load_raw(resolve_recipe_path(name_or_path))
    raw = _merge(raw, parse_overrides(overrides or []))
    return recipe_from_dict(raw)
