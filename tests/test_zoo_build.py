"""``gsg zoo build``: a planned entry built end to end by one command; killed inside each
stage and rerun, it continues and ends with the same export (weights bit-identical) and card (apart
from timestamps) as an uninterrupted build."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gsg_zoo.app.zoo_build import Build, planned_entries
from gsg_zoo.zoo.report_results import card_results, knn_top1_at


def card_text(out: Path) -> str:
    """The card without its timestamps and measured durations / speeds (which differ run to run)."""
    text = (out / "export" / "README.md").read_text()
    text = re.sub(r"\d{4}-\d\d-\d\dT[\d:.+Z-]+|\d{4}-\d\d-\d\d \d\d:\d\d(:\d\d)?", "TIME", text)
    return "\n".join(
        line for line in text.splitlines() if not re.search(r"_s`|per_s|_s_|seconds|device_hours", line)
    )


@pytest.mark.slow
def test_build_killed_in_every_stage_continues_and_equals_an_uninterrupted_build(
    tmp_path, monkeypatch, capsys
):
    """The crash comes right after each stage's work, before it is recorded (where a SIGKILL hurts most)."""
    import gsg_zoo.app.zoo_build as zb

    entry = planned_entries()["demo-tiny"]
    Build(entry, tmp_path / "once").run()
    stages = [name for name, _ in Build(entry, tmp_path / "x").plan()]
    assert stages == ["pretrain", "eval:0", "export", "card"]
    for stage in stages:

        def crash(name: str, stage: str = stage) -> None:
            if name == stage:
                raise KeyboardInterrupt

        monkeypatch.setattr(zb, "_test_kill", crash)
        with pytest.raises(KeyboardInterrupt):
            Build(entry, tmp_path / "killed").run()
        state = json.loads((tmp_path / "killed" / "build.json").read_text()) if stage != "pretrain" else {}
        assert stage not in state.get("done", {})  # not recorded: the rerun does it again
    monkeypatch.undo()
    done = Build(entry, tmp_path / "killed").run()
    assert list(done) == stages
    weights = [
        (out / "export" / "model.safetensors").read_bytes()
        for out in (tmp_path / "once", tmp_path / "killed")
    ]
    assert weights[0] == weights[1]
    assert card_text(tmp_path / "once") == card_text(tmp_path / "killed")
    results = json.loads((tmp_path / "once" / "export" / "results.json").read_text())["results"]
    assert {(r["task"], r["protocol_name"], r["full_protocol"]) for r in results} == {
        ("knn", "default", False)
    }
    assert "kNN classification" in card_text(tmp_path / "once")
    capsys.readouterr()
    from gsg_zoo.app.cli import main

    assert main(["zoo", "build", "demo-tiny", "--out", str(tmp_path / "once"), "--push-dry-run"]) == 0
    out = capsys.readouterr().out  # every stage done: only the upload is planned
    assert "no network used" in out and "model.safetensors" in out


def test_dry_run_prints_the_plan_and_runs_nothing(tmp_path, capsys):
    from gsg_zoo.app.cli import main

    assert (
        main(
            [
                "zoo",
                "build",
                "simsiam-gsg-resnet50-in1k-100ep",
                "--out",
                str(tmp_path / "b"),
                "--dry-run",
                "--push",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "recipe imagenet_simsiam_gsg" in out and "todo  manifest" in out and "todo  eval:1" in out
    assert not (tmp_path / "b").exists()


def test_paper_entries_are_declared_with_their_protocols():
    entries = planned_entries()
    paper = {e.recipe for e in entries.values() if e.recipe.startswith("imagenet_")}
    assert paper == {"imagenet_simsiam_gsg", "imagenet_simsiam", "imagenet_byol_gsg", "imagenet_byol"}
    for e in entries.values():
        if e.recipe.startswith("imagenet_"):
            assert {(v["eval"], v["protocol"]) for v in e.evaluations} == {
                ("knn", "gsg"),
                ("linear", "reference"),
            }


def test_card_results_carry_the_protocol():
    report = {
        "evaluator": "knn",
        "protocol": "gsg",
        "dataset": "imagefolder",
        "protocol_settings": {"description": "GSG main_knn.py"},
        "results": [{"k": 200, "T": 0.2, "top1": 58.4}],
    }
    (r,) = card_results(report)
    assert (r["task"], r["protocol_name"], r["k"], r["t"], r["value"]) == ("knn", "gsg", 200, 0.2, 58.4)
    assert r["full_protocol"] and "baselines" not in r
    two = {**report, "results": [{"k": 20, "T": 0.1, "top1": 50.0}, {"k": 200, "T": 0.2, "top1": 58.4}]}
    base = {**report, "results": [{"k": 200, "T": 0.2, "top1": 31.0}, {"k": 20, "T": 0.1, "top1": 30.0}]}
    rows = card_results(two, subset=True, baselines={"random init": base})
    assert [(r["k"], r["value"], r["baselines"]) for r in rows] == [
        (20, 50.0, {"random init": 30.0}),
        (200, 58.4, {"random init": 31.0}),
    ]  # each baseline value is read at its own (k, T)
    assert not any(r["full_protocol"] for r in rows)
    with pytest.raises(KeyError, match="k=5, T=0.07"):
        knn_top1_at(two, 5, 0.07)
    linear = {"evaluator": "linear", "protocol": "fast", "dataset": "cifar10", "top1": 71.5}
    (lin,) = card_results(linear, baselines={"pixels": {**linear, "top1": 40.0}})
    assert (lin["task"], lin["protocol"], lin["value"], lin["baselines"]) == (
        "linear",
        "linear fast",
        71.5,
        {"pixels": 40.0},
    )
