"""Unreadable training images (issue #25, point 8): replaced deterministically, every batch full, counted,
K in a row stop the run naming the files.

Budget: ~10 s on 2 CPU cores (three passes over a 20-image folder, one with 2 loader workers).
"""

from __future__ import annotations

import errno
import logging

import pytest
import torch
from PIL import Image

from gsg_zoo.config.recipes import load_recipe
from gsg_zoo.core.distributed import DistInfo
from gsg_zoo.data import readers as loaders
from gsg_zoo.data.pretraining import EpochSeeded, build_dataset
from gsg_zoo.train.inputs import build_train_data

BATCH = 4


def _folder(root, bad: dict[str, bytes], good_per_class: int = 8) -> None:
    """``root/train/{a,b}/NN.png`` coloured squares plus the ``bad`` files (relative path -> bytes)."""
    for c, cls in enumerate("ab"):
        (root / "train" / cls).mkdir(parents=True)
        for i in range(good_per_class):
            Image.new("RGB", (16, 16), (30 * i, 120 * c, 7 * i)).save(
                root / "train" / cls / f"{i + 1:02d}.png"
            )
    for rel, blob in bad.items():
        (root / "train" / rel).write_bytes(blob)


def _jpeg_bytes(tmp_path) -> bytes:
    Image.new("RGB", (16, 16), (1, 2, 3)).save(tmp_path / "x.jpg")
    return (tmp_path / "x.jpg").read_bytes()


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    """17 readable images and 3 unreadable ones (none adjacent in the folder's order): a truncated
    JPEG, bytes that are no image, an empty file."""
    root = tmp_path_factory.mktemp("damaged")
    jpeg = _jpeg_bytes(root)
    bad = {
        "a/00_truncated.jpg": jpeg[: len(jpeg) // 2],
        "b/00_garbage.jpg": b"not an image" * 9,
        "b/05_empty.jpg": b"",
    }
    _folder(root, bad, good_per_class=9)
    (root / "train" / "b" / "09.png").unlink()  # 17 readable + 3 = 20 images: 5 full batches
    return root


def _epoch(root, workers: int, epoch: int = 0) -> tuple[list[list[torch.Tensor]], int]:
    """One epoch of the real training loader: its batches' views and the replaced-image count."""
    recipe = load_recipe(
        "demo",
        [
            "data.dataset=imagefolder",
            f"data.root={root}",
            "data.image_size=16",
            "data.batch_augment=false",
            f"data.loader.num_workers={workers}",
            f"train.batch_size={BATCH}",
        ],
    )
    data = build_train_data(recipe, DistInfo(), torch.device("cpu"), BATCH, 2)
    data.set_epoch(epoch)
    batches, skipped = [], 0
    for views, labels, n in data.loader:
        assert [v.shape[0] for v in views] == [BATCH, BATCH] and labels.shape == (BATCH,)  # always full
        batches.append(views)
        skipped += n
    data.close()
    return batches, skipped


@pytest.fixture(autouse=True)
def _fresh_warning_budget(monkeypatch):
    """The unreadable-image warnings are rate-limited per process: earlier tests must not use them up."""
    monkeypatch.setattr(loaders, "_unreadable_seen", 0)


def test_unreadable_images_are_replaced_deterministically_and_counted(damaged, caplog):
    with caplog.at_level(logging.WARNING, logger="gsg_zoo.data.readers"):
        first, skipped = _epoch(damaged, workers=0)
    assert len(first) == 5 and skipped == 3  # every key trained on; each unreadable image counted once
    logged = caplog.text
    assert all(name in logged for name in ("00_truncated.jpg", "00_garbage.jpg", "05_empty.jpg"))
    again, _ = _epoch(damaged, workers=0)
    workers, skipped_w = _epoch(damaged, workers=2)
    assert skipped_w == 3
    for a, b, c in zip(first, again, workers, strict=True):
        for va, vb, vc in zip(a, b, c, strict=True):
            assert torch.equal(va, vb) and torch.equal(va, vc)  # same run twice, 0 vs 2 workers: identical


def test_k_unreadable_in_a_row_stop_naming_the_last_files(tmp_path):
    bad = {f"a/00_bad{i}.jpg": b"\xff\xd8 broken" for i in range(3)}
    _folder(tmp_path, bad, good_per_class=2)
    ds = build_dataset("imagefolder", tmp_path, "train")
    assert EpochSeeded(ds, seed=0, max_failures=4)[(0, 0)][2] == 3  # 3 in a row: replaced, counted 3
    with pytest.raises(RuntimeError, match="3 unreadable images in a row") as exc:
        EpochSeeded(ds, seed=0, max_failures=3)[(0, 0)]
    msg = str(exc.value)
    assert all(f"00_bad{i}.jpg" in msg for i in range(3)) and "data.max_consecutive_failures=3" in msg


class FlakyStorage(torch.utils.data.Dataset):
    """Items 1 and 2 raise EIO/ESTALE like a failing network filesystem (not a folder dataset)."""

    def __len__(self) -> int:
        return 6

    def __getitem__(self, index: int):
        if index in (1, 2):
            raise OSError(errno.EIO if index == 1 else errno.ESTALE, "I/O error")
        return ([torch.rand(2)], index)


def test_any_oserror_of_a_dataset_is_replaced(caplog):
    ds = EpochSeeded(FlakyStorage(), seed=0)
    with caplog.at_level(logging.WARNING, logger="gsg_zoo.data.readers"):
        views, label, failures = ds[(1, 0)]
    assert (label, failures) == (3, 2) and "item 1" in caplog.text and "item 2" in caplog.text
    assert torch.equal(ds[(1, 0)][0][0], views[0])  # the substitute's views: a function of the key


def test_unreadable_warnings_are_rate_limited(monkeypatch, caplog):
    monkeypatch.setattr(loaders, "WARN_FIRST", 2)
    monkeypatch.setattr(loaders, "WARN_EVERY", 5)
    monkeypatch.setattr(loaders, "_unreadable_seen", 0)
    with caplog.at_level(logging.WARNING, logger="gsg_zoo.data.readers"):
        for i in range(1, 11):
            loaders.warn_unreadable(f"img{i}.jpg", OSError(errno.EIO, "I/O error"))
    assert [r.getMessage().split()[2].rstrip(":") for r in caplog.records] == [
        "img1.jpg",
        "img2.jpg",
        "img5.jpg",
        "img10.jpg",
    ]
