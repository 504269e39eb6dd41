"""Publish export directories to the Hugging Face Hub, and place them in the local Hub cache.

The token comes from ``HF_TOKEN`` or the saved ``hf auth login``, resolved by huggingface_hub
itself; gsg-zoo never prints, logs or writes it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.checksums import payload_files, sha256_file, verify_export
from ..core.layout import CHECKSUMS_FILE, PROVENANCE_FILE, WEIGHTS_FILE, read_json

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class PushPlan:
    """Exactly what a push uploads: files (path, bytes, sha256) and the commit message."""

    export_dir: Path
    repo_id: str
    revision: str | None
    private: bool
    commit_message: str
    files: list[tuple[str, int, str]] = field(default_factory=list)

    def describe(self) -> str:
        lines = [
            f"repo: {self.repo_id} (model, {'private' if self.private else 'public'})",
            f"revision: {self.revision or 'main'}",
            f"commit message: {self.commit_message}",
            f"files ({len(self.files)}, {sum(s for _, s, _ in self.files)} bytes):",
        ]
        width = max(len(n) for n, _, _ in self.files)
        lines += [f"  {n:<{width}}  {s:>12}  sha256:{h}" for n, s, h in self.files]
        return "\n".join(lines)


def _check_repo_id(repo_id: str) -> None:
    if not _REPO_ID.match(repo_id):
        raise ValueError(f"--repo must be ORG/NAME (a Hub model repo id), got {repo_id!r}")


def plan_push(
    export_dir: str | os.PathLike,
    repo_id: str,
    *,
    revision: str | None = None,
    private: bool = False,
    commit_message: str | None = None,
) -> PushPlan:
    """Verify the export's checksums and list what a push would upload (no network)."""
    _check_repo_id(repo_id)
    export_dir = Path(export_dir)
    sums = verify_export(export_dir)
    prov = read_json(export_dir / PROVENANCE_FILE) or {}
    if not commit_message:
        ck = prov.get("checkpoint", {})
        commit_message = (
            f"Add {prov.get('name', export_dir.name)}: {prov.get('architecture')} pretrained with "
            f"{prov.get('method')} (epoch {ck.get('epoch')}, checkpoint sha256 {str(ck.get('sha256'))[:12]}), "
            f"weights sha256 {sums.get(WEIGHTS_FILE, '?')[:12]}"
        )
    names = [*payload_files(export_dir), CHECKSUMS_FILE]
    files = [
        (n, (export_dir / n).stat().st_size, sums.get(n) or sha256_file(export_dir / n))
        for n in sorted(names)
    ]
    return PushPlan(export_dir, repo_id, revision, private, commit_message, files)


def push_export(
    export_dir: str | os.PathLike,
    repo_id: str,
    *,
    revision: str | None = None,
    private: bool = False,
    commit_message: str | None = None,
    dry_run: bool = False,
) -> tuple[PushPlan, dict[str, Any] | None]:
    """Upload a verified export in one commit; ``dry_run`` only plans. Returns ``(plan, commit)``.

    ``commit`` is ``{"oid": <40-hex commit>, "url": ...}`` (None for a dry run). The revision branch
    is created when missing.
    """
    plan = plan_push(export_dir, repo_id, revision=revision, private=private, commit_message=commit_message)
    if dry_run:
        return plan, None
    from huggingface_hub import CommitOperationAdd, HfApi, get_token

    if not get_token():
        raise RuntimeError("no Hugging Face token: set HF_TOKEN or run `hf auth login`, then retry")
    api = HfApi(library_name="gsg-zoo")
    ops = [
        CommitOperationAdd(path_in_repo=n, path_or_fileobj=str(plan.export_dir / n)) for n, _, _ in plan.files
    ]
    try:
        repo = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision and revision != "main":
            api.create_branch(repo.repo_id, branch=revision, exist_ok=True)
        info = api.create_commit(
            repo.repo_id, ops, commit_message=plan.commit_message, revision=revision, repo_type="model"
        )
    except Exception as err:  # HTTP errors, offline mode, connection failures: one clear message
        hint = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") not in (None, "", "0") else ""
        raise RuntimeError(f"push to {repo_id} failed{hint}: {type(err).__name__}: {err}") from err
    return plan, {"oid": getattr(info, "oid", None), "url": getattr(info, "commit_url", str(info))}


def install_to_cache(
    export_dir: str | os.PathLike,
    repo_id: str,
    *,
    cache_dir: str | os.PathLike | None = None,
    revision: str = "main",
    commit: str | None = None,
) -> Path:
    """Copy a verified export into the Hugging Face cache as ``repo_id`` (for offline use).

    Layout (as huggingface_hub documents it): ``models--ORG--NAME/refs/<revision>`` holds a 40-hex
    commit id, ``models--ORG--NAME/snapshots/<commit>/`` the files. ``commit`` defaults to a digest
    of the checksum manifest. ``cache_dir`` defaults to huggingface_hub's ``HF_HUB_CACHE``. Returns
    the snapshot folder; ``timm.create_model("hf-hub:ORG/NAME", pretrained=True)`` then loads offline.
    """
    _check_repo_id(repo_id)
    export_dir = Path(export_dir)
    verify_export(export_dir)
    if cache_dir is None:
        from huggingface_hub import constants

        cache_dir = constants.HF_HUB_CACHE
    commit = commit or hashlib.sha1((export_dir / CHECKSUMS_FILE).read_bytes()).hexdigest()
    if not re.fullmatch(r"[0-9a-f]{40}", commit):
        raise ValueError(f"commit must be 40 hex digits, got {commit!r}")
    repo_dir = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / commit
    for name in [*payload_files(export_dir), CHECKSUMS_FILE]:
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(export_dir / name, snapshot / name)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / revision).write_text(commit)
    return snapshot
