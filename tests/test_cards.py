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

from gsg_zoo.cards import PAPER_RESULTS, normalize_results, paper_value, parse_front_matter, write_model_card
from gsg_zoo.export import export_checkpoint, verify_export

PAPER_NUMBERS = {f"{v:.1f}" for e in PAPER_RESULTS.values() for v in e["top1"].values()}


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
        {
            "task": "knn",
            "dataset": "cifar10",
            "metric": "top1",
            "value": 41.25,
            "split": "test",
            "protocol": "k=200, T=0.1, cosine on L2-normalised pooled features",
            "full_protocol": True,
            "source": "results.json:knn_top1",
        }
    ]
    (mi,) = front["model-index"]
    assert mi["name"] == "card-simsiam-gsg"
    got = [(r["task"]["name"], r["dataset"]["name"], r["metrics"][0]["value"]) for r in mi["results"]]
    assert got == [("kNN classification (frozen features)", "CIFAR-10", 41.25)]


def test_paper_numbers_only_beside_same_protocol(cifar_export, synthetic_export):
    cifar = _section((cifar_export / "README.md").read_text(), "Results")
    assert "| 41.25 | 86.4 (ResNet-18 (CIFAR stem), CIFAR-10 kNN) |" in cifar  # SimSiam+GSG, CIFAR-10 kNN
    assert not (PAPER_NUMBERS - {"86.4"}) & set(re.findall(r"\d+\.\d", cifar))
    syn = (synthetic_export / "README.md").read_text()
    assert "Paper" not in _section(syn, "Results") and "77.50" in _section(syn, "Results")
    assert not PAPER_NUMBERS & set(re.findall(r"\b\d+\.\d\b", syn))
    assert "datasets" not in parse_front_matter(syn)  # the procedural set is not a Hub dataset


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
    assert "Run `import gsg_zoo` before" in gsg  # CIFAR stem
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
    card = (tmp_path / "cards" / "card-simsiam-gsg.md").read_text()
    assert "![training curves](card-simsiam-gsg.curves.png)" in card
    assert (tmp_path / "cards" / "card-simsiam-gsg.curves.png").read_bytes() == (
        d / "curves.png"
    ).read_bytes()
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
    summary = {"knn_top1": 12.5, "dataset": "cifar10", "knn_protocol": {"k": 20, "t": 0.07, "test": "val"}}
    recipe = {"monitor": {"k": 200, "t": 0.1, "train_limit": 2000, "test_limit": 1000}}
    (r,) = normalize_results(summary, recipe)
    assert r["value"] == 12.5 and r["dataset"] == "cifar10" and r["split"] == "val"
    assert (
        r["protocol"]
        == "k=20, T=0.07, cosine on L2-normalised pooled features; subset: train 2000 images, test 1000 images"
    )
    assert r["full_protocol"] is False and paper_value("simsiam_gsg", r) is None
    (full,) = normalize_results(summary, {"monitor": {"train_limit": None, "test_limit": None}})
    assert paper_value("simsiam_gsg", full) == 86.4 and paper_value("byol", full) == 88.0
    (r,) = normalize_results(
        {"knn_top1": 50.0}, {"monitor": {"dataset": "cifar10"}, "data": {"dataset": "synthetic"}}
    )
    assert r["dataset"] == "cifar10"  # the monitor's dataset, not the pretraining one


def test_normalize_results_rejects_incomplete_entries():
    with pytest.raises(ValueError, match="lacks"):
        normalize_results({"results": [{"task": "knn", "dataset": "cifar10", "value": 1}]})
    assert normalize_results({"loss": -0.9, "knn_top1": True}) == []
    assert normalize_results(None) == []


def test_baseline_columns_beside_the_measured_numbers(cifar_export, tmp_path):
    import shutil

    d = shutil.copytree(cifar_export, tmp_path / "exp")
    results = {"results": [
        {"task": "knn", "dataset": "synthetic", "metric": "top1", "value": 30.0,
         "baselines": {"random init": 14.0, "raw pixels": 19.5}},
        {"task": "linear", "dataset": "synthetic", "metric": "top1", "value": 33.0,
         "baseline": 15.0, "baseline_name": "random init"},  # the single-baseline form still works
    ]}  # fmt: skip
    (knn, lin) = normalize_results(results)
    assert knn["baselines"] == {"random init": 14.0, "raw pixels": 19.5} and lin["baselines"] == {
        "random init": 15.0
    }
    table = _section(write_model_card(d, "b", results, cards_dir=None).read_text(), "Results")
    assert "| This model | random init | raw pixels |" in table
    assert "| 30.00 | 14.00 | 19.50 |" in table and "| 33.00 | 15.00 | - |" in table
