"""Model cards for exported backbones: how a :class:`~gsg_zoo.zoo.card_data.CardData` is rendered.

A card is Hub YAML front matter plus one Markdown section per function below (intro, training,
results, monitor, curves, usage, citation). What the card says is read once by
:func:`gsg_zoo.zoo.card_data.read_card_data`; nothing here reads an export's files.

Where cards are written: ``EXPORT/README.md`` always (by ``gsg export``); a second copy
``CARDS_DIR/NAME/README.md`` (+ ``curves.png``) only when asked. ``DEFAULT_CARDS_DIR`` is the
checkout's ``model_cards/`` (the cards of the zoo manifest's entries), None once installed.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from ..core.checksums import write_checksums
from ..core.layout import CARD_FILE, CARDS_DIR_NAME, CURVES_FILE, RESULTS_FILE, checkout_cards_dir, read_json
from .card_data import CardData, Result, normalize_results, paper_match, read_card_data

DEFAULT_CARDS_DIR: Path | None = checkout_cards_dir()

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
    "synthetic": ("SyntheticShapes (gsg-zoo's procedural dataset)", None),
}
METHOD_NAMES = {
    "simsiam": "SimSiam",
    "simsiam_gsg": "SimSiam + GSG",
    "byol": "BYOL",
    "byol_gsg": "BYOL + GSG",
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


# ------------------------------------------------------------------------------------------ helpers
def _dataset_name(ds: str) -> str:
    return DATASETS.get(ds, (ds, None))[0]


def _method_name(method: str) -> str:
    return METHOD_NAMES.get(method, method)


def _metric_name(r: Result) -> str:
    base, _, qual = r.metric.partition(" ")
    return f"{TASKS.get(r.task, r.task)} {METRICS.get(base, base)}{(' ' + qual) if qual else ''}"


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _table(header: list[str], rows: list[Any]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def _code(lang: str, body: str) -> list[str]:
    return [f"```{lang}", body.rstrip("\n"), "```", ""]


# ------------------------------------------------------------------------------------ front matter
def model_index(name: str, results: list[Result]) -> list[dict[str, Any]]:
    """The Hub's ``model-index`` (one entry per measured result)."""
    entries = [
        {
            "task": {"type": "image-classification", "name": TASKS.get(r.task, r.task)},
            "dataset": {
                "type": DATASETS.get(r.dataset, (None, None))[1] or r.dataset,
                "name": _dataset_name(r.dataset),
                "split": r.split,
            },
            "metrics": [{"type": "accuracy", "name": _metric_name(r), "value": round(r.value, 2)}],  # percent
        }
        for r in results
    ]
    return [{"name": name, "results": entries}] if entries else []


def front_matter(card: CardData) -> dict[str, Any]:
    """The Hub metadata: library, pipeline, license, tags, datasets, model-index."""
    front: dict[str, Any] = {
        "library_name": "timm",
        "pipeline_tag": "image-feature-extraction",
        "license": card.license,
        "tags": ["timm", "image-feature-extraction", "self-supervised", "gsg", card.base_method]
        + (["guided-stop-gradient"] if card.is_gsg else []),
    }
    if card.imported:
        known = [t for t in front["tags"] if t != "unknown"]
        front["tags"] = [*known, "gsg-import", f"from-{card.source.get('format')}"]
    hub_dataset = DATASETS.get(card.pretrain_dataset, (None, None))[1]
    if hub_dataset:
        front["datasets"] = [hub_dataset]
    index = model_index(card.name, card.results)
    if index:
        front["model-index"] = index
    return front


def parse_front_matter(text: str) -> dict[str, Any]:
    """The YAML front matter of a card."""
    if not text.startswith("---\n"):
        raise ValueError("card has no YAML front matter")
    return yaml.safe_load(text[4 : text.index("\n---\n", 4)])


# ---------------------------------------------------------------------------------------- sections
def _imported_intro(card: CardData) -> str:
    src = card.source
    method = (
        f"Training method: **{_method_name(card.method)}** (stated by whoever imported it; the file does "
        "not record it)."
        if src.get("method_stated_by_user")
        else "The file does not record the training method."
    )
    return (
        f"A **{card.architecture}** backbone converted by `gsg import` from a checkpoint of "
        f"{src.get('code')} (format `{src.get('format')}`, {src.get('encoder')} encoder). It is the "
        "backbone only (no projector, predictor or classifier), in timm format with `num_classes=0`: the "
        f"model returns {card.num_features}-d globally pooled features. {method} Nothing on this card "
        "was measured on these weights except the conversion check below."
    )


def section_intro(card: CardData) -> list[str]:
    if card.imported:
        lines = [f"# {card.name}", "", _imported_intro(card), ""]
        return lines + (_cifar_note(card) if card.needs_gsg_zoo else ["It loads with stock timm alone.", ""])
    gsg = " (Guided Stop-Gradient, Lee & Lee, NeurIPS 2023, arXiv:2503.09058)" if card.is_gsg else ""
    lines = [
        f"# {card.name}",
        "",
        f"A **{card.architecture}** backbone pretrained without labels by **{_method_name(card.method)}**"
        f"{gsg} on **{_dataset_name(card.pretrain_dataset)}**, exported with gsg-zoo. It is the encoder's "
        "backbone only (no projector or predictor), in timm format with `num_classes=0`: the model "
        f"returns {card.num_features}-d globally pooled features.",
        "",
    ]
    if card.needs_gsg_zoo:
        return lines + _cifar_note(card)
    return lines + ["It loads with stock timm alone (no gsg-zoo needed).", ""]


def _cifar_note(card: CardData) -> list[str]:
    return [
        f"> **Note:** `{card.architecture}` is a CIFAR-stem ResNet (3x3 stride-1 stem, no max-pool) "
        "registered by gsg-zoo. `pip install gsg-zoo`, then run `import gsg_zoo` before "
        "`timm.create_model(...)` or transformers' `from_pretrained(...)`; stock timm alone does not "
        "know the architecture.",
        "",
    ]


def _dropped(dropped: dict[str, int]) -> str:
    return "; ".join(f"`{g}` ({n} tensors)" if n else f"`{g}` (no tensors)" for g, n in dropped.items())


def section_source(card: CardData) -> list[str]:
    """Where an imported backbone came from and how it was converted (nothing for a gsg-zoo export)."""
    if not card.imported:
        return []
    src, ck = card.source, card.checkpoint
    meta = ", ".join(f"{k}={v}" for k, v in (src.get("metadata") or {}).items())
    rows = [
        ("Source format", f"`{src.get('format')}`: {src.get('code')}"),
        ("Source file", f"`{ck.get('file')}`, sha256 `{ck.get('sha256')}`"),
        ("Source metadata", meta or "none"),
        ("Conversion", src.get("conversion")),
        ("Layout checked against", src.get("layout_reference")),
        ("Dropped", _dropped(src.get("dropped") or {}) or "nothing"),
        ("Preprocessing", "gsg-zoo's default for the architecture (the file records none)"),
        *[("Assumption", note) for note in src.get("notes") or []],
    ]
    return ["## Source checkpoint", "", *_table(["", ""], rows), ""]


def _training_rows(card: CardData) -> list[tuple[str, Any]]:
    train, data, optim = (card.recipe.get(k) or {} for k in ("train", "data", "optim"))
    cfg, ck = card.data_config, card.checkpoint
    rows = [
        ("Method", _method_name(card.method)),
        ("Architecture", f"`{card.architecture}`"),
        ("Pretraining data", _dataset_name(card.pretrain_dataset)),
        ("Epochs", train.get("epochs")),
        ("Checkpoint epoch / step", f"{ck.get('epoch')} / {ck.get('step')}"),
        ("Global batch", train.get("batch_size")),
        ("Image size", data.get("image_size")),
        ("Augmentation", data.get("augmentation")),
        ("Input size / mean / std", f"{cfg.get('input_size')} / {cfg.get('mean')} / {cfg.get('std')}"),
        ("Weights sha256", f"`{card.weights_sha256}`"),
    ]
    scalars = ", ".join(f"{k}={v}" for k, v in optim.items() if not isinstance(v, (dict, list)))
    rows += [("Optimizer", scalars)] if scalars else []
    return [(k, v) for k, v in rows if v not in (None, "", "None / None")]


def section_training(card: CardData) -> list[str]:
    lines = ["## Training", "", *_table(["", ""], _training_rows(card))]
    if card.run_scalars:
        lines += ["", "Run summary (from the run's `summary.json`; compute and throughput as measured):", ""]
        lines += _table(["key", "value"], [(f"`{k}`", _fmt(v)) for k, v in card.run_scalars.items()])
    if card.recipe:
        lines += ["", "<details><summary>Full training recipe (<code>recipe.json</code>)</summary>", ""]
        lines += _code("yaml", yaml.safe_dump(card.recipe, sort_keys=False)) + ["</details>"]
    return lines + [""]


def _result_row(card: CardData, r: Result, baselines: list[str], paper_col: bool) -> list[str]:
    row = [
        TASKS.get(r.task, r.task) + (f" ({r.protocol})" if r.protocol else ""),
        _dataset_name(r.dataset),
        r.metric,
        f"{r.value:.2f}",
    ]
    row += [f"{r.baselines[b]:.2f}" if b in r.baselines else "-" for b in baselines]
    if paper_col:
        ref = paper_match(card, r)
        row.append(f"{ref.value:.1f} ({ref.setting})" if ref else "-")
    return row


def section_results(card: CardData) -> list[str]:
    """Measured results, their baselines, and the paper's number where measured the same way."""
    if not card.results:
        return ["## Results", "", "No evaluation results were recorded for this checkpoint.", ""]
    paper_col = any(paper_match(card, r) for r in card.results)
    baselines = list(dict.fromkeys(b for r in card.results for b in r.baselines))
    header = ["Protocol", "Dataset", "Metric", "This model", *baselines]
    header += ["Paper (GSG, same method and protocol)"] if paper_col else []
    rows = [_result_row(card, r, baselines, paper_col) for r in card.results]
    note = f"All numbers are measured on this checkpoint (source: `{RESULTS_FILE}`)."
    return ["## Results", "", *_table(header, rows), "", note, ""]


def section_monitor(card: CardData) -> list[str]:
    """The run's online linear probe: its top-1 per epoch and what it measures (none without one)."""
    probe = card.monitor.get("online_probe")
    if not probe:
        return []
    rows = [(e, _pct(t), _pct(tr)) for e, t, tr in probe.get("curve", [])]
    return [
        "## Monitor",
        "",
        f"Online linear probe during pretraining ({probe.get('protocol', '')}):",
        "",
        *_table(["epoch", "top-1 (test images)", "top-1 (training batches)"], rows),
        "",
    ]


def _pct(v: Any) -> str:
    return "-" if v is None else f"{v:.2f}"


def section_curves(card: CardData, curves: str | None) -> list[str]:
    if not (curves and card.has_curves):
        return []
    return ["## Training curves", "", f"![training curves]({curves})", ""]


def section_usage(card: CardData) -> list[str]:
    spec = f"hf-hub:{card.hub_id}" if card.hub_id else f"local-dir:/path/to/{card.name}"
    head = "import gsg_zoo  # registers the CIFAR-stem architecture with timm\n" if card.needs_gsg_zoo else ""
    embed = (
        f'{head}import timm, torch\n\nmodel = timm.create_model("{spec}", pretrained=True).eval()\n'
        "cfg = timm.data.resolve_data_config({}, model=model)\n"
        "transform = timm.data.create_transform(**cfg)  # input size, interpolation, crop, mean/std\n"
        "with torch.no_grad():\n"
        "    emb = model(transform(img).unsqueeze(0))  # img: a PIL image -> (1, num_features)\n"
    )
    head_fc = f'{head}import timm\n\nmodel = timm.create_model("{spec}", pretrained=True, num_classes=10)\n'
    dense = (
        f'{head}import timm\n\nmodel = timm.create_model("{spec}", pretrained=True, features_only=True, '
        "out_indices=(1, 2, 3, 4))\n"
    )
    lines = ["## Usage", "", "Pooled embeddings:", "", *_code("python", embed)]
    lines += ["Classification head (a new, randomly initialised linear layer to train):", ""]
    lines += [*_code("python", head_fc), "Feature maps (dense tasks):", "", *_code("python", dense)]
    if card.hub_id:
        lines += ["With gsg-zoo (works offline from the Hugging Face cache with `HF_HUB_OFFLINE=1`):", ""]
        lines += _code("python", f'import gsg_zoo\n\nmodel = gsg_zoo.load("{card.name}")\n')
    return lines


def section_transformers(card: CardData) -> list[str]:
    """The transformers entry points (its timm wrapper builds the model with ``num_classes=0``)."""
    path = card.hub_id or f"/path/to/{card.name}"
    head = "import gsg_zoo  # registers the CIFAR-stem architecture with timm\n" if card.needs_gsg_zoo else ""
    code = (
        f"{head}import torch\nfrom transformers import AutoImageProcessor, AutoModel, "
        f'AutoModelForImageClassification, pipeline\n\nprocessor = AutoImageProcessor.from_pretrained("{path}")\n'
        f'model = AutoModel.from_pretrained("{path}").eval()\n'
        "with torch.no_grad():  # img: a PIL image -> (1, num_features), timm's features\n"
        '    emb = model(**processor(img, return_tensors="pt")).pooler_output\n'
        f'extract = pipeline("image-feature-extraction", model="{path}", pool=True)\n'
        f'classifier = AutoModelForImageClassification.from_pretrained("{path}", num_labels=10)  # new head\n'
    )
    lines = ["## Usage with transformers", "", "The same features through Hugging Face transformers:", ""]
    lines += _code("python", code)
    if card.needs_gsg_zoo:  # transformers' own message would suggest upgrading timm, which does not help
        lines += [
            f"Without `import gsg_zoo`, transformers stops with `ImportError: The model architecture "
            f"'{card.architecture}' is not supported in your version of timm`: install and import gsg-zoo "
            "instead of upgrading timm.",
            "",
        ]
    return lines


def section_citation(card: CardData) -> list[str]:
    cites = ["GSG", "SimSiam" if card.base_method == "simsiam" else "BYOL"]
    if card.imported:  # only what is known: the stated method's papers
        known = {"simsiam": "SimSiam", "byol": "BYOL"}
        cites = (["GSG"] if card.is_gsg else []) + (
            [known[card.base_method]] if card.base_method in known else []
        )
    if not cites:
        return []
    return ["## Citation", ""] + [line for c in cites for line in _code("bibtex", CITATIONS[c])]


def render_card(card: CardData, curves: str | None = CURVES_FILE) -> str:
    """The card (Markdown with YAML front matter); ``curves``: the image's path relative to the card."""
    body = [
        *section_intro(card),
        *section_source(card),
        *section_training(card),
        *section_results(card),
        *section_monitor(card),
        *section_curves(card, curves),
        *section_usage(card),
        *section_transformers(card),
        *section_citation(card),
    ]
    return "---\n" + yaml.safe_dump(front_matter(card), sort_keys=False) + "---\n\n" + "\n".join(body)


def build_model_card(
    export_dir: str | os.PathLike, name: str, *, hub_id: str | None = None, curves: str | None = CURVES_FILE
) -> str:
    """The card of an export directory, from its own files."""
    return render_card(read_card_data(export_dir, name, hub_id), curves)


# ------------------------------------------------------------------------------------------ writing
def write_model_card(
    export_dir: str | os.PathLike,
    name: str,
    results: dict[str, Any] | None = None,
    *,
    hub_id: str | None = None,
    cards_dir: str | os.PathLike | None = None,
) -> Path:
    """Write ``export_dir/README.md`` (and ``cards_dir/NAME/README.md`` when ``cards_dir`` is given).

    ``results``: measured results to add (merged into the export's ``results.json``, same schema);
    the export's checksums are refreshed. Returns the README's path.
    """
    export_dir = Path(export_dir)
    if results:
        normalize_results(results)  # validate before writing anything
        merged = {**(read_json(export_dir / RESULTS_FILE) or {}), **results}
        (export_dir / RESULTS_FILE).write_text(json.dumps(merged, indent=2) + "\n")
    readme = export_dir / CARD_FILE
    readme.write_text(build_model_card(export_dir, name, hub_id=hub_id))
    write_checksums(export_dir)
    if cards_dir is not None:
        write_repo_card(export_dir, name, cards_dir, hub_id=hub_id)
    return readme


def write_repo_card(
    export_dir: str | os.PathLike,
    name: str,
    cards_dir: str | os.PathLike | None,
    *,
    hub_id: str | None = None,
) -> Path:
    """Write ``cards_dir/NAME/README.md`` (+ ``curves.png``) without touching the export; return the card.

    ``cards_dir`` None (an installed package has no ``model_cards/``) is refused with a clear error.
    """
    if cards_dir is None:
        raise ValueError(
            f"no {CARDS_DIR_NAME}/ folder: it exists only in a gsg-zoo checkout; name one with --card-dir"
        )
    export_dir, folder = Path(export_dir), Path(cards_dir) / name
    folder.mkdir(parents=True, exist_ok=True)
    card = read_card_data(export_dir, name, hub_id)
    if card.has_curves:
        shutil.copyfile(export_dir / CURVES_FILE, folder / CURVES_FILE)
    (folder / CARD_FILE).write_text(render_card(card, CURVES_FILE))
    return folder / CARD_FILE
