"""The zoo manifest: every published checkpoint, resolved by the front door's ``zoo:NAME`` spec.

The manifest (``gsg_zoo/zoo/zoo_manifest.json``; ``GSG_ZOO_MANIFEST`` overrides its path) is written
from real exports by :func:`add_entry` (``gsg zoo add`` / ``gsg push --zoo-name``), never by hand: the
Hub id and pinned revision, what the model is, how it was trained, its results, the sha256 of its
weights and its preprocessing.
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
# Keys of an export's timm pretrained_cfg that an entry keeps (preprocessing, head, license).
CFG_KEYS = (
    "input_size",
    "interpolation",
    "crop_pct",
    "crop_mode",
    "mean",
    "std",
    "num_classes",
    "pool_size",
    "first_conv",
    "classifier",
    "license",
    "description",
    "notes",
)


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
    validate_manifest(data["models"], path)
    return data["models"]


REQUIRED_KEYS = (
    "name",
    "hub_id",
    "revision",
    "architecture",
    "method",
    "pretrain_data",
    "results",
    "sha256",
    "pretrained_cfg",
)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def entry_problems(entry: Any) -> list[str]:
    """What is wrong with one manifest entry (empty: valid)."""
    if not isinstance(entry, dict):
        return [f"not an object: {entry!r}"]
    missing = [k for k in REQUIRED_KEYS if k not in entry]
    if missing:
        return [f"missing {missing}"]
    checks = [
        (_NAME.match(str(entry["name"])), f"name {entry['name']!r} (letters, digits, '.', '_', '-')"),
        (_HUB_ID.match(str(entry["hub_id"])), f"hub_id {entry['hub_id']!r} (ORG/NAME)"),
        (isinstance(entry["revision"], str) and entry["revision"], f"revision {entry['revision']!r}"),
        (_SHA256.match(str(entry["sha256"])), f"sha256 {entry['sha256']!r} (64 hex digits)"),
        (isinstance(entry["results"], list), "results (a list)"),
        (isinstance(entry["pretrained_cfg"], dict), "pretrained_cfg (an object)"),
    ]
    return [f"bad {what}" for ok, what in checks if not ok]


def validate_manifest(entries: list[Any], path: str | os.PathLike = "manifest") -> None:
    """Raise ``ValueError`` naming every bad entry and duplicate names."""
    problems = [f"entry {i}: {p}" for i, e in enumerate(entries) for p in entry_problems(e)]
    if not problems:
        seen = [e["name"] for e in entries]
        problems += [f"duplicate name {v!r}" for v in sorted({v for v in seen if seen.count(v) > 1})]
    if problems:
        raise ValueError(f"{path}: invalid zoo manifest: " + "; ".join(problems))


def save_manifest(entries: list[dict[str, Any]], path: str | os.PathLike | None = None) -> Path:
    path = manifest_path(path)
    validate_manifest(entries, path)
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
    return f"hf-hub:{hub_id_at(entry)}"


def hub_id_at(entry: dict[str, Any]) -> str:
    """``ORG/NAME[@REVISION]``: the entry's Hub repo, pinned unless its revision is ``main``."""
    rev = entry.get("revision")
    return entry["hub_id"] + (f"@{rev}" if rev and rev != "main" else "")


def resolve_zoo_name(name: str) -> str:
    """``zoo:NAME`` -> the timm spec ``hf-hub:ORG/NAME[@REVISION]`` of that published checkpoint."""
    return hub_spec(get_entry(name))


def make_entry(
    export_dir: str | os.PathLike,
    hub_id: str,
    *,
    name: str | None = None,
    revision: str = "main",
) -> dict[str, Any]:
    """A manifest entry from a verified export directory."""
    from ..core.checksums import verify_export
    from ..core.layout import WEIGHTS_FILE
    from .card_data import read_card_data

    if not _HUB_ID.match(hub_id):
        raise ValueError(f"hub id must look like ORG/NAME, got {hub_id!r}")
    sums = verify_export(export_dir)
    card = read_card_data(export_dir, name, hub_id)
    if not _NAME.match(card.name):
        raise ValueError(f"zoo names use letters, digits, '.', '_' and '-', got {card.name!r}")
    return {
        "name": card.name,
        "hub_id": hub_id,
        "revision": revision,
        "architecture": card.architecture,
        "method": card.method,
        "needs_gsg_zoo": card.needs_gsg_zoo,
        "pretrain_data": card.pretrain_dataset,
        "pretrain_epochs": (card.recipe.get("train") or {}).get("epochs"),
        "checkpoint_epoch": card.checkpoint.get("epoch"),
        "results": [
            {"task": r.task, "dataset": r.dataset, "metric": r.metric, "value": r.value, "split": r.split}
            for r in card.results
        ],
        "license": card.license,
        "sha256": sums[WEIGHTS_FILE],
        "pretrained_cfg": {k: v for k, v in card.data_config.items() if k in CFG_KEYS},
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
    entries = [e for e in entries if e["name"] != entry["name"]]
    entries.append(entry)
    save_manifest(entries, manifest)
    return entry


def format_table(entries: list[dict[str, Any]]) -> str:
    """The manifest as a Markdown table."""
    if not entries:
        return "The zoo is empty: no checkpoint has been published yet (see `gsg push` and `gsg zoo add`)."
    header = ["name", "hub id", "revision", "spec", "method", "data", "epochs", "results", "sha256"]
    rows = []
    for e in entries:
        res = "; ".join(
            f"{r['task']} {r['dataset']} {r['metric']} {r['value']:.2f}" for r in e.get("results", [])
        )
        rev = e.get("revision") or "main"
        rows.append(
            [
                e["name"],
                e["hub_id"],
                rev[:12],
                f"zoo:{e['name']}",
                e["method"],
                e.get("pretrain_data"),
                e.get("pretrain_epochs"),
                res or "-",
                e["sha256"][:12],
            ]
        )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
