"""`gsg demo` end to end at toy scale: data choice, pretrain, same-protocol evaluation, export, card."""

from __future__ import annotations

import json
import socket

import pytest
import timm
import torch
import torchvision.datasets as tvd
import yaml
from test_mnist import write_split_files
from test_pretrain import TINY

from gsg_zoo.app import demo
from gsg_zoo.app.demo import DemoData, choose_data, run_demo, summary_table
from gsg_zoo.zoo.report_results import knn_top1_at

SYNTHETIC = choose_data(synthetic=True)
AS_SHIPPED = ["model.backbone=resnet10t", "data.image_size=32", "data.batch_augment=true"]


def _no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("no network in this test")

    monkeypatch.setattr(socket, "create_connection", refuse)


def test_data_choice_found_missing_offline_downloaded(tmp_path, monkeypatch):
    write_split_files(tmp_path / "gsg" / "fashion-mnist")
    monkeypatch.setenv("GSG_DATA", str(tmp_path / "gsg"))
    found = choose_data()
    assert found == DemoData("fashion_mnist", str(tmp_path / "gsg" / "fashion-mnist"), found.why)
    assert "found in" in found.why
    assert choose_data(synthetic=True).dataset == "synthetic"

    missing = choose_data(str(tmp_path / "none"))
    assert (
        missing.dataset == "synthetic"
        and str(tmp_path / "none") in missing.why
        and "--download" in missing.why
    )
    _no_network(monkeypatch)
    offline = choose_data(str(tmp_path / "none"), download=True)
    assert offline.dataset == "synthetic" and "download failed" in offline.why and "no network" in offline.why

    monkeypatch.setattr(demo.socket, "create_connection", lambda *a, **k: socket.socket())
    monkeypatch.setattr(
        tvd.MNIST, "download", lambda self: write_split_files(tmp_path / "dl" / "FashionMNIST" / "raw")
    )
    fetched = choose_data(str(tmp_path / "dl"), download=True)
    assert fetched == DemoData(
        "fashion_mnist", str(tmp_path / "dl"), f"Fashion-MNIST downloaded to {tmp_path / 'dl'}"
    )


@pytest.mark.slow
def test_demo_runs_every_stage(tmp_path, capsys):
    out = tmp_path / "demo"
    summary = run_demo(out, "demo", [*TINY, *AS_SHIPPED, "train.epochs=1"], SYNTHETIC)
    printed = capsys.readouterr().out
    assert "=== gsg-zoo demo ===" in printed and "random init" in printed
    assert "data: synthetic (the built-in data was asked for (--synthetic))" in printed

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
    assert summary["embedding"] == str(out / "embed" / "embed_tsne_synthetic.png")
    coords = json.loads((out / "embed" / "embed_tsne_synthetic.json").read_text())
    assert coords["num_points"] == demo.EMBED_POINTS == len(coords["points"])

    export = out / "export"
    assert (export / "model.safetensors").is_file() and (export / "config.json").is_file()
    model = timm.create_model(f"local-dir:{export}", pretrained=True).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, model.num_features)

    (card,) = (out / "model_cards").glob("*/README.md")  # one folder per card
    assert card.parent.name.startswith("gsg-demo-") and (card.parent / "curves.png").is_file()
    text = card.read_text()
    assert (
        "resnet10t, random init seed 0 (same protocol) | raw pixels (same protocol)" in text
    )  # baseline columns
    front = yaml.safe_load(text.split("---")[1])
    assert front["library_name"] == "timm"
    measured = front["model-index"][0]["results"]
    assert any(abs(r["metrics"][0]["value"] - summary["knn_top1_pretrained"]) < 0.01 for r in measured)


@pytest.mark.slow
def test_fashion_mnist_demo_scores_all_backbones_alike_and_prints_its_results(tmp_path, capsys):
    write_split_files(tmp_path / "fm", n_train=200, n_test=40)
    out = tmp_path / "demo"
    summary = run_demo(
        out, None, [*TINY, "train.epochs=1", "train.max_steps_per_epoch=2"], choose_data(str(tmp_path / "fm"))
    )
    printed = capsys.readouterr().out
    assert f"data: fashion_mnist (Fashion-MNIST found in {tmp_path / 'fm'})" in printed

    evals = json.loads((out / "eval.json").read_text())
    knn = [evals[label]["knn"] for label in demo.LABELS]
    assert {r["dataset"] for r in knn} == {"fashion_mnist"} and {r["num_test"] for r in knn} == {40}
    assert {r["num_train"] for r in knn} == {200}
    assert len({r["protocol_settings"]["transform"] for r in knn}) == 1  # the same preprocessing
    assert len({json.dumps(evals[label]["linear_fast"]["config"]) for label in demo.LABELS}) == 1

    saved = json.loads((out / "demo_summary.json").read_text())
    assert saved == summary
    assert summary_table(saved) in printed  # the printed table is the results file's
    for label in demo.LABELS:  # ... and the results file is eval.json's numbers
        assert saved[f"knn_top1_{label}"] == knn_top1_at(evals[label]["knn"], demo.KNN_K, demo.KNN_T)
        assert saved[f"linear_fast_top1_{label}"] == evals[label]["linear_fast"]["top1"]
        row = summary_table(saved).splitlines()[3 + demo.LABELS.index(label)]
        assert row.endswith(
            f"| {saved[f'knn_top1_{label}']:.1f} | {saved[f'linear_fast_top1_{label}']:.1f} |"
        )
    assert saved["eval"]["num_test"] == 40 and saved["data"]["dataset"] == "fashion_mnist"


def test_backbones_scored_differently_are_refused():
    same = {
        "dataset": "d",
        "image_size": 32,
        "num_train": 5,
        "num_test": 3,
        "num_classes": 2,
        "protocol_settings": {},
    }
    lin = {
        "dataset": "d",
        "image_size": 32,
        "num_train": 5,
        "num_test": 3,
        "num_classes": 2,
        "config": {},
        "protocol": "fast",
    }
    evals = {label: {"knn": dict(same), "linear_fast": dict(lin)} for label in demo.LABELS}
    demo.check_same_protocol(evals)
    evals["pixels"]["knn"]["num_test"] = 4
    with pytest.raises(ValueError, match="knn num_test differs"):
        demo.check_same_protocol(evals)


@pytest.mark.slow
def test_demo_is_deterministic(tmp_path, monkeypatch):
    """The same seed gives the same digits."""
    monkeypatch.setattr(demo, "EMBED_POINTS", 100)  # the plot is not compared; t-SNE of 1,000 costs 5 s a run
    tiny = [
        *TINY,
        "data.image_size=32",
        "train.epochs=1",
        "train.max_steps_per_epoch=2",
        "data.synthetic.num_images=32",
    ]
    first, second = (run_demo(tmp_path / name, "demo", tiny, SYNTHETIC) for name in ("a", "b"))
    digits = [k for k in first if k.startswith(("knn_top1_", "linear_fast_top1_"))]
    assert len(digits) == 6 and {k: first[k] for k in digits} == {k: second[k] for k in digits}
