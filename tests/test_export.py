"""Export -> timm local-dir / offline hf-hub / zoo reload with feature equality; integrity; bad inputs.

Budget: ~45 s on 2 CPU cores (two exports with their fresh-process reload checks, one offline-load
subprocess, one failure-path check).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from gsg_zoo import LearnerConfig, SelfSupervisedLearner
from gsg_zoo.core.checkpoint import CheckpointError, save_checkpoint
from gsg_zoo.core.checksums import ExportIntegrityError, read_checksums, verify_export
from gsg_zoo.core.layout import CHECKSUMS_FILE
from gsg_zoo.zoo.export import check_reload, export_checkpoint

SUMMARY = {"knn_top1": 41.25, "images_per_s": 812.5, "wall_time_s": 12.0, "device": "cpu"}


def make_run(
    root: Path,
    method: str = "simsiam_gsg",
    backbone: str = "resnet18_cifar",
    image_size: int = 32,
    dataset: str = "cifar10",
    summary: dict | None = SUMMARY,
) -> tuple[Path, SelfSupervisedLearner]:
    """A tiny run dir: checkpoints/last.pt with non-trivial BN stats, summary.json, metrics, curves."""
    cfg = LearnerConfig.for_method(
        method, backbone=backbone, projector_hidden_dim=32, projector_dim=16, predictor_hidden_dim=8
    )
    learner = SelfSupervisedLearner(cfg)
    learner.train()
    with torch.no_grad():  # running stats far from (0, 1): a reload that drops buffers would show
        for _ in range(2):
            learner.encoder(torch.randn(4, 3, image_size, image_size) * 3 + 1)
    config = {
        "model": cfg.to_dict(),
        "data": {"image_size": image_size, "dataset": dataset},
        "train": {"epochs": 2, "batch_size": 4},
        "monitor": {"k": 200, "t": 0.1},
    }
    save_checkpoint(
        root / "checkpoints" / "last.pt", {"config": config, "model": learner.state_dict(), "epoch": 2}
    )
    if summary is not None:
        (root / "summary.json").write_text(json.dumps(summary))
        (root / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "loss": -0.5, "knn_top1": 30.0}) + "\n")
        Image.new("RGB", (8, 8), (200, 10, 10)).save(root / "curves.png")
    return root / "checkpoints" / "last.pt", learner.eval()


@pytest.fixture(scope="module")
def cifar_export(tmp_path_factory):
    run = tmp_path_factory.mktemp("cifar_run")
    ckpt, learner = make_run(run)
    out = export_checkpoint(ckpt, run / "export", "tiny-simsiam-gsg")
    return out, learner


@pytest.fixture(scope="module")
def imagenet_export(tmp_path_factory):
    run = tmp_path_factory.mktemp("in_run")
    ckpt, learner = make_run(
        run, method="byol", backbone="resnet18", image_size=64, dataset="synthetic", summary=None
    )
    out = export_checkpoint(ckpt, tmp_path_factory.mktemp("in_export") / "exp")  # no run files: still works
    return out, learner


def _batch(size: int) -> torch.Tensor:
    return torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))


def test_cifar_export_contents(cifar_export):
    out, learner = cifar_export
    names = {p.name for p in out.iterdir()}
    assert {
        "model.safetensors",
        "config.json",
        "README.md",
        "recipe.json",
        "gsg_export.json",
        CHECKSUMS_FILE,
    } <= names
    assert {"results.json", "metrics.jsonl", "curves.png"} <= names  # from the run dir
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architecture"] == "resnet18_cifar" and cfg["num_classes"] == 0 and cfg["num_features"] == 512
    assert cfg["global_pool"] == "avg"
    pc = cfg["pretrained_cfg"]
    assert (
        pc["input_size"] == [3, 32, 32] and pc["mean"] == [0.4914, 0.4822, 0.4465] and pc["crop_pct"] == 1.0
    )
    assert pc["paper_ids"] == "arXiv:2503.09058" and pc["license"] == "apache-2.0"
    assert "tag" not in pc and "origin_url" not in pc  # nothing from timm's own weights
    # Backbone only, with timm's names: exactly the learner's backbone tensors.
    sd = load_file(out / "model.safetensors")
    ref = learner.backbone.state_dict()
    assert set(sd) == set(ref) and not any(k.startswith(("encoder", "projector", "predictor")) for k in sd)
    assert all(torch.equal(sd[k], ref[k]) for k in sd)
    # The non-trivial BN statistics travelled.
    assert int(sd["bn1.num_batches_tracked"]) == 2 and float(sd["bn1.running_mean"].abs().mean()) > 0.01
    prov = json.loads((out / "gsg_export.json").read_text())
    assert prov["needs_gsg_zoo"] is True and prov["method"] == "simsiam_gsg"
    assert prov["reload_check"]["max_abs_diff"] <= 1e-5 and prov["reload_check"]["stock_timm_only"] is False
    assert json.loads((out / "results.json").read_text()) == SUMMARY
    assert json.loads((out / "recipe.json").read_text())["model"]["backbone"] == "resnet18_cifar"
    assert set(read_checksums(out)) == names - {CHECKSUMS_FILE}
    verify_export(out)


def test_local_dir_and_load_backbone_match_training_backbone(cifar_export):
    import timm

    from gsg_zoo.zoo.load import load_backbone

    out, learner = cifar_export
    x = _batch(32)
    with torch.no_grad():
        ref = learner.backbone(x)
        for model in (
            timm.create_model(f"local-dir:{out}", pretrained=True).eval(),
            load_backbone(str(out))[0],
        ):
            assert (model(x) - ref).abs().max() <= 1e-5


def test_imagenet_stem_export(imagenet_export):
    out, _ = imagenet_export
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architecture"] == "resnet18"
    assert cfg["pretrained_cfg"]["input_size"] == [3, 64, 64]
    assert cfg["pretrained_cfg"]["mean"] == [0.485, 0.456, 0.406]
    prov = json.loads((out / "gsg_export.json").read_text())
    assert prov["needs_gsg_zoo"] is False and prov["run_files"] == []
    assert prov["reload_check"]["stock_timm_only"] is True  # the check's process never imported gsg_zoo
    assert not (out / "results.json").exists()
    assert "No evaluation results" in (out / "README.md").read_text()


_OFFLINE_SCRIPT = r"""
import json, sys
import timm, torch
from safetensors.torch import load_file, save_file
x32, x64 = load_file(sys.argv[1])["x32"], load_file(sys.argv[1])["x64"]
out = {}
with torch.no_grad():
    m = timm.create_model("hf-hub:gsg-test/tiny-resnet18", pretrained=True).eval()  # stock timm
    out["in_hub"] = m(x64)
    assert "gsg_zoo" not in sys.modules, "stock timm load pulled in gsg_zoo"
    import gsg_zoo
    from gsg_zoo import load, load_backbone
    out["cifar_hub"] = timm.create_model("hf-hub:gsg-test/tiny-simsiam-gsg", pretrained=True).eval()(x32)
    out["cifar_zoo"] = load("tiny-simsiam-gsg")(x32)
    out["cifar_spec"] = load_backbone("zoo:tiny-simsiam-gsg")[0](x32)
    try:
        load("missing-from-cache")
        raise SystemExit("a repo missing from the cache loaded")
    except FileNotFoundError as err:
        assert "Offline?" in str(err), err
save_file({k: v.contiguous() for k, v in out.items()}, sys.argv[2])
"""


def test_offline_hub_cache_and_zoo_load(cifar_export, imagenet_export, tmp_path):
    from gsg_zoo.zoo.hub import install_to_cache
    from gsg_zoo.zoo.manifest import add_entry, load_manifest

    (cifar, cifar_learner), (inet, inet_learner) = cifar_export, imagenet_export
    cache, manifest = tmp_path / "hub", tmp_path / "manifest.json"
    snap = install_to_cache(cifar, "gsg-test/tiny-simsiam-gsg", cache_dir=cache)
    install_to_cache(inet, "gsg-test/tiny-resnet18", cache_dir=cache)
    repo = cache / "models--gsg-test--tiny-simsiam-gsg"
    commit = (repo / "refs" / "main").read_text()
    assert re.fullmatch(r"[0-9a-f]{40}", commit) and snap == repo / "snapshots" / commit
    assert (snap / "model.safetensors").read_bytes() == (cifar / "model.safetensors").read_bytes()
    add_entry(cifar, "gsg-test/tiny-simsiam-gsg", manifest=manifest)
    add_entry(inet, "gsg-test/absent", name="missing-from-cache", manifest=manifest)
    assert [e["name"] for e in load_manifest(manifest)] == ["missing-from-cache", "tiny-simsiam-gsg"]

    x32, x64 = _batch(32), _batch(64)
    save_file({"x32": x32, "x64": x64}, tmp_path / "x.safetensors")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE"))}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_HOME=str(tmp_path / "hf_home"))
    env.update(GSG_ZOO_MANIFEST=str(manifest), PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _OFFLINE_SCRIPT,
            str(tmp_path / "x.safetensors"),
            str(tmp_path / "f.safetensors"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    feats = load_file(tmp_path / "f.safetensors")
    with torch.no_grad():
        ref32, ref64 = cifar_learner.backbone(x32), inet_learner.backbone(x64)
    assert (feats["in_hub"] - ref64).abs().max() <= 1e-5
    for key in ("cifar_hub", "cifar_zoo", "cifar_spec"):
        assert (feats[key] - ref32).abs().max() <= 1e-5, key


def test_reload_check_fails_loudly_on_mismatch(cifar_export):
    out, _ = cifar_export
    other = SelfSupervisedLearner(LearnerConfig.for_method("simsiam", backbone="resnet18_cifar")).backbone
    with pytest.raises(RuntimeError, match="differ from the training backbone"):
        check_reload(out, other, True, (3, 32, 32))


def test_tampered_missing_and_extra_files(cifar_export, tmp_path):
    src, _ = cifar_export
    d = shutil.copytree(src, tmp_path / "copy")
    verify_export(d)
    blob = bytearray((d / "model.safetensors").read_bytes())
    blob[-1] ^= 0xFF
    (d / "model.safetensors").write_bytes(bytes(blob))
    with pytest.raises(ExportIntegrityError, match=r"'model\.safetensors' was modified"):
        verify_export(d)
    shutil.copyfile(src / "model.safetensors", d / "model.safetensors")
    (d / "results.json").unlink()
    with pytest.raises(ExportIntegrityError, match=r"'results\.json' .* is missing"):
        verify_export(d)
    shutil.copyfile(src / "results.json", d / "results.json")
    (d / "notes.txt").write_text("added later")
    with pytest.raises(ExportIntegrityError, match=r"'notes\.txt' is not listed"):
        verify_export(d)
    (d / "notes.txt").unlink()
    (d / CHECKSUMS_FILE).unlink()
    with pytest.raises(ExportIntegrityError, match="no checksums.sha256"):
        verify_export(d)


def test_wrong_checkpoint_kinds(cifar_export, tmp_path):
    out, _ = cifar_export
    with pytest.raises(CheckpointError, match="safetensors weight file"):
        export_checkpoint(out / "model.safetensors", tmp_path / "a")
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "random.pt")
    with pytest.raises(CheckpointError, match="not a gsg-zoo pretraining checkpoint"):
        export_checkpoint(tmp_path / "random.pt", tmp_path / "b")
    (tmp_path / "garbage.pt").write_bytes(b"not a zip file at all")
    with pytest.raises(CheckpointError, match="not a loadable gsg-zoo checkpoint"):
        export_checkpoint(tmp_path / "garbage.pt", tmp_path / "c")
    with pytest.raises(FileNotFoundError):
        export_checkpoint(tmp_path / "absent.pt", tmp_path / "d")
    assert not any((tmp_path / n).exists() for n in "abcd")


def test_refuses_to_overwrite_and_cli(cifar_export, tmp_path, capsys):
    from gsg_zoo.app.cli import main

    ckpt = cifar_export[0].parent / "checkpoints" / "last.pt"
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("x")
    assert main(["export", str(ckpt), "--out", str(tmp_path / "busy")]) == 1
    assert "not empty" in capsys.readouterr().err and (tmp_path / "busy" / "keep.txt").exists()
    assert main(["export", str(tmp_path / "absent.pt"), "--out", str(tmp_path / "x")]) == 1
    assert "checkpoint not found" in capsys.readouterr().err
