"""Export a training checkpoint's backbone as a timm Hub model folder, verified and checksummed.

An export directory holds:

* ``model.safetensors`` + ``config.json``: the backbone alone, timm parameter names, written by
  :func:`timm.models.save_for_hf` (``num_classes=0``: the model returns pooled features);
* ``gsg_export.json``: provenance (architecture, method, source checkpoint sha256, versions, the
  reload check's result); ``recipe.json``: the training config stored in the checkpoint;
* from the run directory when present: ``results.json`` (the run's ``summary.json``),
  ``metrics.jsonl``, ``curves.png``, ``config.yaml``;
* ``README.md``: the model card (:mod:`gsg_zoo.cards`);
* ``checksums.sha256``: sha256 of every other file (``sha256sum -c`` format), see :func:`verify_export`.

The export reloads itself with ``timm.create_model("local-dir:DIR", pretrained=True)`` in a fresh
Python process and fails unless its pooled features equal the training backbone's.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

CHECKSUMS_FILE = "checksums.sha256"
PROVENANCE_FILE = "gsg_export.json"
RECIPE_FILE = "recipe.json"
RESULTS_FILE = "results.json"
RUN_FILES = {"summary.json": RESULTS_FILE, "metrics.jsonl": "metrics.jsonl", "curves.png": "curves.png"}
RUN_FILES_VERBATIM = ("config.yaml",)
PAPER_IDS = "arXiv:2503.09058"
PAPER_NAME = "Implicit Contrastive Representation Learning with Guided Stop-gradient"
EXPORT_FORMAT = 1
ATOL = 1e-5


class ExportIntegrityError(ValueError):
    """An export directory's files do not match its checksum manifest."""


# ----------------------------------------------------------------------------------------- checksums
def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def payload_files(export_dir: Path) -> list[str]:
    """Every regular file in the export (relative POSIX paths), except the manifest and dotfiles."""
    out = []
    for p in sorted(export_dir.rglob("*")):
        rel = p.relative_to(export_dir)
        if p.is_file() and rel.as_posix() != CHECKSUMS_FILE and not any(s.startswith(".") for s in rel.parts):
            out.append(rel.as_posix())
    return out


def write_checksums(export_dir: str | os.PathLike) -> Path:
    """(Re)write ``checksums.sha256`` over every file of the export."""
    export_dir = Path(export_dir)
    lines = [f"{sha256_file(export_dir / name)}  {name}\n" for name in payload_files(export_dir)]
    path = export_dir / CHECKSUMS_FILE
    path.write_text("".join(lines))
    return path


def read_checksums(export_dir: str | os.PathLike) -> dict[str, str]:
    path = Path(export_dir) / CHECKSUMS_FILE
    if not path.is_file():
        raise ExportIntegrityError(
            f"{export_dir} has no {CHECKSUMS_FILE}: not a gsg export (re-export it with `gsg export`)"
        )
    out: dict[str, str] = {}
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            raise ExportIntegrityError(f"{path}:{i}: malformed line {line!r}")
        out[name] = digest
    return out


def verify_export(export_dir: str | os.PathLike) -> dict[str, str]:
    """Check every file against ``checksums.sha256``; return ``{file: sha256}``.

    Raises :class:`ExportIntegrityError` naming the first modified, missing or unlisted file.
    """
    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        raise FileNotFoundError(f"export directory not found: {export_dir}")
    expected = read_checksums(export_dir)
    for name, digest in expected.items():
        path = export_dir / name
        if not path.is_file():
            raise ExportIntegrityError(f"{export_dir}: file {name!r} listed in {CHECKSUMS_FILE} is missing")
        actual = sha256_file(path)
        if actual != digest:
            raise ExportIntegrityError(
                f"{export_dir}: file {name!r} was modified after export (sha256 {actual[:12]}..., "
                f"expected {digest[:12]}...); re-export it or restore the original file"
            )
    extra = sorted(set(payload_files(export_dir)) - set(expected))
    if extra:
        raise ExportIntegrityError(
            f"{export_dir}: file {extra[0]!r} is not listed in {CHECKSUMS_FILE} (added after export); "
            "remove it or re-export"
        )
    return expected


# ---------------------------------------------------------------------------------------- metadata
def read_json(path: Path) -> Any | None:
    return json.loads(path.read_text()) if path.is_file() else None


def needs_gsg_zoo(architecture: str) -> bool:
    """True when ``architecture`` is registered by gsg_zoo (CIFAR stem), not by timm itself."""
    import timm

    from . import backbones  # noqa: F401  (registration)

    return timm.models.model_entrypoint(architecture).__module__.startswith("gsg_zoo")


def export_data_config(architecture: str, data: dict[str, Any] | None) -> dict[str, Any]:
    """Preprocessing of the exported weights: from the recipe's ``data`` section where it says so.

    CIFAR-stem models default to 32 px and CIFAR mean/std, others to timm's ImageNet defaults.
    """
    from .normalization import NORMALIZATION as norms

    data = data or {}
    cifar = needs_gsg_zoo(architecture)
    mean, std = norms["cifar" if cifar else "imagenet"]
    if data.get("normalization") in norms:
        mean, std = norms[data["normalization"]]
    mean, std = tuple(data.get("mean", mean)), tuple(data.get("std", std))
    size = int(data.get("image_size") or (32 if cifar else 224))
    return {
        "input_size": (3, size, size),
        "interpolation": data.get("interpolation", "bilinear"),
        "crop_pct": float(data.get("crop_pct", 1.0 if cifar else 0.875)),
        "crop_mode": "center",
        "mean": mean,
        "std": std,
    }


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


# ----------------------------------------------------------------------------------------- export
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
    on; tests that only need the files turn it off to save ~8 s). The export is built in a hidden
    sibling folder and renamed into place only when complete. Raises ``CheckpointError`` (a ValueError) for a
    file that is not a training checkpoint, ``ValueError`` for a non-empty ``out_dir`` without
    ``overwrite``, and ``RuntimeError`` when the reload check fails.
    """
    import timm
    import torch

    from . import __version__
    from .checkpoint import backbone_state_dict, load_checkpoint
    from .learner import LearnerConfig, SelfSupervisedLearner

    ckpt, out_dir = Path(ckpt), Path(out_dir)
    state = load_checkpoint(ckpt)
    config = state.get("config") or {}
    model_cfg = dict(config.get("model") or {})
    if "backbone" not in model_cfg:
        raise ValueError(f"{ckpt}: checkpoint config has no model.backbone; cannot tell the architecture")
    try:
        learner_cfg = LearnerConfig(**model_cfg)
    except TypeError as err:
        raise ValueError(f"{ckpt}: checkpoint model config does not fit this gsg-zoo: {err}") from err
    arch = learner_cfg.backbone
    name = name or f"{learner_cfg.method}-{arch}"
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not overwrite:
        raise ValueError(
            f"{out_dir} exists and is not empty; pass overwrite=True (--overwrite) to replace it"
        )

    # The training backbone exactly as trained: the whole learner, loaded strictly.
    learner = SelfSupervisedLearner(learner_cfg)
    try:
        learner.load_state_dict(state["model"], strict=True)
    except RuntimeError as err:
        raise ValueError(f"{ckpt}: weights do not match the recorded learner config: {err}") from err
    reference = learner.backbone.eval()

    # A fresh timm model holding only the backbone: model_args stay minimal (num_classes + kwargs).
    model = timm.create_model(arch, pretrained=False, num_classes=0, **learner_cfg.backbone_kwargs)
    model.load_state_dict(backbone_state_dict(state), strict=True)
    model.eval()
    data_cfg = export_data_config(arch, config.get("data"))
    gsg = needs_gsg_zoo(arch)
    method = learner_cfg.method
    pcfg = {k: v for k, v in model.pretrained_cfg.items() if k not in _FOREIGN_CFG_KEYS}
    pcfg.update(
        license=license,
        paper_ids=PAPER_IDS,
        paper_name=PAPER_NAME,
        description=f"{arch} backbone pretrained with {method} (gsg-zoo {name})",
    )
    if gsg:
        pcfg["notes"] = ("Needs `import gsg_zoo` (CIFAR-stem architecture) before timm.create_model.",)
    model.pretrained_cfg = pcfg

    # Written next to out_dir, renamed into place only once verified: never a half-written export.
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        os.chmod(tmp_dir, 0o755)
        timm.models.save_for_hf(model, tmp_dir, safe_serialization=True, data_config=data_cfg)

        run_dir = ckpt.parent.parent
        copied = []
        for src, dst in RUN_FILES.items():
            if (run_dir / src).is_file():
                shutil.copyfile(run_dir / src, tmp_dir / dst)
                copied.append(src)
        for src in RUN_FILES_VERBATIM:
            if (run_dir / src).is_file():
                shutil.copyfile(run_dir / src, tmp_dir / src)
                copied.append(src)
        (tmp_dir / RECIPE_FILE).write_text(json.dumps(config, indent=2, sort_keys=True, default=str) + "\n")

        provenance = {
            "format_version": EXPORT_FORMAT,
            "name": name,
            "architecture": arch,
            "method": method,
            "needs_gsg_zoo": gsg,
            "num_features": int(model.num_features),
            "input_size": list(data_cfg["input_size"]),
            "license": license,
            "hub_id": hub_id,
            "pretrain_dataset": (config.get("data") or {}).get("dataset"),
            "pretrain_epochs": (config.get("train") or {}).get("epochs"),
            "checkpoint": {
                "file": ckpt.name,
                "sha256": sha256_file(ckpt),
                "epoch": state.get("epoch"),
                "step": state.get("step"),
            },
            "run_files": copied,
            "versions": {"gsg_zoo": __version__, "timm": timm.__version__, "torch": torch.__version__},
        }
        if verify:
            provenance["reload_check"] = check_reload(tmp_dir, reference, gsg, data_cfg["input_size"])
        (tmp_dir / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")

        from .cards import write_model_card

        write_model_card(tmp_dir, name, hub_id=hub_id, cards_dir=None)  # README.md; re-signs checksums
        verify_export(tmp_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    if out_dir.exists():
        shutil.rmtree(out_dir) if out_dir.is_dir() else out_dir.unlink()
    os.replace(tmp_dir, out_dir)
    return out_dir


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
    from safetensors.torch import load_file, save_file

    export_dir = Path(export_dir).resolve()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, *tuple(input_size), generator=g)
    with torch.no_grad():
        ref = reference.eval()(x).float()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if import_gsg_zoo:  # make the package importable even when it is not installed
        env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
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
        info = json.loads(proc.stdout.strip().splitlines()[-1])
        feats = load_file(out_file)["features"]
    if info["gsg_zoo_imported"] and not import_gsg_zoo:
        raise RuntimeError(
            f"export check failed: loading {export_dir} imported gsg_zoo; stock timm must suffice"
        )
    if feats.shape != ref.shape:
        raise RuntimeError(
            f"export check failed: reloaded model gives features {tuple(feats.shape)}, "
            f"the training backbone {tuple(ref.shape)}"
        )
    diff = float((feats - ref).abs().max())
    if not diff <= atol:  # also catches NaN
        raise RuntimeError(
            f"export check failed: reloaded features differ from the training backbone's by {diff:.3g} "
            f"(max abs, tolerance {atol:g}) on a fixed random batch {tuple(x.shape)}"
        )
    return {
        "max_abs_diff": diff,
        "atol": atol,
        "batch_shape": list(x.shape),
        "stock_timm_only": not import_gsg_zoo,
        "loader": "timm.create_model('local-dir:DIR', pretrained=True), fresh process",
    }
