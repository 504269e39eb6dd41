"""What a model card says: one :class:`CardData` read once from an export folder.

Every number comes from the export's ``results.json`` or ``recipe.json``; the paper's numbers (the
recipes' ``paper:`` keys) appear only beside a result of the same method, architecture, dataset,
split, metric and protocol. The results schema: docs/reference/internals.md.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.checksums import sha256_file
from ..core.layout import (
    CONFIG_FILE,
    CURVES_FILE,
    PROVENANCE_FILE,
    RECIPE_FILE,
    RESULTS_FILE,
    WEIGHTS_FILE,
    read_json,
)

FLAT_RESULT = re.compile(
    r"^(?:(?P<qual>.+)_)?(?P<task>knn|linear|finetune)_(?P<metric>top1|top5|acc|accuracy)$"
)
_IMAGENET_ALIASES = ("imagenet-1k", "imagenet1k", "in1k", "ilsvrc2012")


@dataclass(frozen=True)
class Result:
    """One measured number (percent) and how it was measured."""

    task: str  # knn | linear | finetune
    dataset: str
    metric: str  # top1 | top5 | ..., with a qualifier: "top1 (final)"
    value: float
    split: str = "test"
    protocol: str = ""  # description shown in the card
    protocol_name: str | None = None  # e.g. the linear probe's "fast" / "reference"
    k: int | None = None  # kNN neighbours and temperature
    t: float | None = None
    full_protocol: bool = True  # False: measured on a subset
    source: str = ""
    baselines: dict[str, float] = field(default_factory=dict)  # the same protocol on reference models
    fraction: float | None = None  # fine-tuning: percent of the training labels


@dataclass(frozen=True)
class PaperRef:
    """A number the paper reports, with the setting and protocol it was measured in (from a recipe)."""

    method: str
    architecture: str
    task: str
    dataset: str
    metric: str
    value: float
    split: str | None = None
    k: int | None = None
    t: float | None = None
    protocol_name: str | None = None
    epochs: int | None = None

    @property
    def setting(self) -> str:
        proto = f"k={self.k}, T={self.t}" if self.task == "knn" else f"protocol {self.protocol_name}"
        return f"{self.architecture}, {self.epochs} epochs; {self.dataset} {self.split}, {proto}"


@dataclass(frozen=True)
class CardData:
    """Everything a card shows about one export, read once from its files."""

    name: str
    architecture: str
    method: str
    needs_gsg_zoo: bool
    num_features: int | None
    license: str
    hub_id: str | None
    pretrain_dataset: str
    recipe: dict[str, Any]
    data_config: dict[str, Any]  # timm's pretrained_cfg: input size, interpolation, crop, mean/std
    results: list[Result]
    run_scalars: dict[str, Any]  # scalar non-result keys of results.json (compute, throughput)
    checkpoint: dict[str, Any]  # file, sha256, epoch, step
    weights_sha256: str
    has_curves: bool
    paper: list[PaperRef]
    source: dict[str, Any] = field(default_factory=dict)  # ``gsg import``: format, conversion, dropped
    monitor: dict[str, Any] = field(default_factory=dict)  # the run's online probe (summary online_probe)

    @property
    def imported(self) -> bool:
        """Converted from another code base's checkpoint by ``gsg import`` (no gsg-zoo training record)."""
        return bool(self.source)

    @property
    def is_gsg(self) -> bool:
        return self.method.endswith("_gsg")

    @property
    def base_method(self) -> str:
        return self.method.removesuffix("_gsg")


# ------------------------------------------------------------------------------------------ results
def canonical_dataset(name: str | None) -> str:
    name = (name or "unknown").lower()
    return "imagenet" if name in _IMAGENET_ALIASES else name


def _result_keys(d: dict[str, Any]) -> dict[str, Any]:
    """``summary.json`` keys one level deep as flat result keys: ``{"final": {"knn_top1": x}}`` ->
    ``{"final_knn_top1": x}`` (``results`` kept as it is)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "results":
            out.update({f"{k}_{kk}": vv for kk, vv in v.items() if not isinstance(vv, dict)})
        else:
            out[k] = v
    return out


def _baselines(r: dict[str, Any]) -> dict[str, float]:
    """``{name: value}`` of a result's reference models: ``baselines`` and/or ``baseline``/``baseline_name``."""
    out = {str(k): float(v) for k, v in (r.get("baselines") or {}).items() if v is not None}
    if r.get("baseline") is not None:
        out.setdefault(str(r.get("baseline_name", "baseline")), float(r["baseline"]))
    return out


def _optional(value: Any, cast: type) -> Any:
    return None if value is None else cast(value)


def listed_result(i: int, r: dict[str, Any]) -> Result:
    """An entry of ``results.json``'s ``results`` list."""
    missing = {"task", "dataset", "metric", "value"} - set(r)
    if missing:
        raise ValueError(f"results[{i}] lacks {sorted(missing)}: {r}")
    return Result(
        task=str(r["task"]),
        dataset=canonical_dataset(r["dataset"]),
        metric=str(r["metric"]),
        value=float(r["value"]),
        split=str(r.get("split", "test")),
        protocol=str(r.get("protocol", "")),
        protocol_name=_optional(r.get("protocol_name"), str),
        k=_optional(r.get("k"), int),
        t=_optional(r.get("t", r.get("T")), float),
        full_protocol=bool(r.get("full_protocol", True)),
        source=str(r.get("source", f"results[{i}]")),
        baselines=_baselines(r),
        fraction=_optional(r.get("fraction"), float),
    )


def flat_result(key: str, value: Any, dataset: str, knn: dict[str, Any]) -> Result | None:
    """A ``summary.json`` key such as ``final_knn_top1``; None for keys that are not results.

    ``knn``: the kNN protocol (the recipe's ``monitor`` section, updated by ``knn_protocol``).
    """
    m = FLAT_RESULT.match(key)
    if not m or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    task, qual = m["task"], m["qual"]
    metric = m["metric"] + (f" ({qual.replace('_', ' ')})" if qual else "")
    common = {
        "task": task,
        "dataset": dataset,
        "metric": metric,
        "value": float(value),
        "source": f"{RESULTS_FILE}:{key}",
    }
    if task != "knn" or not knn:
        return Result(**common)
    limits = [f"{n} {knn[f'{n}_limit']} images" for n in ("train", "test") if knn.get(f"{n}_limit")]
    protocol = f"k={knn.get('k')}, T={knn.get('t')}, cosine on L2-normalised pooled features"
    return Result(
        **common,
        split=str(knn.get("test_split") or knn.get("test") or "test"),
        protocol=protocol + ("; subset: " + ", ".join(limits) if limits else ""),
        k=_optional(knn.get("k"), int),
        t=_optional(knn.get("t"), float),
        full_protocol=not limits,
    )


def normalize_results(raw: dict[str, Any] | None, recipe: dict[str, Any] | None = None) -> list[Result]:
    """Measured results of a ``results.json`` (validated): listed ones first, then flat keys."""
    if not raw:
        return []
    recipe = recipe or {}
    monitor, data = recipe.get("monitor") or {}, recipe.get("data") or {}
    # The monitor's dataset is the kNN dataset; summary["dataset"] is the pretraining one.
    dataset = canonical_dataset(
        raw.get("eval_dataset") or monitor.get("dataset") or raw.get("dataset") or data.get("dataset")
    )
    knn = {**monitor, **(raw.get("knn_protocol") or {})}
    out = [listed_result(i, r) for i, r in enumerate(raw.get("results") or [])]
    flat = _result_keys({k: v for k, v in raw.items() if k != "results"})
    out += [r for key, v in flat.items() if (r := flat_result(key, v, dataset, knn)) is not None]
    return unique_results(out)


def unique_results(results: list[Result]) -> list[Result]:
    """Each measurement once: results equal in task, dataset, split, protocol and value at the card's
    precision (2 decimals) are one, whatever their qualifier (``knn_top1`` and ``final_knn_top1`` of
    the same run); the first is kept."""
    seen, out = set(), []
    for r in results:
        key = (
            r.task,
            r.dataset,
            r.metric.split(" (")[0],
            r.split,
            r.protocol,
            r.protocol_name,
            r.k,
            r.t,
            r.full_protocol,
            r.fraction,
            round(r.value, 2),
        )
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def run_scalars(raw: dict[str, Any]) -> dict[str, Any]:
    """The scalar entries of ``results.json`` that are not results (compute, throughput, ...)."""
    return {
        k: v
        for k, v in raw.items()
        if v is not None and not isinstance(v, (dict, list)) and not FLAT_RESULT.match(k)
    }


# -------------------------------------------------------------------------------------------- paper
def parse_paper(
    paper: dict[str, Any], method: str, architecture: str, dataset: str, epochs: int | None = None
) -> list[PaperRef]:
    """A recipe's ``paper:`` section as references (bare numbers: protocol unrecorded)."""
    refs = []
    for key, spec in paper.items():
        m = FLAT_RESULT.match(key)
        if not m:
            continue
        spec = spec if isinstance(spec, dict) else {"value": spec}
        refs.append(
            PaperRef(
                method=method,
                architecture=architecture,
                task=m["task"],
                dataset=canonical_dataset(spec.get("dataset", dataset)),
                metric=m["metric"] + (f" ({m['qual']})" if m["qual"] else ""),
                value=float(spec["value"]),
                split=_optional(spec.get("split"), str),
                k=_optional(spec.get("k"), int),
                t=_optional(spec.get("t", spec.get("T")), float),
                protocol_name=_optional(spec.get("protocol"), str),
                epochs=_optional(spec.get("epochs", epochs), int),
            )
        )
    return refs


def load_paper_refs(recipe_name: str | None) -> list[PaperRef]:
    """The paper's numbers for the shipped recipe ``recipe_name`` (none for an unknown recipe)."""
    if not recipe_name or not re.fullmatch(r"[\w.-]+", recipe_name):
        return []
    from ..config.recipes import load_recipe

    try:
        recipe = load_recipe(recipe_name)
    except (FileNotFoundError, ValueError):
        return []
    dataset = recipe.monitor.dataset or recipe.data.dataset
    arch = recipe.learner_config().backbone
    return parse_paper(recipe.paper, recipe.method, arch, dataset, recipe.train.epochs)


def _same_value(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return False
    return math.isclose(a, b) if isinstance(a, float) or isinstance(b, float) else a == b


def comparable(ref: PaperRef, r: Result, method: str, architecture: str) -> bool:
    """Same method, architecture, task, dataset, split, metric and protocol (k, T or its name)."""
    if not r.full_protocol or (ref.method, ref.architecture) != (method, architecture):
        return False
    if (ref.task, ref.dataset, ref.split, ref.metric) != (r.task, r.dataset, r.split, r.metric):
        return False
    params = ("k", "t") if ref.task == "knn" else ("protocol_name",)
    if ref.task == "knn" and ref.protocol_name:  # e.g. GSG's main_knn.py: its own preprocessing too
        params = (*params, "protocol_name")
    return all(_same_value(getattr(ref, p), getattr(r, p)) for p in params)


def paper_match(card: CardData, r: Result) -> PaperRef | None:
    """The paper's number measured exactly as result ``r`` was, if the recipes record one."""
    return next((p for p in card.paper if comparable(p, r, card.method, card.architecture)), None)


# --------------------------------------------------------------------------------------------- read
def read_card_data(export_dir: str | Path, name: str | None = None, hub_id: str | None = None) -> CardData:
    """Read an export folder's provenance, recipe, results and timm config into one :class:`CardData`."""
    from ..config.recipes import upgrade_config

    export_dir = Path(export_dir)
    prov = read_json(export_dir / PROVENANCE_FILE) or {}
    timm_cfg = read_json(export_dir / CONFIG_FILE) or {}
    if not prov or not timm_cfg:
        raise FileNotFoundError(
            f"{export_dir} is not a gsg export ({PROVENANCE_FILE} / {CONFIG_FILE} missing)"
        )
    recipe = upgrade_config(read_json(export_dir / RECIPE_FILE) or {})
    raw = read_json(export_dir / RESULTS_FILE) or {}
    pcfg = timm_cfg.get("pretrained_cfg", {})
    return CardData(
        name=name or prov["name"],
        architecture=prov["architecture"],
        method=prov["method"],
        needs_gsg_zoo=bool(prov.get("needs_gsg_zoo")),
        num_features=prov.get("num_features", timm_cfg.get("num_features")),
        license=prov.get("license") or pcfg.get("license") or "apache-2.0",
        hub_id=hub_id,
        pretrain_dataset=canonical_dataset(
            prov.get("pretrain_dataset") or (recipe.get("data") or {}).get("dataset")
        ),
        recipe=recipe,
        data_config={**pcfg, "input_size": prov.get("input_size") or pcfg.get("input_size")},
        results=normalize_results(raw, recipe),
        run_scalars=run_scalars(raw),
        checkpoint=prov.get("checkpoint") or {},
        weights_sha256=sha256_file(export_dir / WEIGHTS_FILE),
        has_curves=(export_dir / CURVES_FILE).is_file(),
        paper=load_paper_refs(recipe.get("name")),
        source=prov.get("source") or {},
        monitor={"online_probe": raw["online_probe"]} if raw.get("online_probe") else {},
    )
