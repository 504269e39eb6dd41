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
        for v, m, so, t in [("byol", "byol", False, 1.0), ("byol_gsg", "byol_gsg", False, 2.0),
                            ("byol_gsg_so", "byol_gsg", True, 1.25)]
    ]  # fmt: skip
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
    args = ["--recipes", "cifar", "--workers", "0", "1", "--steps", "2", "--batch", "8", "--warmup", "1",
            "--threads", "1", "--set", "model.projector_hidden_dim=64", "--set", "model.projector_dim=64",
            "--out", str(out)]  # fmt: skip
    load("bench_throughput").main(args)
    result = json.loads(out.read_text())
    assert {"config", "machine", "threads", "results"} <= set(result)
    assert [r["num_workers"] for r in result["results"]] == [0, 1]
    for r in result["results"]:
        assert r["image_size"] == 32 and r["augmentation"] == "cifar" and r["method"] == "simsiam_gsg"
        assert r["images_per_s"] > 0 and 0 <= r["data_wait_frac"] < 1 and r["loader_only_images_per_s"] > 0


# the demo recipe with small heads and batch, for the learnability benchmark's tests
SMALL_DEMO = ["model.projector_hidden_dim=32", "model.projector_dim=32", "model.predictor_hidden_dim=8",
              "train.batch_size=8"]  # fmt: skip


def test_learnability_tiny(tmp_path, capsys):
    """Both objectives take steps, every score is a percentage and the table lists every variant."""
    module = load("learnability")
    args = ["--seconds", "0.5", "--num-images", "40", "--bank", "40", "--test", "20", "--out", str(tmp_path / "l"),
            *(a for kv in SMALL_DEMO for a in ("--set", kv))]  # fmt: skip
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

    from gsg_zoo.learner import SelfSupervisedLearner
    from gsg_zoo.recipes import load_recipe

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
