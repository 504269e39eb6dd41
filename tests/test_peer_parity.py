"""benchmarks/peer_parity.py at a tiny size: both libraries train, export and are scored alike (needs lightly)."""

from __future__ import annotations

import json

import pytest
from test_benchmarks import load
from test_mnist import write_split_files

pytestmark = pytest.mark.slow
pytest.importorskip("lightly", reason="lightly is a benchmark-only extra: pip install -e .[bench]")

TINY = [
    "--set",
    "batch=8",
    "--set",
    "workers=0",
    "--set",
    "knn_k=5",
    "--set",
    "proj_hidden=32",
    "--set",
    "proj_dim=16",
    "--set",
    "pred_hidden=8",
    "--set",
    "image_size=16",
]


def test_peer_parity_tiny(tmp_path):
    write_split_files(tmp_path / "fm", n_train=40, n_test=20)
    report = load("peer_parity").main(
        [
            "--data",
            str(tmp_path / "fm"),
            "--out",
            str(tmp_path / "runs"),
            "--results",
            str(tmp_path / "res"),
            "--steps",
            "2",
            "--seeds",
            "0",
            "--eval-subset",
            "30",
            "--warmup-steps",
            "1",
            *TINY,
        ]
    )
    assert json.loads((tmp_path / "res" / "peer_parity.json").read_text()) == json.loads(json.dumps(report))
    md = (tmp_path / "res" / "peer_parity.md").read_text()
    assert "| simsiam | lightly |" in md and "| byol | gsg_zoo |" in md and "Stays different" in md
    records = report["records"]
    assert {(r["library"], r["method"]) for r in records} == {
        (lib, m) for lib in ("gsg_zoo", "lightly") for m in ("simsiam", "byol")
    }
    for r in records:
        assert r["steps"] == 2 and r["images_per_s"] > 0 and 0 <= r["knn_top1"] <= 100
        assert r["num_train"] == 30 and r["num_test"] == 20
    assert len({r["transform"] for r in records}) == 1  # scored with one preprocessing
