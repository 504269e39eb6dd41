"""Semantic segmentation transfer with mmsegmentation (FCN / UperNet on a gsg-zoo ResNet).

Export the backbone as a ``weights_only`` state dict, build an mmengine config from
``configs/mmseg/``, train with mmengine's Runner after checking every backbone tensor equals the
export. Call :func:`gsg_zoo.transfer.mmseg_compat.apply` first. The flow: docs/reference/internals.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .segmentation_recipes import SegmentationRecipe, get_segmentation_recipe

METRIC_KEYS = ("mIoU", "mAcc", "aAcc")


# Blocks per stage and whether the block is a bottleneck -> depth (torchvision / timm / mmseg v1b).
RESNET_LAYOUTS = {
    ((2, 2, 2, 2), False): 18,
    ((3, 4, 6, 3), False): 34,
    ((3, 4, 6, 3), True): 50,
    ((3, 4, 23, 3), True): 101,
    ((3, 8, 36, 3), True): 152,
}


def stage_channels(depth: int) -> tuple[int, int, int, int]:
    """Output channels of the four ResNet stages."""
    return (64, 128, 256, 512) if depth < 50 else (256, 512, 1024, 2048)


# --------------------------------------------------------------------------- backbone export


@dataclass(frozen=True)
class ExportedBackbone:
    path: Path
    depth: int
    state_dict: dict[str, torch.Tensor]


def resnet_depth(state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> int:
    """The depth of a torchvision-layout ResNet state dict; ValueError explaining what else it is."""
    conv1 = state_dict.get("conv1.weight")
    if conv1 is None:
        if "patch_embed.proj.weight" in state_dict:  # research knobs: ViTs are for kNN/linear/fine-grained
            raise ValueError(
                f"{source}: a Vision Transformer (patch_embed), not a ResNet; segmentation transfer supports ResNet backbones "
                "only: evaluate it with gsg eval knn/linear or the fine-grained suite (docs/guides/research-knobs.md)"
            )
        if "conv1.0.weight" in state_dict:
            raise ValueError(
                f"{source}: has a deep stem (conv1.0/1/2, e.g. resnet50d / ResNetV1c); the mmseg recipes "
                "here load a plain ResNet (v1b) with a single 7x7 stem convolution"
            )
        raise ValueError(
            f"{source}: not a ResNet state dict (no 'conv1.weight'; first keys {list(state_dict)[:4]}); "
            "segmentation transfer supports torchvision-layout ResNet-18/34/50/101/152 backbones"
        )
    if tuple(conv1.shape[-2:]) != (7, 7) or conv1.shape[0] != 64:
        raise ValueError(
            f"{source}: stem conv1 has shape {tuple(conv1.shape)}, not (64, 3, 7, 7): a CIFAR-stem ResNet "
            "(3x3, no max-pool) does not transfer to the ImageNet-stem mmseg ResNet; pretrain with "
            "an ImageNet-stem architecture (resnet18/34/50) for dense transfer"
        )
    blocks = []
    for stage in range(1, 5):
        indices = {int(k.split(".")[1]) for k in state_dict if k.startswith(f"layer{stage}.")}
        blocks.append(max(indices) + 1 if indices else 0)
    bottleneck = "layer1.0.conv3.weight" in state_dict
    depth = RESNET_LAYOUTS.get((tuple(blocks), bottleneck))
    if depth is None:
        raise ValueError(
            f"{source}: ResNet stages with {blocks} {'bottleneck' if bottleneck else 'basic'} blocks match no "
            "ResNet-18/34/50/101/152 layout"
        )
    _check_keys(state_dict, depth, source)
    return depth


def _check_keys(state_dict: Mapping[str, torch.Tensor], depth: int, source: str) -> None:
    import timm

    with torch.device("meta"):
        reference = timm.create_model(f"resnet{depth}", pretrained=False, num_classes=0).state_dict()
    missing = [k for k in reference if k not in state_dict]
    unexpected = [k for k in state_dict if k not in reference]
    shapes = [k for k in reference if k in state_dict and state_dict[k].shape != reference[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(
            f"{source}: not a plain ResNet-{depth} (v1b) state dict: {len(missing)} missing "
            f"{missing[:5]}, {len(unexpected)} unexpected {unexpected[:5]}, {len(shapes)} with another shape "
            f"{shapes[:5]}"
        )


def export_backbone(spec: str, path: str | os.PathLike) -> ExportedBackbone:
    """Write ``spec``'s backbone as a plain tensor state dict (``fc.*`` dropped) for mmseg's ``ResNet``."""
    from ..core.checkpoint import atomic_write
    from ..zoo.load import load_backbone

    model, _ = load_backbone(spec)
    state = {
        k: v.detach().to("cpu").clone().contiguous()
        for k, v in model.state_dict().items()
        if not k.startswith("fc.")
    }
    depth = resnet_depth(state, source=f"model {spec!r}")
    path = Path(path)
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    return ExportedBackbone(path, depth, state)


def load_exported(path: str | os.PathLike) -> ExportedBackbone:
    """Read back a file written by :func:`export_backbone` (``weights_only``), validated."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone state dict not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{path}: not a plain tensor state dict ({type(err).__name__}: {err})") from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a dict of tensors (a backbone state dict)")
    return ExportedBackbone(path, resnet_depth(state, source=str(path)), state)


def verify_backbone(backbone: torch.nn.Module, expected: Mapping[str, torch.Tensor]) -> int:
    """Check that every backbone tensor (parameters and buffers) equals ``expected``; return the count.

    Raises RuntimeError naming the first mismatching keys: a silent partial load would otherwise
    train a randomly initialised stem or stage and report misleading transfer numbers.
    """
    actual = backbone.state_dict()
    missing = [k for k in actual if k not in expected]
    unused = [k for k in expected if k not in actual]
    differ = [
        k
        for k, v in actual.items()
        if k in expected
        and (v.shape != expected[k].shape or not torch.equal(v.detach().cpu(), expected[k].to(v.dtype)))
    ]
    if missing or unused or differ:
        raise RuntimeError(
            f"the mmseg backbone does not hold the exported weights: {len(differ)} tensors differ "
            f"{differ[:5]}, {len(missing)} not in the export {missing[:5]}, {len(unused)} exported but "
            f"unused {unused[:5]}. Check the backbone type (ResNet, not ResNetV1c), depth and init_cfg."
        )
    return len(actual)


# --------------------------------------------------------------------------- config


def build_config(
    recipe: SegmentationRecipe,
    *,
    checkpoint: str | os.PathLike,
    depth: int,
    data_root: str | os.PathLike,
    work_dir: str | os.PathLike,
    gpus: int = 1,
    iters: int | None = None,
    cfg_options: Mapping[str, Any] | None = None,
    launcher: str = "none",
    classes: Sequence[str] | None = None,
):
    """The mmengine Config for one run (see the module docstring for what is set)."""
    from mmengine.config import Config

    if gpus < 1:
        raise ValueError(f"--gpus must be >= 1, got {gpus}")
    cfg = Config.fromfile(str(recipe.path))
    cfg.work_dir = str(work_dir)
    cfg.launcher = launcher
    model = cfg.model
    model.pretrained = None
    model.backbone.type = "ResNet"
    model.backbone.depth = depth
    model.backbone.init_cfg = dict(type="Pretrained", checkpoint=str(checkpoint))
    _adjust_heads(model, depth)
    if launcher == "none":  # SyncBN needs a process group: plain BN on one process
        _replace_norm(model, "SyncBN", "BN")
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        if cfg.get(loader):
            for dataset in _datasets(cfg[loader]["dataset"]):
                dataset["data_root"] = str(data_root)
                if classes is not None:
                    dataset["metainfo"] = dict(classes=tuple(classes))
    if classes is not None:
        for head in _heads(model):
            head["num_classes"] = len(classes)
    reference = recipe.reference_batch or cfg.train_dataloader.batch_size * gpus
    if reference % gpus:
        raise ValueError(
            f"the {recipe.name} protocol uses {reference} images per iteration, which {gpus} GPUs cannot "
            "split evenly; choose --gpus dividing it or set train_dataloader.batch_size with --cfg-options "
            "(the learning rate is then scaled linearly)"
        )
    cfg.train_dataloader.batch_size = reference // gpus
    # Linear lr rule if the total batch ends up different (e.g. batch_size from --cfg-options).
    cfg.auto_scale_lr = dict(enable=True, base_batch_size=reference)
    if iters is not None:
        _set_iters(cfg, iters)
    if cfg_options:
        cfg.merge_from_dict(dict(cfg_options))
    return cfg


def _adjust_heads(model: Any, depth: int) -> None:
    channels = stage_channels(depth)
    for head in _heads(model):
        if isinstance(head.get("in_channels"), (list, tuple)):
            head["in_channels"] = [channels[i] for i in head["in_index"]]
        else:
            head["in_channels"] = channels[head["in_index"]]
        if depth < 50 and head.get("type") == "FCNHead" and model.decode_head.get("type") == "FCNHead":
            head["channels"] = head["channels"] // 4  # mmseg's R-18/34 FCN configs: 512->128, 256->64


def _heads(model: Any) -> list[Any]:
    heads = [model.decode_head]
    aux = model.get("auxiliary_head")
    if aux:
        heads.extend(aux if isinstance(aux, list) else [aux])
    return heads


def _replace_norm(node: Any, old: str, new: str) -> None:
    if isinstance(node, dict):
        if node.get("type") == old:
            node["type"] = new
        for value in node.values():
            _replace_norm(value, old, new)
    elif isinstance(node, list):
        for value in node:
            _replace_norm(value, old, new)


def _datasets(dataset: Any) -> Iterator[Any]:
    """A dataset config and the ones it wraps (ConcatDataset, RepeatDataset...)."""
    yield dataset
    for inner in dataset.get("datasets", []):
        yield from _datasets(inner)
    if isinstance(dataset.get("dataset"), dict):
        yield from _datasets(dataset["dataset"])


def _set_iters(cfg: Any, iters: int) -> None:
    if iters < 1:
        raise ValueError(f"--iters must be >= 1, got {iters}")
    cfg.train_cfg.max_iters = iters
    cfg.train_cfg.val_interval = min(cfg.train_cfg.get("val_interval", iters), iters)
    for sched in cfg.param_scheduler if isinstance(cfg.param_scheduler, list) else [cfg.param_scheduler]:
        if sched.get("end", 0) > iters:
            sched["end"] = iters
    ckpt = cfg.default_hooks.get("checkpoint")
    if ckpt is not None:
        ckpt["interval"] = min(ckpt.get("interval", iters), iters)


def parse_cfg_options(items: Sequence[str] | None) -> dict[str, Any]:
    """``key=value`` strings (mmengine's DictAction syntax) to a dict."""
    if not items:
        return {}
    from mmengine.config import DictAction

    options: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--cfg-options expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        options[key] = DictAction._parse_iterable(value)
    return options


def dataset_classes(data_root: str | os.PathLike) -> tuple[str, ...]:
    """Class names of a folder-format dataset from ``ROOT/classes.txt`` (background first).

    ``gsg_zoo.data.writers.write_mmseg`` writes it; label ``i`` in the maps is line ``i``.
    """
    path = Path(data_root) / "classes.txt"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the synthetic recipes read the class names from it; write the dataset with "
            "gsg_zoo.data.writers.write_mmseg (img_dir/, ann_dir/, classes.txt)"
        )
    classes = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    if len(classes) < 2:
        raise ValueError(f"{path} lists {len(classes)} classes; expected background plus at least one")
    return classes


# --------------------------------------------------------------------------- run


@contextlib.contextmanager
def mmengine_checkpoint_loading() -> Iterator[None]:
    """Let mmengine load checkpoints it wrote itself (resume / load_from).

    mmengine 0.10.7 calls ``torch.load`` without ``weights_only``; torch >= 2.6 defaults to
    ``weights_only=True`` and refuses mmengine's own checkpoints (they pickle a HistoryBuffer and the
    config). Only for files mmengine wrote in our own work dir do we lift that default, for the
    duration of the call; the backbone export never needs it.
    """
    key = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
    old = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def _require_mmseg() -> None:
    try:
        import mmseg.models  # noqa: F401
    except ModuleNotFoundError as err:
        if err.name and err.name.startswith("mmcv"):
            raise RuntimeError(
                f"mmseg cannot import {err.name}: compiled mmcv ops are missing; call "
                "gsg_zoo.transfer.mmseg_compat.apply() first (the `gsg transfer segmentation` command does)"
            ) from err
        raise RuntimeError(
            f"mmsegmentation is not installed ({err}); install it with `bash tools/install_mmseg.sh`"
        ) from err


def _make_hook(expected: Mapping[str, torch.Tensor] | None):
    from mmengine.hooks import Hook
    from mmengine.model import is_model_wrapper

    class GsgSegmentationHook(Hook):
        """Verifies the backbone after weight init and records the latest validation metrics."""

        priority = "LOWEST"

        def __init__(self) -> None:
            self.checked = 0
            self.last_val: tuple[int, dict[str, float]] | None = None

        def before_train(self, runner: Any) -> None:
            if expected is None:
                return
            model = runner.model.module if is_model_wrapper(runner.model) else runner.model
            self.checked = verify_backbone(model.backbone, expected)
            runner.logger.info(f"gsg-zoo: all {self.checked} backbone tensors equal the exported weights")

        def after_val_epoch(self, runner: Any, metrics: dict[str, float] | None = None) -> None:
            self.last_val = (runner.iter, dict(metrics or {}))

    return GsgSegmentationHook()


def run(cfg: Any, expected: Mapping[str, torch.Tensor] | None) -> dict[str, Any]:
    """Train + evaluate with mmengine's Runner; return the final metrics (mIoU, mAcc, aAcc in %)."""
    _require_mmseg()
    from mmengine.runner import Runner

    resume = bool(cfg.get("resume")) or bool(cfg.get("load_from"))
    runner = Runner.from_cfg(cfg)
    hook = _make_hook(None if resume else expected)
    runner.register_hook(hook, priority="LOWEST")
    started = time.time()
    with mmengine_checkpoint_loading() if resume else contextlib.nullcontext():
        runner.train()
    max_iters = cfg.train_cfg.max_iters
    if hook.last_val is not None and hook.last_val[0] == max_iters:
        metrics = hook.last_val[1]
    else:
        metrics = runner.val_loop.run()
    missing = [k for k in METRIC_KEYS if k not in metrics]
    if missing:
        raise RuntimeError(f"the evaluator returned {sorted(metrics)}, without {missing}")
    return {
        **{k: float(metrics[k]) for k in METRIC_KEYS},
        "iters": max_iters,
        "backbone_tensors_checked": hook.checked,
        "seconds": round(time.time() - started, 1),
    }


def write_results(out_dir: str | os.PathLike, result: Mapping[str, Any]) -> tuple[Path, Path]:
    """``metrics.json`` and a one-row markdown table ``results.md`` in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "metrics.json", out / "results.md"
    json_path.write_text(json.dumps(dict(result), indent=2) + "\n")
    cols = ["model", "recipe", "iters", "gpus", *METRIC_KEYS]
    row = [str(result.get(c, "")) if c not in METRIC_KEYS else f"{result[c]:.2f}" for c in cols]
    md_path.write_text(
        "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n| " + " | ".join(row) + " |\n"
    )
    return json_path, md_path


def train(
    spec: str,
    recipe_name: str,
    data_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    gpus: int = 1,
    iters: int | None = None,
    cfg_options: Mapping[str, Any] | None = None,
    launcher: str = "none",
    exported: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Export ``spec``'s backbone, fine-tune on ``recipe_name`` and write the results in ``out_dir``.

    ``exported`` reuses a backbone file already written by :func:`export_backbone` (distributed ranks).
    """
    recipe = get_segmentation_recipe(recipe_name)
    data_root = Path(data_root)
    if not data_root.is_dir():
        raise FileNotFoundError(f"dataset root not found: {data_root}")
    out = Path(out_dir)
    if exported is None:
        backbone = export_backbone(spec, out / "backbone.pth")
    else:
        backbone = load_exported(exported)
    classes = dataset_classes(data_root) if recipe.synthetic else None
    cfg = build_config(
        recipe,
        checkpoint=backbone.path,
        depth=backbone.depth,
        data_root=data_root,
        work_dir=out / "mmseg",
        gpus=gpus,
        iters=iters,
        cfg_options=cfg_options,
        launcher=launcher,
        classes=classes,
    )
    metrics = run(cfg, backbone.state_dict)
    variant = iters is not None or bool(cfg_options)
    result = {
        "model": spec,
        "protocol": f"mmseg:{recipe.name}" + (" + --iters/--cfg-options (a variant)" if variant else ""),
        "recipe": recipe.name,
        "config": str(recipe.path),
        "data": str(data_root),
        "gpus": gpus,
        "depth": backbone.depth,
        "batch_per_gpu": cfg.train_dataloader.batch_size,
        # mmengine's auto_scale_lr scales the recipe's lr by total_batch / reference_batch
        "total_batch": cfg.train_dataloader.batch_size * gpus,
        "reference_batch": cfg.auto_scale_lr["base_batch_size"],
        **metrics,
    }
    if _is_main_process():
        write_results(out, result)
    return result


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0
