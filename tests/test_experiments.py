"""`gsg experiment claims` at toy scale: runs, resumability, aggregation over seeds, report files."""

from __future__ import annotations

import json

import pytest
from test_pretrain import TINY

from gsg_zoo.experiments import run_claims

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
