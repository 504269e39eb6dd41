"""``gsg eval embed``: t-SNE of a class-balanced sample, PNG + every point's coordinates in the JSON."""

from __future__ import annotations

import importlib.util
import json

import pytest
from eval_fakes import write_imagefolder
from PIL import Image

from gsg_zoo.app.cli import main

MODEL = ["--model", "random:resnet10t", "--image-size", "32", "--workers", "0", "--quiet"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    path = tmp_path_factory.mktemp("embed") / "if"
    write_imagefolder(path, n_train=12, n_test=4, k=3)
    return path


def _args(root, tmp_path, *extra):
    base = ["eval", "embed", *MODEL, "--dataset", "imagefolder", "--data", str(root)]
    return [*base, "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out"), *extra]


def test_tsne_writes_png_and_coordinates(root, tmp_path):
    assert main(_args(root, tmp_path, "--split", "train", "--points", "24", "--seed", "1")) == 0
    r = json.loads((tmp_path / "out" / "embed_tsne_imagefolder.json").read_text())
    assert r["method"] == "tsne" and r["num_points"] == 24 == len(r["points"])
    labels = [p["label"] for p in r["points"]]
    assert sorted(labels.count(c) for c in set(labels)) == [8, 8, 8]  # class-balanced
    assert len({p["index"] for p in r["points"]}) == 24 and r["settings"]["seed"] == 1
    with Image.open(tmp_path / "out" / "embed_tsne_imagefolder.png") as im:
        assert im.size[0] > 300
    assert "embed_tsne_imagefolder.png" in (tmp_path / "out" / "embed_tsne_imagefolder.md").read_text()


@pytest.mark.skipif(importlib.util.find_spec("umap") is not None, reason="umap-learn is installed")
def test_umap_without_the_extra_says_how_to_install_it(root, tmp_path, capsys):
    assert main(_args(root, tmp_path, "--method", "umap", "--points", "10")) == 1
    assert "pip install 'gsg-zoo[umap]'" in capsys.readouterr().err
