"""The command line as a user meets it: fast help, one set of shared options, clear errors."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import pytest

from gsg_zoo.app.cli import build_parser, main
from gsg_zoo.app.commands._common import OPTION_GROUPS


def _leaf_parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """Every runnable (sub-)command: parsers without sub-commands of their own."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
    for action in subs:
        for name, child in action.choices.items():
            yield from _leaf_parsers(child, (*path, name))


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


def test_every_command_has_debug_and_shared_groups_are_identical():
    leaves = dict(_leaf_parsers(build_parser()))
    assert len(leaves) >= 14, sorted(leaves)
    missing = [" ".join(p) for p, parser in leaves.items() if "--debug" not in _flags(parser)]
    assert not missing, f"commands without --debug: {missing}"
    # the feature-extraction options come from one parent: same flags, same defaults on each command
    shared = (
        "--cache-dir",
        "--no-cache",
        "--batch-size-extract",
        "--workers",
        "--no-amp",
        "--subset",
        "--device",
    )
    users = [("eval", "knn"), ("eval", "linear"), ("transfer", "classification")]
    defaults = []
    for path in users:
        parser = leaves[path]
        assert set(shared) <= _flags(parser), path
        defaults.append({a.dest: a.default for a in parser._actions if set(a.option_strings) & set(shared)})
    assert defaults[0] == defaults[1] == defaults[2]


def test_option_groups_are_known():
    from gsg_zoo.app.commands._common import parents

    assert {"debug", "device", "features"} <= set(OPTION_GROUPS)
    with pytest.raises(ValueError, match="unknown option groups"):
        parents("no-such-group")


#: Frameworks the commands import only when they run (building the parser must not pull them in).
HEAVY = ("detectron2", "mmseg", "mmengine", "datasets", "webdataset", "transformers", "sklearn", "matplotlib")


def _seconds(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    return time.perf_counter() - start


def test_help_and_usage_errors_import_no_framework_and_cost_about_the_timm_import():
    code = (
        "import sys; from gsg_zoo.app.cli import build_parser; build_parser(); "
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"building the CLI imported {out.strip()}"
    timm_import = _seconds("import timm")
    start = time.perf_counter()
    calls = (
        ["--help"],
        ["pretrain", "demo"],
        ["transfer", "detection", "recipes"],
    )  # help, usage error, list
    for argv in calls:
        proc = subprocess.run([sys.executable, "-m", "gsg_zoo", *argv], capture_output=True, text=True)
        assert proc.returncode in (0, 2), (argv, proc.stderr)
    per_call = (time.perf_counter() - start) / len(calls)
    assert per_call < 1.5 * timm_import + 1.0, f"{per_call:.2f} s per call, import timm {timm_import:.2f} s"


def test_pretrain_list_and_usage(capsys):
    assert main(["pretrain", "--list"]) == 0
    names = capsys.readouterr().out.split()
    assert "demo" in names and "cifar10_simsiam_gsg" in names and "_cifar10_base" not in names
    with pytest.raises(SystemExit) as exc:
        main(["pretrain", "demo"])  # no --out
    assert exc.value.code == 2
    assert "--out" in capsys.readouterr().err


def test_bad_set_value_names_its_key(capsys):
    with pytest.raises(SystemExit, match="2"):  # a usage error, like argparse's own
        main(["pretrain", "demo", "--out", "unused", "--set", "train.batch_size=abc"])
    err = capsys.readouterr().err
    assert "train.batch_size" in err and "'abc'" in err


def test_debug_reraises(tmp_path):
    with pytest.raises(ValueError, match="train.batch_size"):
        main(["pretrain", "demo", "--out", str(tmp_path), "--set", "train.batch_size=abc", "--debug"])


def test_every_command_module_is_listed():
    from pathlib import Path

    from gsg_zoo.app import cli

    folder = Path(cli.__file__).parent / "commands"
    on_disk = {p.stem for p in folder.glob("*.py") if not p.stem.startswith("_")}
    assert {m.__name__.rsplit(".", 1)[1] for m in cli.COMMANDS} == on_disk


def test_dataset_choices_in_the_help_come_from_the_registry():
    from gsg_zoo.data.registry import TRANSFER_SUITE, dataset_names

    leaves = dict(_leaf_parsers(build_parser()))
    knn = next(a for a in leaves[("eval", "knn")]._actions if "--dataset" in a.option_strings)
    assert knn.help.split("one of ", 1)[1].split(", ") == list(dataset_names(multilabel=False))
    assert "voc2007" not in knn.help  # multi-label: the suite's, not the kNN probe's
    suite = next(
        a for a in leaves[("transfer", "classification")]._actions if "--datasets" in a.option_strings
    )
    assert suite.default.split(",") == list(TRANSFER_SUITE)
