"""`gsg experiment claims` and `compare` at toy scale: runs, resumability, aggregation over seeds,
report files, the arm syntax."""

from __future__ import annotations

import argparse
import json

import pytest
from test_pretrain import TINY

from gsg_zoo.app.commands.experiment_compare import parse_arm
from gsg_zoo.app.experiments import run_arms, run_claims

pytestmark = pytest.mark.slow


def test_claims_runs_aggregates_and_skips_finished_runs(tmp_path):
    runs = ["simsiam", "simsiam_gsg", "simsiam_2x_epochs"]
    report = run_claims(tmp_path, seeds=[0, 1], epochs=1, overrides=TINY, runs=runs)
    table = {r["run"]: r for r in report["table"]}
    assert set(table) == set(runs) and all(r["n"] == 2 for r in table.values())
    # GSG encodes 4 views per image, the baseline 2: the 2x-epoch baseline matches GSG's encoder passes.
    assert table["simsiam_gsg"]["encoder_passes"] == 2 * table["simsiam"]["encoder_passes"]
    assert table["simsiam_2x_epochs"]["encoder_passes"] == table["simsiam_gsg"]["encoder_passes"]
    assert table["simsiam_2x_epochs"]["epochs"] == 2
    assert all("knn_top1_std" in r and "z_rank" in r for r in table.values())
    assert (tmp_path / "claims.png").stat().st_size > 0
    assert "simsiam_gsg" in (tmp_path / "claims.md").read_text()
    assert json.loads((tmp_path / "claims.json").read_text())["table"] == report["table"]

    # A second call reuses the finished run directories instead of training again.
    stamp = (tmp_path / "simsiam_seed0" / "summary.json").stat().st_mtime_ns
    again = run_claims(tmp_path, seeds=[0, 1], epochs=1, overrides=TINY, runs=runs)
    assert (tmp_path / "simsiam_seed0" / "summary.json").stat().st_mtime_ns == stamp
    assert again["table"] == report["table"]


def test_compare_runs_each_arm_with_its_overrides_and_reports_per_arm(tmp_path):
    arms = {
        "min": ["model.gsg_selection=min"],
        "rand": ["model.gsg_selection=random", "train.max_steps_per_epoch=2"],
    }
    report = run_arms(
        tmp_path,
        "knobs",
        arms,
        seeds=[0],
        epochs=1,
        base_recipe="demo",
        overrides=[*TINY, "train.batch_size=16"],
    )
    assert [r["arm"] for r in report["table"]] == ["min", "rand"]
    assert [r["steps"] for r in report["table"]] == [4, 2]  # 64 images / 16; the arm's own step cap
    config = (tmp_path / "rand_seed0" / "config.yaml").read_text()
    assert "gsg_selection: random" in config and "knn_top1" in report["table"][0]
    assert {p.name for p in tmp_path.glob("knobs.*")} == {"knobs.json", "knobs.md", "knobs.png"}


def test_arm_syntax():
    assert parse_arm("vit=model.backbone=vit_small_patch16_224 'model.backbone_kwargs={depth: 2}'") == (
        "vit",
        ["model.backbone=vit_small_patch16_224", "model.backbone_kwargs={depth: 2}"],
    )
    assert parse_arm("base=") == ("base", [])
    for bad in ("noequals", "two words=a=1", "x=novalue"):
        with pytest.raises(argparse.ArgumentTypeError, match="NAME=KEY=VALUE"):
            parse_arm(bad)
