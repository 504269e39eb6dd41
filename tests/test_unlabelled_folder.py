"""Pretraining on a folder of unlabeled images (``data.dataset=folder``): flat or nested, the
extensions torchvision reads, symlinked folders followed once (no loop), an unreadable file replaced
and logged as in the other readers; evaluation and the kNN monitor refuse it with a one-line error."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image
from test_pretrain import TINY

from gsg_zoo.app.cli import main
from gsg_zoo.config.recipes import load_recipe
from gsg_zoo.core.distributed import DistInfo
from gsg_zoo.data.registry import get_info, open_split
from gsg_zoo.train.inputs import build_train_data

FOLDER = get_info("folder", pretrain=True)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """9 images: 3 at the top (jpg, PNG, webp), 4 two levels down, 2 in a symlinked folder; and a
    text file, a symlink loop and a folder link that leads back into the tree."""
    root = tmp_path_factory.mktemp("unlabelled")
    rng = np.random.default_rng(0)

    def save(path, fmt):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(path, format=fmt)

    photos = root / "photos"
    save(photos / "a.jpg", "JPEG")
    save(photos / "B.PNG", "PNG")
    save(photos / "c.webp", "WEBP")
    for i in range(4):
        save(photos / "2024" / "june" / f"{i}.jpeg", "JPEG")
    save(root / "elsewhere" / "x.bmp", "BMP")
    save(root / "elsewhere" / "y.jpg", "JPEG")
    (photos / "notes.txt").write_text("not an image")
    os.symlink(root / "elsewhere", photos / "linked")
    os.symlink(photos, photos / "2024" / "loop")  # a cycle: walked once
    return photos


def test_every_image_file_once_in_sorted_order(images):
    ds = open_split(FOLDER, images, "train")
    names = [os.path.relpath(p, images) for p, _ in ds.samples]
    assert names == sorted(names) and len(names) == 9 and "notes.txt" not in names
    assert {"B.PNG", "c.webp", "linked/x.bmp", "2024/june/3.jpeg"} <= set(names)
    image, label = ds[0]
    assert image.size == (24, 20) and label == -1 and ds.unlabelled


def test_pretraining_reads_it_and_replaces_an_unreadable_image(images, tmp_path, caplog, monkeypatch):
    import shutil

    from gsg_zoo.data import readers

    monkeypatch.setattr(readers, "_unreadable_seen", 0)  # earlier tests in this process used up the first 20
    copy = tmp_path / "copy"
    shutil.copytree(images, copy, symlinks=False, ignore=shutil.ignore_patterns("loop"))
    (copy / "a.jpg").write_bytes(b"\xff\xd8 cut short")
    r = load_recipe(
        "demo",
        [*TINY, "data.dataset=folder", f"data.root={copy}", "monitor.every=-1", "train.batch_size=3"],
    )
    data = build_train_data(r, DistInfo(), torch.device("cpu"), 3, 2)  # 3 batches: all 9 images
    data.set_epoch(0)
    batches = list(data.loader)
    assert len(batches) == 3 and all(views[0].shape == (3, 3, 16, 16) for views, _, _ in batches)
    assert sum(skipped for *_, skipped in batches) == 1 and {-1} == {
        y for _, labels, _ in batches for y in labels.tolist()
    }
    assert f"unreadable image {copy / 'a.jpg'}" in caplog.text


def test_evaluation_and_the_monitor_refuse_it(images, tmp_path, capsys):
    code = main(
        ["eval", "knn", "--model", "pixels", "--dataset", "folder", "--data", str(images), "--no-cache"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1 and "Unlabeled image folder" in err and "needs a label per image" in err
    assert len(err.splitlines()) == 1
    run = ["pretrain", "demo", "--out", str(tmp_path / "run"), "--set", "data.dataset=folder"]
    assert main([*run, "--set", f"data.root={images}", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "kNN monitor" in err and "the images have no labels" in err and "monitor.every=-1" in err


def test_an_empty_folder_is_named(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "readme.md").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"no image files under .*empty \(extensions \.jpg"):
        open_split(FOLDER, tmp_path / "empty", "train")
