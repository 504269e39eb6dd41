"""The nested recipe layout: sections refuse unknown and renamed keys, stored flat configs upgrade, and a
checkpoint written with the flat ``data`` layout resumes."""

from __future__ import annotations

import copy

import pytest
import yaml
from test_pretrain import TINY

from gsg_zoo.config.recipes import RENAMED, Recipe, key_defaults, load_recipe, upgrade_config
from gsg_zoo.core.checkpoint import load_checkpoint, save_checkpoint
from gsg_zoo.train.trainer import Pretrainer


def flat_layout(config: dict) -> dict:
    """A config in the flat ``data`` layout, written out key by key (independent of upgrade_config)."""
    old = copy.deepcopy(config)
    for old_key, new_key in RENAMED.items():
        _, *path = new_key.split(".")
        node = old["data"]
        for k in path[:-1]:
            node = node[k]
        old["data"][old_key.split(".")[1]] = node.pop(path[-1])
    for section in ("synthetic", "loader", "hf", "stream", "local_crops"):
        assert old["data"].pop(section) == {}, section
    return old


@pytest.mark.parametrize("old", sorted(RENAMED))
def test_an_old_flat_key_is_refused_naming_its_new_place(old, tmp_path):
    value = key_defaults()[RENAMED[old]]
    with pytest.raises(ValueError, match=rf"{old} was renamed: use {RENAMED[old]}"):
        load_recipe("demo", [f"{old}={'null' if value is None else value}"])
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"data": {old.split(".")[1]: value}}))
    with pytest.raises(ValueError, match=rf"use {RENAMED[old]}"):
        load_recipe(str(recipe))


def test_sections_are_typed_and_checked():
    r = load_recipe(
        "demo", ["data.loader.num_workers=3", "data.stream.shuffle_buffer=7", "model.predictor=false"]
    )
    assert r.data.loader.num_workers == 3 and r.data.stream.shuffle_buffer == 7
    assert r.model.predictor is False and r.learner_config().method == r.method
    with pytest.raises(ValueError, match=r"unknown data.loader option\(s\) \['workers'\].*num_workers"):
        load_recipe("demo", ["data.loader.workers=1"])
    with pytest.raises(ValueError, match="data.loader is a section: give its keys"):
        load_recipe("demo", ["data.loader=4"])
    with pytest.raises(ValueError, match=r"unknown model option\(s\) \['target'\]"):  # method sets it
        load_recipe("demo", ["model.target=ema"])
    assert all(RENAMED[k] in key_defaults() for k in RENAMED)


def test_upgrade_config_moves_every_flat_key():
    now = Recipe().to_dict()
    assert upgrade_config(now) == now
    old = flat_layout(now)
    assert "num_workers" in old["data"] and "loader" not in old["data"]
    assert upgrade_config(old) == now


def test_a_checkpoint_of_the_flat_layout_resumes(tmp_path):
    base = [*TINY, "train.epochs=1", "monitor.every=-1", "train.max_steps_per_epoch=1"]
    Pretrainer(load_recipe("demo", base), tmp_path / "run", progress=False).run()
    path = tmp_path / "run" / "checkpoints" / "last.pt"
    state = load_checkpoint(path)
    state["config"] = flat_layout(state["config"])
    save_checkpoint(path, {k: v for k, v in state.items() if k not in ("kind", "format_version")})
    summary = Pretrainer(
        load_recipe("demo", [*base, "train.epochs=2"]), tmp_path / "run", progress=False
    ).run()
    assert summary["epochs"] == 2 and summary["steps"] == 2
    with pytest.raises(ValueError, match="different recipe"):  # the upgraded config is still compared
        Pretrainer(
            load_recipe("demo", [*base, "train.epochs=3", "data.stream.shuffle_buffer=5"]),
            tmp_path / "run",
            progress=False,
        ).run()
