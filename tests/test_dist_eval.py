"""Evaluation and telemetry on 2 gloo ranks: sharded feature extraction, the sharded kNN
monitor, ``torchrun -m gsg_zoo eval knn``, the DDP reference linear probe and its resume, and
all-reduced step telemetry each equal (or combine) what one process computes.

Features of a shard equal one process's up to float summation order (other batch sizes): compared
with ``atol=1e-5``; kNN accuracies, labels and the selection counts are compared exactly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gsg_zoo.app import cli

DRIVER = r'''
"""MODE OUT: the checks of tests/test_dist_eval.py on this rank; rank 0 writes OUT/MODE.json."""
import json, os, signal, sys, time
from pathlib import Path

import torch
from torch import nn

from gsg_zoo.app import cli
from gsg_zoo.core.distributed import DistInfo, init_distributed
from gsg_zoo.eval import linear
from gsg_zoo.eval.features import ExtractOptions, extract_features
from gsg_zoo.eval.knn import knn_evaluate
from gsg_zoo.method.learner import SelfSupervisedLearner
from gsg_zoo.train.monitor import KnnMonitor
from gsg_zoo.config.recipes import load_recipe
from gsg_zoo.train.log import StepTelemetry

MODE, OUT = sys.argv[1], Path(sys.argv[2])
if MODE == "cli":  # the command creates (and leaves) its own process group
    sys.exit(cli.main(["eval", "knn", "--model", "pixels", "--dataset", "synthetic", "--subset", "48",
                       "--image-size", "32", "--knn", "10:0.1", "--out", str(OUT / "cli"), "--no-cache",
                       "--no-progress", "--workers", "0", "--batch-size-extract", "16"]))
info = init_distributed("cpu", 1.0)
g = torch.Generator().manual_seed(0)
DATA = [(torch.randn(3, 16, 16, generator=g), i % 5) for i in range(40)]
torch.manual_seed(0)
NET = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
CFG = linear.LinearConfig(epochs=3, batch_size=8, lr=0.5, optimizer="lars")
res = {}


def opts(dist, batch):
    return ExtractOptions(batch_size=batch, num_workers=0, device="cpu", progress=False, dist=dist)


def probe(dist, ckpt=None):
    fc = linear.train_reference(NET, DATA, 8, 5, CFG, "cpu", 0, progress=False, dist=dist, checkpoint=ckpt)
    return torch.cat([fc.weight.detach().flatten(), fc.bias.detach()])


if MODE == "checks":
    f2, l2 = extract_features(NET, DATA[:37], opts(info, 8))  # 19 + 18 rows
    one_row = extract_features(NET, DATA[:1], opts(info, 8))[0]  # rank 1's shard is empty
    recipe = load_recipe("demo", ["model.backbone=resnet18", "model.projector_hidden_dim=64", "model.projector_dim=32",
                                  "model.predictor_hidden_dim=16", "data.image_size=16", "data.synthetic.image_size=32",
                                  "data.loader.num_workers=0", "monitor.train_limit=60", "monitor.test_limit=30",
                                  "monitor.k=10", "monitor.batch_size=16"])
    torch.manual_seed(0)
    learner = SelfSupervisedLearner(recipe.learner_config())
    m2 = KnnMonitor(recipe.data, recipe.monitor, info)(learner, torch.device("cpu"), None, False)
    fc2 = probe(info, OUT / "probe.pt")
    tel = StepTelemetry(info, torch.device("cpu"), total_steps=10)
    for _ in range(2):
        time.sleep(0.3 * info.rank)  # rank 1 is the straggler
        tel.record(torch.tensor(float(info.rank + 1)), 4, 0.01 * (info.rank + 1), torch.tensor([info.rank, 1, 1, 2 - info.rank]))
    row = tel.row(step=2, epoch=0.2, lr=0.1)
    if info.is_main:
        f1, l1 = extract_features(NET, DATA[:37], opts(DistInfo(), 16))
        acc = lambda f, l: knn_evaluate(f[:25], l[:25], f[25:], l[25:], [(5, 0.1)], 5)[(5, 0.1)]["top1"]
        m1 = KnnMonitor(recipe.data, recipe.monitor)(learner, torch.device("cpu"), None, False)
        fc1 = probe(DistInfo())
        res = {"rows": [len(f1), len(f2)], "feat_diff": (f1 - f2).abs().max().item(), "labels_equal": torch.equal(l1, l2),
               "knn": [acc(f1, l1), acc(f2, l2)], "monitor": [m1, m2], "probe_diff": (fc1 - fc2).abs().max().item(),
               "probe": fc2.tolist(), "telemetry": row, "one_row": (one_row - f1[:1]).abs().max().item()}
elif MODE == "crash":  # SIGKILL rank 0 once, right after the epoch-1 checkpoint; torchrun restarts the job
    real_save = linear.save_probe

    def save_then_die(path, fc, opt, identity, epochs_done):
        real_save(path, fc, opt, identity, epochs_done)
        if epochs_done == 1 and not (OUT / "died").exists():
            (OUT / "died").write_text("once")
            os.kill(os.getpid(), signal.SIGKILL)

    linear.save_probe = save_then_die
    res = {"probe": probe(info, OUT / "probe.pt").tolist(), "restart": os.environ.get("TORCHELASTIC_RESTART_COUNT")}
if info.is_main:
    (OUT / f"{MODE}.json").write_text(json.dumps(res))
info.close()
'''


def torchrun(tmp: Path, mode: str, restarts: int = 0) -> dict | None:
    driver = tmp / "dist_eval_driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GSG_CACHE": str(tmp / "cache")}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--standalone",
        f"--max-restarts={restarts}",
        str(driver),
        mode,
        str(tmp),
    ]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    return json.loads((tmp / f"{mode}.json").read_text()) if mode != "cli" else None


@pytest.fixture(scope="module")
def checks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist_eval")
    return tmp, torchrun(tmp, "checks")


@pytest.mark.slow
def test_sharded_extraction_equals_one_process(checks):
    _, r = checks
    assert r["rows"] == [37, 37] and r["labels_equal"]
    assert r["feat_diff"] < 1e-5  # other batch sizes: float summation order only
    assert r["knn"][0] == r["knn"][1]
    assert r["one_row"] < 1e-5  # a rank with an empty shard still joins the gather


@pytest.mark.slow
def test_sharded_monitor_equals_one_process(checks):
    _, r = checks
    one, two = r["monitor"]
    assert one["knn_top1"] == two["knn_top1"] and one["monitor_protocol"] == two["monitor_protocol"]
    for key in ("z_std", "z_rank", "h_rank"):
        assert two[key] == pytest.approx(one[key], rel=1e-4), key


@pytest.mark.slow
def test_torchrun_eval_knn_equals_one_process(tmp_path, monkeypatch):
    tmp = tmp_path / "ranks"
    tmp.mkdir()
    torchrun(tmp, "cli")
    monkeypatch.setenv("GSG_CACHE", str(tmp_path / "cache"))
    assert (
        cli.main(
            [
                "eval",
                "knn",
                "--model",
                "pixels",
                "--dataset",
                "synthetic",
                "--subset",
                "48",
                "--image-size",
                "32",
                "--knn",
                "10:0.1",
                "--out",
                str(tmp_path),
                "--no-cache",
                "--no-progress",
                "--workers",
                "0",
                "--batch-size-extract",
                "32",
            ]
        )
        == 0
    )
    one = json.loads((tmp_path / "knn_synthetic.json").read_text())
    two = json.loads((tmp / "cli" / "knn_synthetic.json").read_text())
    assert two["results"] == one["results"] and two["num_train"] == one["num_train"] == 48
    assert two["model"] == "pixels" and (one["world_size"], two["world_size"]) == (1, 2)


@pytest.mark.slow
def test_ddp_linear_probe_equals_one_process_on_the_global_batch(checks):
    _, r = checks
    assert r["probe_diff"] < 1e-5  # 3 epochs x 5 steps of 8 images: 4 per rank, gradients averaged by DDP


@pytest.mark.slow
def test_killed_ddp_linear_probe_resumes(checks, tmp_path):
    """Rank 0 is SIGKILLed after epoch 1's checkpoint; torchrun's restart resumes from it and ends with
    the uninterrupted run's fc, bit for bit."""
    _, r = checks
    resumed = torchrun(tmp_path, "crash", restarts=1)
    assert (tmp_path / "died").exists() and resumed["restart"] == "1"
    assert resumed["probe"] == r["probe"]


@pytest.mark.slow
def test_step_telemetry_is_all_reduced(checks):
    _, r = checks
    row = r["telemetry"]
    assert row["loss"] == pytest.approx(1.5)  # rank 0 lost 1, rank 1 lost 2
    assert [row[k] for k in ("select_11_21", "select_11_22", "select_12_21", "select_12_22")] == [2, 4, 4, 6]
    assert row["data_time_s_min"] == pytest.approx(0.01) and row["data_time_s_max"] == pytest.approx(0.02)
    assert row["step_time_s_max"] > row["step_time_s_min"] + 0.2  # the straggler is visible
    assert row["images_per_s"] > 0 and row["eta_s"] > 0
