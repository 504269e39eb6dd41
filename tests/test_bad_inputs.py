"""Bad inputs a new user tries get a clear error before anything runs (issue #25, point 10).

Budget: ~10 s on 2 CPU cores (one tiny export without its reload check; no training step).
"""

from __future__ import annotations

import re
import shutil

import pytest
import torch
from PIL import Image

from gsg_zoo import LearnerConfig, SelfSupervisedLearner
from gsg_zoo.app.cli import main
from gsg_zoo.config.recipes import load_recipe
from gsg_zoo.core.checkpoint import save_checkpoint
from gsg_zoo.core.checksums import ExportIntegrityError, sha256_file
from gsg_zoo.zoo.export import export_checkpoint
from gsg_zoo.zoo.load import load_backbone


def _usage_error(argv: list[str], capsys) -> str:
    """Run ``gsg ARGV``; assert it is refused as a usage error (exit 2); return stderr."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs=-1", r"train\.epochs=-1 is out of range: it must be >= 1"),
        ("train.epochs=0", r"train\.epochs=0 is out of range"),
        ("train.batch_size=1", r"train\.batch_size=1 is out of range: it must be >= 2 \(GSG pairs"),
        ("optim.lr=0", r"optim\.lr=0 is out of range: it must be > 0"),
        ("data.loader.num_workers=-1", r"data\.loader\.num_workers=-1 .* >= 0"),
        ("data.grayscale_p=1.5", r"data\.grayscale_p=1\.5 .* in \[0, 1\]"),
        ("data.max_consecutive_failures=0", r"data\.max_consecutive_failures=0 .* >= 1"),
        ("train.epochs=two", r"train\.epochs"),
        ("optim.momentum=1", r"optim\.momentum=1 .* in \[0, 1\)"),
        ("optim.optimizer=adam", r"optim\.optimizer='adam' is not one of sgd, lars"),
        ("train.precision=fp8", r"train\.precision='fp8' is not one of auto, fp32, bf16, fp16"),
    ],
)
def test_out_of_range_values_are_usage_errors_before_anything_runs(override, message, tmp_path, capsys):
    err = _usage_error(["pretrain", "demo", "--out", str(tmp_path / "run"), "--set", override], capsys)
    assert "gsg pretrain: error:" in err
    assert re.search(message, err), err
    assert not (tmp_path / "run").exists()  # nothing ran, nothing was written


def test_yaml_reads_on_as_true_sync_bn_keeps_the_word():
    assert load_recipe("demo", ["train.sync_bn=on"]).train.sync_bn == "on"  # not True (= silently off)
    assert load_recipe("demo", ["train.sync_bn=off"]).train.sync_bn == "off"


def test_yaml_syntax_error_names_file_line_and_column(tmp_path, capsys):
    bad = tmp_path / "mine.yaml"
    bad.write_text("base: demo\ntrain:\n  epochs: 3\n  batch_size: [4\n")
    with pytest.raises(ValueError, match=r"mine\.yaml: YAML syntax error at line 5, column 1"):
        load_recipe(str(bad))
    err = _usage_error(["pretrain", str(bad), "--out", str(tmp_path / "run")], capsys)
    assert "mine.yaml: YAML syntax error at line 5, column 1" in err
    assert "Traceback" not in err


def test_out_naming_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    err = _usage_error(["pretrain", "demo", "--out", str(tmp_path / "notes.txt")], capsys)
    assert "is a file; it must name a run directory" in err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_missing_monitor_split_is_reported_before_training(tmp_path, capsys):
    """ImageFolder with only train/: the kNN monitor's test/ split is missing. Said before training,
    naming the directory expected and how to turn the monitor off; the run directory stays unwritten."""
    for cls in ("a", "b"):
        (tmp_path / "data" / "train" / cls).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (16, 16), (60 * i, 0, 0)).save(tmp_path / "data" / "train" / cls / f"{i}.png")
    argv = [
        "pretrain",
        "demo",
        "--out",
        str(tmp_path / "run"),
        "--data",
        str(tmp_path / "data"),
        "--set",
        "data.dataset=imagefolder",
        "--set",
        "train.batch_size=4",
        "--no-progress",
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "monitor.test_split" in err and str(tmp_path / "data" / "test") in err
    assert "--set monitor.every=-1" in err
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    """A real ``gsg export`` of a tiny checkpoint (without the fresh-process reload check)."""
    root = tmp_path_factory.mktemp("run")
    cfg = LearnerConfig.for_method(
        "simsiam_gsg",
        backbone="resnet18_cifar",
        projector_hidden_dim=16,
        projector_dim=8,
        predictor_hidden_dim=4,
    )
    config = {"model": cfg.to_dict(), "data": {"image_size": 32, "dataset": "cifar10"}}
    learner = SelfSupervisedLearner(cfg)
    save_checkpoint(root / "last.pt", {"config": config, "model": learner.state_dict(), "epoch": 1})
    return export_checkpoint(root / "last.pt", root / "export", "tiny", verify=False)


def test_flipped_bit_in_export_is_refused_by_gsg_loaders(export_dir, tmp_path, capsys):
    d = shutil.copytree(export_dir, tmp_path / "export")
    load_backbone(f"local-dir:{d}")  # intact: loads
    expected = sha256_file(d / "model.safetensors")
    blob = bytearray((d / "model.safetensors").read_bytes())
    blob[len(blob) // 2] ^= 0x01  # one bit, inside the weights
    (d / "model.safetensors").write_bytes(bytes(blob))
    actual = sha256_file(d / "model.safetensors")
    for spec in (f"local-dir:{d}", str(d)):
        with pytest.raises(ExportIntegrityError) as exc:
            load_backbone(spec)
        msg = str(exc.value)
        assert "'model.safetensors' was modified" in msg and expected in msg and actual in msg
    argv = ["eval", "knn", "--model", f"local-dir:{d}", "--dataset", "synthetic", "--quiet"]
    assert main(argv) == 1
    assert f"sha256 {actual}, expected {expected}" in capsys.readouterr().err


def test_timm_folder_without_manifest_still_loads(export_dir, tmp_path):
    """A timm model folder from elsewhere has no checksums.sha256: gsg loads it as timm does."""
    d = shutil.copytree(export_dir, tmp_path / "export")
    (d / "checksums.sha256").unlink()
    model, _ = load_backbone(f"local-dir:{d}")
    assert model(torch.zeros(1, 3, 32, 32)).shape[0] == 1
