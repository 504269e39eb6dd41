"""Hugging Face datasets as input, on data written here by ``datasets`` itself: a
``save_to_disk`` folder and parquet files. Pretraining sees every image once per epoch in the same
order whatever the worker count, resumes bit-exactly after a SIGKILL inside an epoch (2 persistent workers), and evaluation reads
the same formats."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from test_pretrain import TINY
from test_resume import sigkill_resume_equals_uninterrupted, two_epoch_run

from gsg_zoo.config.recipes import load_recipe
from gsg_zoo.core.distributed import DistInfo
from gsg_zoo.data.registry import get_info, open_split
from gsg_zoo.train.inputs import build_train_data

datasets = pytest.importorskip("datasets")


def write_hf(root, n: int = 48, classes: int = 4) -> None:
    """A DatasetDict (train, test) of PNG-encoded images saved with save_to_disk, and the same as parquet."""

    def split(count: int, offset: int):
        images = [
            Image.new("RGB", (20, 20), ((i * 37) % 256, (i * 11) % 256, 40 * (i % classes)))
            for i in range(count)
        ]
        table = datasets.Dataset.from_dict({"image": images, "label": [i % classes for i in range(count)]})
        return table.cast_column("image", datasets.Image())

    dd = datasets.DatasetDict({"train": split(n, 0), "test": split(n // 2, 1)})
    dd.save_to_disk(str(root / "saved"))
    for name, table in dd.items():
        (root / "parquet" / name).mkdir(parents=True)
        table.to_parquet(str(root / "parquet" / name / "part-0.parquet"))


@pytest.fixture(scope="module")
def hf_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    write_hf(root)
    return root


def recipe(root, *extra):
    return load_recipe(
        "demo",
        [
            *TINY,
            "data.dataset=hf",
            f"data.root={root}",
            "train.batch_size=8",
            "monitor.every=-1",
            "data.loader.num_workers=0",
            *extra,
        ],
    )


@pytest.mark.parametrize("layout", ["saved", "parquet"])
def test_both_layouts_read_the_same_images_and_labels(hf_root, layout):
    ds = open_split(get_info("hf", pretrain=True), hf_root / layout, "train")
    ref = open_split(get_info("hf", pretrain=True), hf_root / "saved", "train")
    assert len(ds) == 48 and ds.targets == ref.targets
    assert ds[5][0].tobytes() == ref[5][0].tobytes()


def test_every_image_once_per_epoch_same_batches_with_0_or_2_workers(hf_root):
    def epoch(workers: int) -> list[torch.Tensor]:
        r = recipe(
            hf_root / "saved", f"data.loader.num_workers={workers}", "data.loader.persistent_workers=false"
        )
        data = build_train_data(r, DistInfo(), torch.device("cpu"), 8, 4)
        data.set_epoch(0)
        return [views[0] for views, _, _ in data.loader]

    zero, two = epoch(0), epoch(2)
    assert len(zero) == 6 and all(torch.equal(a, b) for a, b in zip(zero, two, strict=True))
    keys = [
        i
        for i, _ in build_train_data(recipe(hf_root / "saved"), DistInfo(), torch.device("cpu"), 8, 4).sampler
    ]
    assert sorted(keys) == list(range(48))


@pytest.mark.slow
def test_sigkilled_pretrain_resumes_exactly_with_2_persistent_workers(hf_root, tmp_path):
    """``gsg pretrain`` on parquet files, SIGKILLed inside epoch 2 after its step checkpoint and rerun:
    equal to an uninterrupted run, bit for bit (the recipes' 2 persistent loader workers)."""
    run = two_epoch_run("hf", hf_root / "parquet", checkpoint_steps=8)
    sigkill_resume_equals_uninterrupted(
        tmp_path, run, step=10, epoch_step=2
    )  # 6 steps an epoch: epoch 2's 5th


def test_missing_columns_and_splits_are_clear_errors(hf_root):
    with pytest.raises(ValueError, match="data.hf.image_column"):
        open_split(get_info("hf", pretrain=True), hf_root / "saved", "train", image_column="img")
    with pytest.raises(FileNotFoundError, match="not 'val'"):
        open_split(get_info("hf", pretrain=True), hf_root / "saved", "val")


def test_gsg_eval_knn_reads_a_hugging_face_dataset(hf_root, tmp_path, capsys):
    from gsg_zoo.app.cli import main

    code = main(
        [
            "eval",
            "knn",
            "--model",
            "random:resnet10t",
            "--dataset",
            "hf",
            "--data",
            str(hf_root / "saved"),
            "--no-cache",
            "--workers",
            "0",
            "--image-size",
            "32",
        ]
    )
    assert code == 0 and "top-1" in capsys.readouterr().out.lower()


def test_gsg_data_shard_writes_a_hugging_face_dataset_as_shards_with_its_bytes_that_stream(hf_root, tmp_path):
    from gsg_zoo.app.cli import main
    from gsg_zoo.data.stream import ShardStream

    out = tmp_path / "shards"
    assert (
        main(
            [
                "data",
                "shard",
                "hf",
                "--data",
                str(hf_root / "saved"),
                "--out",
                str(out),
                "--max-count",
                "10",
                "--no-progress",
            ]
        )
        == 0
    )
    ref = open_split(get_info("hf", pretrain=True), hf_root / "saved", "train")
    stream = ShardStream(out, lambda image: image.tobytes(), batch=8, buffer=5)
    items = list(stream)
    assert len(items) == 48 and sorted(items) == sorted(
        (ref[i][0].tobytes(), ref.targets[i]) for i in range(48)
    )
    import tarfile

    with tarfile.open(out / "shard-000000.tar") as tar:
        first = tar.getmembers()[1]
        assert (
            first.name.endswith(".png") and tar.extractfile(first).read() == ref.raw(int(first.name[:9]))[0]
        )
