"""`gsg demo` end to end at toy scale: pretrain, kNN + fast probe, export, timm reload, card, summary."""

from __future__ import annotations

import json

import pytest
import timm
import torch
import yaml
from test_pretrain import TINY

from gsg_zoo.demo import run_demo

pytestmark = pytest.mark.slow


def test_demo_runs_every_stage(tmp_path, capsys):
    out = tmp_path / "demo"
    summary = run_demo(
        out, "demo", [*TINY, "model.backbone=resnet10t", "data.image_size=32", "train.epochs=1",
                      "data.batch_augment=true"]  # as the demo recipe ships
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert "=== gsg-zoo demo ===" in printed and "random init" in printed

    assert json.loads((out / "demo_summary.json").read_text()) == summary
    for key in (
        "knn_top1_pretrained",
        "knn_top1_random_init",
        "knn_top1_pixels",
        "linear_fast_top1_pretrained",
    ):
        assert 0.0 <= summary[key] <= 100.0
    assert set(summary["timings_s"]) >= {"pretrain_s", "eval_s", "export_s", "total_s"}
    assert (out / "pretrain" / "curves.png").stat().st_size > 0

    export = out / "export"
    assert (export / "model.safetensors").is_file() and (export / "config.json").is_file()
    model = timm.create_model(f"local-dir:{export}", pretrained=True).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, model.num_features)

    (card,) = (out / "model_cards").glob("*/README.md")  # one folder per card
    assert card.parent.name.startswith("gsg-demo-") and (card.parent / "curves.png").is_file()
    text = card.read_text()
    assert "resnet10t, random init (same protocol) | raw pixels (same protocol)" in text  # baseline columns
    front = yaml.safe_load(text.split("---")[1])
    assert front["library_name"] == "timm"
    measured = front["model-index"][0]["results"]
    assert any(abs(r["metrics"][0]["value"] - summary["knn_top1_pretrained"]) < 0.01 for r in measured)
