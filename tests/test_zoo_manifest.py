"""The zoo manifest and the ``zoo:NAME`` spec: validated entries, resolved to ``hf-hub:`` and loaded offline.

A manifest entry points at a Hugging Face cache built here (``models--ORG--NAME/refs/main`` and
``snapshots/<sha>/{config.json,model.safetensors}``), read with ``HF_HUB_OFFLINE=1``.
Budget: ~3 s (two tiny timm models, no subprocess).
"""

from __future__ import annotations

import json

import pytest
import timm
import torch
from safetensors.torch import load_file

import gsg_zoo
from gsg_zoo.zoo import manifest as zoo

ARCH, HUB_ID, NAME = "resnet10t", "gsg-test/tiny-resnet10t", "tiny-simsiam-in1k"
SHA = "0123456789abcdef0123456789abcdef01234567"


def _entry(**over) -> dict:
    entry = {
        "name": NAME,
        "hub_id": HUB_ID,
        "revision": "main",
        "architecture": ARCH,
        "method": "simsiam",
        "needs_gsg_zoo": False,
        "pretrain_data": "imagenet",
        "pretrain_epochs": 1,
        "results": [],
        "license": "apache-2.0",
        "sha256": "0" * 64,
        "pretrained_cfg": {
            "input_size": [3, 64, 64],
            "interpolation": "bilinear",
            "crop_pct": 1.0,
            "mean": [0.5, 0.5, 0.5],
            "std": [0.25, 0.25, 0.25],
            "num_classes": 0,
            "classifier": "fc",
            "first_conv": "conv1.0",
            "license": "apache-2.0",
        },
    }
    return {**entry, **over}


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An offline Hugging Face cache holding one backbone; returns ``(manifest path, its state dict)``."""
    import huggingface_hub.constants as hf

    repo = tmp_path / "hub" / ("models--" + HUB_ID.replace("/", "--"))
    snap = repo / "snapshots" / SHA
    model = timm.create_model(ARCH, pretrained=False, num_classes=0)
    with torch.no_grad():
        for p in model.parameters():  # weights no initialiser would give
            p.copy_(torch.randn_like(p))
    # the preprocessing an export records in its config.json (the entry's pretrained_cfg copies it)
    model.pretrained_cfg = {
        **model.pretrained_cfg,
        "input_size": (3, 64, 64),
        "mean": (0.5,) * 3,
        "std": (0.25,) * 3,
    }
    timm.models.save_for_hf(model, snap, safe_serialization=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(SHA)
    manifest = tmp_path / "zoo.json"
    manifest.write_text(json.dumps({"format_version": 1, "models": [_entry()]}))
    for key, value in {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("GSG_ZOO_MANIFEST", str(manifest))
    return manifest, load_file(snap / "model.safetensors")


def _equal(state, weights) -> bool:
    return set(state) == set(weights) and all(torch.equal(state[k], weights[k]) for k in weights)


def test_zoo_names_load_through_the_front_door(offline_hub):
    _, weights = offline_hub
    assert zoo.resolve_zoo_name(NAME) == f"hf-hub:{HUB_ID}"
    model, data_config = gsg_zoo.load_backbone(f"zoo:{NAME}")
    assert _equal(model.state_dict(), weights) and not model.training
    assert data_config["input_size"] == (3, 64, 64) and tuple(data_config["mean"]) == (0.5,) * 3
    assert _equal(gsg_zoo.load(NAME).state_dict(), weights)  # the short form
    assert gsg_zoo.load(NAME, num_classes=5).num_classes == 5  # timm options pass through
    stock = timm.create_model(f"hf-hub:{HUB_ID}", pretrained=True, num_classes=0)  # the same weights
    assert _equal(stock.state_dict(), weights)
    assert timm.list_pretrained("*gsg*") == []  # nothing is added to timm's pretrained registry


def test_unknown_names_and_options_are_clear_errors(offline_hub, tmp_path):
    with pytest.raises(ValueError, match="not in the gsg-zoo manifest.*known: tiny-simsiam-in1k"):
        gsg_zoo.load("nope")
    with pytest.raises(ValueError, match="takes no timm options"):
        gsg_zoo.load_backbone("pixels", num_classes=3)


def test_shipped_manifest_is_empty(monkeypatch):
    monkeypatch.delenv("GSG_ZOO_MANIFEST", raising=False)
    assert zoo.load_manifest() == []
    with pytest.raises(ValueError, match="none yet"):
        zoo.resolve_zoo_name("anything")


def _write(path, entries) -> None:
    path.write_text(json.dumps({"format_version": 1, "models": entries}))


def test_manifest_validator_on_a_non_empty_fixture(tmp_path):
    """load_manifest validates: two good entries load; each kind of bad entry is named."""
    other = _entry(name="other", revision=SHA, sha256="a" * 64)
    manifest = tmp_path / "zoo.json"
    _write(manifest, [_entry(), other])
    assert [e["name"] for e in zoo.load_manifest(manifest)] == [NAME, "other"]
    no_sha = {k: v for k, v in _entry().items() if k != "sha256"}
    bad = [
        (no_sha, r"entry 1: missing \['sha256'\]"),
        ("resnet50", "entry 1: not an object"),
        (_entry(name="bad name"), "bad name 'bad name'"),
        (_entry(hub_id="no-slash"), "bad hub_id 'no-slash'"),
        (_entry(revision=""), "bad revision ''"),
        (_entry(sha256="abc"), "bad sha256 'abc'"),
        (_entry(results={}), "bad results"),
        (_entry(pretrained_cfg=[]), "bad pretrained_cfg"),
        (_entry(), f"duplicate name '{NAME}'"),
    ]
    for entry, match in bad:
        _write(manifest, [other, entry] if "duplicate" not in match else [_entry(), other, entry])
        with pytest.raises(ValueError, match=match):
            zoo.load_manifest(manifest)
    with pytest.raises(ValueError, match="bad sha256"):
        zoo.save_manifest([_entry(sha256="x")], tmp_path / "never.json")
    assert not (tmp_path / "never.json").exists()


def test_a_pinned_revision_loads_its_own_weights_offline(offline_hub, tmp_path, monkeypatch):
    """refs/main moves to a newer commit; an entry pinned to the old sha still loads the old snapshot."""
    _, pinned_weights = offline_hub
    repo = tmp_path / "hub" / ("models--" + HUB_ID.replace("/", "--"))
    newer = "fedcba9876543210fedcba9876543210fedcba98"
    model = timm.create_model(ARCH, pretrained=False, num_classes=0)
    timm.models.save_for_hf(model, repo / "snapshots" / newer, safe_serialization=True)
    (repo / "refs" / "main").write_text(newer)
    manifest = tmp_path / "pinned.json"
    _write(manifest, [_entry(revision=SHA), _entry(name="latest")])
    monkeypatch.setenv("GSG_ZOO_MANIFEST", str(manifest))
    pinned = gsg_zoo.load(NAME).state_dict()
    latest = gsg_zoo.load("latest").state_dict()
    assert all(torch.equal(pinned[k], pinned_weights[k]) for k in pinned_weights)
    assert all(torch.equal(latest[k], model.state_dict()[k]) for k in latest)
    assert not torch.equal(pinned["conv1.0.weight"], latest["conv1.0.weight"])
    assert zoo.resolve_zoo_name(NAME) == f"hf-hub:{HUB_ID}@{SHA}"
