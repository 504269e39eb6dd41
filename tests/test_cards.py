"""Model cards: Hub front matter, model-index == measured results, paper numbers only where comparable.

Budget: ~10 s (two exports without their reload checks; the card's usage snippets run in-process).
"""

from __future__ import annotations

import json
import re

import pytest
import torch
import yaml
from PIL import Image
from test_export import make_run

from gsg_zoo.core.checksums import verify_export
from gsg_zoo.zoo import card_data
from gsg_zoo.zoo.card_data import (
    PaperRef,
    Result,
    comparable,
    load_paper_refs,
    normalize_results,
    parse_paper,
)
from gsg_zoo.zoo.cards import build_model_card, parse_front_matter, write_model_card, write_repo_card
from gsg_zoo.zoo.export import export_checkpoint

PAPER_RECIPES = [
    f"{d}_{m}" for d in ("cifar10", "imagenet") for m in ("simsiam", "simsiam_gsg", "byol", "byol_gsg")
]
PAPER_NUMBERS = {f"{p.value:.1f}" for name in PAPER_RECIPES for p in load_paper_refs(name)}
# The paper's CIFAR-10 kNN of SimSiam+GSG as the recipes would record it with its protocol.
CIFAR_KNN = {"knn_top1": {"value": 86.4, "split": "test", "k": 200, "t": 0.1}}


@pytest.fixture(scope="module")
def cifar_export(tmp_path_factory):
    run = tmp_path_factory.mktemp("card_run")
    ckpt, _ = make_run(run, summary={"knn_top1": 41.25, "images_per_s": 812.5, "epochs_done": 2})
    return export_checkpoint(ckpt, run / "export", "card-simsiam-gsg", verify=False)


@pytest.fixture(scope="module")
def synthetic_export(tmp_path_factory):
    run = tmp_path_factory.mktemp("card_syn")
    ckpt, _ = make_run(run, method="byol", dataset="synthetic", summary={"final": {"knn_top1": 77.5}})
    return export_checkpoint(ckpt, run / "export", "card-byol", verify=False, hub_id="org/card-byol")


def _section(text: str, title: str) -> str:
    return text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_front_matter_and_model_index_match_results(cifar_export):
    text = (cifar_export / "README.md").read_text()
    front = parse_front_matter(text)
    assert yaml.safe_load(text.split("---\n")[1]) == front
    assert front["library_name"] == "timm" and front["pipeline_tag"] == "image-feature-extraction"
    assert {"self-supervised", "gsg", "simsiam"} <= set(front["tags"]) and front["license"] == "apache-2.0"
    assert front["datasets"] == ["uoft-cs/cifar10"]
    results = normalize_results(
        json.loads((cifar_export / "results.json").read_text()),
        json.loads((cifar_export / "recipe.json").read_text()),
    )
    assert results == [
        Result(
            task="knn",
            dataset="cifar10",
            metric="top1",
            value=41.25,
            split="test",
            protocol="k=200, T=0.1, cosine on L2-normalised pooled features",
            k=200,
            t=0.1,
            full_protocol=True,
            source="results.json:knn_top1",
        )
    ]
    (mi,) = front["model-index"]
    assert mi["name"] == "card-simsiam-gsg"
    got = [(r["task"]["name"], r["dataset"]["name"], r["metrics"][0]["value"]) for r in mi["results"]]
    assert got == [("kNN classification (frozen features)", "CIFAR-10", 41.25)]


def test_paper_numbers_come_from_the_recipes():
    (ref,) = load_paper_refs("cifar10_simsiam_gsg")
    assert (ref.method, ref.architecture, ref.task, ref.dataset, ref.metric, ref.value) == (
        "simsiam_gsg",
        "resnet18_cifar",
        "knn",
        "cifar10",
        "top1",
        86.4,
    )
    assert {"82.7", "86.4", "88.0", "90.3", "67.9", "69.4", "69.9", "71.1"} <= PAPER_NUMBERS
    assert load_paper_refs("demo") == [] and load_paper_refs("no_such_recipe") == []
    assert load_paper_refs(None) == [] and load_paper_refs("../etc/passwd") == []


def test_paper_numbers_only_beside_same_protocol(cifar_export, synthetic_export, monkeypatch):
    cifar = _section((cifar_export / "README.md").read_text(), "Results")
    assert "Paper" not in cifar  # the export's recipe names no shipped recipe: no paper numbers at all
    assert not PAPER_NUMBERS & set(re.findall(r"\d+\.\d", cifar))
    syn = (synthetic_export / "README.md").read_text()
    assert "Paper" not in _section(syn, "Results") and "77.50" in _section(syn, "Results")
    assert not PAPER_NUMBERS & set(re.findall(r"\b\d+\.\d\b", syn))
    assert "datasets" not in parse_front_matter(syn)  # the procedural set is not a Hub dataset

    def refs(paper):
        monkeypatch.setattr(
            card_data,
            "load_paper_refs",
            lambda name: parse_paper(paper, "simsiam_gsg", "resnet18_cifar", "cifar10", 800),
        )
        return _section(build_model_card(cifar_export, "c"), "Results")

    same = refs(CIFAR_KNN)  # the run's kNN: k=200, T=0.1, full CIFAR-10 test split
    assert "| 41.25 | 86.4 (resnet18_cifar, 800 epochs; cifar10 test, k=200, T=0.1) |" in same
    for other in ({"t": 0.2}, {"k": 20}, {"split": "val"}, {"dataset": "cifar100"}):
        assert "86.4" not in refs({"knn_top1": {**CIFAR_KNN["knn_top1"], **other}}), other
    assert "86.4" not in refs({"knn_top1": 86.4})  # a bare number records no protocol: never shown
    assert "86.4" not in refs({"knn_top5": CIFAR_KNN["knn_top1"]})


def test_every_result_number_was_measured(synthetic_export):
    text = (synthetic_export / "README.md").read_text()
    rows = [r for r in _section(text, "Results").splitlines() if r.startswith("| kNN")]
    assert len(rows) == 1 and rows[0].split("|")[4].strip() == "77.50"
    (mi,) = parse_front_matter(text)["model-index"]
    assert [r["metrics"][0]["value"] for r in mi["results"]] == [77.5]
    assert mi["results"][0]["metrics"][0]["name"].endswith("(final)")


def test_citations_and_notes(cifar_export, synthetic_export):
    gsg = (cifar_export / "README.md").read_text()
    byol = (synthetic_export / "README.md").read_text()
    assert (
        "@inproceedings{lee2023gsg" in gsg
        and "@inproceedings{chen2021simsiam" in gsg
        and "grill2020" not in gsg
    )
    assert "@inproceedings{grill2020byol" in byol and "chen2021simsiam" not in byol and "lee2023gsg" in byol
    assert "`pip install gsg-zoo`, then run `import gsg_zoo` before" in gsg  # CIFAR stem
    assert "images_per_s" in _section(gsg, "Training") and "812.5" in gsg
    assert "![training curves](curves.png)" in gsg
    assert 'gsg_zoo.load("card-byol")' in byol and "hf-hub:org/card-byol" in byol


def test_write_model_card_merges_results_and_resigns(cifar_export, tmp_path):
    import shutil

    d = shutil.copytree(cifar_export, tmp_path / "exp")
    extra = {"results": [{"task": "linear", "dataset": "cifar10", "metric": "top1", "value": 55.5}]}
    readme = write_model_card(d, "card-simsiam-gsg", extra, cards_dir=tmp_path / "cards")
    verify_export(d)  # checksums refreshed after README / results.json changed
    front = parse_front_matter(readme.read_text())
    values = [r["metrics"][0]["value"] for r in front["model-index"][0]["results"]]
    assert sorted(values) == [41.25, 55.5]
    assert json.loads((d / "results.json").read_text())["results"] == extra["results"]
    folder = tmp_path / "cards" / "card-simsiam-gsg"  # one folder per card
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "curves.png"]
    assert "![training curves](curves.png)" in (folder / "README.md").read_text()
    assert (folder / "curves.png").read_bytes() == (d / "curves.png").read_bytes()
    with pytest.raises(ValueError, match="lacks"):
        write_model_card(d, "x", {"results": [{"task": "knn", "value": 1.0}]}, cards_dir=None)


def test_usage_snippets_run(cifar_export):
    text = (cifar_export / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", _section(text, "Usage"), re.S)
    assert len(blocks) == 3
    ns: dict = {"img": Image.new("RGB", (40, 40), (10, 120, 200))}
    for code in blocks:
        exec(code.replace("local-dir:/path/to/card-simsiam-gsg", f"local-dir:{cifar_export}"), ns)
    assert ns["emb"].shape == (1, 512)
    assert ns["model"].feature_info.reduction() == [1, 2, 4, 8]  # the last block: features_only
    with torch.no_grad():
        assert [o.shape[-1] for o in ns["model"].eval()(torch.randn(1, 3, 32, 32))] == [32, 16, 8, 4]


def test_subset_knn_is_labelled_and_not_compared_with_the_paper():
    (paper,) = parse_paper(CIFAR_KNN, "simsiam_gsg", "resnet18_cifar", "cifar10", 800)
    summary = {"knn_top1": 12.5, "dataset": "cifar10", "knn_protocol": {"k": 20, "t": 0.07, "test": "val"}}
    recipe = {"monitor": {"k": 200, "t": 0.1, "train_limit": 2000, "test_limit": 1000}}
    (r,) = normalize_results(summary, recipe)
    assert r.value == 12.5 and r.dataset == "cifar10" and r.split == "val"
    assert (
        r.protocol
        == "k=20, T=0.07, cosine on L2-normalised pooled features; subset: train 2000 images, test 1000 images"
    )
    assert r.full_protocol is False and not comparable(paper, r, "simsiam_gsg", "resnet18_cifar")
    # Full sets, but k=20, T=0.07 on a "val" split: still not the paper's protocol.
    (full,) = normalize_results(summary, {"monitor": {"train_limit": None, "test_limit": None}})
    assert full.full_protocol and (full.k, full.t, full.split) == (20, 0.07, "val")
    assert not comparable(paper, full, "simsiam_gsg", "resnet18_cifar")
    for ref in (p for name in PAPER_RECIPES for p in load_paper_refs(name)):  # nor any recipe's number
        assert not comparable(ref, full, ref.method, ref.architecture), ref
    # The paper's protocol (k=200, T=0.1, test): comparable for the same method and architecture only.
    (same,) = normalize_results({"knn_top1": 88.5, "dataset": "cifar10"}, {"monitor": {"k": 200, "t": 0.1}})
    assert comparable(paper, same, "simsiam_gsg", "resnet18_cifar")
    assert not comparable(paper, same, "byol_gsg", "resnet18_cifar")
    assert not comparable(paper, same, "simsiam_gsg", "resnet18")
    monitor = {"k": 200, "t": 0.1, "train_limit": 2000}  # the paper's protocol on a 2000-image bank
    (sub,) = normalize_results({"knn_top1": 40.0, "dataset": "cifar10"}, {"monitor": monitor})
    assert not sub.full_protocol and not comparable(paper, sub, "simsiam_gsg", "resnet18_cifar")
    (r,) = normalize_results(
        {"knn_top1": 50.0}, {"monitor": {"dataset": "cifar10"}, "data": {"dataset": "synthetic"}}
    )
    assert r.dataset == "cifar10"  # the monitor's dataset, not the pretraining one


def test_linear_paper_numbers_need_the_same_protocol_name():
    (ref,) = parse_paper(
        {"linear_top1": {"value": 69.4, "split": "val", "protocol": "reference"}},
        "simsiam_gsg",
        "resnet50",
        "imagenet",
        100,
    )
    assert (
        isinstance(ref, PaperRef) and ref.dataset == "imagenet" and ref.setting.endswith("protocol reference")
    )
    entry = {"task": "linear", "dataset": "imagenet-1k", "metric": "top1", "value": 70.0, "split": "val"}
    results = normalize_results(
        {"results": [{**entry, "protocol_name": "reference"}, {**entry, "protocol_name": "fast"}, entry]}
    )
    assert [comparable(ref, r, "simsiam_gsg", "resnet50") for r in results] == [True, False, False]


def test_normalize_results_rejects_incomplete_entries():
    with pytest.raises(ValueError, match="lacks"):
        normalize_results({"results": [{"task": "knn", "dataset": "cifar10", "value": 1}]})
    assert normalize_results({"loss": -0.9, "knn_top1": True}) == []
    assert normalize_results(None) == []


def test_baseline_columns_beside_the_measured_numbers(cifar_export, tmp_path):
    import shutil

    d = shutil.copytree(cifar_export, tmp_path / "exp")
    results = {
        "results": [
            {
                "task": "knn",
                "dataset": "synthetic",
                "metric": "top1",
                "value": 30.0,
                "baselines": {"random init": 14.0, "raw pixels": 19.5},
            },
            {
                "task": "linear",
                "dataset": "synthetic",
                "metric": "top1",
                "value": 33.0,
                "baseline": 15.0,
                "baseline_name": "random init",
            },  # the single-baseline form still works
        ]
    }
    (knn, lin) = normalize_results(results)
    assert knn.baselines == {"random init": 14.0, "raw pixels": 19.5} and lin.baselines == {
        "random init": 15.0
    }
    table = _section(write_model_card(d, "b", results, cards_dir=None).read_text(), "Results")
    assert "| This model | random init | raw pixels |" in table
    assert "| 30.00 | 14.00 | 19.50 |" in table and "| 33.00 | 15.00 | - |" in table


def test_cards_dir_is_the_checkouts_and_written_only_when_asked(cifar_export, tmp_path, monkeypatch):
    import shutil
    from pathlib import Path

    from gsg_zoo.core import layout
    from gsg_zoo.zoo import cards

    repo = Path(__file__).resolve().parents[1]
    assert cards.DEFAULT_CARDS_DIR == layout.checkout_cards_dir() == repo / "model_cards"
    assert (repo / "model_cards" / "README.md").is_file()
    before = sorted(p.name for p in (repo / "model_cards").iterdir())
    copy = shutil.copytree(cifar_export, tmp_path / "exp")
    write_model_card(copy, "c")  # the default: the export's README.md only
    assert sorted(p.name for p in (repo / "model_cards").iterdir()) == before
    # Installed (no model_cards/README.md beside the package): no default folder, and none is guessed.
    monkeypatch.setattr(
        layout, "__file__", str(tmp_path / "site-packages" / "gsg_zoo" / "core" / "layout.py")
    )
    assert layout.checkout_cards_dir() is None
    with pytest.raises(ValueError, match="--card-dir"):
        write_repo_card(cifar_export, "x", None)


def test_imagenet_paper_knn_only_beside_the_gsg_protocol():
    """The paper's ImageNet kNN (58.4) is GSG's main_knn.py protocol: k=200, T=0.2 alone does not match."""
    from gsg_zoo.zoo.card_data import Result, comparable, load_paper_refs

    (knn,) = [r for r in load_paper_refs("imagenet_simsiam_gsg") if r.task == "knn"]
    assert (knn.value, knn.k, knn.t, knn.protocol_name) == (58.4, 200, 0.2, "gsg")
    ours = Result("knn", knn.dataset, "top1", 55.0, split="test", k=200, t=0.2, protocol_name="gsg")
    assert comparable(knn, ours, "simsiam_gsg", "resnet50")
    default = Result("knn", knn.dataset, "top1", 55.0, split="test", k=200, t=0.2, protocol_name="default")
    assert not comparable(knn, default, "simsiam_gsg", "resnet50")
    (cifar,) = load_paper_refs("cifar10_simsiam_gsg")
    assert cifar.t is None  # the paper states k=200 only: no CIFAR result is put beside it
    assert not comparable(
        cifar, Result("knn", "cifar10", "top1", 80.0, k=200, t=0.1), "simsiam_gsg", "resnet18_cifar"
    )


def test_each_result_once_rounded_and_the_model_index_parses_back(tmp_path):
    """The same kNN run under two keys is one result; model-index values carry the card's 2 decimals
    (not float32 noise) and huggingface_hub reads task, dataset, metric and value of every result."""
    from huggingface_hub import ModelCard

    from gsg_zoo.zoo.cards import model_index

    raw = {"knn_top1": 15.700000524520874, "final_knn_top1": 15.700000524520874, "linear_top1": 20.123456}
    results = normalize_results(raw, {"monitor": {"k": 200, "t": 0.1}, "data": {"dataset": "cifar10"}})
    assert [(r.task, r.metric) for r in results] == [("knn", "top1"), ("linear", "top1")]  # kNN once
    index = model_index("demo", results)
    card = ModelCard("---\n" + yaml.safe_dump({"model-index": index}) + "---\n# demo\n")
    got = [(e.task_type, e.dataset_type, e.metric_type, e.metric_value) for e in card.data.eval_results]
    assert got == [
        ("image-classification", "uoft-cs/cifar10", "accuracy", 15.7),
        ("image-classification", "uoft-cs/cifar10", "accuracy", 20.12),
    ]
