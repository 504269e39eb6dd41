"""An export folder's integrity: ``checksums.sha256`` over every file, written and verified."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .layout import CHECKSUMS_FILE


class ExportIntegrityError(ValueError):
    """An export directory's files do not match its checksum manifest."""


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def payload_files(export_dir: Path) -> list[str]:
    """Every regular file in the export (relative POSIX paths), except the manifest and dotfiles."""
    out = []
    for p in sorted(export_dir.rglob("*")):
        rel = p.relative_to(export_dir)
        if p.is_file() and rel.as_posix() != CHECKSUMS_FILE and not any(s.startswith(".") for s in rel.parts):
            out.append(rel.as_posix())
    return out


def write_checksums(export_dir: str | os.PathLike) -> Path:
    """(Re)write ``checksums.sha256`` over every file of the export."""
    export_dir = Path(export_dir)
    lines = [f"{sha256_file(export_dir / name)}  {name}\n" for name in payload_files(export_dir)]
    path = export_dir / CHECKSUMS_FILE
    path.write_text("".join(lines))
    return path


def read_checksums(export_dir: str | os.PathLike) -> dict[str, str]:
    path = Path(export_dir) / CHECKSUMS_FILE
    if not path.is_file():
        raise ExportIntegrityError(
            f"{export_dir} has no {CHECKSUMS_FILE}: not a gsg export (re-export it with `gsg export`)"
        )
    out: dict[str, str] = {}
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            raise ExportIntegrityError(f"{path}:{i}: malformed line {line!r}")
        out[name] = digest
    return out


def verify_export(export_dir: str | os.PathLike) -> dict[str, str]:
    """Check every file against ``checksums.sha256``; return ``{file: sha256}``.

    Raises :class:`ExportIntegrityError` naming the first modified, missing or unlisted file.
    """
    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        raise FileNotFoundError(f"export directory not found: {export_dir}")
    expected = read_checksums(export_dir)
    for name, digest in expected.items():
        _check_file(export_dir, name, digest)
    extra = sorted(set(payload_files(export_dir)) - set(expected))
    if extra:
        raise ExportIntegrityError(
            f"{export_dir}: file {extra[0]!r} is not listed in {CHECKSUMS_FILE} (added after export); "
            "remove it or re-export"
        )
    return expected


def verify_listed_files(export_dir: str | os.PathLike) -> bool:
    """Before a gsg loader reads an export: check every file its ``checksums.sha256`` lists.

    Returns False (nothing checked) for a folder without a manifest (a timm folder from elsewhere);
    raises :class:`ExportIntegrityError` naming a modified or missing file with both hashes. Files
    added after the export are not refused here (:func:`verify_export` does that).
    """
    export_dir = Path(export_dir)
    if not (export_dir / CHECKSUMS_FILE).is_file():
        return False
    for name, digest in read_checksums(export_dir).items():
        _check_file(export_dir, name, digest)
    return True


def _check_file(export_dir: Path, name: str, digest: str) -> None:
    path = export_dir / name
    if not path.is_file():
        raise ExportIntegrityError(f"{export_dir}: file {name!r} listed in {CHECKSUMS_FILE} is missing")
    actual = sha256_file(path)
    if actual != digest:
        raise ExportIntegrityError(
            f"{export_dir}: file {name!r} was modified after export (sha256 {actual}, expected {digest} "
            f"in {CHECKSUMS_FILE}); re-export it or restore the original file"
        )
