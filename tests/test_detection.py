"""Detection transfer: ResNet -> Detectron2 conversion, recipes, and a tiny real Detectron2 run.

Budget: < 3 min on 2 CPU cores (the 2-iteration train + COCO evaluation is most of it). Tests that need
Detectron2 are marked ``det`` and skipped when it is not importable; conversion tests always run.
"""

from __future__ import annotations

import importlib.util
import json
import math
import pickle

import numpy as np
import pytest
import timm
import torch

from gsg_zoo.app.cli import main as gsg_main
from gsg_zoo.transfer import detection as det

HAS_D2 = importlib.util.find_spec("detectron2") is not None
requires_d2 = pytest.mark.skipif(
    not HAS_D2, reason="detectron2 not importable (extra `det`: bash tools/install_detectron2.sh PYTHON)"
)


#: Detectron2 overrides of a 2-iteration CPU run on 96-px images (the tests' recipes add their own).
SMALL_RUN = {
    "SOLVER.MAX_ITER": "2",
    "SOLVER.IMS_PER_BATCH": "2",
    "DATALOADER.NUM_WORKERS": "0",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": "16",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN": "32",
    "MODEL.RPN.POST_NMS_TOPK_TEST": "16",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST": "0.0",
    "TEST.DETECTIONS_PER_IMAGE": "8",
    "INPUT.MIN_SIZE_TRAIN": "(96,)",
    "INPUT.MIN_SIZE_TEST": "96",
}


def _calibrated(arch: str, image_size: int = 96) -> torch.nn.Module:
    """A random timm ResNet whose BN statistics come from synthetic images (Detectron2 freezes/uses them)."""
    from gsg_zoo.data.synthetic import SyntheticShapes

    torch.manual_seed(0)
    model = timm.create_model(arch, num_classes=0)
    ds = SyntheticShapes(16, image_size=image_size, split="calib")
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    x = torch.stack([torch.from_numpy(np.asarray(ds[i][0])).permute(2, 0, 1) for i in range(len(ds))]) / 255.0
    x = (x - mean[:, None, None]) / std[:, None, None]
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the calibration batches
            m.reset_running_stats()
    model.train()
    with torch.no_grad():
        for batch in x.split(8):
            model(batch)
    return model.eval()


# ------------------------------------------------------------------------------------ conversion


@pytest.mark.parametrize("arch,depth,n_tensors", [("resnet50", 50, 53 * 5), ("resnet18", 18, 20 * 5)])
def test_convert_renames_every_backbone_weight(arch, depth, n_tensors):
    model = timm.create_model(arch, num_classes=0).eval()
    w = det.convert_resnet(model)
    assert w.resnets["DEPTH"] == depth and w.resnets["STRIDE_IN_1X1"] is False
    assert w.resnets["RES2_OUT_CHANNELS"] == (256 if depth == 50 else 64)
    assert len(w.model) == n_tensors  # conv weight + 4 BN tensors per conv
    sd = model.state_dict()
    pairs = {
        "conv1.weight": "stem.conv1.weight",
        "bn1.running_var": "stem.conv1.norm.running_var",
        "layer1.0.bn2.weight": "res2.0.conv2.norm.weight",
        "layer4.1.conv2.weight": "res5.1.conv2.weight",
        "layer2.0.downsample.0.weight": "res3.0.shortcut.weight",
        "layer3.0.downsample.1.running_mean": "res4.0.shortcut.norm.running_mean",
    }
    for src, dst in pairs.items():
        np.testing.assert_array_equal(w.model[dst], sd[src].numpy())
    assert all(isinstance(v, np.ndarray) for v in w.model.values())
    assert set(w.skipped) == {k for k in sd if k.endswith("num_batches_tracked")}


def test_convert_rejects_non_resnets_with_clear_errors():
    with pytest.raises(ValueError, match="not a ResNet"):
        det.convert_spec("random:vit_tiny_patch16_224")
    with pytest.raises(ValueError, match="CIFAR-stem.*7x7"):
        det.convert_spec("random:resnet18_cifar")
    with pytest.raises(ValueError, match="deep stem"):
        det.convert_resnet(timm.create_model("resnet26d", num_classes=0))
    with pytest.raises(ValueError, match="se "):
        det.convert_resnet(timm.create_model("seresnet50", num_classes=0))


def test_convert_cli_writes_detectron2_pickle(tmp_path, capsys):
    out = tmp_path / "r18.pkl"
    assert gsg_main(["transfer", "detection", "convert", "random:resnet18", "--out", str(out)]) == 0
    with open(out, "rb") as f:  # our own file
        data = pickle.load(f)
    assert data["__author__"] == "gsg-zoo" and data["matching_heuristics"] is True
    assert "res5.1.conv2.norm.running_var" in data["model"] and "stem.conv1.weight" in data["model"]
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["resnets"]["DEPTH"] == 18 and meta["num_tensors"] == len(data["model"])
    assert "MODEL.RESNETS.RES2_OUT_CHANNELS" in meta["config_overrides"]
    assert "not converted (20): 20x BN step counter" in capsys.readouterr().out
    assert (
        gsg_main(["transfer", "detection", "convert", "random:vit_tiny_patch16_224", "--out", str(out)]) == 1
    )
    assert "not a ResNet" in capsys.readouterr().err


def test_summary_is_mean_and_sample_std_over_seeds():
    runs = [
        {"bbox": {"AP": 50.0, "AP50": 80.0}},
        {"bbox": {"AP": 52.0, "AP50": 81.0}},
        {"bbox": {"AP": 54.0}},
    ]
    s = det.summarize(runs)
    assert s["bbox"]["AP"] == {"mean": 52.0, "std": 2.0, "n": 3}
    assert s["bbox"]["AP50"]["n"] == 2 and math.isclose(s["bbox"]["AP50"]["std"], math.sqrt(0.5))
    table = det.markdown_table(s)
    assert "| bbox | 80.5 ± 0.7 | 52.0 ± 2.0 | - | 3 |" in table


def test_recipes_resolve_and_unknown_names_fail():
    names = det.detection_recipes()
    assert {"voc_R_50_C4_24k", "coco_R_50_C4_1x", "coco_R_50_C4_2x", "coco_R_50_FPN_1x"} <= set(names)
    assert det.recipe_path("synthetic-coco").name == "synthetic_coco_R_50_C4.yaml"
    with pytest.raises(ValueError, match="available: coco_R_50_C4_1x"):
        det.recipe_path("voc_R_50_C4_1k")


# ------------------------------------------------------------------------------------ Detectron2


@pytest.mark.parametrize(
    "arch,recipe",
    [("resnet50", "voc_R_50_C4_24k"), ("resnet18", "voc_R_50_C4_24k"), ("resnet18", "coco_R_50_FPN_1x")],
)
@pytest.mark.det
@requires_d2
def test_recipe_model_loads_converted_backbone_exactly(arch, recipe, tmp_path):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from gsg_zoo.transfer import detectron2_train as d2t

    model = _calibrated(arch, image_size=64)
    w = det.convert_resnet(model)
    pkl, _ = det.save_detectron2_pkl(w, tmp_path / "b.pkl")
    cfg = d2t.build_cfg(recipe, weights=w, weights_path=pkl, device="cpu")
    assert cfg.MODEL.RESNETS.NORM == "naiveSyncBN" and cfg.INPUT.FORMAT == "RGB"
    assert w.resnets["DEPTH"] == cfg.MODEL.RESNETS.DEPTH and cfg.SOLVER.BASE_LR == 0.02
    d2 = build_model(cfg).eval()
    DetectionCheckpointer(d2).load(str(pkl))
    assert d2t.unloaded_keys(d2, w.model) == []
    # Same function: Detectron2's features equal timm's (eval-mode BN on both sides).
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        ref3 = model.layer3(model.layer2(model.layer1(model.maxpool(model.act1(model.bn1(model.conv1(x)))))))
        ref4 = model.layer4(ref3)
        if recipe.startswith("voc"):  # C4: backbone up to res4, res5 lives in the ROI head (+ extra norm)
            feats = d2.backbone(x)
            res5 = d2.roi_heads.res5
            assert isinstance(d2.roi_heads, d2t.Res5ROIHeadsExtraNorm) and hasattr(res5, "norm")
            out4 = res5[:-1](feats["res4"])
        else:
            feats = d2.backbone.bottom_up(x)
            out4 = feats["res5"]
    torch.testing.assert_close(feats["res4"], ref3, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out4, ref4, rtol=1e-4, atol=1e-4)


@pytest.mark.det
@requires_d2
def test_train_two_iterations_and_coco_eval_on_synthetic(tmp_path, capsys):
    from gsg_zoo.data.synthetic import SyntheticShapes
    from gsg_zoo.data.writers import write_coco

    data = tmp_path / "data"
    write_coco(SyntheticShapes(6, image_size=96, split="train"), data, "train", progress=False)
    write_coco(SyntheticShapes(3, image_size=96, split="val"), data, "val", progress=False)
    export = tmp_path / "r18"
    timm.models.save_for_hf(_calibrated("resnet18"), export, safe_serialization=True)
    out = tmp_path / "run"
    small = {
        **SMALL_RUN,
        "TEST.PRECISE_BN.NUM_ITER": "1",
        "INPUT.MAX_SIZE_TRAIN": "96",
        "INPUT.MAX_SIZE_TEST": "96",
    }
    opts = [x for kv in small.items() for x in kv]
    argv = ["transfer", "detection", "train", "--model", f"local-dir:{export}", "--recipe", "synthetic-coco"]
    argv += ["--data", str(data), "--num-gpus", "0", "--out", str(out), "--opts", *opts]
    assert gsg_main(argv) == 0
    report = json.loads((out / "results.json").read_text())
    assert report["seeds"] == 1 and report["runs"][0]["solver"]["MAX_ITER"] == 2
    assert report["protocol"] == "detectron2:synthetic-coco + --opts (a variant)"
    for task in ("bbox", "segm"):
        for metric in ("AP", "AP50", "AP75"):
            value = report["runs"][0]["results"][task][metric]
            assert 0.0 <= value <= 100.0
            assert report["summary"][task][metric]["mean"] == value
    # Real training happened: Detectron2 logged finite losses for both iterations.
    events = [json.loads(line) for line in (out / "seed0" / "metrics.json").read_text().splitlines()]
    losses = [e["total_loss"] for e in events if "total_loss" in e]
    assert losses and all(math.isfinite(v) for v in losses)
    assert (out / "seed0" / "inference" / "synthetic_coco_val" / "coco_instances_results.json").exists()
    md = (out / "results.md").read_text()
    assert "| bbox |" in md and "| segm |" in md
    assert "| task | AP50 | AP | AP75 | seeds |" in capsys.readouterr().out


def _write_voc(ds, root, split: str) -> None:
    """A Pascal VOC devkit layout (JPEGImages, Annotations, ImageSets/Main) naming shapes as VOC classes."""
    from detectron2.data.datasets.pascal_voc import CLASS_NAMES

    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    ids = []
    for i in range(len(ds)):
        image, _ = ds[i]
        fid = f"{split}_{i:04d}"
        image.save(root / "JPEGImages" / f"{fid}.jpg", quality=95)
        ann = ds.annotation(i)
        objs = "".join(
            f"<object><name>{CLASS_NAMES[int(label)]}</name><pose>Unspecified</pose><truncated>0</truncated>"
            f"<difficult>0</difficult><bndbox><xmin>{x0 + 1:.0f}</xmin><ymin>{y0 + 1:.0f}</ymin>"
            f"<xmax>{x1:.0f}</xmax><ymax>{y1:.0f}</ymax></bndbox></object>"
            for (x0, y0, x1, y1), label in zip(ann["boxes"].tolist(), ann["labels"].tolist())
        )
        size = f"<size><width>{image.width}</width><height>{image.height}</height><depth>3</depth></size>"
        (root / "Annotations" / f"{fid}.xml").write_text(f"<annotation>{size}{objs}</annotation>")
        ids.append(fid)
    (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")


@pytest.mark.det
@requires_d2
def test_voc_recipe_trains_and_evaluates_with_pascal_voc_metric(tmp_path):
    from gsg_zoo.data.synthetic import SyntheticShapes
    from gsg_zoo.transfer import detectron2_train as d2t

    data = tmp_path / "datasets"
    _write_voc(SyntheticShapes(4, image_size=96, split="train"), data / "VOC2007", "trainval")
    _write_voc(SyntheticShapes(2, image_size=96, split="val"), data / "VOC2007", "test")
    small = {
        **SMALL_RUN,
        "DATASETS.TRAIN": "('voc_2007_trainval',)",  # the recipe also trains on VOC2012
        "SOLVER.REFERENCE_WORLD_SIZE": "0",
        "TEST.PRECISE_BN.ENABLED": "False",
    }
    opts = [x for kv in small.items() for x in kv]
    export = tmp_path / "r18"
    timm.models.save_for_hf(_calibrated("resnet18"), export, safe_serialization=True)
    spec = f"local-dir:{export}"
    torch.manual_seed(1)  # a different global RNG state per call: only the seed may decide a run
    report = d2t.train_seeds(spec, "voc", data, out_dir=tmp_path / "run", num_gpus=0, seeds=2, opts=opts)
    torch.manual_seed(2)
    d2t.train_seeds(spec, "voc", data, out_dir=tmp_path / "again", num_gpus=0, seeds=1, opts=opts)
    assert [r["seed"] for r in report["runs"]] == [0, 1]
    assert set(report["summary"]["bbox"]) == {"AP", "AP50", "AP75"}
    assert all(report["summary"]["bbox"][m]["n"] == 2 for m in ("AP", "AP50", "AP75"))
    for seed in (0, 1):
        cfg_text = (tmp_path / "run" / f"seed{seed}" / "config.yaml").read_text()
        assert f"SEED: {seed}" in cfg_text and "Res5ROIHeadsExtraNorm" in cfg_text
    # The seed really seeds each run: same seed, same losses; another seed differs. Detectron2 logs the
    # median of the window, here over both iterations.
    losses = {name: _losses(tmp_path / name) for name in ("run/seed0", "run/seed1", "again/seed0")}
    assert losses["run/seed0"] and all(math.isfinite(v) for v in losses["run/seed0"])
    assert losses["run/seed0"] == losses["again/seed0"]
    assert losses["run/seed0"] != losses["run/seed1"]


def _losses(run_dir) -> list[float]:
    """Detectron2's logged ``total_loss`` per iteration (metrics.json)."""
    events = [json.loads(line) for line in (run_dir / "metrics.json").read_text().splitlines()]
    return [e["total_loss"] for e in events if "total_loss" in e]


@pytest.mark.det
@requires_d2
@pytest.mark.parametrize("gpus", [8, 4, 1])
def test_voc_recipe_scales_batch_and_lr_with_the_gpu_count(gpus):
    """The VOC recipe as shipped (no overrides): MoCo's 16 images, lr 0.02, 24k iterations on 8 GPUs;
    on fewer GPUs Detectron2's REFERENCE_WORLD_SIZE rule keeps 2 images per GPU and scales lr down and
    the schedule up linearly, so the number of images seen and the lr per image stay the same."""
    from detectron2.engine import DefaultTrainer

    from gsg_zoo.transfer import detectron2_train as d2t

    cfg = d2t.build_cfg("voc_R_50_C4_24k", device="cpu")
    s = cfg.SOLVER
    assert (s.IMS_PER_BATCH, s.BASE_LR, s.MAX_ITER, tuple(s.STEPS)) == (16, 0.02, 24000, (18000, 22000))
    assert s.REFERENCE_WORLD_SIZE == 8 and s.WARMUP_ITERS == 100
    scaled = DefaultTrainer.auto_scale_workers(cfg, gpus).SOLVER
    batch, lr, iters, steps = scaled.IMS_PER_BATCH, scaled.BASE_LR, scaled.MAX_ITER, tuple(scaled.STEPS)
    f = gpus / 8
    assert batch == 2 * gpus and lr == pytest.approx(0.02 * f)
    assert iters == round(24000 / f) and steps == (round(18000 / f), round(22000 / f))
    assert batch * iters == 16 * 24000
