"""Cards carry fine-tune and semi-supervised results with their protocol and fraction, and the run's
online probe in a "Monitor" section (never as a linear-probe result)."""

from __future__ import annotations

from test_export import make_run

from gsg_zoo.zoo.card_data import normalize_results
from gsg_zoo.zoo.cards import model_index, parse_front_matter, write_model_card
from gsg_zoo.zoo.export import export_checkpoint
from gsg_zoo.zoo.report_results import card_results


def _report(fraction: float, top1: float, method: str = "class-balanced") -> dict:
    return {
        "evaluator": "finetune",
        "protocol": "simclr",
        "dataset": "fashion_mnist",
        "fraction": fraction,
        "top1": top1,
        "label_subset": {"method": method, "seed": 0 if method == "class-balanced" else None},
    }


def test_finetune_entries_carry_protocol_and_fraction():
    entries = [
        e for f in (1, 10) for e in card_results(_report(f, 50.0), baselines={"random": _report(f, 40.0)})
    ]
    assert [(e["task"], e["fraction"], e["protocol_name"]) for e in entries] == [
        ("finetune", 1, "simclr"),
        ("finetune", 10, "simclr"),
    ]
    assert "1 % of the labels (class-balanced, seed 0)" in entries[0]["protocol"]
    results = normalize_results({"results": entries})
    assert [r.fraction for r in results] == [1.0, 10.0]  # equal values, two measurements
    names = [e["metrics"][0]["name"] for e in model_index("m", results)[0]["results"]]
    assert names == ["Fine-tuning top-1 accuracy (1% labels)", "Fine-tuning top-1 accuracy (10% labels)"]
    assert results[0].baselines == {"random": 40.0}


def test_card_monitor_section_has_the_online_probe(tmp_path):
    probe = {"top1": 61.5, "train_top1": 55.25, "epoch": 2, "protocol": "online linear probe: ...",
             "curve": [[1, 40.0, 30.0], [2, 61.5, 55.25]]}  # fmt: skip
    ckpt, _ = make_run(tmp_path, summary={"knn_top1": 41.25, "online_probe": probe})
    export = export_checkpoint(ckpt, tmp_path / "export", "probe-card", verify=False)
    extra = {"results": card_results(_report(1, 70.0))}
    text = write_model_card(export, "probe-card", extra, cards_dir=None).read_text()
    monitor = text.split("## Monitor\n", 1)[1].split("\n## ", 1)[0]
    assert "| 2 | 61.50 | 55.25 |" in monitor and "online linear probe" in monitor
    index = parse_front_matter(text)["model-index"][0]["results"]
    tasks = [r["task"]["name"] for r in index]
    assert tasks == ["Fine-tuning", "kNN classification (frozen features)"]  # the probe is no result
