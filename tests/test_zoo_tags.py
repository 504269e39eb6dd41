"""Zoo checkpoints as timm pretrained tags: listed by ``timm.list_pretrained`` and loaded offline.

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

from gsg_zoo.zoo import manifest as zoo

ARCH, HUB_ID, NAME = "resnet10t", "gsg-test/tiny-resnet10t", "tiny-simsiam-in1k"
TAG = f"{ARCH}.gsg_tiny_simsiam_in1k"
SHA = "0123456789abcdef0123456789abcdef01234567"


def _entry(**over) -> dict:
    entry = {
        "name": NAME,
        "hub_id": HUB_ID,
        "revision": "main",
        "architecture": ARCH,
        "timm_tag": "gsg_tiny_simsiam_in1k",
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
    yield manifest, load_file(snap / "model.safetensors")
    zoo.register_timm_tags([])  # leave timm's registry as it was
    assert not timm.list_pretrained("*gsg*")


def test_manifest_entries_are_timm_pretrained_tags(offline_hub):
    manifest, weights = offline_hub
    assert zoo.register_timm_tags(manifest) == [TAG]
    assert zoo.register_timm_tags(manifest) == [TAG]  # idempotent
    assert timm.list_pretrained("*gsg*") == [TAG]
    assert timm.models._registry._model_with_tags[ARCH].count(TAG) == 1  # registered once
    cfg = timm.models.get_pretrained_cfg(TAG)
    assert cfg.hf_hub_id == HUB_ID and cfg.tag == "gsg_tiny_simsiam_in1k" and cfg.num_classes == 0
    assert cfg.input_size == (3, 64, 64) and cfg.mean == (0.5, 0.5, 0.5)

    model = timm.create_model(TAG, pretrained=True).eval()
    state = model.state_dict()
    assert set(state) == set(weights) and all(torch.equal(state[k], weights[k]) for k in weights)
    assert timm.data.resolve_data_config({}, model=model)["input_size"] == (3, 64, 64)
    loaded = zoo.load(NAME)  # the same source: GSG_ZOO_MANIFEST
    assert all(torch.equal(loaded.state_dict()[k], weights[k]) for k in weights)
    assert zoo.load(NAME, num_classes=5).num_classes == 5


def test_tags_follow_the_manifest(offline_hub, tmp_path):
    manifest, _ = offline_hub
    zoo.register_timm_tags(manifest)
    pinned = _entry(name="pinned", timm_tag="gsg_pinned", revision=SHA)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format_version": 1, "models": [pinned]}))
    assert zoo.register_timm_tags(other) == [f"{ARCH}.gsg_pinned"]  # the first tag is gone
    assert timm.list_pretrained("*gsg*") == [f"{ARCH}.gsg_pinned"]
    assert timm.models.get_pretrained_cfg(f"{ARCH}.gsg_pinned").hf_hub_id == f"{HUB_ID}@{SHA}"
    assert timm.create_model(f"{ARCH}.gsg_pinned", pretrained=True).num_classes == 0  # the pinned commit


def test_bad_entries_are_refused(offline_hub, tmp_path, monkeypatch):
    bad = tmp_path / "bad.json"
    for entry, match in (
        (_entry(architecture="no_such_arch"), "no architecture 'no_such_arch'"),
        (_entry(architecture="resnet18", timm_tag="a1_in1k"), "replace timm's own pretrained tag"),
    ):
        bad.write_text(json.dumps({"format_version": 1, "models": [entry]}))
        with pytest.raises(ValueError, match=match):
            zoo.register_timm_tags(bad)
    bad.write_text("{}")
    with pytest.raises(ValueError, match="not a gsg-zoo manifest"):
        zoo.register_timm_tags(bad)
    monkeypatch.setenv("GSG_ZOO_MANIFEST", str(bad))
    with pytest.warns(UserWarning, match="not registered with timm"):
        assert zoo.register_timm_tags() == []  # the default manifest ($GSG_ZOO_MANIFEST) only warns
    assert timm.models.get_pretrained_cfg("resnet18.a1_in1k").hf_hub_id == "timm/resnet18.a1_in1k"


def test_default_tags():
    assert zoo.default_timm_tag("simsiam-in1k") == "gsg_simsiam_in1k"
    assert zoo.default_timm_tag("gsg-demo-simsiam-gsg-resnet10t") == "gsg_demo_simsiam_gsg_resnet10t"
    assert zoo.timm_name(_entry()) == TAG


def test_shipped_manifest_registers_nothing(monkeypatch):
    monkeypatch.delenv("GSG_ZOO_MANIFEST", raising=False)
    assert zoo.load_manifest() == [] and zoo.register_timm_tags() == []


_AFTER_IMPORT = r"""
import sys
import gsg_zoo  # noqa: F401  (registers the zoo's tags once timm is imported)
import timm, torch
from safetensors.torch import load_file
assert timm.list_pretrained("*gsg*") == [sys.argv[1]], timm.list_pretrained("*gsg*")
state = timm.create_model(sys.argv[1], pretrained=True).state_dict()
weights = load_file(sys.argv[2])
assert all(torch.equal(state[k], weights[k]) for k in weights)
"""


def test_import_gsg_zoo_registers_the_manifest(offline_hub, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    snap = tmp_path / "hub" / ("models--" + HUB_ID.replace("/", "--")) / "snapshots" / SHA
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    proc = subprocess.run(
        [sys.executable, "-c", _AFTER_IMPORT, TAG, str(snap / "model.safetensors")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def _write(path, entries) -> None:
    path.write_text(json.dumps({"format_version": 1, "models": entries}))


def test_manifest_validator_on_a_non_empty_fixture(tmp_path):
    """load_manifest validates: two good entries load; each kind of bad entry is named."""
    other = _entry(name="other", timm_tag="gsg_other", revision=SHA, sha256="a" * 64)
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
        (_entry(timm_tag="Gsg-X"), "bad timm_tag 'Gsg-X'"),
        (_entry(sha256="abc"), "bad sha256 'abc'"),
        (_entry(results={}), "bad results"),
        (_entry(pretrained_cfg=[]), "bad pretrained_cfg"),
        (_entry(timm_tag="gsg_two"), f"duplicate name '{NAME}'"),
        (_entry(name="two", timm_tag="gsg_other"), f"duplicate timm name '{ARCH}.gsg_other'"),
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
    _write(manifest, [_entry(revision=SHA), _entry(name="latest", timm_tag="gsg_latest")])
    zoo.register_timm_tags(manifest)
    pinned = timm.create_model(f"{ARCH}.gsg_tiny_simsiam_in1k", pretrained=True).state_dict()
    latest = timm.create_model(f"{ARCH}.gsg_latest", pretrained=True).state_dict()
    assert all(torch.equal(pinned[k], pinned_weights[k]) for k in pinned_weights)
    assert all(torch.equal(latest[k], model.state_dict()[k]) for k in latest)
    assert not torch.equal(pinned["conv1.0.weight"], latest["conv1.0.weight"])
    monkeypatch.setenv("GSG_ZOO_MANIFEST", str(manifest))
    assert zoo.resolve_zoo_name(NAME) == f"hf-hub:{HUB_ID}@{SHA}"  # the zoo:NAME model-spec route
    loaded = zoo.load(NAME).state_dict()
    assert all(torch.equal(loaded[k], pinned_weights[k]) for k in pinned_weights)
