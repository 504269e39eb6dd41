"""The benchmarks run end to end at a tiny size and write the documented JSON keys."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
TINY = ["--steps", "2", "--batch", "8", "--size", "16", "--warmup", "1", "--threads", "1"]


def load(name):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_bench_step_tiny(tmp_path, capsys):
    out = tmp_path / "step.json"
    methods = ["simsiam", "simsiam_gsg", "byol", "byol_gsg_so"]
    small_heads = ["--proj-dim", "64", "--pred-dim", "16"]
    load("bench_step").main([*TINY, *small_heads, "--methods", *methods, "--out", str(out)])
    result = json.loads(out.read_text())
    assert {"config", "torch", "threads", "matmul_peak", "results", "ratios"} <= set(result)
    assert result["matmul_peak"]["flops_per_s"] > 0
    rows = {r["variant"]: r for r in result["results"]}
    assert list(rows) == methods
    for r in rows.values():
        assert r["step_ms"] > 0 and len(r["step_ms_all"]) == 2 and r["images_per_s"] > 0
        assert r["gflop_per_step"] > 0 and r["achieved_gflops"] > 0
        assert "peak_mem_mb" in r and "mem_method" in r
    # 4 views cost twice the FLOPs of 2
    assert rows["simsiam_gsg"]["gflop_per_step"] == pytest.approx(
        2 * rows["simsiam"]["gflop_per_step"], rel=0.02
    )
    # BYOL: 2 x (fwd + bwd) + 2 EMA fwd = 8 pass-units; source-only GSG: 4 EMA fwd + 2 x (fwd + bwd) = 10
    flop_ratio = rows["byol_gsg_so"]["gflop_per_step"] / rows["byol"]["gflop_per_step"]
    assert flop_ratio == pytest.approx(10 / 8, rel=0.05)
    assert rows["byol_gsg_so"]["views"] == 4 and rows["byol_gsg_so"]["guided_frac"] > 0
    assert "guided_frac" not in rows["simsiam"]
    kinds = {(q["variant"], q["vs"]) for q in result["ratios"]}
    assert kinds == {("simsiam_gsg", "simsiam"), ("byol_gsg_so", "byol")}  # no byol_gsg reference here
    md = capsys.readouterr().out
    assert "| simsiam_gsg | 4 |" in md and "GFLOP/s" in md


def test_bench_step_ratios_include_source_only():
    rows = [
        {"variant": v, "method": m, "source_only": so, "step_ms": t, "peak_mem_mb": 10.0}
        for v, m, so, t in [
            ("byol", "byol", False, 1.0),
            ("byol_gsg", "byol_gsg", False, 2.0),
            ("byol_gsg_so", "byol_gsg", True, 1.25),
        ]
    ]
    got = {(q["variant"], q["vs"]): q["time_ratio"] for q in load("bench_step").ratios(rows)}
    assert got == {
        ("byol_gsg", "byol"): 2.0,
        ("byol_gsg_so", "byol"): 1.25,
        ("byol_gsg_so", "byol_gsg"): 0.625,
    }


def test_bench_step_help():
    res = subprocess.run(
        [sys.executable, str(BENCH / "bench_step.py"), "--help"], capture_output=True, text=True
    )
    assert res.returncode == 0 and "--backbone" in res.stdout and "--channels-last" in res.stdout


def test_bench_throughput_tiny(tmp_path):
    out = tmp_path / "tp.json"
    args = [
        "--recipes",
        "cifar",
        "--workers",
        "0",
        "1",
        "--steps",
        "2",
        "--batch",
        "8",
        "--warmup",
        "1",
        "--threads",
        "1",
        "--set",
        "model.projector_hidden_dim=64",
        "--set",
        "model.projector_dim=64",
        "--out",
        str(out),
    ]
    load("bench_throughput").main(args)
    result = json.loads(out.read_text())
    assert {"config", "machine", "threads", "results"} <= set(result)
    assert [r["num_workers"] for r in result["results"]] == [0, 1]
    for r in result["results"]:
        assert r["image_size"] == 32 and r["augmentation"] == "cifar" and r["method"] == "simsiam_gsg"
        assert r["images_per_s"] > 0 and 0 <= r["data_wait_frac"] < 1 and r["loader_only_images_per_s"] > 0


# the demo recipe with small heads and batch, for the learnability benchmark's tests
SMALL_DEMO = [
    "model.projector_hidden_dim=32",
    "model.projector_dim=32",
    "model.predictor_hidden_dim=8",
    "train.batch_size=8",
]


def test_learnability_tiny(tmp_path, capsys):
    """Both objectives take steps, every score is a percentage and the table lists every variant."""
    module = load("learnability")
    args = [
        "--seconds",
        "0.5",
        "--num-images",
        "40",
        "--bank",
        "40",
        "--test",
        "20",
        "--out",
        str(tmp_path / "l"),
        *(a for kv in SMALL_DEMO for a in ("--set", kv)),
    ]
    result = module.main([*args, "--variants", "full", "flat_grey"])
    assert json.loads((tmp_path / "l.json").read_text()) == result
    assert [r["variant"] for r in result["rows"]] == ["full", "flat_grey"]
    for row in result["rows"]:
        for key in ("pixels", "random_init", "supervised", "ssl"):
            assert 0 <= row[key] <= 100
        assert row["supervised_steps"] >= 1 and row["ssl_steps"] >= 1
    assert result["rows"][1]["grayscale"] is True and result["method"] == "simsiam_gsg"
    assert "| flat_grey |" in capsys.readouterr().out


def test_learnability_training_moves_the_backbone():
    import torch

    from gsg_zoo.config.recipes import load_recipe
    from gsg_zoo.method.learner import SelfSupervisedLearner

    module = load("learnability")
    recipe = load_recipe("demo", SMALL_DEMO)
    images, labels = module.render(16, "train", 32, 0, "full")
    assert images.dtype == torch.uint8 and images.shape == (16, 3, 32, 32) and labels.shape == (16,)
    torch.manual_seed(recipe.train.seed)
    start = SelfSupervisedLearner(recipe.learner_config()).backbone.state_dict()
    for objective in ("supervised", "ssl"):
        backbone, steps = module.train(objective, recipe, images, labels, 0.3, torch.device("cpu"))
        assert steps >= 1
        moved = [
            k
            for k, v in backbone.state_dict().items()
            if v.is_floating_point() and not torch.equal(v, start[k])
        ]
        assert moved, objective


def test_bench_batch_augment_tiny(tmp_path, capsys):
    out = tmp_path / "ba.json"
    assert (
        load("bench_batch_augment").main(
            ["--batch", "4", "--views", "2", "--repeats", "1", "--device", "cpu", "--out", str(out)]
        )
        == 0
    )
    r = json.loads(out.read_text())
    assert (r["size"], r["batch"], r["views"], r["device"]) == (32, 4, 2, "cpu")
    assert r["pil_views_per_s"] > 0 and r["batch_views_per_s"] > 0
    assert r["speedup"] == pytest.approx(r["batch_views_per_s"] / r["pil_views_per_s"])
    md = out.with_suffix(".md").read_text()
    assert md in capsys.readouterr().out
    assert "batch 4 x 2 views" in md and f"{r['speedup']:.2f}x" in md


def test_bench_imagenet_views_tiny(tmp_path):
    out = tmp_path / "views.json"
    argv = [
        "--images",
        "2",
        "--size",
        "32",
        "--batch",
        "2",
        "--repeats",
        "1",
        "--device",
        "cpu",
        "--data",
        str(tmp_path / "jpegs"),
        "--out",
        str(out),
    ]
    assert load("bench_imagenet_views").main(argv) == 0
    r = json.loads(out.read_text())
    ms = r["loader_cpu_ms_per_image"]
    assert set(ms) == {"decode", "pil", "boxes"} and all(v > 0 for v in ms.values())
    assert r["boxes_over_decode"] == pytest.approx(ms["boxes"] / ms["decode"])
    assert set(r["device_ms_per_batch"]) == {"resize", "colour_blur"}
    assert "| boxes |" in out.with_suffix(".md").read_text()


def test_throughput_ab_tiny(tmp_path):
    bench = [
        "--recipes",
        "cifar",
        "--workers",
        "0",
        "--batch",
        "4",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--backbone",
        "resnet10t",
    ]
    r = load("throughput_ab").main(["--reps", "2", "--out", str(tmp_path / "ab.json"), "--bench", *bench])
    assert [len(r["images_per_s"][s]) for s in "AB"] == [2, 2]
    assert r["ratio_b_over_a"] == pytest.approx(r["images_per_s_mean"]["B"] / r["images_per_s_mean"]["A"])
    assert json.loads((tmp_path / "ab.json").read_text())["protocol"].startswith("throughput_ab")


@pytest.mark.filterwarnings("ignore:lbfgs failed to converge")
def test_bench_logreg_tiny(tmp_path, monkeypatch):
    """The torch and scikit-learn sweeps cover the same C grid; the best C is the curve's argmax."""
    monkeypatch.setenv("GSG_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "logreg.json"
    load("bench_logreg").main(
        [
            "--model",
            "random:mobilenetv3_small_050",
            "--subset",
            "40",
            "--num-c",
            "3",
            "--max-iter",
            "20",
            "--workers",
            "0",
            "--threads",
            "1",
            "--out",
            str(out),
        ]
    )
    r = json.loads(out.read_text())
    assert r["num_c"] == 3 and r["features"][0] == 40 and r["threads"] == 1
    for key in ("torch_lbfgs", "sklearn"):
        s = r[key]
        assert [c for c, _ in s["curve"]] == pytest.approx([c for c, _ in r["torch_lbfgs"]["curve"]])
        assert len(s["curve"]) == 3 and s["seconds"] > 0 and 0 <= s["val_top1"] <= 100
        assert s["val_top1"] == max(v for _, v in s["curve"])
        assert s["best_C"] in [c for c, v in s["curve"] if v == s["val_top1"]]
    assert r["speedup"] == pytest.approx(r["sklearn"]["seconds"] / r["torch_lbfgs"]["seconds"])


def test_bench_probe_tiny(tmp_path, monkeypatch):
    """Both protocols train the same fc for the epochs asked; the speed-up is their wall-time ratio."""
    monkeypatch.setenv("GSG_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "probe.json"
    load("bench_probe").main(
        [
            "--model",
            "random:mobilenetv3_small_050",
            "--subset",
            "24",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--workers",
            "0",
            "--threads",
            "1",
            "--out",
            str(out),
        ]
    )
    r = json.loads(out.read_text())
    assert r["epochs"] == 1 and r["model"] == "random:mobilenetv3_small_050"
    assert [r[p]["protocol"] for p in ("fast", "reference")] == ["fast", "reference"]
    for p in ("fast", "reference"):
        assert 0 <= r[p]["top1"] <= 100 and r[p]["wall_seconds"] > 0 and r[p]["num_train"] == 24
    assert r["speedup"] == pytest.approx(r["reference"]["wall_seconds"] / r["fast"]["wall_seconds"])


@pytest.mark.slow
def test_source_only_parity_tiny(tmp_path):
    """One seed, both modes: each run is trained with its source_only flag and the table adds up."""
    from test_pretrain import TINY

    out = tmp_path / "parity"
    args = [
        "--out",
        str(out),
        "--seeds",
        "0",
        "--epochs",
        "1",
        "--num-images",
        "64",
        "--batch",
        "16",
        "--workers",
        "0",
        *(a for kv in [*TINY, "train.max_steps_per_epoch=2"] for a in ("--set", kv)),
    ]
    assert load("source_only_parity").main(args) == 0
    r = json.loads((out / "parity.json").read_text())
    for mode, flag in (("reference", False), ("source_only", True)):
        [run] = r["runs"][mode]
        assert run["seed"] == 0 and 0 <= run["knn_top1"] <= 100 and run["images_per_s"] > 0
        config = (out / f"seed0_{mode}" / "config.yaml").read_text()
        assert f"source_only: {str(flag).lower()}" in config and "method: byol_gsg" in config
        assert r["stats"][mode]["knn_top1_mean"] == run["knn_top1"]
    ips = [r["runs"][m][0]["images_per_s"] for m in ("source_only", "reference")]
    assert r["speedup_per_seed"] == [pytest.approx(ips[0] / ips[1])]
    knn = [r["runs"][m][0]["knn_top1"] for m in ("source_only", "reference")]
    assert r["knn_delta"] == pytest.approx(knn[0] - knn[1])
    md = (out / "parity.md").read_text()
    assert "| reference |" in md and "| source_only |" in md and f"mean {r['speedup']:.2f}x" in md


def test_synthetic_data_quick(tmp_path):
    """--quick: a tenth of the images; the raw-pixel kNN beats chance but is far from perfect."""
    module = load("synthetic_data")
    assert module.main(["--out", str(tmp_path), "--quick"]) == 0
    r = json.loads((tmp_path / "synthetic_data.json").read_text())
    assert [(g["image_size"], g["images"]) for g in r["generation"]] == [(32, 1000), (64, 300), (224, 50)]
    assert all(g["images_per_cpu_s"] > 0 for g in r["generation"])
    assert [(w["format"], w["image_size"], w["images"]) for w in r["writers"]] == [
        ("imagefolder", 64, 100),
        ("coco", 64, 100),
        ("mmseg", 64, 100),
        ("coco", 224, 20),
    ]
    assert all(w["MiB"] > 0 for w in r["writers"])
    knn = r["pixel_knn"]["top1_by_seed"]
    assert list(knn) == ["0", "1", "2"] and all(r["pixel_knn"]["chance"] < a < 0.9 for a in knn.values())
    for size in (32, 64, 224):
        assert (tmp_path / f"grid_{size}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "synthetic_data.md").read_text()
    assert "| 224 | 50 |" in md and f"| 0 | {100 * knn['0']:.1f}% |" in md
