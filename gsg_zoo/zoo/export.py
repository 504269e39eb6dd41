"""Export a training checkpoint's backbone as a timm Hub model folder, verified and checksummed.

:func:`export_checkpoint` (a ``gsg pretrain`` checkpoint) and :func:`import_checkpoint` (another code
base's) both write through :func:`write_export`; the export reloads itself with stock timm in a fresh
process and fails unless its features equal the backbone's. The files: docs/reference/internals.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.checksums import (
    sha256_file,
    verify_export,
)
from ..core.layout import (
    PAPER_IDS,
    PAPER_NAME,
    PROVENANCE_FILE,
    RECIPE_FILE,
    RUN_FILES,
)
from .preprocessing import needs_gsg_zoo, trained_data_config

EXPORT_FORMAT = 1
ATOL = 1e-5

# Keys of timm's pretrained_cfg that describe someone else's weights (the architecture's default tag).
_FOREIGN_CFG_KEYS = (
    "tag",
    "url",
    "hf_hub_id",
    "hf_hub_filename",
    "origin_url",
    "paper_ids",
    "paper_name",
    "notes",
    "description",
    "test_input_size",
    "test_crop_pct",
    "test_pool_size",
    "min_input_size",
    "label_names",
    "label_descriptions",
)


@dataclass
class TrainedBackbone:
    """A checkpoint's backbone as trained (the learner's) and as exported (a fresh timm model)."""

    checkpoint: Path
    state: dict[str, Any]  # the loaded checkpoint
    config: dict[str, Any]  # the training config stored in it
    method: str
    architecture: str
    reference: Any  # the learner's backbone, eval mode
    model: Any  # the timm model holding the same weights, num_classes=0


# ---------------------------------------------------------------------------------------- metadata
def export_pretrained_cfg(model: Any, architecture: str, description: str, license: str) -> dict[str, Any]:
    """timm's ``pretrained_cfg`` of the exported weights: the architecture's, minus foreign weights' keys."""
    pcfg = {k: v for k, v in model.pretrained_cfg.items() if k not in _FOREIGN_CFG_KEYS}
    pcfg.update(license=license, paper_ids=PAPER_IDS, paper_name=PAPER_NAME, description=description)
    if needs_gsg_zoo(architecture):
        pcfg["notes"] = ("Needs `import gsg_zoo` (CIFAR-stem architecture) before timm.create_model.",)
    return pcfg


# ------------------------------------------------------------------------------------------- load
def load_trained_backbone(ckpt: Path) -> TrainedBackbone:
    """The backbone of a ``gsg pretrain`` checkpoint: strict loads into the learner and into timm."""
    import timm

    from ..config.recipes import upgrade_config
    from ..core.checkpoint import backbone_state_dict, load_checkpoint
    from ..method.learner import LearnerConfig, SelfSupervisedLearner

    state = load_checkpoint(ckpt)
    config = upgrade_config(state.get("config") or {})
    model_cfg = dict(config.get("model") or {})
    if "backbone" not in model_cfg:
        raise ValueError(f"{ckpt}: checkpoint config has no model.backbone; cannot tell the architecture")
    try:
        learner_cfg = LearnerConfig(**model_cfg)
    except TypeError as err:
        raise ValueError(f"{ckpt}: checkpoint model config does not fit this gsg-zoo: {err}") from err
    learner = SelfSupervisedLearner(learner_cfg)  # the training backbone exactly as trained
    try:
        learner.load_state_dict(state["model"], strict=True)
    except RuntimeError as err:
        raise ValueError(f"{ckpt}: weights do not match the recorded learner config: {err}") from err
    arch = learner_cfg.backbone
    # A fresh timm model holding only the backbone: model_args stay minimal (num_classes + kwargs).
    model = timm.create_model(arch, pretrained=False, num_classes=0, **learner_cfg.backbone_kwargs)
    model.load_state_dict(backbone_state_dict(state), strict=True)
    return TrainedBackbone(
        ckpt, state, config, learner_cfg.method, arch, learner.backbone.eval(), model.eval()
    )


# ----------------------------------------------------------------------------------------- export
def copy_run_files(run_dir: Path, out_dir: Path) -> list[str]:
    """Copy the run directory's summary, metrics, curves and config into the export; return their names."""
    copied = []
    for src, dst in RUN_FILES.items():
        if (run_dir / src).is_file():
            shutil.copyfile(run_dir / src, out_dir / dst)
            copied.append(src)
    return copied


def base_provenance(
    name: str, architecture: str, method: str, model: Any, data_cfg: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    """What every ``gsg_export.json`` holds (``extra``: license, hub_id, checkpoint, source, ...)."""
    import timm
    import torch

    from .._version import __version__

    return {
        "format_version": EXPORT_FORMAT,
        "name": name,
        "architecture": architecture,
        "method": method,
        "needs_gsg_zoo": needs_gsg_zoo(architecture),
        "num_features": int(model.num_features),
        "input_size": list(data_cfg["input_size"]),
        **extra,
        "versions": {"gsg_zoo": __version__, "timm": timm.__version__, "torch": torch.__version__},
    }


def provenance(tb: TrainedBackbone, name: str, data_cfg: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The content of ``gsg_export.json`` of a training checkpoint (``extra``: license, hub_id, run_files, ...)."""
    config = tb.config
    return base_provenance(
        name,
        tb.architecture,
        tb.method,
        tb.model,
        data_cfg,
        **extra,
        # --- research knobs: a ViT's pooling (timm global_pool: "token" class token, "avg" mean of patch tokens)
        **(
            {"pooling": tb.model.global_pool}
            if isinstance(getattr(tb.model, "global_pool", None), str)
            else {}
        ),
        # --- end research knobs
        pretrain_dataset=(config.get("data") or {}).get("dataset"),
        pretrain_epochs=(config.get("train") or {}).get("epochs"),
        checkpoint={
            "file": tb.checkpoint.name,
            "sha256": sha256_file(tb.checkpoint),
            "epoch": tb.state.get("epoch"),
            "step": tb.state.get("step"),
        },
    )


@contextlib.contextmanager
def staged_dir(out_dir: Path, overwrite: bool) -> Iterator[Path]:
    """A hidden sibling folder renamed to ``out_dir`` only when the block completes: never a half export."""
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not overwrite:
        raise ValueError(
            f"{out_dir} exists and is not empty; pass overwrite=True (--overwrite) to replace it"
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        os.chmod(tmp_dir, 0o755)
        yield tmp_dir
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    if out_dir.exists():
        shutil.rmtree(out_dir) if out_dir.is_dir() else out_dir.unlink()
    os.replace(tmp_dir, out_dir)


def transformers_compatible_config(path: Path) -> None:
    """Drop ``num_classes`` from ``model_args`` of a timm ``config.json``.

    timm's ``save_for_hf`` records the factory's ``num_classes`` in ``model_args`` as well as at the
    top level; transformers' ``TimmWrapperModel`` calls ``timm.create_model(architecture,
    num_classes=0, **model_args)`` (transformers/models/timm_wrapper/modeling_timm_wrapper.py), which
    then fails with "got multiple values for keyword argument 'num_classes'". timm itself reads the top
    level ``num_classes`` (timm/models/_hub.py ``_parse_model_cfg``), so nothing is lost for timm.
    """
    config = json.loads(path.read_text())
    args = config.get("model_args") or {}
    args.pop("num_classes", None)
    if args:
        config["model_args"] = args
    else:
        config.pop("model_args", None)
    path.write_text(json.dumps(config, indent=2) + "\n")


def write_export(
    out_dir: Path,
    model: Any,
    reference: Any,
    prov: dict[str, Any],
    data_cfg: dict[str, Any],
    *,
    hub_id: str | None = None,
    overwrite: bool = False,
    verify: bool = True,
    add_files: Callable[[Path], dict[str, Any]] | None = None,
) -> Path:
    """Write ``model`` (``pretrained_cfg`` set) as a verified export; the one writer of every export.

    Stages into a hidden folder: timm's safetensors + config.json, ``add_files(folder)`` (returns
    entries merged into ``prov``), the fresh-process reload check against ``reference`` (``verify``),
    ``gsg_export.json``, the card and the checksums; renamed to ``out_dir`` only when all succeeded.
    """
    import timm

    from .cards import write_model_card

    with staged_dir(out_dir, overwrite) as tmp_dir:
        timm.models.save_for_hf(model, tmp_dir, safe_serialization=True, data_config=data_cfg)
        transformers_compatible_config(tmp_dir / "config.json")
        prov.update(add_files(tmp_dir) if add_files else {})
        if verify:
            gsg = needs_gsg_zoo(prov["architecture"])
            prov["reload_check"] = check_reload(tmp_dir, reference, gsg, data_cfg["input_size"])
        (tmp_dir / PROVENANCE_FILE).write_text(json.dumps(prov, indent=2) + "\n")
        write_model_card(tmp_dir, prov["name"], hub_id=hub_id)  # README.md; signs the checksums
        verify_export(tmp_dir)
    return out_dir


def export_checkpoint(
    ckpt: str | os.PathLike,
    out_dir: str | os.PathLike,
    name: str | None = None,
    *,
    license: str = "apache-2.0",
    hub_id: str | None = None,
    overwrite: bool = False,
    verify: bool = True,
) -> Path:
    """Export the backbone of a ``gsg pretrain`` checkpoint to ``out_dir``; return ``out_dir``.

    ``name`` defaults to ``<method>-<architecture>``; ``hub_id`` (``ORG/NAME``) only shapes the
    card's usage snippets. The run directory ``RUN = ckpt.parent.parent`` contributes
    ``summary.json`` (as ``results.json``), ``metrics.jsonl``, ``curves.png`` and ``config.yaml``
    when present. ``verify`` reloads the export in a fresh process and compares features (keep it
    on; tests that only need the files turn it off to save ~8 s). Raises ``CheckpointError`` (a
    ValueError) for a file that is not a training checkpoint, ``ValueError`` for a non-empty
    ``out_dir`` without ``overwrite``, and ``RuntimeError`` when the reload check fails.
    """
    ckpt, out_dir = Path(ckpt), Path(out_dir)
    tb = load_trained_backbone(ckpt)
    name = name or f"{tb.method}-{tb.architecture}"
    data_cfg = trained_data_config(tb.architecture, tb.config.get("data"))
    description = f"{tb.architecture} backbone pretrained with {tb.method} (gsg-zoo {name})"
    tb.model.pretrained_cfg = export_pretrained_cfg(tb.model, tb.architecture, description, license)

    def add_run_files(tmp_dir: Path) -> dict[str, Any]:
        recipe = json.dumps(tb.config, indent=2, sort_keys=True, default=str)
        (tmp_dir / RECIPE_FILE).write_text(recipe + "\n")
        return {"run_files": copy_run_files(ckpt.parent.parent, tmp_dir)}

    prov = provenance(tb, name, data_cfg, license=license, hub_id=hub_id)
    return write_export(
        out_dir,
        tb.model,
        tb.reference,
        prov,
        data_cfg,
        hub_id=hub_id,
        overwrite=overwrite,
        verify=verify,
        add_files=add_run_files,
    )


def import_checkpoint(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    name: str | None = None,
    *,
    fmt: str = "auto",
    encoder: str = "online",
    arch: str | None = None,
    method: str | None = None,
    license: str = "apache-2.0",
    hub_id: str | None = None,
    overwrite: bool = False,
    verify: bool = True,
) -> Path:
    """Export the backbone of another code base's checkpoint (:mod:`gsg_zoo.zoo.importers`) to ``out_dir``.

    The same verified export as :func:`export_checkpoint`; ``gsg_export.json`` adds ``source``
    (format, encoder, conversion, what was dropped) and the file's sha256. ``method`` is what the
    user states (the files record none); default ``unknown``. Preprocessing: gsg-zoo's default
    for the architecture. Raises ``ForeignCheckpointError`` (a ValueError) for a file it cannot read.
    """
    from .importers import read_checkpoint, timm_backbone

    source, out_dir = Path(source), Path(out_dir)
    imported = read_checkpoint(source, fmt, encoder=encoder, arch=arch)
    model = timm_backbone(imported)
    arch_name = imported.architecture
    name = name or f"{imported.format.name}-{arch_name}"
    data_cfg = trained_data_config(arch_name, None)
    description = f"{arch_name} backbone imported from a {imported.format.name} checkpoint (gsg-zoo {name})"
    model.pretrained_cfg = export_pretrained_cfg(model, arch_name, description, license)
    checkpoint = {
        "file": source.name,
        "sha256": sha256_file(source),
        "epoch": imported.metadata.get("epoch"),
        "step": imported.metadata.get("global_step"),
    }
    source_info = {**imported.provenance(), "method_stated_by_user": method is not None}
    prov = base_provenance(
        name,
        arch_name,
        method or "unknown",
        model,
        data_cfg,
        license=license,
        hub_id=hub_id,
        run_files=[],
        pretrain_dataset=None,
        pretrain_epochs=None,
        checkpoint=checkpoint,
        source=source_info,
    )
    return write_export(
        out_dir, model, model, prov, data_cfg, hub_id=hub_id, overwrite=overwrite, verify=verify
    )


# ------------------------------------------------------------------------------------ reload check
_RELOAD_SCRIPT = r"""
import json, sys
export_dir, batch_file, out_file, import_gsg = sys.argv[1:5]
if import_gsg == "1":
    import gsg_zoo  # noqa: F401  (registers the CIFAR-stem architectures with timm)
import timm, torch
from safetensors.torch import load_file, save_file
torch.set_num_threads(1)
model = timm.create_model("local-dir:" + export_dir, pretrained=True).eval()
with torch.no_grad():
    feats = model(load_file(batch_file)["x"])
save_file({"features": feats.float().contiguous()}, out_file)
print(json.dumps({"gsg_zoo_imported": "gsg_zoo" in sys.modules, "num_classes": model.num_classes,
                  "architecture": model.pretrained_cfg.get("architecture")}))
"""


def reload_features(export_dir: Path, x: Any, import_gsg_zoo: bool) -> tuple[Any, dict[str, Any]]:
    """Pooled features of batch ``x`` from ``export_dir`` reloaded by timm in a fresh process, and its info."""
    from safetensors.torch import load_file, save_file

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if import_gsg_zoo:  # make the package importable even when it is not installed
        env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    env.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        batch_file, out_file = Path(tmp) / "x.safetensors", Path(tmp) / "features.safetensors"
        save_file({"x": x.contiguous()}, batch_file)
        argv = [sys.executable, "-c", _RELOAD_SCRIPT, str(export_dir), str(batch_file), str(out_file)]
        proc = subprocess.run(
            [*argv, "1" if import_gsg_zoo else "0"], cwd=tmp, env=env, capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"export check failed: timm could not reload {export_dir} in a fresh process "
                f"(import gsg_zoo first: {import_gsg_zoo}):\n{proc.stderr.strip()[-2000:]}"
            )
        return load_file(out_file)["features"], json.loads(proc.stdout.strip().splitlines()[-1])


def check_reload(
    export_dir: str | os.PathLike,
    reference: Any,
    import_gsg_zoo: bool,
    input_size: tuple[int, int, int] | list[int],
    batch_size: int = 4,
    atol: float = ATOL,
) -> dict[str, Any]:
    """Reload ``export_dir`` with stock timm in a fresh process; compare pooled features with ``reference``.

    The subprocess imports gsg_zoo only when ``import_gsg_zoo``; otherwise it also fails if
    anything pulled gsg_zoo in. Raises ``RuntimeError`` on any mismatch; returns a summary.
    """
    import torch

    export_dir = Path(export_dir).resolve()
    x = torch.randn(batch_size, *tuple(input_size), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = reference.eval()(x).float()
    feats, info = reload_features(export_dir, x, import_gsg_zoo)
    fail = "export check failed: "
    if info["gsg_zoo_imported"] and not import_gsg_zoo:
        raise RuntimeError(f"{fail}loading {export_dir} imported gsg_zoo; stock timm must suffice")
    if feats.shape != ref.shape:
        raise RuntimeError(
            f"{fail}reloaded model gives features {tuple(feats.shape)}, the training backbone {tuple(ref.shape)}"
        )
    diff = float((feats - ref).abs().max())
    if not diff <= atol:  # also catches NaN
        raise RuntimeError(
            f"{fail}reloaded features differ from the training backbone's by {diff:.3g} "
            f"(max abs, tolerance {atol:g}) on a fixed random batch {tuple(x.shape)}"
        )
    return {
        "max_abs_diff": diff,
        "atol": atol,
        "batch_shape": list(x.shape),
        "stock_timm_only": not import_gsg_zoo,
        "loader": "timm.create_model('local-dir:DIR', pretrained=True), fresh process",
    }
