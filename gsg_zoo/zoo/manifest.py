"""The zoo manifest: every published checkpoint, as timm pretrained tags and ``gsg_zoo.load(NAME)``.

The manifest (``gsg_zoo/zoo/zoo_manifest.json``; ``GSG_ZOO_MANIFEST`` overrides its path) is generated
from real exports by :func:`add_entry` (``gsg zoo add`` / ``gsg push --zoo-name``); entries are never
written by hand. Each holds the Hub id and revision, what the model is, how it was trained, its
measured results, the sha256 of its weights, and its timm tag and preprocessing.

The manifest is the one source of the zoo: :func:`register_timm_tags` makes each entry a pretrained
tag of its architecture (zoo name ``simsiam-in1k``: ``resnet50.gsg_simsiam_in1k``, weights on the Hub), so
``timm.list_pretrained("*gsg*")`` lists the zoo and ``timm.create_model(TAG, pretrained=True)``
loads it; :func:`load` goes through the same tag. Light at import: timm only inside functions.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

MANIFEST_PATH = Path(__file__).resolve().with_name("zoo_manifest.json")
MANIFEST_FORMAT = 1
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*$")
_TAG = re.compile(r"^[a-z0-9][a-z0-9_]*$")
# Keys of an export's timm pretrained_cfg that a tag keeps (preprocessing, head, license).
_TAG_CFG_KEYS = (
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
_REGISTERED: set[str] = set()  # the timm names this module registered


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
    "timm_tag",
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
        (_TAG.match(str(entry["timm_tag"])), f"timm_tag {entry['timm_tag']!r} (lower-case, digits, '_')"),
        (_SHA256.match(str(entry["sha256"])), f"sha256 {entry['sha256']!r} (64 hex digits)"),
        (isinstance(entry["results"], list), "results (a list)"),
        (isinstance(entry["pretrained_cfg"], dict), "pretrained_cfg (an object)"),
    ]
    return [f"bad {what}" for ok, what in checks if not ok]


def validate_manifest(entries: list[Any], path: str | os.PathLike = "manifest") -> None:
    """Raise ``ValueError`` naming every bad entry, and duplicate names or timm names."""
    problems = [f"entry {i}: {p}" for i, e in enumerate(entries) for p in entry_problems(e)]
    if not problems:
        for key, label in ((lambda e: e["name"], "name"), (timm_name, "timm name")):
            seen = [key(e) for e in entries]
            problems += [f"duplicate {label} {v!r}" for v in sorted({v for v in seen if seen.count(v) > 1})]
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


def timm_name(entry: dict[str, Any]) -> str:
    """The timm model name of a zoo entry: ``ARCH.TAG`` (``resnet50.gsg_simsiam_in1k``)."""
    return f"{entry['architecture']}.{entry['timm_tag']}"


def default_timm_tag(name: str) -> str:
    """``gsg_<zoo name>`` in timm's tag style: ``simsiam-in1k`` -> ``gsg_simsiam_in1k``.

    One tag per zoo name (names are unique); the ``gsg_`` prefix makes ``timm.list_pretrained("*gsg*")``
    the zoo.
    """
    tag = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    return tag if tag.startswith("gsg_") else f"gsg_{tag}"


def load(name: str, **timm_kwargs: Any):
    """A zoo checkpoint as a timm model in eval mode (pooled features unless ``num_classes`` is given).

    Resolved through its timm pretrained tag (:func:`register_timm_tags`), online or offline from the
    Hugging Face cache (``HF_HUB_OFFLINE=1``). ``timm_kwargs`` go to :func:`timm.create_model`
    (``num_classes=10``, ``features_only=True``, ...).
    """
    import timm

    entry = get_entry(name)
    register_timm_tags(missing_ok=False)
    try:
        model = timm.create_model(timm_name(entry), pretrained=True, **timm_kwargs)
    except OSError as err:  # LocalEntryNotFoundError, connection errors
        raise FileNotFoundError(
            f"could not load zoo model {name!r} ({timm_name(entry)} from {hub_spec(entry)}): {err}. Offline? "
            "Put its files in the Hugging Face cache (HF_HUB_CACHE) or load an export with local-dir:PATH"
        ) from err
    return model.eval()


# ------------------------------------------------------------------------------------- timm tags
def tag_pretrained_cfg(entry: dict[str, Any]) -> Any:
    """The entry's :class:`timm.models.PretrainedCfg`: its Hub weights and preprocessing."""
    from timm.models import PretrainedCfg

    from ..core.layout import PAPER_IDS, PAPER_NAME, WEIGHTS_FILE

    cfg = {k: v for k, v in entry["pretrained_cfg"].items() if k in _TAG_CFG_KEYS}
    cfg.update({k: tuple(cfg[k]) for k in ("input_size", "mean", "std", "pool_size") if cfg.get(k)})
    return PretrainedCfg(
        **cfg,
        hf_hub_id=hub_id_at(entry),
        hf_hub_filename=WEIGHTS_FILE,
        architecture=entry["architecture"],
        tag=entry["timm_tag"],
        origin_url=f"https://huggingface.co/{entry['hub_id']}",
        paper_ids=PAPER_IDS,
        paper_name=PAPER_NAME,
    )


def _unregister(reg: Any, name: str) -> None:
    arch = name.split(".", 1)[0]
    reg._model_pretrained_cfgs.pop(name, None)
    reg._model_has_pretrained.discard(name)
    tags = reg._model_with_tags.get(arch)
    if tags and name in tags:
        tags.remove(name)


def _register(reg: Any, name: str, cfg: Any) -> None:
    arch = cfg.architecture
    if not reg.is_model(arch):
        raise ValueError(f"zoo tag {name}: timm knows no architecture {arch!r}")
    if name in reg._model_pretrained_cfgs and name not in _REGISTERED:
        raise ValueError(f"zoo tag {name} would replace timm's own pretrained tag of that name")
    reg._model_pretrained_cfgs[name] = cfg
    reg._model_has_pretrained.add(name)
    tags = reg._model_with_tags[arch]
    if not tags:  # keep the untagged name listed, as timm does for an architecture without tags
        tags.append(arch)
    if name not in tags:
        tags.append(name)


def register_timm_tags(
    manifest: str | os.PathLike | list[dict[str, Any]] | None = None, *, missing_ok: bool = True
) -> list[str]:
    """Register every manifest entry as a timm pretrained tag ``ARCH.TAG``; return their names.

    ``manifest``: a manifest file, or its entries; default :func:`manifest_path`. Idempotent: tags
    registered by an earlier call and no longer in the manifest are removed. With the default
    manifest a missing or broken file only warns (``import gsg_zoo`` must not fail).
    """
    from timm.models import _registry as reg

    from ..method import backbones  # noqa: F401  (the CIFAR-stem architectures the entries may use)

    try:
        entries = manifest if isinstance(manifest, list) else load_manifest(manifest, missing_ok=missing_ok)
    except (OSError, ValueError) as err:
        if manifest is not None or not missing_ok:
            raise
        warnings.warn(f"gsg-zoo: zoo manifest not registered with timm: {err}", stacklevel=2)
        entries = []
    cfgs = {timm_name(e): tag_pretrained_cfg(e) for e in entries}
    for name in _REGISTERED - set(cfgs):
        _unregister(reg, name)
    _REGISTERED.intersection_update(cfgs)
    for name, cfg in cfgs.items():
        _register(reg, name, cfg)
        _REGISTERED.add(name)
    return sorted(cfgs)


# ---------------------------------------------------------------------------------------- entries
def make_entry(
    export_dir: str | os.PathLike,
    hub_id: str,
    *,
    name: str | None = None,
    revision: str = "main",
    timm_tag: str | None = None,
) -> dict[str, Any]:
    """A manifest entry from a verified export directory (``timm_tag``: default :func:`default_timm_tag`)."""
    from ..core.checksums import verify_export
    from ..core.layout import WEIGHTS_FILE
    from .card_data import read_card_data

    if not _HUB_ID.match(hub_id):
        raise ValueError(f"hub id must look like ORG/NAME, got {hub_id!r}")
    sums = verify_export(export_dir)
    card = read_card_data(export_dir, name, hub_id)
    if not _NAME.match(card.name):
        raise ValueError(f"zoo names use letters, digits, '.', '_' and '-', got {card.name!r}")
    tag = timm_tag or default_timm_tag(card.name)
    if not _TAG.match(tag):
        raise ValueError(f"timm tags use lower-case letters, digits and '_', got {tag!r}")
    return {
        "name": card.name,
        "hub_id": hub_id,
        "revision": revision,
        "architecture": card.architecture,
        "timm_tag": tag,
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
        "pretrained_cfg": {k: v for k, v in card.data_config.items() if k in _TAG_CFG_KEYS},
    }


def add_entry(
    export_dir: str | os.PathLike,
    hub_id: str,
    *,
    name: str | None = None,
    revision: str = "main",
    replace: bool = False,
    manifest: str | os.PathLike | None = None,
    timm_tag: str | None = None,
) -> dict[str, Any]:
    """Add (or with ``replace`` update) the manifest entry of a published export; return it."""
    entry = make_entry(export_dir, hub_id, name=name, revision=revision, timm_tag=timm_tag)
    entries = load_manifest(manifest, missing_ok=True)
    if any(e["name"] == entry["name"] for e in entries) and not replace:
        raise ValueError(f"{entry['name']!r} is already in the manifest; pass --replace to update it")
    entries = [e for e in entries if e["name"] != entry["name"]]
    clash = [e["name"] for e in entries if timm_name(e) == timm_name(entry)]
    if clash:
        raise ValueError(
            f"{clash[0]!r} already has the timm name {timm_name(entry)}; give {entry['name']!r} another tag"
        )
    entries.append(entry)
    save_manifest(entries, manifest)
    return entry


def format_table(entries: list[dict[str, Any]]) -> str:
    """The manifest as a Markdown table."""
    if not entries:
        return "The zoo is empty: no checkpoint has been published yet (see `gsg push` and `gsg zoo add`)."
    header = ["name", "hub id", "revision", "timm name", "method", "data", "epochs", "results", "sha256"]
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
                timm_name(e),
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
