"""Streaming a Hugging Face dataset (``data.dataset=hf``, ``data.stream.enabled``) from parquet files that
``datasets`` wrote in the Hub's layout: rows come through ``datasets``' own streaming; each streamed item
is the map-style reader's item for the same row, whatever the worker count; ranks get equal, disjoint
steps; a stream started at any step is the rest of the epoch; a SIGKILLed ``gsg pretrain`` resumes
bit-exactly; a save_to_disk folder, non-parquet files and a missing split are one-line errors."""

from __future__ import annotations

import pytest
import torch
from test_hub_layouts import table, write_hub_repo
from test_pretrain import TINY
from test_resume import sigkill_resume_equals_uninterrupted, two_epoch_run
from torch.utils.data import DataLoader

from gsg_zoo.config.recipes import load_recipe
from gsg_zoo.core.distributed import DistInfo
from gsg_zoo.data import hf_stream
from gsg_zoo.data.hf import HFImages, load_split
from gsg_zoo.data.hf_stream import ParquetSegmentReader, parquet_source
from gsg_zoo.data.pretraining import EpochSeeded, Transformed
from gsg_zoo.data.stream import ShardStream
from gsg_zoo.train.inputs import build_train_data

datasets = pytest.importorskip("datasets")


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """``data/train-0000{0,1}-of-00002.parquet`` (21 + 20 rows) and ``data/test-...`` as ``push_to_hub``
    leaves them."""
    root = tmp_path_factory.mktemp("hfstream") / "repo"
    write_hub_repo(root, train=41, test=12)
    return root


def noisy(image):
    """A view that depends on the item's RNG: which image (its bytes) and a draw."""
    return image.tobytes(), float(torch.rand(()))


def stream(root, **kw):
    source = parquet_source(root, "train")
    return ShardStream(
        source, noisy, seed=3, batch=4, buffer=7, reader=ParquetSegmentReader(source.paths), **kw
    )


def epoch(root, workers, start=0, rank=0, world=1, e=1):
    data = stream(root, rank=rank, world=world)
    data.set_epoch(e, start)
    return list(DataLoader(data, batch_size=4, num_workers=workers, collate_fn=list))


def test_the_source_is_the_splits_parquet_files_with_their_footer_counts(repo):
    source = parquet_source(repo, "train")
    assert [p.rsplit("/", 1)[-1] for p in source.paths] == [
        "train-00000-of-00002.parquet",
        "train-00001-of-00002.parquet",
    ]
    assert source.counts == [21, 20] and source.classes == ["a", "b", "c"] and source.kind == "parquet"
    assert parquet_source(repo, "test").counts == [12]


def test_streamed_items_are_the_map_style_items_whatever_the_worker_count(repo, monkeypatch):
    calls = []
    real = datasets.load_dataset

    def counted(*args, **kwargs):
        calls.append(kwargs.get("streaming"))
        return real(*args, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", counted)
    runs = {w: epoch(repo, w) for w in (0, 2)}
    assert calls and all(calls)  # every read went through datasets' streaming
    mapped = EpochSeeded(Transformed(HFImages(load_split(repo, "train")), noisy), seed=3)
    want = {mapped[(i, 1)][0][0]: (mapped[(i, 1)][0][1], mapped[(i, 1)][1]) for i in range(41)}
    for run in runs.values():
        items = [it for batch in run for it in batch]
        assert len(run) == 10 and len({b for (b, _), _ in items}) == 40  # 40 of 41 rows
        assert all(want[b] == (draw, label) for (b, draw), label in items)  # same row, same views
    assert runs[2] != runs[0]  # two workers: two buffers, another order


def test_a_stream_started_at_any_step_is_the_rest_of_the_epoch(repo):
    for workers, starts in ((0, (1, 7)), (2, (3, 6))):
        full = epoch(repo, workers)
        for k in starts:
            assert epoch(repo, workers, start=k) == full[k:], (workers, k)


def test_ranks_get_equal_disjoint_steps(repo):
    ranks = [epoch(repo, 2, rank=r, world=2) for r in (0, 1)]
    keys = [{b for batch in run for (b, _), _ in batch} for run in ranks]
    assert len(ranks[0]) == len(ranks[1]) == 5 and not keys[0] & keys[1]  # 20 per rank: 5 batches of 4


def test_pretraining_train_data_streams_hf(repo):
    recipe = load_recipe("demo", [*TINY, "data.dataset=hf", f"data.root={repo}", "data.stream.enabled=true"])
    data = build_train_data(recipe, DistInfo(), torch.device("cpu"), 8, 2)
    data.set_epoch(0, start_step=1)
    assert len(data.loader) == 5 and len(list(data.loader)) == 4  # 41 // 8 steps, resumed at step 1


def test_bad_sources_are_named(repo, tmp_path):
    table(6, 0).save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(ValueError, match=r"saved is a save_to_disk folder.*data.stream.enabled=false"):
        parquet_source(tmp_path / "saved", "train")
    with pytest.raises(FileNotFoundError, match=r"repo has splits \['test', 'train'\], not 'dev'"):
        parquet_source(repo, "dev")
    (tmp_path / "csv").mkdir()
    table(6, 0).remove_columns("image").to_csv(str(tmp_path / "csv" / "train.csv"))
    with pytest.raises(ValueError, match=r"not parquet .*train.csv.*gsg data shard hf"):
        parquet_source(tmp_path / "csv", "train")
    (tmp_path / "noimg" / "data").mkdir(parents=True)
    table(6, 0).rename_column("image", "picture").to_parquet(
        str(tmp_path / "noimg" / "data" / "train-00000-of-00001.parquet")
    )
    with pytest.raises(ValueError, match=r"not 'image': set data.hf.image_column"):
        parquet_source(tmp_path / "noimg", "train")


def test_a_file_shorter_than_its_plan_is_named(repo, tmp_path, monkeypatch):
    source = parquet_source(repo, "train")
    monkeypatch.setattr(hf_stream, "split_files", lambda *_: source.paths)
    reader = ParquetSegmentReader(source.paths)
    data = ShardStream(source, noisy, seed=3, batch=4, buffer=7, reader=reader)
    data.plan = type(data.plan)((30, 20), 3, 1, 4, 7)  # as if the first file had lost 9 rows
    data.base = [0, 30]
    data.set_epoch(0, 0)
    with pytest.raises(RuntimeError, match=r"train-00000-of-00002.parquet has fewer than the .* rows"):
        list(DataLoader(data, batch_size=4, num_workers=0, collate_fn=list))


@pytest.mark.slow
def test_sigkilled_streaming_hf_pretrain_resumes_exactly_with_2_persistent_workers(repo, tmp_path):
    """Killed inside epoch 2 after its step checkpoint, resumed: equal to an uninterrupted run, bit for bit."""
    run = two_epoch_run("hf", repo, checkpoint_steps=7, stream=True)
    sigkill_resume_equals_uninterrupted(
        tmp_path, run, step=8, epoch_step=2
    )  # 5 steps per epoch: epoch 2's 4th
