"""WebDataset shards written by another tool: webdataset's own ``ShardWriter`` in the
ImageNet-wds layout (``in1k-train-0000.tar``: ``KEY.jpg``/``KEY.png``, ``KEY.cls``, ``KEY.json``), no gsg
manifest. Given as a folder, a brace pattern, a list file or ``::``-joined patterns they are indexed by
one header scan (cached by size and mtime, a changed shard rescanned), read by index and streamed with
the same samples and views, equal steps per rank and exact resume; bad input is a one-line error."""

from __future__ import annotations

import io
import json
import logging
import os
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image
from test_cluster import crash_and_resume_equals_uninterrupted
from test_pretrain import TINY
from torch.utils.data import DataLoader

from gsg_zoo.app.cli import main
from gsg_zoo.config.recipes import load_recipe
from gsg_zoo.data import shard_index, shard_scan
from gsg_zoo.data.pretraining import EpochSeeded, Transformed
from gsg_zoo.data.shard_scan import SampleKeys
from gsg_zoo.data.shard_sources import shard_set
from gsg_zoo.data.shards import ShardImages
from gsg_zoo.data.stream import ShardStream

wds = pytest.importorskip("webdataset")

TRAIN, VAL = 46, 12


def encode(pixels: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def write_wds(folder, split: str, count: int, maxcount: int, seed: int) -> None:
    """``in1k-SPLIT-NNNN.tar`` by webdataset's ShardWriter: JPEGs (every 5th a PNG), cls and json."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    with wds.ShardWriter(str(folder / f"in1k-{split}-%04d.tar"), maxcount=maxcount, verbose=0) as sink:
        for i in range(count):
            pixels = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
            image = {"png": encode(pixels, "PNG")} if i % 5 == 4 else {"jpg": encode(pixels, "JPEG")}
            label = int(rng.integers(0, 3))
            sample = {"__key__": f"{split}_{i:05d}", **image, "cls": str(label).encode()}
            sink.write({**sample, "json": json.dumps({"label": label, "name": f"n{i}"}).encode()})


@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    root = tmp_path_factory.mktemp("foreign")
    write_wds(root / "in1k", "train", TRAIN, 10, seed=0)  # 5 shards: 10, 10, 10, 10, 6
    write_wds(root / "in1k", "validation", VAL, 8, seed=1)
    return root / "in1k"


def read_with_webdataset(paths):
    """Every sample as webdataset itself reads it: (key, image bytes, label)."""
    out = []
    for sample in wds.WebDataset(paths, shardshuffle=False):
        image = sample.get("jpg", sample.get("png"))
        out.append((sample["__key__"], image, int(sample["cls"])))
    return out


def test_a_folder_a_pattern_a_list_file_and_joined_patterns_name_the_same_shards(foreign, tmp_path):
    sets = {
        "folder": shard_set(foreign, "train"),
        "pattern": shard_set(f"{foreign}/in1k-train-{{0000..0004}}.tar"),
        "joined": shard_set(
            f"{foreign}/in1k-train-{{0000..0002}}.tar::{foreign}/in1k-train-{{0003..0004}}.tar"
        ),
    }
    listing = tmp_path / "train.txt"
    listing.write_text("# the shards\n" + "\n".join(str(p) for p in sorted(foreign.glob("in1k-train-*.tar"))))
    sets["list"] = shard_set(listing)
    for name, s in sets.items():
        assert s.counts == [10, 10, 10, 10, 6] and s.kind == "scan", name
        assert s.paths == sets["folder"].paths, name
    test = shard_set(foreign, "test")  # the test split: the shards named validation
    assert test.counts == [8, 4] and all("validation" in p for p in test.paths)


def test_the_index_is_what_webdataset_reads(foreign):
    shards = shard_set(foreign, "train")
    want = read_with_webdataset(shards.paths)
    ds = ShardImages(shards)
    assert len(ds) == TRAIN and ds.targets == [label for *_, label in want]
    keys = [k for index in shards.index() for k in index.keys]
    assert keys == [k for k, *_ in want]
    for i in (0, 4, 17, TRAIN - 1):  # a JPEG and a PNG among them
        shard, offset, size, _ = ds.items[i]
        with open(shards.paths[shard], "rb") as f:
            f.seek(offset)
            assert f.read(size) == want[i][1]
        assert ds[i][0].tobytes() == Image.open(io.BytesIO(want[i][1])).convert("RGB").tobytes()
    assert ds.unlabelled is None


def test_the_json_field_or_no_labels(foreign):
    by_json = ShardImages(shard_set(foreign, "train", SampleKeys.of(label_key="json", label_field="label")))
    assert by_json.targets == ShardImages(shard_set(foreign, "train")).targets
    none = ShardImages(shard_set(foreign, "train", SampleKeys.of(label_key="none")))
    assert set(none.targets) == {-1} and "data.wds.label_key=none" in none.unlabelled
    with pytest.raises(ValueError, match=r"has no image member \(png\), only cls, jpg, json: set data\.wds"):
        shard_set(foreign, "train", SampleKeys.of(image_keys="png"))


def test_the_index_is_cached_and_a_changed_shard_is_rescanned_and_named(
    foreign, tmp_path, monkeypatch, caplog
):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(foreign, copy)
    scanned, real = [], shard_scan.scan_tar
    monkeypatch.setattr(
        shard_index, "scan_tar", lambda f, name, *a: scanned.append(name) or real(f, name, *a)
    )
    monkeypatch.setattr(shard_index, "PARALLEL_FROM", 10**6)  # in this process, so the counter sees it
    first = shard_set(copy, "train")
    assert len(scanned) == 5 and (copy / shard_index.CACHE_NAME).is_file()
    assert shard_set(copy, "train").counts == first.counts and len(scanned) == 5  # from the cache
    victim = copy / "in1k-train-0002.tar"
    write_wds(tmp_path / "other", "train", 7, 7, seed=9)
    os.replace(tmp_path / "other" / "in1k-train-0000.tar", victim)
    with caplog.at_level(logging.INFO, logger="gsg_zoo.data"):
        again = shard_set(copy, "train")
    assert scanned[5:] == [str(victim)] and again.counts == [10, 10, 7, 10, 6]
    assert f"shard {victim} changed" in caplog.text
    monkeypatch.setattr(shard_index.os, "access", lambda *a: False)  # a read-only folder
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    shard_set(copy, "train")
    assert list((tmp_path / "user-cache" / "gsg-zoo" / "wds-index").glob("copy-*.json"))


def test_a_parallel_scan_equals_a_serial_one(foreign):
    paths = sorted(str(p) for p in foreign.glob("*.tar"))
    keys = SampleKeys()
    serial = shard_index._scan(paths, keys, False, 1)
    assert shard_index._scan(paths, keys, False, 2) == serial and len(serial) == 7


def test_a_wids_shard_index_gives_the_counts_without_a_scan(foreign, tmp_path, monkeypatch):
    import shutil

    copy = tmp_path / "wids"
    shutil.copytree(foreign, copy)
    tars = sorted(copy.glob("in1k-train-*.tar"))
    doc = {
        "__kind__": "wids-shard-index-v1",
        "wids_version": 1,
        "name": "in1k-train",
        "shardlist": [
            {"url": p.name, "nsamples": n, "filesize": p.stat().st_size}
            for p, n in zip(tars, [10, 10, 10, 10, 6], strict=True)
        ],
    }
    (copy / "train.json").write_text(json.dumps(doc))
    monkeypatch.setattr(shard_index, "scan_tar", lambda *a: pytest.fail("scanned"))
    for source in (copy, copy / "train.json"):
        shards = shard_set(source, "train")
        assert shards.kind == "wids" and shards.counts == [10, 10, 10, 10, 6]
    stream = ShardStream(shards, lambda image: image.tobytes(), batch=4, buffer=5)
    assert len(list(stream)) == 44


def noisy(image):
    return image.tobytes(), float(torch.rand(()))


def epoch(source, workers, start=0, rank=0, world=1, e=1):
    data = ShardStream(source, noisy, seed=3, rank=rank, world=world, batch=4, buffer=7)
    data.set_epoch(e, start)
    return list(DataLoader(data, batch_size=4, num_workers=workers, collate_fn=list))


def test_streamed_and_by_index_give_the_same_views_and_resume_at_any_step(foreign):
    shards = shard_set(f"{foreign}/in1k-train-{{0000..0004}}.tar")
    mapped = EpochSeeded(Transformed(ShardImages(shards), noisy), seed=3)
    want = {mapped[(i, 1)][0][0]: (mapped[(i, 1)][0][1], mapped[(i, 1)][1]) for i in range(TRAIN)}
    runs = {w: epoch(shards, w) for w in (0, 2)}
    for run in runs.values():
        items = [it for batch in run for it in batch]
        assert len(items) == 44 and all(want[b] == (draw, label) for (b, draw), label in items)
    for workers, k in ((0, 5), (2, 3), (2, 8)):
        assert epoch(shards, workers, start=k) == runs[workers][k:]
    ranks = [epoch(shards, 2, rank=r, world=2) for r in (0, 1)]
    keys = [{b for batch in run for (b, _), _ in batch} for run in ranks]
    assert len(ranks[0]) == len(ranks[1]) == 5 and not keys[0] & keys[1]  # 23 per rank: 5 batches of 4


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
            "train.epochs=2",
            "train.checkpoint_steps=7",
            "train.log_every=50",
            *extra,
        ],
    )


@pytest.mark.slow
@pytest.mark.parametrize("streamed", [False, True])
def test_a_crash_inside_an_epoch_resumes_exactly(foreign, tmp_path, monkeypatch, streamed):
    """5 steps an epoch (46 // 8); a checkpoint at global step 7 (epoch 2's 2nd), a crash at step 9."""
    r = recipe(f"{foreign}/in1k-train-{{0000..0004}}.tar", f"data.stream.enabled={str(streamed).lower()}")
    saved = crash_and_resume_equals_uninterrupted(r, tmp_path, monkeypatch, crash_step=9)
    assert (saved["epoch"], saved["epoch_step"]) == (1, 2)


@pytest.mark.slow
def test_sigkilled_streaming_pretrain_on_foreign_shards_resumes_exactly(foreign, tmp_path):
    """``gsg pretrain`` streaming the folder with the recipes' 2 persistent workers, SIGKILLed inside
    epoch 2 after its step checkpoint and rerun: equal to an uninterrupted run, bit for bit."""
    from test_resume import sigkill_resume_equals_uninterrupted, two_epoch_run

    run = two_epoch_run("webdataset", foreign, checkpoint_steps=7, stream=True)
    sigkill_resume_equals_uninterrupted(tmp_path, run, step=9, epoch_step=2)


def test_gsg_eval_knn_reads_the_folder_and_refuses_shards_without_labels(foreign, tmp_path, capsys):
    args = ["eval", "knn", "--model", "pixels", "--dataset", "webdataset", "--no-cache", "--workers", "0"]
    assert main([*args, "--data", str(foreign), "--image-size", "16"]) == 0
    assert "top-1" in capsys.readouterr().out.lower()
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("val", 6)):  # labels in a json field only
        with wds.ShardWriter(str(tmp_path / f"json-{split}-%02d.tar"), maxcount=20, verbose=0) as sink:
            for i in range(n):
                image = encode(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), "JPEG")
                sink.write({"__key__": f"{i:03d}", "jpg": image, "json": json.dumps({"y": i % 2}).encode()})
    assert main([*args, "--data", str(tmp_path), "--image-size", "16"]) == 1
    err = capsys.readouterr().err.strip()
    assert "sample '000' of" in err and "json-train-00.tar has no label (no .cls member" in err
    assert "--label-key" in err and "needs a label per image" in err and len(err.splitlines()) == 1
    json_labels = ["--label-key", "json", "--label-field", "y"]
    assert main([*args, "--data", str(tmp_path), "--image-size", "16", *json_labels]) == 0
    assert "top-1" in capsys.readouterr().out.lower()


def tar_of(path, members):
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("mixed", r"bad\.tar: the members of sample 'a' are not next to each other \(mixed member keys\)"),
        ("no_image", r"bad\.tar: sample 'b' has no image member .* only cls, txt: set data\.wds\.image_keys"),
        ("truncated", r"bad\.tar is truncated or damaged \("),
        ("not_tar", r"bad\.tar is not a tar file"),
        ("bad_label", r"bad\.tar: sample 'a': its \.cls is not an integer class index"),
    ],
)
def test_bad_shards_are_one_line_errors_naming_the_file(foreign, tmp_path, case, error):
    jpg = (foreign / "in1k-train-0000.tar").read_bytes()[1536:2000]  # any bytes: never decoded here
    bad = tmp_path / "bad.tar"
    members = {
        "mixed": [("a.jpg", jpg), ("b.jpg", jpg), ("a.cls", b"1")],
        "no_image": [("a.jpg", jpg), ("a.cls", b"0"), ("b.cls", b"1"), ("b.txt", b"x")],
        "bad_label": [("a.jpg", jpg), ("a.cls", b"dog")],
    }
    if case in members:
        tar_of(bad, members[case])
    elif case == "truncated":
        bad.write_bytes((foreign / "in1k-train-0001.tar").read_bytes()[:5000])
    else:
        bad.write_bytes(b"PK\x03\x04 not a tar" * 100)
    with pytest.raises(ValueError, match=error) as err:
        shard_set(bad)
    assert "\n" not in str(err.value)


def test_patterns_and_splits_that_match_nothing_are_named(foreign, tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"in1k-train-\{0000\.\.0009\}\.tar: 5 of its 10 shards are missing"
    ):
        shard_set(f"{foreign}/in1k-train-{{0000..0009}}.tar")
    with pytest.raises(FileNotFoundError, match=r"nope-\*\.tar: it matches nothing"):
        shard_set(f"{foreign}/nope-*.tar")
    with pytest.raises(ValueError, match=r"has shards of the splits train, validation, not 'dev'"):
        shard_set(foreign, "dev")
    with pytest.raises(FileNotFoundError, match=r"no such folder, shard, list file or pattern"):
        shard_set(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty: no \.tar shards there"):
        shard_set(tmp_path / "empty")
