"""The online linear probe (``monitor.online_linear=true``): it leaves the SSL weights bit-identical,
writes its top-1 per epoch (rows, summary, curve panel), and resumes with the run."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from test_pretrain import TINY

from gsg_zoo.config.recipes import load_recipe
from gsg_zoo.core.checkpoint import load_checkpoint
from gsg_zoo.core.distributed import DistInfo
from gsg_zoo.train.online_probe import OnlineLinearProbe
from gsg_zoo.train.trainer import Pretrainer

RUN = [*TINY, "train.epochs=2", "train.max_steps_per_epoch=3", "train.checkpoint_every=1", "monitor.every=1"]
PROBE = ["monitor.online_linear=true", "monitor.online_linear_lr=0.5"]


def _run(out, extra=()):
    torch.manual_seed(123)  # the global RNG before the run: the run must not depend on it either way
    trainer = Pretrainer(load_recipe("demo", [*RUN, *extra]), out, progress=False)
    trainer.run()
    return trainer


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("probe")
    return tmp, _run(tmp / "plain"), _run(tmp / "probe", PROBE)


def test_the_probe_leaves_the_ssl_weights_bit_identical(runs):
    _, plain, probed = runs
    a, b = plain.learner.state_dict(), probed.learner.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["loss"] for r in plain.state.history] == [r["loss"] for r in probed.state.history]
    assert [r["knn_top1"] for r in plain.state.history] == [r["knn_top1"] for r in probed.state.history]


def test_the_probe_reports_top1_per_epoch(runs):
    tmp, _, probed = runs
    rows = [json.loads(line) for line in (tmp / "probe" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for r in rows:
        assert 0 <= r["online_linear_top1"] <= 100 and 0 <= r["online_linear_train_top1"] <= 100
        assert r["online_linear_loss"] > 0
    summary = json.loads((tmp / "probe" / "summary.json").read_text())["online_probe"]
    assert summary["top1"] == rows[-1]["online_linear_top1"] and len(summary["curve"]) == 2
    assert "lr 0.5" in summary["protocol"]
    assert "online_probe" not in json.loads((tmp / "plain" / "summary.json").read_text())
    assert "online_probe" in load_checkpoint(tmp / "probe" / "checkpoints" / "last.pt")


def test_the_probe_resumes_with_the_run(runs, tmp_path):
    """Resumed from the first epoch's checkpoint, the run ends with the same probe and SSL weights."""
    tmp, _, probed = runs
    (tmp_path / "checkpoints").mkdir()
    shutil.copy(tmp / "probe" / "checkpoints" / "epoch_0001.pt", tmp_path / "checkpoints" / "last.pt")
    resumed = _run(tmp_path, PROBE)
    a, b = probed.online_probe.state_dict(), resumed.online_probe.state_dict()
    assert all(torch.equal(a["head"][k], b["head"][k]) for k in a["head"])
    la, lb = probed.learner.state_dict(), resumed.learner.state_dict()
    assert all(torch.equal(la[k], lb[k]) for k in la)
    assert probed.state.history[-1]["online_linear_top1"] == resumed.state.history[-1]["online_linear_top1"]


def test_unlabelled_data_is_refused():
    probe = OnlineLinearProbe(4, 3, 0.1, torch.device("cpu"), DistInfo())
    with pytest.raises(ValueError, match="needs labelled training data"):
        probe.step(torch.randn(2, 4), torch.tensor([-1, -1]))
