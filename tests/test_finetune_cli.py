"""``gsg eval finetune`` end to end on a tiny image folder: the report, exact resume from the per-epoch
checkpoint, refused checkpoints of other settings and clear errors for bad inputs."""

from __future__ import annotations

import json
import math

import pytest
import torch
from eval_fakes import write_imagefolder

from gsg_zoo.app.cli import main

MODEL = ["--model", "random:resnet10t", "--image-size", "32", "--workers", "0", "--quiet", "--no-cache"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    path = tmp_path_factory.mktemp("ft") / "if"
    write_imagefolder(path, n_train=12, n_test=4, k=3)  # 36 training images, 12 test
    return path


def _finetune(root, out, *extra: str) -> list[str]:
    return [
        "eval",
        "finetune",
        *MODEL,
        "--dataset",
        "imagefolder",
        "--data",
        str(root),
        "--out",
        str(out),
        *extra,
    ]


def test_default_protocol_report_names_protocol_fraction_and_subset(root, tmp_path):
    out = tmp_path / "out"
    assert main(_finetune(root, out, "--fraction", "50", "--epochs", "2", "--batch-size", "8")) == 0
    r = json.loads((out / "finetune_default_imagefolder_50pct.json").read_text())
    sub, s = r["label_subset"], r["protocol_settings"]
    assert r["evaluator"] == "finetune" and r["protocol"] == "default" and r["fraction"] == 50
    assert (
        sub["method"] == "class-balanced" and sub["seed"] == 0 and len(sub["indices"]) == 18 == r["num_train"]
    )
    assert sub["per_class_min"] == sub["per_class_max"] == 6
    assert s["overrides"] == ["batch_size", "epochs"] and s["precision"] == "fp32"
    assert r["training"]["total_steps"] == 2 * (18 // 8) and len(r["training"]["epochs"]) == 2
    assert 0 <= r["top1"] <= 100 and r["num_test"] == 12
    assert "50 % of the labels" in (out / "finetune_default_imagefolder_50pct.md").read_text()
    assert (out / "finetune_default_imagefolder_50pct.ckpt.pt").is_file()


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_an_interrupted_fine_tune_resumes_exactly(root, tmp_path):
    """SimCLR's protocol (LARS, repeated stream) for 3 epochs at once, and stopped after one epoch and
    rerun: the same weights bit for bit, and the same top-1."""
    args = ("--protocol", "simclr", "--fraction", "100", "--epochs", "3", "--batch-size", "16")
    assert main(_finetune(root, tmp_path / "a", *args)) == 0
    assert main(_finetune(root, tmp_path / "b", *args, "--stop-after-epochs", "1")) == 0
    stem = "finetune_simclr_imagefolder_100pct"
    assert (
        not (tmp_path / "b" / f"{stem}.json").exists()
        and _state(tmp_path / "b" / f"{stem}.ckpt.pt")["step"] == 2
    )
    assert main(_finetune(root, tmp_path / "b", *args)) == 0
    a, b = _state(tmp_path / "a" / f"{stem}.ckpt.pt"), _state(tmp_path / "b" / f"{stem}.ckpt.pt")
    assert a["step"] == b["step"] == 36 * 3 // 16 + 1
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    ra, rb = (json.loads((tmp_path / d / f"{stem}.json").read_text()) for d in "ab")
    assert ra["top1"] == rb["top1"]
    assert ra["protocol_settings"]["peak_lr"] == pytest.approx(0.005 * math.sqrt(16))
    assert ra["protocol_settings"]["optimizer"] == "lars" and ra["label_subset"]["method"] == "all"


def test_a_checkpoint_of_other_settings_is_refused(root, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(_finetune(root, out, "--epochs", "1", "--batch-size", "8", "--fraction", "50")) == 0
    assert main(_finetune(root, out, "--epochs", "2", "--batch-size", "8", "--fraction", "50")) == 1
    assert "is a fine-tune of other settings" in capsys.readouterr().err


@pytest.mark.parametrize("fraction", ["0", "101", "-5"])
def test_a_fraction_outside_0_100_is_a_clear_error(root, tmp_path, capsys, fraction):
    assert main(_finetune(root, tmp_path, "--fraction", fraction)) == 1
    assert "--fraction must be a percentage in (0, 100]" in capsys.readouterr().err


def test_a_subset_file_naming_missing_images_is_a_clear_error(root, tmp_path, capsys):
    names = tmp_path / "subset.txt"
    names.write_text("no_such_image.png\n")
    assert main(_finetune(root, tmp_path, "--subset-file", str(names))) == 1
    assert "names 1 of its 1 images that the training split lacks" in capsys.readouterr().err
