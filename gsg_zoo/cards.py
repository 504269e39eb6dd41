"""Model cards for exported backbones: Hub YAML front matter + what, how, results, usage, citations.

Every number in a card comes from the export's ``results.json`` (the run's ``summary.json``, plus
any results a caller measured and passed in) or its ``recipe.json``; the paper's numbers appear only
beside a result of the same method, protocol and dataset.

Results: ``results.json`` may hold ``"results": [{"task", "dataset", "metric", "value", ...}]``
(``task``: knn | linear | finetune; ``value`` in percent) and/or flat keys such as ``knn_top1``,
``final_knn_top1``, ``best_linear_top5`` (nested one level deep, e.g. ``{"final": {"knn_top1": ..}}``,
is flattened to ``final_knn_top1``), as ``gsg pretrain``'s ``summary.json`` writes them. Values are
percentages, shown as recorded. A kNN result measured on a subset (the pretraining monitor's
``train_limit``/``test_limit``) is labelled so and never put beside the paper's full-set numbers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import yaml

from .export import PROVENANCE_FILE, RECIPE_FILE, RESULTS_FILE, read_json, write_checksums

DEFAULT_CARDS_DIR = Path(__file__).resolve().parents[1] / "model_cards"

TASKS = {
    "knn": "kNN classification (frozen features)",
    "linear": "Linear probe (frozen features)",
    "finetune": "Fine-tuning",
}
METRICS = {"top1": "top-1 accuracy", "top5": "top-5 accuracy", "acc": "accuracy", "accuracy": "accuracy"}
DATASETS = {  # name in recipes -> (display name, Hub dataset id or None)
    "cifar10": ("CIFAR-10", "uoft-cs/cifar10"),
    "cifar100": ("CIFAR-100", "uoft-cs/cifar100"),
    "stl10": ("STL-10", None),
    "imagenet": ("ImageNet-1k", "ILSVRC/imagenet-1k"),
    "imagenet-1k": ("ImageNet-1k", "ILSVRC/imagenet-1k"),
    "synthetic": ("SyntheticShapes (gsg-zoo's procedural dataset)", None),
}
METHOD_NAMES = {
    "simsiam": "SimSiam",
    "simsiam_gsg": "SimSiam + GSG",
    "byol": "BYOL",
    "byol_gsg": "BYOL + GSG",
}
# The GSG paper (arXiv 2503.09058): (task, dataset) -> method -> top-1 %, with its setting.
PAPER_RESULTS: dict[tuple[str, str], dict[str, Any]] = {
    ("knn", "cifar10"): {
        "setting": "ResNet-18 (CIFAR stem), CIFAR-10 kNN",
        "top1": {"simsiam": 82.7, "simsiam_gsg": 86.4, "byol": 88.0, "byol_gsg": 90.3},
    },
    ("linear", "imagenet"): {
        "setting": "ResNet-50, ImageNet-1k linear probe, 100 epochs",
        "top1": {"simsiam": 67.9, "simsiam_gsg": 69.4, "byol": 69.9, "byol_gsg": 71.1},
    },
}
CITATIONS = {
    "GSG": """@inproceedings{lee2023gsg,
  title     = {Implicit Contrastive Representation Learning with Guided Stop-gradient},
  author    = {Lee, Byeongchan and Lee, Sehyun},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  year      = {2023},
  eprint    = {2503.09058},
  archivePrefix = {arXiv}
}""",
    "SimSiam": """@inproceedings{chen2021simsiam,
  title     = {Exploring Simple Siamese Representation Learning},
  author    = {Chen, Xinlei and He, Kaiming},
  booktitle = {IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages     = {15750--15758},
  year      = {2021}
}""",
    "BYOL": """@inproceedings{grill2020byol,
  title     = {Bootstrap Your Own Latent - A New Approach to Self-Supervised Learning},
  author    = {Grill, Jean-Bastien and Strub, Florian and Altch{\\'e}, Florent and Tallec, Corentin and
               Richemond, Pierre H. and Buchatskaya, Elena and Doersch, Carl and Avila Pires, Bernardo and
               Guo, Zhaohan Daniel and Gheshlaghi Azar, Mohammad and Piot, Bilal and Kavukcuoglu, Koray and
               Munos, R{\\'e}mi and Valko, Michal},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  year      = {2020}
}""",
}
_FLAT_RESULT = re.compile(
    r"^(?:(?P<qual>.+)_)?(?P<task>knn|linear|finetune)_(?P<metric>top1|top5|acc|accuracy)$"
)


# ------------------------------------------------------------------------------------------ results
def _baselines(r: dict[str, Any]) -> dict[str, float]:
    """``{name: value}`` of a result's reference models: ``baselines`` and/or ``baseline``/``baseline_name``."""
    out = {str(k): float(v) for k, v in (r.get("baselines") or {}).items() if v is not None}
    if r.get("baseline") is not None:
        out.setdefault(str(r.get("baseline_name", "baseline")), float(r["baseline"]))
    return out


def _canonical_dataset(name: str | None) -> str:
    name = (name or "unknown").lower()
    return "imagenet" if name in ("imagenet-1k", "imagenet1k", "in1k", "ilsvrc2012") else name


def _flatten(d: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "results":
            out.update({f"{k}_{kk}": vv for kk, vv in v.items() if not isinstance(vv, dict)})
        else:
            out[k] = v
    return out


def normalize_results(
    raw: dict[str, Any] | None, recipe: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Measured results as a list of ``{task, dataset, metric, value (%), split, protocol, source}``."""
    if not raw:
        return []
    recipe = recipe or {}
    monitor, data = recipe.get("monitor") or {}, recipe.get("data") or {}
    # The monitor's dataset is the kNN dataset; summary["dataset"] is the pretraining one.
    default_ds = (
        raw.get("eval_dataset") or monitor.get("dataset") or raw.get("dataset") or data.get("dataset")
    )
    knn = {**monitor, **(raw.get("knn_protocol") or {})}
    out: list[dict[str, Any]] = []
    for i, r in enumerate(raw.get("results") or []):
        missing = {"task", "dataset", "metric", "value"} - set(r)
        if missing:
            raise ValueError(f"results[{i}] lacks {sorted(missing)}: {r}")
        baselines = _baselines(r)
        out.append(
            {
                "task": str(r["task"]),
                "dataset": _canonical_dataset(r["dataset"]),
                "metric": str(r["metric"]),
                "value": float(r["value"]),
                "split": r.get("split", "test"),
                "protocol": r.get("protocol", ""),
                "full_protocol": bool(r.get("full_protocol", True)),
                "source": r.get("source", f"results[{i}]"),
                # optional: the same protocol on reference models (random init, raw pixels, ...)
                **({"baselines": baselines} if baselines else {}),
            }
        )  # fmt: skip
    for key, value in _flatten({k: v for k, v in raw.items() if k != "results"}).items():
        m = _FLAT_RESULT.match(key)
        if not m or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        task, qual = m["task"], m["qual"]
        protocol, full = "", True
        if task == "knn" and knn:
            protocol = f"k={knn.get('k')}, T={knn.get('t')}, cosine on L2-normalised pooled features"
            limits = [f"{n} {knn[f'{n}_limit']} images" for n in ("train", "test") if knn.get(f"{n}_limit")]
            if limits:
                protocol += "; subset: " + ", ".join(limits)
                full = False
        out.append(
            {
                "task": task,
                "dataset": _canonical_dataset(default_ds),
                "metric": m["metric"] + (f" ({qual.replace('_', ' ')})" if qual else ""),
                "value": float(value),
                "split": (knn.get("test_split") or knn.get("test") or "test") if task == "knn" else "test",
                "protocol": protocol,
                "full_protocol": full,
                "source": f"{RESULTS_FILE}:{key}",
            }
        )
    return out


def _dataset_name(ds: str) -> str:
    return DATASETS.get(ds, (ds, None))[0]


def _metric_name(r: dict[str, Any]) -> str:
    base, _, qual = r["metric"].partition(" ")
    return f"{TASKS.get(r['task'], r['task'])} {METRICS.get(base, base)}{(' ' + qual) if qual else ''}"


def paper_value(method: str, r: dict[str, Any]) -> float | None:
    """The paper's number for the same method, protocol and dataset as result ``r``, if any."""
    if not r["metric"].startswith("top1") or not r.get("full_protocol", True):
        return None
    entry = PAPER_RESULTS.get((r["task"], r["dataset"]))
    return entry["top1"].get(method) if entry else None


def model_index(name: str, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Hub's ``model-index`` (one entry per measured result)."""
    entries = []
    for r in results:
        hub_ds = DATASETS.get(r["dataset"], (None, None))[1]
        entries.append(
            {
                "task": {"type": "image-classification", "name": TASKS.get(r["task"], r["task"])},
                "dataset": {
                    "type": hub_ds or r["dataset"],
                    "name": _dataset_name(r["dataset"]),
                    "split": r["split"],
                },
                "metrics": [{"type": "accuracy", "name": _metric_name(r), "value": r["value"]}],
            }
        )
    return [{"name": name, "results": entries}] if entries else []


# --------------------------------------------------------------------------------------------- card
def build_model_card(
    export_dir: str | os.PathLike, name: str, *, hub_id: str | None = None, curves: str | None = "curves.png"
) -> str:
    """The card (Markdown with YAML front matter) of an export directory, from its own files."""
    export_dir = Path(export_dir)
    prov = read_json(export_dir / PROVENANCE_FILE) or {}
    recipe = read_json(export_dir / RECIPE_FILE) or {}
    raw = read_json(export_dir / RESULTS_FILE) or {}
    timm_cfg = read_json(export_dir / "config.json") or {}
    if not prov or not timm_cfg:
        raise FileNotFoundError(f"{export_dir} is not a gsg export ({PROVENANCE_FILE} / config.json missing)")
    results = normalize_results(raw, recipe)
    arch, method = prov["architecture"], prov["method"]
    method_name = METHOD_NAMES.get(method, method)
    base_method = method.removesuffix("_gsg")
    data = recipe.get("data") or {}
    pre_ds = _canonical_dataset(prov.get("pretrain_dataset") or data.get("dataset"))
    pcfg = timm_cfg.get("pretrained_cfg", {})
    license_ = prov.get("license") or pcfg.get("license") or "apache-2.0"
    hub_datasets = sorted({d for d in (DATASETS.get(x, (None, None))[1] for x in [pre_ds]) if d})

    front: dict[str, Any] = {
        "library_name": "timm",
        "pipeline_tag": "image-feature-extraction",
        "license": license_,
        "tags": ["timm", "image-feature-extraction", "self-supervised", "gsg", base_method]
        + (["guided-stop-gradient"] if method.endswith("_gsg") else []),
    }
    if hub_datasets:
        front["datasets"] = hub_datasets
    mi = model_index(name, results)
    if mi:
        front["model-index"] = mi

    spec = f"hf-hub:{hub_id}" if hub_id else f"local-dir:/path/to/{name}"
    gsg_import = (
        "import gsg_zoo  # registers the CIFAR-stem architecture with timm\n"
        if prov.get("needs_gsg_zoo")
        else ""
    )
    size = prov.get("input_size") or pcfg.get("input_size")
    lines: list[str] = [f"# {name}", ""]
    lines += [
        f"A **{arch}** backbone pretrained without labels by **{method_name}**"
        + (
            " (Guided Stop-Gradient, Lee & Lee, NeurIPS 2023, arXiv:2503.09058)"
            if method.endswith("_gsg")
            else ""
        )
        + f" on **{_dataset_name(pre_ds)}**, exported with gsg-zoo. It is the encoder's backbone only "
        f"(no projector or predictor), in timm format with `num_classes=0`: the model returns "
        f"{prov.get('num_features', timm_cfg.get('num_features'))}-d globally pooled features.",
        "",
    ]
    if prov.get("needs_gsg_zoo"):
        lines += [
            f"> **Note:** `{arch}` is a CIFAR-stem ResNet (3x3 stride-1 stem, no max-pool) registered by "
            "gsg-zoo. Run `import gsg_zoo` before `timm.create_model(...)`; stock timm alone does not "
            "know the architecture.",
            "",
        ]
    else:
        lines += ["It loads with stock timm alone (no gsg-zoo needed).", ""]

    # --- training
    lines += ["## Training", ""]
    rows = [
        ("Method", method_name),
        ("Architecture", f"`{arch}`"),
        ("Pretraining data", _dataset_name(pre_ds)),
        ("Epochs", (recipe.get("train") or {}).get("epochs")),
        (
            "Checkpoint epoch / step",
            f"{prov.get('checkpoint', {}).get('epoch')} / {prov.get('checkpoint', {}).get('step')}",
        ),
        ("Global batch", (recipe.get("train") or {}).get("batch_size")),
        ("Image size", data.get("image_size")),
        ("Augmentation", data.get("augmentation")),
        ("Input size / mean / std", f"{size} / {pcfg.get('mean')} / {pcfg.get('std')}"),
    ]
    optim = recipe.get("optim") or {}
    if optim:
        rows.append(
            ("Optimizer", ", ".join(f"{k}={v}" for k, v in optim.items() if not isinstance(v, (dict, list))))
        )
    lines += _table(["", ""], [(k, v) for k, v in rows if v not in (None, "", "None / None")])
    compute = {
        k: v
        for k, v in raw.items()
        if v is not None and not isinstance(v, (dict, list)) and not _FLAT_RESULT.match(k)
    }
    if compute:
        lines += ["", "Run summary (from the run's `summary.json`; compute and throughput as measured):", ""]
        lines += _table(["key", "value"], [(f"`{k}`", _fmt(v)) for k, v in compute.items()])
    if recipe:
        lines += [
            "",
            "<details><summary>Full training recipe (<code>recipe.json</code>)</summary>",
            "",
            "```yaml",
            yaml.safe_dump(recipe, sort_keys=False).rstrip(),
            "```",
            "</details>",
        ]
    lines.append("")

    # --- results
    lines += ["## Results", ""]
    if results:
        paper_cols = any(paper_value(method, r) is not None for r in results)
        baselines = list(dict.fromkeys(name for r in results for name in r.get("baselines", {})))
        header = (
            ["Protocol", "Dataset", "Metric", "This model"]
            + baselines
            + (["Paper (GSG, same method)"] if paper_cols else [])
        )
        rows = []
        for r in results:
            row = [
                TASKS.get(r["task"], r["task"]) + (f" ({r['protocol']})" if r["protocol"] else ""),
                _dataset_name(r["dataset"]),
                r["metric"],
                f"{r['value']:.2f}",
            ]
            row += [f"{r['baselines'][b]:.2f}" if b in r.get("baselines", {}) else "-" for b in baselines]
            if paper_cols:
                pv = paper_value(method, r)
                row.append(f"{pv:.1f} ({PAPER_RESULTS[(r['task'], r['dataset'])]['setting']})" if pv else "-")
            rows.append(row)
        lines += _table(header, rows)
        lines += ["", "All numbers are measured on this checkpoint (source: `results.json`)."]
    else:
        lines += ["No evaluation results were recorded for this checkpoint."]
    lines.append("")
    if curves and (export_dir / "curves.png").is_file():
        lines += ["## Training curves", "", f"![training curves]({curves})", ""]

    # --- usage
    lines += [
        "## Usage",
        "",
        "Pooled embeddings:",
        "",
        "```python",
        gsg_import + "import timm, torch",
        "",
        f'model = timm.create_model("{spec}", pretrained=True).eval()',
        "cfg = timm.data.resolve_data_config({}, model=model)",
        "transform = timm.data.create_transform(**cfg)  # input size, interpolation, crop, mean/std",
        "with torch.no_grad():",
        "    emb = model(transform(img).unsqueeze(0))  # img: a PIL image -> (1, num_features)",
        "```",
        "",
        "Classification head (a new, randomly initialised linear layer to train):",
        "",
        "```python",
        gsg_import + "import timm",
        "",
        f'model = timm.create_model("{spec}", pretrained=True, num_classes=10)',
        "```",
        "",
        "Feature maps (dense tasks):",
        "",
        "```python",
        gsg_import + "import timm",
        "",
        f'model = timm.create_model("{spec}", pretrained=True, features_only=True, out_indices=(1, 2, 3, 4))',
        "```",
        "",
    ]
    if hub_id:
        lines += [
            "With gsg-zoo (works offline from the Hugging Face cache with `HF_HUB_OFFLINE=1`):",
            "",
            "```python",
            "import gsg_zoo",
            "",
            f'model = gsg_zoo.load("{name}")',
            "```",
            "",
        ]

    # --- citation
    cites = ["GSG", "SimSiam" if base_method == "simsiam" else "BYOL"]
    lines += ["## Citation", ""]
    for c in cites:
        lines += ["```bibtex", CITATIONS[c], "```", ""]
    return "---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n\n" + "\n".join(lines)


def write_model_card(
    export_dir: str | os.PathLike,
    name: str,
    results: dict[str, Any] | None = None,
    *,
    hub_id: str | None = None,
    cards_dir: str | os.PathLike | None = DEFAULT_CARDS_DIR,
) -> Path:
    """Write ``export_dir/README.md`` (and ``cards_dir/NAME.md`` unless ``cards_dir`` is None).

    ``results``: measured results to add (merged into the export's ``results.json``, same schema);
    the export's checksums are refreshed. Returns the README's path.
    """
    export_dir = Path(export_dir)
    if results:
        normalize_results(results)  # validate before writing anything
        merged = {**(read_json(export_dir / RESULTS_FILE) or {}), **results}
        (export_dir / RESULTS_FILE).write_text(json.dumps(merged, indent=2) + "\n")
    readme = export_dir / "README.md"
    readme.write_text(build_model_card(export_dir, name, hub_id=hub_id))
    write_checksums(export_dir)
    if cards_dir is not None:
        write_repo_card(export_dir, name, cards_dir, hub_id=hub_id)
    return readme


def write_repo_card(
    export_dir: str | os.PathLike, name: str, cards_dir: str | os.PathLike, *, hub_id: str | None = None
) -> Path:
    """Write ``cards_dir/NAME.md`` (+ ``NAME.curves.png``) without touching the export; return the card."""
    export_dir, cards_dir = Path(export_dir), Path(cards_dir)
    cards_dir.mkdir(parents=True, exist_ok=True)
    curves = None
    if (export_dir / "curves.png").is_file():
        curves = f"{name}.curves.png"
        shutil.copyfile(export_dir / "curves.png", cards_dir / curves)
    card = cards_dir / f"{name}.md"
    card.write_text(build_model_card(export_dir, name, hub_id=hub_id, curves=curves))
    return card


def parse_front_matter(text: str) -> dict[str, Any]:
    """The YAML front matter of a card."""
    if not text.startswith("---\n"):
        raise ValueError("card has no YAML front matter")
    return yaml.safe_load(text[4 : text.index("\n---\n", 4)])


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _table(header: list[str], rows: list[Any]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out
