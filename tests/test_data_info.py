"""``gsg data info PATH_OR_ID``: format, splits, samples, classes, label and image keys and
bytes of each source the readers take, from data written by the other tools; an unknown source is a
one-line error."""

from __future__ import annotations

import json
import os

import pytest
from test_foreign_shards import write_wds
from test_hub_layouts import write_hub_repo
from test_shards import jpeg_folder

from gsg_zoo.app.cli import main

pytest.importorskip("webdataset")
pytest.importorskip("datasets")


def info(capsys, *args) -> dict:
    assert main(["data", "info", *map(str, args)]) == 0
    return json.loads(capsys.readouterr().out)


def test_foreign_shards_gsg_shards_and_a_pattern(tmp_path, capsys):
    write_wds(tmp_path / "wds", "train", 23, 10, seed=0)
    write_wds(tmp_path / "wds", "validation", 7, 10, seed=1)
    out = info(capsys, tmp_path / "wds")
    assert out["dataset"] == "webdataset" and set(out["splits"]) == {"train", "validation"}
    train = out["splits"]["train"]
    assert (train["samples"], train["shards"], train["classes"], train["unlabelled"]) == (23, 3, 3, 0)
    assert (
        train["image_key"] == "jpg"
        and train["label_key"] == "cls"
        and train["members"] == ["cls", "jpg", "json"]
    )
    assert train["bytes"] == sum(os.path.getsize(p) for p in (tmp_path / "wds").glob("in1k-train-*.tar"))
    pattern = info(capsys, f"{tmp_path}/wds/in1k-validation-{{0000..0000}}.tar", "--label-key", "none")
    assert pattern["splits"]["(given)"]["samples"] == 7 and pattern["splits"]["(given)"]["unlabelled"] == 7
    jpeg_folder(tmp_path / "jpegs")
    assert (
        main(
            [
                "data",
                "shard",
                "imagefolder",
                "--data",
                str(tmp_path / "jpegs"),
                "--out",
                str(tmp_path / "gsg" / "train"),
                "--no-progress",
            ]
        )
        == 0
    )
    capsys.readouterr()
    gsg = info(capsys, tmp_path / "gsg")["splits"]["train"]
    assert (gsg["samples"], gsg["classes"], gsg["counts_from"]) == (48, 3, "gsg")


def test_a_hub_download_an_imagefolder_and_an_unlabeled_folder(tmp_path, capsys):
    write_hub_repo(tmp_path / "repo", train=10, test=4)
    hub = info(capsys, tmp_path / "repo")
    assert hub["dataset"] == "hf" and {k: v["samples"] for k, v in hub["splits"].items()} == {
        "train": 10,
        "test": 4,
    }
    assert hub["splits"]["train"]["classes"] == 3 and hub["splits"]["train"]["image_key"] == "image"
    assert hub["splits"]["train"]["label_key"] == "label"
    jpeg_folder(tmp_path / "folder")
    tv = info(capsys, tmp_path / "folder")
    assert tv["dataset"] == "imagefolder" and tv["splits"]["train"]["samples"] == 48
    assert tv["splits"]["train"]["classes"] == 3
    flat = info(capsys, tmp_path / "folder" / "train" / "c0")
    assert flat["dataset"] == "folder" and flat["splits"]["(all)"]["samples"] == 16


def test_an_unknown_source_is_a_one_line_error(tmp_path, capsys):
    assert main(["data", "info", str(tmp_path / "nothing" / "here")]) == 1
    err = capsys.readouterr().err.strip()
    assert "no such folder, file, pattern or Hub id" in err and len(err.splitlines()) == 1
