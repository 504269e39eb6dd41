"""Trainer paths users run by default or by one switch: channels_last (the default), the monitor, bf16
autocast on the CPU, metrics.csv and TensorBoard."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from test_pretrain import TINY

from gsg_zoo.config.recipes import TrainConfig, load_recipe
from gsg_zoo.train.trainer import Pretrainer

CL = torch.channels_last
# three epochs of two steps; the monitor at epochs 2 and 3 only
BASE = [*TINY, "train.epochs=3", "train.max_steps_per_epoch=2", "monitor.every=2"]


@dataclass
class Probe:
    """What reached the backbone (mode, input layout) and what the projector computed in (dtype)."""

    inputs: list[tuple[bool, bool]] = field(default_factory=list)  # (training, channels_last input)
    projector_dtypes: list[torch.dtype] = field(default_factory=list)  # in training mode


@dataclass
class Run:
    trainer: Pretrainer
    probe: Probe
    out: Path
    summary: dict[str, Any]

    def rows(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in (self.out / "metrics.jsonl").read_text().splitlines()]


def probed_run(out: Path, *overrides: str) -> Run:
    trainer = Pretrainer(load_recipe("demo", [*BASE, *overrides]), out, progress=False)
    probe, enc = Probe(), trainer.learner.encoder

    def on_input(module: torch.nn.Module, args: tuple) -> None:
        probe.inputs.append((module.training, args[0].is_contiguous(memory_format=CL)))

    def on_projection(module: torch.nn.Module, args: tuple, out: torch.Tensor) -> None:
        if module.training:
            probe.projector_dtypes.append(out.dtype)

    enc.backbone.register_forward_pre_hook(on_input)
    enc.projector.register_forward_hook(on_projection)
    return Run(trainer, probe, out, trainer.run())


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """channels_last as the recipes default it, the monitor on, TensorBoard on."""
    return probed_run(
        tmp_path_factory.mktemp("default") / "run", "train.channels_last=true", "monitor.tensorboard=true"
    )


def test_channels_last_reaches_the_weights_the_steps_and_the_monitor(default_run):
    assert TrainConfig().channels_last and load_recipe("demo").train.channels_last  # the default
    assert not torch.zeros(16, 3, 16, 16).is_contiguous(memory_format=CL)  # the probe can tell
    conv_weights = [m.weight for m in default_run.trainer.learner.modules() if isinstance(m, torch.nn.Conv2d)]
    assert conv_weights and all(w.is_contiguous(memory_format=CL) for w in conv_weights)
    train = [cl for training, cl in default_run.probe.inputs if training]
    monitor = [cl for training, cl in default_run.probe.inputs if not training]
    assert len(train) == 3 * 2 * 4  # 3 epochs x 2 steps x 4 views (simsiam_gsg)
    assert monitor and all(train) and all(monitor)


def test_monitor_runs_on_due_epochs_and_its_row_is_the_encoders(default_run):
    rows = default_run.rows()
    keys = ("knn_top1", "z_std", "z_rank", "h_rank")
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert not any(k in rows[0] for k in keys) and all(k in r for r in rows[1:] for k in keys)
    for r in rows[1:]:
        assert 0 <= r["knn_top1"] <= 100 and r["z_std"] > 0 and r["z_rank"] >= 1 and r["h_rank"] >= 1
    # bank + queries (64 + 32 images, one batch each) embedded in eval mode at epochs 2 and 3
    assert sum(not training for training, _ in default_run.probe.inputs) == 2 * 2
    assert default_run.trainer.learner.training  # train mode restored
    again = default_run.trainer.monitor()  # the final encoder, measured again: the same numbers
    assert {k: rows[-1][k] for k in keys} == pytest.approx({k: again[k] for k in keys}, rel=1e-5)
    assert rows[-1]["monitor_protocol"] == again["monitor_protocol"]  # named in the metrics
    assert default_run.summary["knn_top1"] == rows[-1]["knn_top1"]


def test_metrics_csv_has_one_row_per_epoch_equal_to_jsonl(default_run):
    rows = default_run.rows()
    with open(default_run.out / "metrics.csv", newline="") as f:
        reader = csv.DictReader(f)
        header, table = reader.fieldnames, list(reader)
    assert header == sorted({k for r in rows for k in r})
    assert len(table) == len(rows) == 3
    for row, line in zip(rows, table):
        for k in header:
            if isinstance(row.get(k), str):  # the monitor's protocol
                assert line[k] == row[k]
                continue
            assert (float(line[k]) if line[k] else None) == (pytest.approx(row[k]) if k in row else None), k


def test_tensorboard_gets_every_numeric_column_per_epoch(default_run):
    """TensorBoard is a dependency of the test environment; the run wrote one event file."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(default_run.out / "tb"))
    acc.Reload()
    rows = default_run.rows()
    numeric = {k for r in rows for k, v in r.items() if isinstance(v, (int, float)) and k != "epoch"}
    assert set(acc.Tags()["scalars"]) == numeric
    for key in ("loss", "lr", "knn_top1", "z_rank"):
        logged = [(e.step, e.value) for e in acc.Scalars(key)]
        expected = [(r["epoch"], r[key]) for r in rows if key in r]
        assert [s for s, _ in logged] == [s for s, _ in expected], key
        assert [v for _, v in logged] == pytest.approx([v for _, v in expected], rel=1e-6), key


def test_bf16_autocast_on_cpu(tmp_path, default_run):
    """``--set train.precision=bf16`` on the CPU: the forward computes in bf16, the weights stay fp32."""
    one_step = ("train.epochs=1", "train.max_steps_per_epoch=1", "monitor.every=0")  # a bf16 CPU step: ~15 s
    run = probed_run(tmp_path / "bf16", "train.precision=bf16", *one_step)
    assert run.trainer.amp_dtype == torch.bfloat16
    assert run.probe.projector_dtypes == [torch.bfloat16] * 1 * 4
    assert set(default_run.probe.projector_dtypes) == {torch.float32}  # the probe can tell: fp32 default
    assert all(p.dtype == torch.float32 for p in run.trainer.learner.parameters())
    [row] = run.rows()
    assert math.isfinite(row["loss"]) and row["steps"] == 1 and 0 <= row["knn_top1"] <= 100


def test_run_stops_its_persistent_loader_workers(tmp_path):
    """Left alive, they are shut down whenever the garbage collector finds them, blocking a later run
    in the same process (the peer-parity benchmark lost 10 s that way)."""
    import multiprocessing

    overrides = [*TINY, "train.epochs=2", "train.max_steps_per_epoch=2", "data.loader.num_workers=2"]
    trainer = Pretrainer(
        load_recipe("demo", [*overrides, "data.loader.persistent_workers=true"]), tmp_path, progress=False
    )
    trainer.run()
    assert trainer.train_loader.persistent_workers and not multiprocessing.active_children()
