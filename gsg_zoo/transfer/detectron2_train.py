"""Fine-tune and evaluate converted backbones with Detectron2 (imports Detectron2 at module level).

* :class:`Res5ROIHeadsExtraNorm`, registered in Detectron2's ``ROI_HEADS_REGISTRY``: MoCo's C4 head with
  an extra norm after res5; the res5 stage uses basic blocks for ResNet-18/34.
* :func:`build_cfg`: a recipe (``_BASE_`` may list Detectron2 ``model_zoo:`` configs and local files),
  then the settings the converted weights need, then the user's ``KEY VALUE`` overrides.
* :func:`register_datasets`: Detectron2's builtin VOC/COCO names pointed at a data root, and
  ``synthetic_coco_<split>`` for a COCO export of the built-in dataset.
* :func:`train_seeds`: convert, then train + evaluate once per seed (``launch`` for several GPUs), and
  write ``results.json`` and ``results.md`` (mean ± std over seeds).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from detectron2.config import CfgNode, get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances, register_pascal_voc
from detectron2.data.datasets.builtin import _PREDEFINED_SPLITS_COCO
from detectron2.data.datasets.builtin_meta import _get_builtin_metadata
from detectron2.engine import DefaultTrainer, launch
from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator
from detectron2.layers import get_norm
from detectron2.modeling.backbone.resnet import BasicBlock, ResNet
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, Res5ROIHeads
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger

from .detection import Detectron2Weights, markdown_table, recipe_path, save_detectron2_pkl, summarize

VOC_SPLITS = {  # Detectron2's builtin names: (directory under the data root, split, year)
    "voc_2007_trainval": ("VOC2007", "trainval", 2007),
    "voc_2007_train": ("VOC2007", "train", 2007),
    "voc_2007_val": ("VOC2007", "val", 2007),
    "voc_2007_test": ("VOC2007", "test", 2007),
    "voc_2012_trainval": ("VOC2012", "trainval", 2012),
    "voc_2012_train": ("VOC2012", "train", 2012),
    "voc_2012_val": ("VOC2012", "val", 2012),
}
COCO_SPLITS: dict[str, tuple[str, str]] = dict(_PREDEFINED_SPLITS_COCO["coco"])  # name: (images, json)
SYNTHETIC_PREFIX = "synthetic_coco_"


@ROI_HEADS_REGISTRY.register()
class Res5ROIHeadsExtraNorm(Res5ROIHeads):
    """Res5ROIHeads with an extra norm after res5 (MoCo, Sec. 4.2), depth-aware for R18/R34."""

    @classmethod
    def _build_res5_block(cls, cfg: CfgNode) -> tuple[torch.nn.Sequential, int]:
        depth = cfg.MODEL.RESNETS.DEPTH
        if depth in (18, 34):  # Res5ROIHeads always builds bottlenecks; R18/R34 have basic blocks
            out_channels = cfg.MODEL.RESNETS.RES2_OUT_CHANNELS * 8
            blocks = ResNet.make_stage(
                BasicBlock,
                {18: 2, 34: 3}[depth],
                stride_per_block=[2] + [1] * ({18: 2, 34: 3}[depth] - 1),
                in_channels=out_channels // 2,
                out_channels=out_channels,
                norm=cfg.MODEL.RESNETS.NORM,
            )
            seq = torch.nn.Sequential(*blocks)
        else:
            seq, out_channels = super()._build_res5_block(cfg)
        seq.add_module("norm", get_norm(cfg.MODEL.RESNETS.NORM, out_channels))
        return seq, out_channels


# ------------------------------------------------------------------------------------------ config


def merge_config_file(cfg: CfgNode, path: str | Path) -> CfgNode:
    """Merge a recipe into ``cfg``; ``_BASE_`` is a file or list of files merged first, in order.

    ``model_zoo:NAME`` names a config shipped in Detectron2's model_zoo package, other paths are
    relative to the recipe.
    """
    from detectron2 import model_zoo

    path = Path(path)
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    bases = data.pop("_BASE_", [])
    for base in [bases] if isinstance(bases, str) else bases:
        if base.startswith("model_zoo:"):
            cfg.merge_from_file(model_zoo.get_config_file(base[len("model_zoo:") :]))
        else:
            merge_config_file(cfg, path.parent / base)
    cfg.merge_from_other_cfg(CfgNode(data))
    return cfg


def build_cfg(
    recipe: str | Path,
    *,
    weights: Detectron2Weights | None = None,
    weights_path: str | Path | None = None,
    opts: Sequence[str] = (),
    output_dir: str | Path | None = None,
    device: str | None = None,
) -> CfgNode:
    """Recipe, then the converted weights' settings, then ``opts`` (``KEY VALUE`` pairs) win."""
    cfg = merge_config_file(get_cfg(), recipe_path(str(recipe)))
    if weights is not None:
        cfg.merge_from_list(weights.config_overrides())
    if weights_path is not None:
        cfg.MODEL.WEIGHTS = str(weights_path)
    if len(opts) % 2:
        raise ValueError(f"--opts takes KEY VALUE pairs, got an odd number of items: {list(opts)}")
    try:
        cfg.merge_from_list(list(opts))
    except (KeyError, AssertionError) as err:
        raise ValueError(f"bad Detectron2 override in --opts: {err}") from err
    if output_dir is not None:
        cfg.OUTPUT_DIR = str(output_dir)
    cfg.MODEL.DEVICE = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return cfg


# ----------------------------------------------------------------------------------------- datasets


def register_datasets(names: Sequence[str], root: str | Path) -> None:
    """Point each dataset name used by a recipe at ``root`` (Detectron2's ``datasets/`` layout).

    VOC: ``root/VOC2007``, ``root/VOC2012``; COCO: ``root/coco/{train2017,val2017,annotations}``;
    ``synthetic_coco_<split>``: ``root/<split>/`` and ``root/annotations/instances_<split>.json``.
    """
    root = Path(root)
    for name in names:
        if name in VOC_SPLITS:
            dirname, split, year = VOC_SPLITS[name]
            listing = root / dirname / "ImageSets" / "Main" / f"{split}.txt"
            if not listing.exists():
                raise FileNotFoundError(
                    f"{name}: {listing} not found (expected the VOCdevkit layout under {root})"
                )
            _unregister(name)
            register_pascal_voc(name, str(root / dirname), split, year)
            MetadataCatalog.get(name).evaluator_type = "pascal_voc"
        elif name in COCO_SPLITS or name.startswith(SYNTHETIC_PREFIX):
            if name in COCO_SPLITS:
                images, ann = (root / p for p in COCO_SPLITS[name])
                meta = _get_builtin_metadata("coco")
            else:
                split = name[len(SYNTHETIC_PREFIX) :]
                images, ann, meta = root / split, root / "annotations" / f"instances_{split}.json", {}
            if not ann.exists():
                hint = (
                    " (created by `gsg transfer detection train --recipe synthetic-coco`)"
                    if meta == {}
                    else ""
                )
                raise FileNotFoundError(f"{name}: annotation file {ann} not found{hint}")
            _unregister(name)
            register_coco_instances(name, meta, str(ann), str(images))
        elif name not in DatasetCatalog.list():
            raise ValueError(
                f"dataset {name!r} is neither a Detectron2 builtin VOC/COCO name nor registered; "
                f"known: {sorted(VOC_SPLITS) + sorted(n for n in COCO_SPLITS if n.startswith('coco_20'))}, "
                f"{SYNTHETIC_PREFIX}<split>"
            )


def _unregister(name: str) -> None:
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)


def ensure_synthetic_coco(
    root: str | Path, *, splits: dict[str, int] | None = None, image_size: int = 128
) -> Path:
    """Export the built-in dataset in COCO format under ``root`` unless it is already there."""
    root = Path(root)
    for split, n in (splits or {"train": 256, "val": 64}).items():
        if not (root / "annotations" / f"instances_{split}.json").exists():
            from ..data.synthetic import SyntheticShapes
            from ..data.writers import write_coco

            print(
                f"writing a COCO export of SyntheticShapes({n}, image_size={image_size}, split={split!r}) to {root}"
            )
            write_coco(SyntheticShapes(n, image_size=image_size, seed=0, split=split), root, split)
    return root


# ----------------------------------------------------------------------------------------- training


class Trainer(DefaultTrainer):
    """DefaultTrainer with VOC/COCO evaluators (COCOeval in pure Python: there is no compiled ``_C``)."""

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str, output_folder: str | None = None) -> Any:
        if MetadataCatalog.get(dataset_name).get("evaluator_type") == "pascal_voc":
            return PascalVOCDetectionEvaluator(dataset_name)
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return COCOEvaluator(dataset_name, output_dir=output_folder, use_fast_impl=False)


def unloaded_keys(model: torch.nn.Module, converted: dict[str, np.ndarray]) -> list[str]:
    """Converted keys with no model tensor that ends with them and holds the same values."""
    state = model.state_dict()
    missing = []
    for key, value in converted.items():
        hits = [k for k in state if k == key or k.endswith("." + key)]
        if not any(
            tuple(state[k].shape) == value.shape and np.allclose(state[k].cpu().numpy(), value) for k in hits
        ):
            missing.append(key)
    return missing


def _worker(cfg: CfgNode, data_root: str, converted_path: str) -> None:
    """One training run (one process per GPU under ``launch``); the main process writes results.json."""
    import pickle

    logging.getLogger("detectron2").handlers.clear()  # one log file per seed, not every earlier one too
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="detectron2")
    # As detectron2.engine.default_setup: seed every RNG (python, numpy, torch) with SEED + rank before the
    # heads are initialised and the sampler draws its shared seed, so a seed reproduces its run.
    seed_all_rng(None if cfg.SEED < 0 else cfg.SEED + comm.get_rank())
    if comm.is_main_process():
        Path(cfg.OUTPUT_DIR, "config.yaml").write_text(cfg.dump())
    register_datasets(list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST), data_root)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    model = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
    with open(converted_path, "rb") as f:  # our own file, written by save_detectron2_pkl just before
        converted = pickle.load(f)["model"]
    missing = unloaded_keys(model, converted)
    if missing:
        raise RuntimeError(
            f"{len(missing)} backbone weights were not loaded by Detectron2 (check MODEL.RESNETS.* and the "
            f"recipe): {missing[:8]}"
        )
    trainer.train()
    if comm.is_main_process():
        results = _flatten_datasets(getattr(trainer, "_last_eval_results", None) or {})
        if not results:
            raise RuntimeError(
                f"training finished but evaluation produced no results; see {cfg.OUTPUT_DIR}/log.txt"
            )
        scaled = trainer.cfg.SOLVER  # after DefaultTrainer.auto_scale_workers
        out = {
            "results": _plain(results),
            "solver": {
                "IMS_PER_BATCH": scaled.IMS_PER_BATCH,
                "BASE_LR": scaled.BASE_LR,
                "MAX_ITER": scaled.MAX_ITER,
                "STEPS": list(scaled.STEPS),
            },
        }
        Path(cfg.OUTPUT_DIR, "results.json").write_text(json.dumps(out, indent=2) + "\n")


def train_seeds(
    spec: str,
    recipe: str,
    data_root: str | Path,
    *,
    out_dir: str | Path,
    num_gpus: int | None = None,
    seeds: int = 1,
    opts: Sequence[str] = (),
) -> dict[str, Any]:
    """Convert ``spec``, fine-tune + evaluate once per seed (0..seeds-1), write results.json/.md."""
    from .detection import convert_spec

    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    num_gpus = torch.cuda.device_count() if num_gpus is None else num_gpus
    if num_gpus > torch.cuda.device_count():
        raise ValueError(
            f"--num-gpus {num_gpus} but only {torch.cuda.device_count()} CUDA devices are visible"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = convert_spec(spec)
    pkl, _ = save_detectron2_pkl(weights, out_dir / "backbone.pkl")
    device = "cuda" if num_gpus > 0 else "cpu"
    per_seed, runs = [], []
    for seed in range(seeds):
        run_dir = out_dir / f"seed{seed}"
        cfg = build_cfg(
            recipe, weights=weights, weights_path=pkl, opts=opts, output_dir=run_dir, device=device
        )
        cfg.SEED = seed
        synthetic = [
            n[len(SYNTHETIC_PREFIX) :]
            for n in cfg.DATASETS.TRAIN + cfg.DATASETS.TEST
            if n.startswith(SYNTHETIC_PREFIX)
        ]
        if seed == 0 and synthetic:
            ensure_synthetic_coco(data_root, splits={s: 256 if s == "train" else 64 for s in synthetic})
        cfg.freeze()
        launch(_worker, max(1, num_gpus), dist_url="auto", args=(cfg, str(data_root), str(pkl)))
        run = json.loads((run_dir / "results.json").read_text())
        runs.append({"seed": seed, "dir": str(run_dir), **run})
        per_seed.append(run["results"])
    summary = summarize(per_seed)
    report = {
        "spec": spec,
        "protocol": f"detectron2:{recipe}"
        + (" + --opts (a variant)" if opts else ""),  # docs/reference/protocols.md
        "recipe": str(recipe),
        "data": str(data_root),
        "num_gpus": num_gpus,
        "seeds": seeds,
        "opts": list(opts),
        "weights": str(pkl),
        "summary": summary,
        "runs": runs,
    }
    (out_dir / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "results.md").write_text(markdown_table(summary, title=f"{spec} — {recipe} ({seeds} seeds)"))
    return report


def _flatten_datasets(results: dict[str, Any]) -> dict[str, Any]:
    """``{task: {metric: v}}``; with several test sets Detectron2 nests them: ``{dataset: {task: ...}}``."""
    flat: dict[str, Any] = {}
    for key, value in results.items():
        if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            flat.update({f"{key}/{task}": metrics for task, metrics in value.items()})
        else:
            flat[key] = value
    return flat


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj
