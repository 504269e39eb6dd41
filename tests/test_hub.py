"""gsg push (dry run, no network; a faked Hub API for the real path), token handling, zoo manifest.

Budget: ~5 s (one export without its reload check; no subprocess).
"""

from __future__ import annotations

import json
import socket

import pytest
from test_export import make_run

from gsg_zoo.app.cli import main
from gsg_zoo.core.checksums import ExportIntegrityError, sha256_file
from gsg_zoo.core.layout import CHECKSUMS_FILE
from gsg_zoo.zoo.export import export_checkpoint
from gsg_zoo.zoo.hub import plan_push, push_export
from gsg_zoo.zoo.manifest import (
    MANIFEST_PATH,
    add_entry,
    format_table,
    get_entry,
    load_manifest,
    resolve_zoo_name,
)


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("hub_run")
    ckpt, _ = make_run(run, method="byol_gsg")
    return export_checkpoint(ckpt, run / "export", "tiny-byol-gsg", verify=False)


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", refuse)


def test_dry_run_lists_exact_files(export_dir, no_network, capsys):
    assert main(["push", str(export_dir), "--repo", "gsg-org/tiny-byol-gsg", "--dry-run", "--private"]) == 0
    out = capsys.readouterr().out
    assert "dry run: nothing uploaded" in out and "repo: gsg-org/tiny-byol-gsg (model, private)" in out
    assert "commit message: Add tiny-byol-gsg: resnet18_cifar pretrained with byol_gsg" in out
    listed = {line.split()[0]: line.split() for line in out.splitlines() if "sha256:" in line}
    files = sorted(p.name for p in export_dir.iterdir())
    assert sorted(listed) == files and CHECKSUMS_FILE in listed
    for name, cols in listed.items():
        assert int(cols[1]) == (export_dir / name).stat().st_size
        assert cols[2] == "sha256:" + sha256_file(export_dir / name)


def test_push_verifies_checksums_and_repo_id(export_dir, tmp_path, no_network):
    import shutil

    d = shutil.copytree(export_dir, tmp_path / "copy")
    (d / "config.json").write_text((d / "config.json").read_text().replace('"avg"', '"max"'))
    with pytest.raises(ExportIntegrityError, match=r"'config\.json' was modified"):
        plan_push(d, "gsg-org/x", commit_message="m")
    with pytest.raises(ValueError, match="ORG/NAME"):
        plan_push(export_dir, "no-slash")


def test_push_without_token_is_refused(export_dir, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(RuntimeError, match="HF_TOKEN"):
        push_export(export_dir, "gsg-org/x")


def test_push_commits_exactly_the_planned_files(export_dir, monkeypatch):
    import huggingface_hub

    calls = {}

    class FakeApi:
        def __init__(self, **kwargs):
            calls["init"] = kwargs

        def create_repo(self, repo_id, **kwargs):
            calls["repo"] = (repo_id, kwargs)
            return type("RepoUrl", (), {"repo_id": repo_id})()

        def create_branch(self, repo_id, **kwargs):
            calls["branch"] = kwargs

        def create_commit(self, repo_id, operations, **kwargs):
            calls["commit"] = ([op.path_in_repo for op in operations], kwargs)
            return type("CommitInfo", (), {"oid": "a" * 40, "commit_url": "https://hub/c"})()

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_secret_never_shown")
    plan, commit = push_export(export_dir, "gsg-org/tiny", revision="v1", private=True)
    assert commit == {"oid": "a" * 40, "url": "https://hub/c"}
    assert "token" not in calls["init"]  # huggingface_hub resolves it itself
    assert calls["repo"] == ("gsg-org/tiny", {"private": True, "exist_ok": True, "repo_type": "model"})
    assert calls["branch"] == {"branch": "v1", "exist_ok": True}
    paths, kwargs = calls["commit"]
    assert paths == [n for n, _, _ in plan.files] == sorted(p.name for p in export_dir.iterdir())
    assert kwargs["revision"] == "v1" and kwargs["commit_message"] == plan.commit_message
    assert "hf_secret" not in plan.describe()


def test_zoo_add_list_resolve(export_dir, tmp_path, monkeypatch, capsys):
    manifest = tmp_path / "zoo.json"
    assert main(["zoo", "list", "--manifest", str(manifest)]) == 1  # a named manifest must exist
    assert "zoo manifest not found" in capsys.readouterr().err
    cards = tmp_path / "cards"
    argv = ["zoo", "add", "--manifest", str(manifest), str(export_dir), "--hub-id", "gsg-org/tiny-byol-gsg"]
    assert main([*argv, "--revision", "b" * 40, "--card-dir", str(cards)]) == 0
    entry = get_entry("tiny-byol-gsg", manifest)
    results = json.loads((export_dir / "results.json").read_text())
    assert entry["sha256"] == sha256_file(export_dir / "model.safetensors")
    assert entry["method"] == "byol_gsg" and entry["architecture"] == "resnet18_cifar"
    assert entry["pretrain_data"] == "cifar10" and entry["pretrain_epochs"] == 2
    assert [r["value"] for r in entry["results"]] == [results["knn_top1"]]
    card = (cards / "tiny-byol-gsg" / "README.md").read_text()
    assert 'gsg_zoo.load("tiny-byol-gsg")' in card and "hf-hub:gsg-org/tiny-byol-gsg" in card
    assert (cards / "tiny-byol-gsg" / "curves.png").is_file()
    assert "timm_tag" not in entry and entry["pretrained_cfg"]["num_classes"] == 0
    assert main([*argv, "--no-card"]) == 1
    assert "already in the manifest" in capsys.readouterr().err

    capsys.readouterr()
    assert main(["zoo", "list", "--json", "--manifest", str(manifest)]) == 0
    assert json.loads(capsys.readouterr().out) == load_manifest(manifest)
    assert main(["zoo", "list", "--manifest", str(manifest)]) == 0
    table = capsys.readouterr().out
    assert (
        "| tiny-byol-gsg | gsg-org/tiny-byol-gsg | bbbbbbbbbbbb | zoo:tiny-byol-gsg |" in table
        and "knn cifar10 top1 41.25" in table
    )

    monkeypatch.setenv("GSG_ZOO_MANIFEST", str(manifest))
    assert resolve_zoo_name("tiny-byol-gsg") == "hf-hub:gsg-org/tiny-byol-gsg@" + "b" * 40
    with pytest.raises(ValueError, match="not in the gsg-zoo manifest.*known: tiny-byol-gsg"):
        resolve_zoo_name("nope")
    add_entry(export_dir, "gsg-org/other", name="other", manifest=manifest)
    assert resolve_zoo_name("other") == "hf-hub:gsg-org/other"


def test_shipped_manifest_is_valid_and_real():
    """The package's manifest lists only published checkpoints; each entry is complete."""
    doc = json.loads(MANIFEST_PATH.read_text())
    assert doc["format_version"] == 1 and isinstance(doc["models"], list)
    assert load_manifest(MANIFEST_PATH) == doc["models"]  # the validator (tests/test_zoo_manifest.py) passes
    required = {
        "name",
        "hub_id",
        "revision",
        "architecture",
        "pretrained_cfg",
        "method",
        "pretrain_data",
        "results",
        "sha256",
    }
    for e in doc["models"]:
        assert required <= set(e), e
        assert len(e["sha256"]) == 64
    names = [e["name"] for e in doc["models"]]
    assert len(names) == len(set(names))
    if not names:
        assert "no checkpoint has been published yet" in format_table([])


def test_hub_failures_become_clear_errors(export_dir, monkeypatch):
    import huggingface_hub

    class DownApi:
        def __init__(self, **kwargs):
            pass

        def create_repo(self, *args, **kwargs):
            raise ConnectionError("hub unreachable")

    monkeypatch.setattr(huggingface_hub, "HfApi", DownApi)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_secret_never_shown")
    with pytest.raises(
        RuntimeError, match="push to gsg-org/x failed.*ConnectionError: hub unreachable"
    ) as info:
        push_export(export_dir, "gsg-org/x")
    assert "hf_secret" not in str(info.value)


def test_zoo_add_without_a_card_folder_fails_before_writing(export_dir, tmp_path, monkeypatch, capsys):
    """Installed (no model_cards/ beside the package): the entry is not added unless the card has a home."""
    import gsg_zoo.zoo.cards

    monkeypatch.setattr(gsg_zoo.zoo.cards, "DEFAULT_CARDS_DIR", None)
    manifest = tmp_path / "zoo.json"
    argv = [
        "zoo",
        "add",
        "--manifest",
        str(manifest),
        str(export_dir),
        "--hub-id",
        "gsg-org/x",
        "--name",
        "x",
    ]
    assert main(argv) == 1
    assert "pass --card-dir" in capsys.readouterr().err and not manifest.exists()
    assert main([*argv, "--no-card"]) == 0
    assert get_entry("x", manifest)["hub_id"] == "gsg-org/x"
