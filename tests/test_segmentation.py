"""Segmentation transfer with real mmsegmentation (``seg`` extra). Budget: < 2 min on 2 shared CPU cores."""

from __future__ import annotations

import json
import math

import pytest
import torch

pytest.importorskip(
    "mmseg", reason="mmsegmentation is not installed (extra `seg`: bash tools/install_mmseg.sh)"
)

from gsg_zoo.transfer import mmseg_compat  # noqa: E402

mmseg_compat.apply()

from gsg_zoo.transfer import segmentation as seg  # noqa: E402
from gsg_zoo.transfer.segmentation_recipes import SEGMENTATION_RECIPES  # noqa: E402

pytestmark = pytest.mark.seg


def _randomize_bn(model: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            m.num_batches_tracked.fill_(7)


@pytest.fixture(scope="module")
def r50_export(tmp_path_factory):
    """A ResNet-50 SimSiam checkpoint with non-trivial BN statistics, exported by ``gsg export``."""
    from gsg_zoo.core.checkpoint import save_checkpoint
    from gsg_zoo.method.learner import LearnerConfig, SelfSupervisedLearner
    from gsg_zoo.zoo.export import export_checkpoint

    root = tmp_path_factory.mktemp("r50")
    cfg = LearnerConfig.for_method(
        "simsiam", backbone="resnet50", projector_hidden_dim=32, projector_dim=32, predictor_hidden_dim=16
    )
    learner = SelfSupervisedLearner(cfg)
    with torch.no_grad():
        _randomize_bn(learner.backbone)
    save_checkpoint(
        root / "last.pt",
        {
            "config": {"model": cfg.to_dict(), "data": {}, "optim": {}, "train": {}},
            "model": learner.state_dict(),
            "epoch": 1,
            "step": 1,
        },
    )
    export_dir = export_checkpoint(root / "last.pt", root / "export", verify=False)
    reference = {k: v.clone() for k, v in learner.backbone.state_dict().items() if not k.startswith("fc.")}
    return export_dir, reference


@pytest.fixture(scope="module")
def seg_data(tmp_path_factory):
    from gsg_zoo.data.synthetic import SyntheticShapes
    from gsg_zoo.data.writers import write_mmseg

    root = tmp_path_factory.mktemp("shapes")
    write_mmseg(SyntheticShapes(4, image_size=64, seed=0, split="train"), root, "train", progress=False)
    write_mmseg(SyntheticShapes(2, image_size=64, seed=0, split="val"), root, "val", progress=False)
    return root


def _build(cfg):
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    register_all_modules()
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


@pytest.mark.parametrize("recipe", ["voc12aug-fcn", "ade20k-upernet"])
def test_exported_resnet50_loads_into_mmseg_backbone(r50_export, recipe, tmp_path):
    export_dir, reference = r50_export
    exported = seg.export_backbone(str(export_dir), tmp_path / "backbone.pth")
    assert exported.depth == 50
    assert set(exported.state_dict) == set(reference)
    cfg = seg.build_config(
        SEGMENTATION_RECIPES[recipe],
        checkpoint=exported.path,
        depth=50,
        data_root=tmp_path,
        work_dir=tmp_path / "w",
    )
    assert cfg.model.backbone.type == "ResNet" and cfg.model.pretrained is None
    assert cfg.model.backbone.norm_cfg.type == "BN"  # one process: no SyncBN
    model = _build(cfg)
    actual = model.backbone.state_dict()
    assert set(actual) == set(reference)
    for key, value in reference.items():
        assert torch.equal(actual[key], value), key
    assert seg.verify_backbone(model.backbone, exported.state_dict) == len(reference) == 318
    # The stock deep-stem ResNetV1c silently keeps a random stem with these weights: caught loudly.
    cfg.model.backbone.type = "ResNetV1c"
    with pytest.raises(RuntimeError, match=r"stem\.0\.weight"):
        seg.verify_backbone(_build(cfg).backbone, exported.state_dict)


def test_resnet18_depth_and_heads(tmp_path):
    exported = seg.export_backbone("random:resnet18", tmp_path / "r18.pth")
    assert exported.depth == 18
    cfg = seg.build_config(
        SEGMENTATION_RECIPES["voc12aug-fcn"],
        checkpoint=exported.path,
        depth=18,
        data_root=tmp_path,
        work_dir=tmp_path,
    )
    assert (cfg.model.decode_head.in_channels, cfg.model.decode_head.channels) == (512, 128)
    assert (cfg.model.auxiliary_head.in_channels, cfg.model.auxiliary_head.channels) == (256, 64)
    assert seg.verify_backbone(_build(cfg).backbone, exported.state_dict) == len(exported.state_dict)
    up = seg.build_config(
        SEGMENTATION_RECIPES["ade20k-upernet"],
        checkpoint=exported.path,
        depth=18,
        data_root=tmp_path,
        work_dir=tmp_path,
    )
    assert list(up.model.decode_head.in_channels) == [64, 128, 256, 512]


def test_batch_rule_and_syncbn(tmp_path):
    voc = SEGMENTATION_RECIPES["voc12aug-fcn"]
    kw = dict(checkpoint=tmp_path / "b.pth", depth=50, data_root=tmp_path / "voc", work_dir=tmp_path)
    cfg = seg.build_config(voc, gpus=2, launcher="pytorch", iters=100, **kw)
    assert cfg.train_dataloader.batch_size == 8 and cfg.auto_scale_lr == dict(enable=True, base_batch_size=16)
    assert cfg.model.backbone.norm_cfg.type == "SyncBN" and cfg.model.decode_head.norm_cfg.type == "SyncBN"
    assert cfg.train_cfg.max_iters == 100 and cfg.param_scheduler[0]["end"] == 100
    datasets = cfg.train_dataloader.dataset.datasets  # VOC train + SBD aug: both re-rooted
    assert [d.data_root for d in datasets] == [str(tmp_path / "voc")] * 2
    with pytest.raises(ValueError, match="cannot\\s+split"):
        seg.build_config(voc, gpus=3, **kw)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("random:resnet18_cifar", "CIFAR-stem"),
        ("random:resnet26d", "deep stem"),
        ("random:vit_tiny_patch16_224", "not a ResNet"),
    ],
)
def test_wrong_backbone_is_rejected(spec, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        seg.export_backbone(spec, tmp_path / "b.pth")
    assert not (tmp_path / "b.pth").exists()


def test_incomplete_state_dict_is_rejected(r50_export, tmp_path):
    _, reference = r50_export
    broken = {k: v for k, v in reference.items() if k != "layer3.1.conv2.weight"}
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match=r"1 missing \['layer3\.1\.conv2\.weight'\]"):
        seg.load_exported(tmp_path / "broken.pth")
    torch.save({"model": broken, "meta": {"epoch": 3}}, tmp_path / "nested.pth")
    with pytest.raises(ValueError, match="dict of tensors"):
        seg.load_exported(tmp_path / "nested.pth")


def test_mmcv_ops_shim():
    if mmseg_compat.has_compiled_ops():
        pytest.skip("full mmcv with compiled ops is installed: the shim is not used")
    assert mmseg_compat.is_applied()
    from mmcv.ops import point_sample

    feats = torch.arange(16.0).reshape(1, 1, 4, 4)
    centres = torch.tensor([[[0.125, 0.125], [0.875, 0.625]]])  # pixel centres (0,0) and (3,2) -> x, y
    assert point_sample(feats, centres, align_corners=False).flatten().tolist() == [0.0, 11.0]
    with pytest.raises(ModuleNotFoundError, match="compiled ops"):
        from mmcv.ops import nms  # noqa: F401


@pytest.mark.slow  # ~35 s: R50 FCN, 2 iterations + evaluation on the CPU
def test_cli_train_two_iterations_and_evaluate(r50_export, seg_data, tmp_path, capsys):
    from gsg_zoo.app.cli import main

    export_dir, _ = r50_export
    out = tmp_path / "run"
    argv = ["transfer", "segmentation", "train", "--model", str(export_dir), "--recipe", "synthetic"]
    argv += ["--data", str(seg_data), "--iters", "2", "--out", str(out), "--cfg-options"]
    argv += ["train_dataloader.batch_size=2", "default_hooks.checkpoint.interval=-1"]
    argv += ["default_hooks.checkpoint.save_last=False"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["iters"] == 2 and metrics["recipe"] == "synthetic" and metrics["depth"] == 50
    assert metrics["protocol"] == "mmseg:synthetic + --iters/--cfg-options (a variant)"
    assert metrics["backbone_tensors_checked"] == 318
    assert (metrics["total_batch"], metrics["reference_batch"]) == (2, 8)
    for key in ("mIoU", "mAcc", "aAcc"):
        assert 0.0 <= metrics[key] <= 100.0
    header, _, row = (out / "results.md").read_text().splitlines()
    assert all(k in header for k in ("mIoU", "mAcc", "aAcc"))
    assert f"| {metrics['mIoU']:.2f} | {metrics['mAcc']:.2f} | {metrics['aAcc']:.2f} |" in row
    assert "mIoU" in capsys.readouterr().out
    assert not list((out / "mmseg").glob("*.pth"))  # no 200 MB checkpoint for a smoke test
    # real training happened: mmengine logged finite losses and a training accuracy at iteration 2
    (scalars,) = (out / "mmseg").rglob("vis_data/scalars.json")
    train_rows = [r for r in map(json.loads, scalars.read_text().splitlines()) if "loss" in r]
    assert [r["iter"] for r in train_rows] == [2]
    for key in ("loss", "decode.loss_ce", "aux.loss_ce"):
        assert math.isfinite(train_rows[0][key]) and train_rows[0][key] > 0, key
    assert 0.0 <= train_rows[0]["decode.acc_seg"] <= 100.0


def test_cli_rejects_cifar_stem_clearly(seg_data, tmp_path, capsys):
    from gsg_zoo.app.cli import main

    argv = ["transfer", "segmentation", "train", "--model", "random:resnet18_cifar", "--recipe", "synthetic"]
    assert main([*argv, "--data", str(seg_data), "--out", str(tmp_path)]) == 1
    assert "CIFAR-stem" in capsys.readouterr().err
