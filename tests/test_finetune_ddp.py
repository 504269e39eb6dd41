"""``gsg eval finetune`` under DDP: 2 gloo ranks, each with half of every global batch, end with the
one-process weights (gradients averaged by DDP; a BN-free backbone, as BN statistics are per rank)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

DRIVER = r"""
import sys
from pathlib import Path
import torch
from torch import nn
from gsg_zoo.core.distributed import DistInfo, init_distributed
from gsg_zoo.eval.finetune import Classifier, resolve_config
from gsg_zoo.eval.finetune_train import finetune

OUT, WORLD = Path(sys.argv[1]), sys.argv[2]
info = init_distributed("cpu", 1.0) if WORLD == "2" else DistInfo()
g = torch.Generator().manual_seed(0)
DATA = [(torch.randn(3, 8, 8, generator=g), i % 4) for i in range(40)]
torch.manual_seed(0)
backbone = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
model = Classifier(backbone, 6, 4, zero_init=False)
cfg = resolve_config("default", 100.0, epochs=2, batch_size=8, base_lr=2.0)
log = finetune(model, DATA, cfg, torch.device("cpu"), info, progress=False)
if info.is_main:
    torch.save({"params": {k: v.detach() for k, v in model.state_dict().items()}, "log": log["epochs"]}, OUT / f"w{WORLD}.pt")
info.close()
"""


@pytest.mark.slow
def test_ddp_fine_tune_equals_one_process_on_the_global_batch(tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = [sys.executable, str(driver), str(tmp_path), "1"]
    two = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--standalone",
        str(driver),
        str(tmp_path),
        "2",
    ]
    for cmd in (one, two):
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    a, b = (torch.load(tmp_path / f"w{w}.pt", weights_only=True) for w in (1, 2))
    assert len(a["log"]) == len(b["log"]) == 2
    for k, v in a["params"].items():
        torch.testing.assert_close(v, b["params"][k], rtol=1e-5, atol=1e-6, msg=k)
