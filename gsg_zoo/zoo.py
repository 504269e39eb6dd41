"""The zoo manifest: every published checkpoint, and ``gsg_zoo.load(NAME)``.

The manifest (``gsg_zoo/zoo_manifest.json``; ``GSG_ZOO_MANIFEST`` overrides its path) is generated
from real exports by :func:`add_entry` (``gsg zoo add`` / ``gsg push --zoo-name``); entries are never
written by hand. Each holds the Hub id and revision, what the model is, how it was trained, its
measured results and the sha256 of its weights.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

MANIFEST_PATH = Path(__file__).resolve().with_name("zoo_manifest.json")
MANIFEST_FORMAT = 1
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*$")


def manifest_path(path: str | os.PathLike | None = None) -> Path:
    return Path(path or os.environ.get("GSG_ZOO_MANIFEST") or MANIFEST_PATH)


def load_manifest(path: str | os.PathLike | None = None, *, missing_ok: bool = False) -> list[dict[str, Any]]:
    """All zoo entries (possibly none)."""
    path = manifest_path(path)
    if not path.is_file():
        if path == MANIFEST_PATH or missing_ok:
            return []
        raise FileNotFoundError(f"zoo manifest not found: {path}")
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise ValueError(f"{path} is not a gsg-zoo manifest (expected {{'models': [...]}})")
    return data["models"]


def save_manifest(entries: list[dict[str, Any]], path: str | os.PathLike | None = None) -> Path:
    path = manifest_path(path)
    doc = {"format_version": MANIFEST_FORMAT, "models": sorted(entries, key=lambda e: e["name"])}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def get_entry(name: str, path: str | os.PathLike | None = None) -> dict[str, Any]:
    entries = load_manifest(path)
    for e in entries:
        if e["name"] == name:
            return e
    known = ", ".join(e["name"] for e in entries) or "none yet (nothing has been published)"
    raise ValueError(f"{name!r} is not in the gsg-zoo manifest ({manifest_path(path)}); known: {known}")


def hub_spec(entry: dict[str, Any]) -> str:
    rev = entry.get("revision")
    return f"hf-hub:{entry['hub_id']}" + (f"@{rev}" if rev and rev != "main" else "")


def resolve_zoo_name(name: str) -> str:
    """``zoo:NAME`` -> the timm spec ``hf-hub:ORG/NAME[@REVISION]`` of that published checkpoint."""
    return hub_spec(get_entry(name))


def load(name: str, **timm_kwargs: Any):
    """A zoo checkpoint as a timm model in eval mode (pooled features unless ``num_classes`` is given).

    Works online or offline from the Hugging Face cache (``HF_HUB_OFFLINE=1``). ``timm_kwargs`` go
    to :func:`timm.create_model` (``num_classes=10``, ``features_only=True``, ...).
    """
    import timm

    from . import backbones  # noqa: F401  (CIFAR-stem architectures)

    spec = resolve_zoo_name(name)
    try:
        model = timm.create_model(spec, pretrained=True, **timm_kwargs)
    except OSError as err:  # LocalEntryNotFoundError, connection errors
        raise FileNotFoundError(
            f"could not load zoo model {name!r} ({spec}): {err}. Offline? Put its files in the Hugging "
            "Face cache (HF_HUB_CACHE) or load an export with local-dir:PATH"
        ) from err
    return model.eval()


def make_entry(
    export_dir: str | os.PathLike, hub_id: str, *, name: str | None = None, revision: str = "main"
) -> dict[str, Any]:
    """A manifest entry from a verified export directory."""
    from .cards import normalize_results
    from .export import PROVENANCE_FILE, RECIPE_FILE, RESULTS_FILE, read_json, verify_export

    if not _HUB_ID.match(hub_id):
        raise ValueError(f"hub id must look like ORG/NAME, got {hub_id!r}")
    export_dir = Path(export_dir)
    sums = verify_export(export_dir)
    prov = read_json(export_dir / PROVENANCE_FILE)
    if not prov:
        raise FileNotFoundError(f"{export_dir} has no {PROVENANCE_FILE}: export it with `gsg export`")
    name = name or prov["name"]
    if not _NAME.match(name):
        raise ValueError(f"zoo names use letters, digits, '.', '_' and '-', got {name!r}")
    recipe = read_json(export_dir / RECIPE_FILE) or {}
    results = normalize_results(read_json(export_dir / RESULTS_FILE), recipe)
    return {
        "name": name,
        "hub_id": hub_id,
        "revision": revision,
        "architecture": prov["architecture"],
        "method": prov["method"],
        "needs_gsg_zoo": prov.get("needs_gsg_zoo", False),
        "pretrain_data": prov.get("pretrain_dataset"),
        "pretrain_epochs": prov.get("pretrain_epochs"),
        "checkpoint_epoch": prov.get("checkpoint", {}).get("epoch"),
        "results": [{k: r[k] for k in ("task", "dataset", "metric", "value", "split")} for r in results],
        "license": prov.get("license"),
        "sha256": sums["model.safetensors"],
    }


def add_entry(
    export_dir: str | os.PathLike,
    hub_id: str,
    *,
    name: str | None = None,
    revision: str = "main",
    replace: bool = False,
    manifest: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Add (or with ``replace`` update) the manifest entry of a published export; return it."""
    entry = make_entry(export_dir, hub_id, name=name, revision=revision)
    entries = load_manifest(manifest, missing_ok=True)
    if any(e["name"] == entry["name"] for e in entries) and not replace:
        raise ValueError(f"{entry['name']!r} is already in the manifest; pass --replace to update it")
    entries = [e for e in entries if e["name"] != entry["name"]] + [entry]
    save_manifest(entries, manifest)
    return entry


def format_table(entries: list[dict[str, Any]]) -> str:
    """The manifest as a Markdown table."""
    if not entries:
        return "The zoo is empty: no checkpoint has been published yet (see `gsg push` and `gsg zoo add`)."
    header = ["name", "hub id", "revision", "arch", "method", "data", "epochs", "results", "sha256"]
    rows = []
    for e in entries:
        res = "; ".join(
            f"{r['task']} {r['dataset']} {r['metric']} {r['value']:.2f}" for r in e.get("results", [])
        )
        rev = e.get("revision") or "main"
        rows.append(
            [e["name"], e["hub_id"], rev[:12], e["architecture"], e["method"], e.get("pretrain_data"),
             e.get("pretrain_epochs"), res or "-", e["sha256"][:12]]
        )  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
