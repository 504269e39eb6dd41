"""The Hugging Face Hub's dataset layouts, on parquet files written by ``datasets`` itself as
``push_to_hub`` and ``snapshot_download`` leave them: ``data/{split}-NNNNN-of-NNNNN.parquet`` (image a
{bytes, path} struct, label a ClassLabel), a README.md card whose ``configs:`` name the files, and a
dataset id resolved offline from the local Hugging Face cache; a missing split, a parquet without an
image column and an id not in the cache are one-line errors naming what was given."""

from __future__ import annotations

import pytest
from PIL import Image

from gsg_zoo.app.cli import main
from gsg_zoo.data.registry import get_info, open_split

datasets = pytest.importorskip("datasets")
HF = get_info("hf", pretrain=True)


def table(count: int, seed: int):
    images = [
        Image.new("RGB", (12, 12), ((i * 41 + seed) % 256, (i * 7) % 256, 30 * (i % 3))) for i in range(count)
    ]
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"])}
    )
    return datasets.Dataset.from_dict(
        {"image": images, "label": [i % 3 for i in range(count)]}, features=features
    )


def write_hub_repo(repo, train: int = 30, test: int = 12) -> dict:
    """What ``push_to_hub`` uploads: ``data/train-0000{0,1}-of-00002.parquet``, ``data/test-...``."""
    (repo / "data").mkdir(parents=True)
    splits = {"train": table(train, 0), "test": table(test, 1)}
    for name, t in splits.items():
        n = 2 if name == "train" else 1
        for k in range(n):
            t.shard(n, k, contiguous=True).to_parquet(
                str(repo / "data" / f"{name}-{k:05d}-of-{n:05d}.parquet")
            )
    return splits


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    splits = write_hub_repo(root / "repo")
    card = root / "card"
    (card / "files").mkdir(parents=True)
    splits["train"].to_parquet(str(card / "files" / "learn.parquet"))
    splits["test"].to_parquet(str(card / "files" / "holdout.parquet"))
    (card / "README.md").write_text(
        "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: files/learn.parquet\n"
        "  - split: validation\n    path: files/holdout.parquet\n---\n# A dataset card\n"
    )
    return root, splits


def same(ds, ref) -> bool:
    return (
        len(ds) == len(ref)
        and ds.targets == list(ref["label"])
        and ds[3][0].tobytes() == ref[3]["image"].tobytes()
    )


def test_the_data_folder_layout_of_the_hub(hub):
    root, splits = hub
    assert same(open_split(HF, root / "repo", "train"), splits["train"])
    assert same(open_split(HF, root / "repo", "test"), splits["test"])


def test_a_dataset_card_names_the_files_and_test_reads_validation(hub):
    root, splits = hub
    assert same(open_split(HF, root / "card", "train"), splits["train"])
    assert same(open_split(HF, root / "card", "test"), splits["test"])  # no test split: its validation


def test_a_hub_id_is_resolved_offline_from_the_local_cache(hub, tmp_path, monkeypatch):
    """The layout ``snapshot_download`` leaves: ``datasets--ORG--NAME/{refs/main, snapshots/REV/...}``."""
    import shutil

    from huggingface_hub import constants

    root, splits = hub
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub-cache" / "datasets--someone--shapes"
    shutil.copytree(root / "repo", repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert same(open_split(HF, "someone/shapes", "train"), splits["train"])
    with pytest.raises(
        FileNotFoundError, match=r"someone/absent is no local folder.*hf download --repo-type dataset"
    ):
        open_split(HF, "someone/absent", "train")


def test_missing_split_and_image_column_are_named(hub, tmp_path):
    root, splits = hub
    with pytest.raises(FileNotFoundError, match=r"repo has splits \['test', 'train'\], not 'dev'"):
        open_split(HF, root / "repo", "dev")
    (tmp_path / "data").mkdir()
    splits["train"].rename_column("image", "picture").to_parquet(
        str(tmp_path / "data" / "train-00000-of-00001.parquet")
    )
    with pytest.raises(
        ValueError, match=r"\(split 'train'\) has columns \['picture', 'label'\].*data\.hf\.image_column"
    ):
        open_split(HF, tmp_path, "train")


def test_gsg_eval_knn_on_a_hub_download(hub, capsys):
    root, _ = hub
    args = ["eval", "knn", "--model", "pixels", "--dataset", "hf", "--data", str(root / "repo")]
    assert main([*args, "--no-cache", "--workers", "0", "--image-size", "16"]) == 0
    assert "top-1" in capsys.readouterr().out.lower()
