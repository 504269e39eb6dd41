"""WebDataset shards, written by ``gsg data shard`` (``webdataset.TarWriter``) and read back:
original JPEG bytes kept, every image once per epoch with the same batches whatever the worker count,
exact resume inside an epoch, a truncated shard named in the error, resumable writing."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_cluster import crash_and_resume_equals_uninterrupted
from test_pretrain import TINY

from gsg_zoo.app.cli import main
from gsg_zoo.config.recipes import load_recipe
from gsg_zoo.core.distributed import DistInfo
from gsg_zoo.data.registry import get_info, open_split
from gsg_zoo.data.shards import ShardImages, write_shards
from gsg_zoo.train.inputs import build_train_data

wds = pytest.importorskip("webdataset")


def jpeg_folder(root, classes: int = 3, per_class: int = 16) -> None:
    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("test", per_class // 4)):
        for c in range(classes):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=90)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("wds")
    jpeg_folder(root / "folder")
    code = main(
        [
            "data",
            "shard",
            "imagefolder",
            "--data",
            str(root / "folder"),
            "--out",
            str(root / "shards" / "train"),
            "--max-count",
            "10",
            "--no-shuffle",
            "--no-progress",
        ]
    )
    assert code == 0
    assert (
        main(
            [
                "data",
                "shard",
                "imagefolder",
                "--data",
                str(root / "folder"),
                "--split",
                "test",
                "--out",
                str(root / "shards" / "test"),
                "--no-progress",
            ]
        )
        == 0
    )
    return root


def test_shards_are_webdataset_tars_with_the_original_bytes(shards):
    manifest = json.loads((shards / "shards" / "train" / "manifest.json").read_text())
    assert [s["samples"] for s in manifest["shards"]] == [10, 10, 10, 10, 8]
    folder = open_split(get_info("imagefolder"), shards / "folder", "train")
    with tarfile.open(shards / "shards" / "train" / "shard-000001.tar") as tar:
        names = tar.getnames()
        assert sorted(names[:2]) == ["000000010.cls", "000000010.jpg"]
        assert (
            tar.extractfile("000000010.jpg").read() == Path(folder.samples[10][0]).read_bytes()
        )  # no re-encode
    samples = list(wds.WebDataset(str(shards / "shards" / "train" / "shard-000000.tar"), shardshuffle=False))
    assert len(samples) == 10 and int(samples[3]["cls"]) == folder.samples[3][1]  # the library reads them
    ds = ShardImages(shards / "shards" / "train")
    assert ds.targets == [label for _, label in folder.samples]
    assert ds[17][0].tobytes() == folder[17][0].tobytes()


class OneOfTwo(DistInfo):
    """A rank of 2 without a process group (its sampler shard is what is checked)."""

    def barrier(self) -> None:
        pass


def recipe(root, *extra):
    return load_recipe(
        "demo",
        [
            *TINY,
            "data.dataset=webdataset",
            f"data.root={root}",
            "train.batch_size=8",
            "monitor.every=-1",
            "data.loader.num_workers=0",
            *extra,
        ],
    )


def test_every_image_once_per_epoch_same_batches_with_0_or_2_workers(shards):
    def epoch(workers: int) -> list[torch.Tensor]:
        r = recipe(
            shards / "shards", f"data.loader.num_workers={workers}", "data.loader.persistent_workers=false"
        )
        data = build_train_data(r, DistInfo(), torch.device("cpu"), 8, 4)
        data.set_epoch(1)
        return [views[0] for views, _, _ in data.loader]

    zero, two = epoch(0), epoch(2)
    assert len(zero) == 6 and all(torch.equal(a, b) for a, b in zip(zero, two, strict=True))
    data = build_train_data(recipe(shards / "shards"), DistInfo(), torch.device("cpu"), 8, 4)
    assert sorted(i for i, _ in data.sampler) == list(range(48))
    ranks = [
        build_train_data(recipe(shards / "shards"), OneOfTwo(r, 2), torch.device("cpu"), 8, 4) for r in (0, 1)
    ]
    keys = [[i for i, _ in d.sampler] for d in ranks]
    assert len(keys[0]) == len(keys[1]) == 24 and not set(keys[0]) & set(keys[1])  # 2 ranks: disjoint, equal


def test_crash_inside_an_epoch_resumes_exactly(shards, tmp_path, monkeypatch):
    run = ["train.epochs=2", "train.checkpoint_steps=8", "train.log_every=50"]
    saved = crash_and_resume_equals_uninterrupted(recipe(shards / "shards", *run), tmp_path, monkeypatch)
    assert saved["epoch_step"] == 2  # the crash came after a checkpoint inside epoch 2


def test_truncated_shard_is_named_and_writing_resumes(shards, tmp_path):
    import shutil

    copy = tmp_path / "train"
    shutil.copytree(shards / "shards" / "train", copy)
    with (copy / "shard-000002.tar").open("r+b") as f:
        f.truncate(1000)
    with pytest.raises(ValueError, match=r"shard-000002\.tar is 1000 bytes"):
        ShardImages(copy)
    synthetic = open_split(get_info("synthetic"), None, "train", num_images=25, image_size=32)
    out = tmp_path / "syn"
    write_shards(synthetic, out, max_count=10, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["shards"] = manifest["shards"][:1]  # as if interrupted after the first shard
    (out / "manifest.json").write_text(json.dumps(manifest))
    first = (out / "shard-000000.tar").read_bytes()
    write_shards(synthetic, out, max_count=10, progress=False)
    again = json.loads((out / "manifest.json").read_text())
    assert [s["samples"] for s in again["shards"]] == [10, 10, 5] and (
        out / "shard-000000.tar"
    ).read_bytes() == first
    assert ShardImages(out).targets == synthetic.targets


def test_gsg_eval_knn_reads_shards(shards, capsys):
    code = main(
        [
            "eval",
            "knn",
            "--model",
            "random:resnet10t",
            "--dataset",
            "webdataset",
            "--data",
            str(shards / "shards"),
            "--no-cache",
            "--workers",
            "0",
            "--image-size",
            "32",
        ]
    )
    assert code == 0, capsys.readouterr().err
