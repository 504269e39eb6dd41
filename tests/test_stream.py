"""Streaming WebDataset shards (``data.stream.enabled``): the epoch plan is a pure function that
covers every sample once (bar the documented tail) with equal steps per rank; each sample's views are
those the map-style reader gives it, whatever the worker count; a stream started at any step equals
the rest of an uninterrupted one and reads only tar headers for what it skips; a damaged shard is named.
A SIGKILLed streaming ``gsg pretrain`` with 2 persistent workers is in test_foreign_shards.py (the same
stream over shards without a manifest)."""

from __future__ import annotations

import json
import shutil
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image
from test_pretrain import TINY
from torch.utils.data import DataLoader

from gsg_zoo.app.cli import main
from gsg_zoo.data import stream
from gsg_zoo.data.pretraining import EpochSeeded, Transformed
from gsg_zoo.data.shards import ShardImages
from gsg_zoo.data.stream import EpochPlan, ShardStream, buffer_order

pytest.importorskip("webdataset")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """63 random 16 px JPEGs of 3 classes in shards of 10 (the last of 3), written shuffled."""
    root = tmp_path_factory.mktemp("stream")
    rng = np.random.default_rng(1)
    for i in range(63):
        folder = root / "folder" / "train" / f"c{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")
    assert (
        main(
            [
                "data",
                "shard",
                "imagefolder",
                "--data",
                str(root / "folder"),
                "--out",
                str(root / "shards"),
                "--max-count",
                "10",
                "--no-progress",
            ]
        )
        == 0
    )
    return root / "shards"


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_plan_covers_every_sample_once_with_equal_steps_per_rank(world, workers):
    counts, batch = (10, 7, 10, 1, 10, 10, 8), 4
    plan = EpochPlan(counts, seed=5, world=world, batch=batch, buffer=6)
    seen = []
    for rank in range(world):
        per_worker = [plan.segments(3, rank, workers, w) for w in range(workers)]
        sizes = [sum(len(s) for s in segs) for segs in per_worker]
        assert sum(sizes) == plan.steps * batch and all(n % batch == 0 for n in sizes)  # whole batches
        seen += [(s.shard, i) for segs in per_worker for s in segs for i in range(s.start, s.stop)]
    assert len(seen) == len(set(seen)) == world * plan.steps * batch  # each sample at most once
    assert sum(counts) - len(seen) < world * (batch + 1)  # the documented tail drop
    assert plan.segments(3, 0, workers, 0) == EpochPlan(counts, 5, world, batch, 6).segments(3, 0, workers, 0)
    assert [s.shard for s in plan.segments(3, 0, 1, 0)] != [s.shard for s in plan.segments(4, 0, 1, 0)]


def test_buffer_is_a_permutation_that_reads_at_most_its_size_ahead():
    for n, size in ((50, 7), (5, 7), (40, 1)):
        order = buffer_order(n, size, seed=3)
        assert sorted(order) == list(range(n))
        assert all(p < size + i for i, p in enumerate(order))  # emitted once position size+i-1 is read
    assert buffer_order(50, 7, 3) == buffer_order(50, 7, 3) != buffer_order(50, 7, 4)
    assert buffer_order(40, 1, 0) == list(range(40))


def noisy(image):
    """A view that depends on the item's RNG: which sample (its bytes) and a draw."""
    return image.tobytes(), float(torch.rand(()))


def epoch(root, workers, start=0, rank=0, world=1, buffer=7, e=1, loader=None):
    data = ShardStream(root, noisy, seed=3, rank=rank, world=world, batch=4, buffer=buffer)
    data.set_epoch(e, start)
    return list(DataLoader(data, batch_size=4, num_workers=workers, collate_fn=list))


def test_views_are_the_map_style_readers_whatever_the_worker_count(shards):
    runs = {w: epoch(shards, w) for w in (0, 1, 2)}
    assert len(runs[0]) == 15 and runs[0] == runs[1]  # 60 of 63 samples; one worker = in-process
    mapped = EpochSeeded(Transformed(ShardImages(shards), noisy), seed=3)
    want = {mapped[(i, 1)][0][0]: (mapped[(i, 1)][0][1], mapped[(i, 1)][1]) for i in range(63)}
    for run in runs.values():
        items = [it for batch in run for it in batch]
        assert len({b for (b, _), _ in items}) == 60
        assert all(want[b] == (draw, label) for (b, draw), label in items)  # same sample, same views
    assert runs[2] != runs[0]  # two workers: two buffers, another order


def test_a_stream_started_at_any_step_is_the_rest_of_the_epoch_reading_headers_only(shards, monkeypatch):
    full = {w: epoch(shards, w) for w in (0, 2)}
    for workers, starts in ((0, (1, 6, 14)), (2, (1, 4, 5, 13))):
        for k in starts:
            assert epoch(shards, workers, start=k) == full[workers][k:], (workers, k)
    read, real, uninterrupted = [], stream.stream_samples, epoch(shards, 0, buffer=5)

    def counted(f, url):
        for sample in real(f, url):
            read.append(sample["__key__"])
            yield sample

    monkeypatch.setattr(stream, "stream_samples", counted)
    assert epoch(shards, 0, start=12, buffer=5) == uninterrupted[12:]
    assert len(read) <= 60 - 12 * 4 - 5 + 2  # the rest (+1 per shard opened); the buffer's 5 came by headers


def test_persistent_workers_follow_set_epoch(shards):
    data = ShardStream(shards, noisy, seed=3, batch=4, buffer=7)
    loader = DataLoader(data, batch_size=4, num_workers=2, persistent_workers=True, collate_fn=list)
    for e, start in ((0, 0), (1, 3), (2, 0)):
        data.set_epoch(e, start)
        assert [[tuple(it) for it in b] for b in loader] == [
            [tuple(it) for it in b] for b in epoch(shards, 2, start, e=e)
        ]


def test_ranks_get_equal_disjoint_steps(shards):
    ranks = [epoch(shards, 2, rank=r, world=2) for r in (0, 1)]
    keys = [{b for batch in run for (b, _), _ in batch} for run in ranks]
    assert len(ranks[0]) == len(ranks[1]) == 7 and not keys[0] & keys[1]  # 31 per rank: 7 batches of 4


def test_a_damaged_shard_is_named_and_an_undecodable_image_is_dropped_and_logged(shards, tmp_path, caplog):
    copy, image = tmp_path / "copy", tmp_path / "image"
    for folder in (copy, image):
        shutil.copytree(shards, folder)
    with tarfile.open(copy / "shard-000003.tar") as tar:
        members = tar.getmembers()
    with (image / "shard-000003.tar").open("r+b") as f:
        f.seek(members[1].offset_data)
        f.write(b"\0" * 64)  # the first image's bytes: undecodable, dropped
    items = [it for batch in epoch(image, 0, e=1, buffer=100) for it in batch]
    assert (
        items.count(None) == 1 and len(items) == 60
    )  # (unless it is in the dropped tail: not with this seed)
    assert f"unreadable image {members[1].name.split('.')[0]} in {image / 'shard-000003.tar'}" in caplog.text
    with (copy / "shard-000003.tar").open("r+b") as f:
        f.seek(members[4].offset)
        f.write(b"\xff" * 512)  # the third sample's header: same size, unreadable from there
    with pytest.raises(RuntimeError, match=r"shard-000003\.tar has fewer than"):
        epoch(copy, 0)
    with (copy / "shard-000005.tar").open("r+b") as f:
        f.truncate(3000)
    with pytest.raises(ValueError, match=r"shard-000005\.tar is 3000 bytes"):
        ShardStream(copy, noisy, batch=4)
    manifest = json.loads((shards / "manifest.json").read_text())
    assert manifest["shuffle_seed"] == 0 and sum(s["samples"] for s in manifest["shards"]) == 63


def test_shard_by_size_and_bad_sizes(shards, tmp_path, capsys):
    out = tmp_path / "by_size"
    assert (
        main(
            [
                "data",
                "shard",
                "imagefolder",
                "--data",
                str(shards.parent / "folder"),
                "--out",
                str(out),
                "--max-size",
                "30K",
                "--no-progress",
            ]
        )
        == 0
    )
    listed = json.loads((out / "manifest.json").read_text())["shards"]
    assert len(listed) > 3 and sum(s["samples"] for s in listed) == 63
    assert all(
        30 * 1024 <= s["bytes"] < 30 * 1024 + 15000 for s in listed[:-1]
    )  # + one sample, the tar's padding
    with pytest.raises(SystemExit):
        main(["data", "shard", "imagefolder", "--out", str(out), "--max-size", "big"])
    assert "not a size" in capsys.readouterr().err


def test_the_plan_predicts_the_stream(shards):
    """What the loader yields (rank 1 of 2, 2 workers) is the plan's rank_indices, read back by index."""
    plan = ShardStream(shards, noisy, seed=3, rank=1, world=2, batch=4, buffer=7).plan
    mapped = EpochSeeded(Transformed(ShardImages(shards), noisy), seed=3)
    want = [mapped[(i, 2)][0][0] for i in plan.rank_indices(2, 1, 2)]
    assert [view[0] for batch in epoch(shards, 2, rank=1, world=2, e=2) for view, _ in batch] == want


def test_streaming_train_data_composes_with_batch_augment(shards):
    """Workers decode and draw crop boxes (uint8, PackedImages); the views are drawn from them after."""
    from gsg_zoo.config.recipes import load_recipe
    from gsg_zoo.core.distributed import DistInfo
    from gsg_zoo.data.batch_augment import PackedImages
    from gsg_zoo.train.inputs import build_train_data, step_views

    def recipe(*extra):
        return load_recipe(
            "demo",
            [
                *TINY,
                "data.dataset=webdataset",
                f"data.root={shards}",
                "data.stream.enabled=true",
                "data.batch_augment=true",
                "data.augmentation=mocov2",
                *extra,
            ],
        )

    data = build_train_data(recipe(), DistInfo(), torch.device("cpu"), 8, 2)
    data.set_epoch(0, start_step=2)
    batches = list(data.loader)
    assert len(data.loader) == 7 and len(batches) == 5  # 63 // 8 steps, resumed at step 2
    images, labels, skipped = batches[0]
    assert isinstance(images[0], PackedImages) and images[0].pixels.dtype == torch.uint8 and skipped == 0
    views = step_views(images, data, 2, torch.device("cpu"), False, seed=0)
    assert len(views) == 2 and views[0].shape == (8, 3, 16, 16) and views[0].dtype == torch.float32
    with pytest.raises(ValueError, match="data.dataset=webdataset"):
        build_train_data(recipe("data.dataset=synthetic"), DistInfo(), torch.device("cpu"), 8, 2)


def test_a_streamed_epoch_resumes_only_with_its_worker_count():
    """Inside a streamed epoch the plan depends on the worker count; at an epoch boundary, or by index,
    it may change."""
    from gsg_zoo.train.state import check_recipe_unchanged

    saved = {"data": {"stream": {"enabled": True}, "loader": {"num_workers": 2}}}
    now = {"data": {"stream": {"enabled": True}, "loader": {"num_workers": 4}}}
    with pytest.raises(
        ValueError, match=r"not inside a streamed epoch.*\n  data.loader.num_workers: checkpoint 2, now 4"
    ):
        check_recipe_unchanged("last.pt", saved, now, mid_epoch=True)
    check_recipe_unchanged("last.pt", saved, now, mid_epoch=False)
    by_index = {"data": {"stream": {"enabled": False}, "loader": {"num_workers": 4}}}
    before = {"data": {"stream": {"enabled": False}, "loader": {"num_workers": 2}}}
    check_recipe_unchanged("last.pt", before, by_index, mid_epoch=True)
