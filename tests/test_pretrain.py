"""Pretraining engine: recipes, sampler, corrupt images, NaN guard, refused resumes, collapse proxy.

Exact kill-and-resume and DDP (gloo) are tested in tests/test_resume.py.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from gsg_zoo.config.recipes import load_recipe
from gsg_zoo.core.checkpoint import CheckpointError, load_checkpoint
from gsg_zoo.train import trainer as trainer_module
from gsg_zoo.train.control import NONFINITE_MARKER
from gsg_zoo.train.monitor import collapse_metrics, effective_rank, normalized_std
from gsg_zoo.train.trainer import NonFiniteLossError, Pretrainer

TINY = [
    "model.backbone=resnet18",
    "model.projector_hidden_dim=64",
    "model.projector_dim=32",
    "model.predictor_hidden_dim=16",
    "data.image_size=16",
    "data.synthetic.image_size=32",
    "data.synthetic.num_images=64",
    "data.loader.num_workers=0",
    "data.batch_augment=false",  # the PIL loader path (DataConfig default); tests/test_batch_augment.py covers the other
    "train.batch_size=16",
    "train.channels_last=false",
    "train.log_every=1",
    "monitor.train_limit=64",
    "monitor.test_limit=32",
    "monitor.k=10",
]


def test_recipes_load_and_overrides():
    for name in [
        "demo",
        "cifar10_simsiam",
        "cifar10_byol_gsg_nopred",
        "imagenet_simsiam_gsg",
        "imagenet_byol",
    ]:
        r = load_recipe(name)
        assert r.learner_config().method in r.name
    r = load_recipe("cifar10_simsiam_gsg_nopred", ["train.epochs=3", "optim.lr=0.5"])
    assert r.train.epochs == 3 and r.optim.lr == 0.5 and r.model.predictor is False
    assert r.learner_config().num_views == 4 and r.paper == {}
    assert load_recipe("cifar10_byol_gsg").paper == {"knn_top1": {"value": 90.3, "split": "test", "k": 200}}
    with pytest.raises(ValueError, match="unknown train option"):
        load_recipe("demo", ["train.epoch=3"])
    with pytest.raises(FileNotFoundError, match="no_such_recipe.*demo"):  # names the recipes there are
        load_recipe("no_such_recipe")


def test_epoch_sampler_shards_are_disjoint_and_deterministic():
    from gsg_zoo.data.pretraining import EpochShardSampler

    a = [list(EpochShardSampler(10, r, 2, seed=3)) for r in range(2)]
    assert not {i for i, _ in a[0]} & {i for i, _ in a[1]} and len(a[0]) == 5
    s = EpochShardSampler(10, 0, 1, seed=3)
    s.set_epoch(1)
    e1 = list(s)
    s.set_epoch(2)
    assert list(s) != e1 and all(ep == 2 for _, ep in s)


def test_corrupt_image_is_reported_and_skipped(tmp_path, caplog):
    root = tmp_path / "folder"
    for c in ("a", "b"):
        (root / "train" / c).mkdir(parents=True)
        for i in range(12):
            Image.new("RGB", (20, 20), (i * 20, 100 if c == "a" else 10, 50)).save(
                root / "train" / c / f"{i}.png"
            )
    bad = root / "train" / "a" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image")
    recipe = load_recipe(
        "demo",
        [
            *TINY,
            "data.dataset=imagefolder",
            f"data.root={root}",
            "train.epochs=1",
            "monitor.every=-1",
            "train.batch_size=25",
        ],
    )
    with caplog.at_level("WARNING"):
        summary = Pretrainer(recipe, tmp_path / "run", progress=False).run()
    assert summary["skipped_images"] == 1 and summary["steps"] == 1
    assert str(bad) in caplog.text


def test_missing_dataset_names_layout(tmp_path):
    recipe = load_recipe("demo", [*TINY, "data.dataset=cifar10", f"data.root={tmp_path}"])
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        Pretrainer(recipe, tmp_path / "run", progress=False)


def test_nan_guard_keeps_last_good_checkpoint_and_stops_restarts(tmp_path, monkeypatch):
    """A non-finite loss stops the run before any save and leaves a marker: a restart of the same run
    stops at once with the same message (no restart loop) until the marker is removed."""
    base = [*TINY, "train.epochs=1", "monitor.every=-1", "train.max_steps_per_epoch=2"]
    Pretrainer(load_recipe("demo", base), tmp_path / "run", progress=False).run()
    good = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    real_step = trainer_module.train_step

    def nan_step(*args, **kwargs):
        out = real_step(*args, **kwargs)
        out.loss = torch.full_like(out.loss, float("nan"))
        return out

    monkeypatch.setattr(trainer_module, "train_step", nan_step)
    longer = load_recipe("demo", [*base, "train.epochs=2"])
    with pytest.raises(NonFiniteLossError, match="last good checkpoint"):
        Pretrainer(longer, tmp_path / "run", progress=False).run()
    kept = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert kept["epoch"] == 1
    assert all(torch.equal(v, good["model"][k]) for k, v in kept["model"].items())
    monkeypatch.setattr(trainer_module, "train_step", real_step)  # a restart would compute fine now...
    with pytest.raises(NonFiniteLossError, match="restarting would replay it"):
        Pretrainer(longer, tmp_path / "run", progress=False).run()  # ...but the marker stops it at once
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == kept["step"]
    (tmp_path / "run" / NONFINITE_MARKER).unlink()
    assert Pretrainer(longer, tmp_path / "run", progress=False).run()["epochs"] == 2


def test_resume_refuses_other_model_and_wrong_files(tmp_path):
    base = [*TINY, "train.epochs=1", "monitor.every=-1", "train.max_steps_per_epoch=1"]
    Pretrainer(load_recipe("demo", base), tmp_path / "run", progress=False).run()
    other = load_recipe("demo", [*base, "train.epochs=2", "model.projector_dim=48"])
    with pytest.raises(ValueError, match="different model"):
        Pretrainer(other, tmp_path / "run", progress=False).run()
    junk = tmp_path / "junk.pt"
    torch.save({"state_dict": {}}, junk)
    with pytest.raises(CheckpointError, match="not a gsg-zoo pretraining checkpoint"):
        load_checkpoint(junk)
    (tmp_path / "w.safetensors").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="safetensors"):
        load_checkpoint(tmp_path / "w.safetensors")


def test_collapse_indicators():
    torch.manual_seed(0)
    healthy = torch.randn(256, 64)
    point = torch.randn(1, 64).repeat(256, 1) + 1e-4 * torch.randn(256, 64)
    assert normalized_std(healthy) > 0.9 and normalized_std(point) < 0.05
    line = torch.randn(256, 1) * torch.randn(1, 64)  # dimensional collapse: rank one
    assert effective_rank(healthy) > 40 and effective_rank(line) < 1.5
    m = collapse_metrics(healthy, line)
    assert m["h_rank"] > 40 and m["z_rank"] < 1.5
