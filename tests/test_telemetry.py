"""Step telemetry: GSG selection counts, step rows in steps.jsonl and Weights & Biases (offline)
with the same values, the W&B run id kept across a resume, rank-tagged logs, plain progress lines
without a TTY. The all-reduce over ranks is tested on 2 gloo ranks in tests/test_dist_eval.py."""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path

import pytest
import torch
from test_pretrain import TINY

from gsg_zoo.config.recipes import load_recipe
from gsg_zoo.core.distributed import DistInfo
from gsg_zoo.method.learner import LearnerConfig, SelfSupervisedLearner
from gsg_zoo.train.log import SELECTION_KEYS, configure_rank_logging
from gsg_zoo.train.trainer import Pretrainer

RUN = [
    *TINY,
    "method=byol_gsg",
    "data.synthetic.num_images=32",
    "train.batch_size=8",
    "train.epochs=1",
    "train.log_every=2",
    "monitor.every=-1",
    "monitor.wandb=true",
    "monitor.tensorboard=false",
]


def test_selection_counts_sum_to_the_batch():
    torch.manual_seed(0)
    cfg = LearnerConfig.for_method(
        "simsiam_gsg", backbone="resnet18", projector_hidden_dim=32, projector_dim=16, predictor_hidden_dim=8
    )
    out = SelfSupervisedLearner(cfg)(torch.randn(4, 6, 3, 16, 16).unbind(0))
    assert out.selection_counts.sum() == 6 and out.selection_counts.shape == (4,)
    assert out.selection_counts.tolist() == torch.bincount(out.selection, minlength=4).tolist()
    baseline = SelfSupervisedLearner(
        LearnerConfig.for_method("simsiam", backbone="resnet18", projector_dim=16)
    )
    assert baseline(torch.randn(2, 4, 3, 16, 16).unbind(0)).selection_counts is None


def wandb_records(run_dir: Path) -> tuple[str, list[dict]]:
    """The run id and history rows of an offline W&B run: its ``run-ID.wandb`` file is a LevelDB-style
    log (32 KiB blocks, 7-byte record headers: crc32, length, type) of ``Record`` protobufs after a
    7-byte ``:W&B`` header."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = next(run_dir.glob("run-*.wandb")).read_bytes()
    assert data[:4] == b":W&B"
    pos, buf, run_id, rows = 7, b"", None, []
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if left < 7 or (length == 0 and kind == 0):
            pos += left
            continue
        buf, pos = buf + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            rec = pb.Record()
            rec.ParseFromString(buf)
            buf = b""
            if rec.WhichOneof("record_type") == "run":
                run_id = rec.run.run_id
            elif rec.WhichOneof("record_type") == "history":
                rows.append(
                    {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item}
                )
    return run_id, rows


@pytest.fixture(scope="module")
def wandb_run(tmp_path_factory):
    """One epoch (4 steps, a row every 2), then resumed for a second epoch, with W&B offline."""
    pytest.importorskip("wandb")
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "offline")
    mp.setenv("WANDB_SILENT", "true")
    out = tmp_path_factory.mktemp("telemetry") / "run"
    lines, pkg = Lines(), logging.getLogger("gsg_zoo")
    pkg.addHandler(lines)
    level = pkg.level
    pkg.setLevel(logging.INFO)
    try:
        trainer = Pretrainer(load_recipe("demo", RUN), out, progress=True)
        trainer.run()
        first = torch.load(out / "checkpoints" / "last.pt", weights_only=False)["telemetry"]
        first["bar_disabled"] = trainer._progress_bar().disable  # stderr is no TTY under pytest
        Pretrainer(load_recipe("demo", [*RUN, "train.epochs=2"]), out, progress=True).run()
    finally:
        mp.undo()
        pkg.removeHandler(lines)
        pkg.setLevel(level)
    return out, {**first, "lines": lines.messages}


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_step_rows_count_every_selection_and_image(wandb_run):
    out, _ = wandb_run
    rows = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6, 8]  # the resumed epoch appended after the first
    for r in rows:
        assert sum(r[k] for k in SELECTION_KEYS) == 2 * 8  # 2 steps x the batch of 8
        assert 0 < r["ema_momentum"] < 1 and r["lr"] > 0 and r["images_per_s"] > 0
        assert r["step_time_s_min"] == r["step_time_s_max"] and 0 <= r["data_wait_frac"] < 1
    assert rows[-1]["eta_s"] == 0 and rows[1]["epoch"] == 1.0
    epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [1, 2]  # metrics.jsonl keeps one row per epoch


def test_wandb_offline_records_the_step_rows_and_keeps_its_run_id(wandb_run):
    out, first = wandb_run
    runs = sorted((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 2  # the first run and its resume
    (id1, hist1), (id2, hist2) = (wandb_records(r) for r in runs)
    assert id1 == id2 == first["wandb_id"]
    logged = {h["_step"]: h for h in hist1 + hist2 if "step/loss" in h}
    rows = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert sorted(logged) == [r["step"] for r in rows]
    for r in rows:
        for key in ("loss", "lr", "images_per_s", "ema_momentum", *SELECTION_KEYS):
            assert logged[r["step"]][f"step/{key}"] == pytest.approx(r[key], rel=1e-12), key
    epoch_rows = [h for h in hist1 + hist2 if "epoch/loss" in h]
    assert [h["epoch/epoch"] for h in epoch_rows] == [1, 2]


def test_progress_without_a_tty_is_one_plain_line_per_interval(wandb_run):
    _, first = wandb_run
    lines = [m for m in first["lines"] if m.startswith("step ")]
    assert [line.split(",")[0] for line in lines] == ["step 2/4", "step 4/4", "step 6/8", "step 8/8"]
    assert "select " in lines[0] and "eta " in lines[0] and "img/s" in lines[0] and "ema " in lines[0]
    assert first["bar_disabled"]  # no carriage-return tqdm bar


def test_log_lines_name_rank_and_host_and_other_ranks_warn_only():
    handler = logging.StreamHandler()
    root, pkg = logging.getLogger(), logging.getLogger("gsg_zoo")
    root.addHandler(handler)
    level = pkg.level
    try:
        configure_rank_logging(DistInfo(rank=1, world_size=2))
        record = logging.LogRecord("gsg_zoo.pretrain", logging.WARNING, __file__, 1, "slow data", None, None)
        assert "[rank 1/2 " in handler.format(record) and "slow data" in handler.format(record)
        assert not logging.getLogger("gsg_zoo.pretrain").isEnabledFor(logging.INFO)
        assert logging.getLogger("gsg_zoo.pretrain").isEnabledFor(logging.WARNING)
    finally:
        root.removeHandler(handler)
        pkg.setLevel(level)


def test_without_tensorboard_installed_runs_log_without_it(tmp_path, monkeypatch, caplog):
    """``monitor.tensorboard`` is on by default; without the ``tb`` extra the epoch and step logs are
    written anyway, with one note, and no TensorBoard directory."""
    import sys

    from gsg_zoo.train.log import RunLog, StepSinks

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were absent
    caplog.set_level(logging.INFO, logger="gsg_zoo.pretrain")
    run_log = RunLog(tmp_path, tensorboard=True)
    for epoch in (1, 2):
        run_log.epoch([{"epoch": e, "loss": -0.1 * e} for e in range(1, epoch + 1)])
    sinks = StepSinks(tmp_path, tensorboard=True, log_lines=False)
    sinks.write({"step": 5, "loss": -0.2, "time": 0.0})
    sinks.close()
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2
    assert json.loads((tmp_path / "steps.jsonl").read_text())["step"] == 5
    assert not (tmp_path / "tb").exists()
    assert caplog.text.count("tensorboard is not installed") == 2  # once for the run log, once for the steps
