"""Shards on object stores (``s3://``, ``gs://``, ``https://``, ...) through fsspec, with retries.

A URL's filesystem comes from fsspec (``s3fs`` for ``s3://``: the ``s3`` extra; endpoints and
credentials as boto reads them, e.g. ``AWS_ENDPOINT_URL``, ``AWS_PROFILE``). Reads are ranged: one range
per image for the by-index reader (:func:`read_range`), and for streams and scans a seekable file
(:class:`RetryingFile`) that reads blocks and, when a read fails on a transient error (a dropped
connection, a 503, a short body), waits (exponential backoff) and reads on from the same byte, so a
shard cut mid-stream loses or repeats nothing. Local paths go through the plain file calls.
"""

from __future__ import annotations

import io
import logging
import time
from typing import Any

log = logging.getLogger("gsg_zoo.data")

RETRIES, BACKOFF_S = 5, 0.2  # a read is tried 1 + RETRIES times, waiting BACKOFF_S x 2^k before each retry
BLOCK = 4 << 20  # bytes per ranged read of a stream


class StoreError(RuntimeError):
    """An object store refused or kept failing a read (credentials, access, network): one line naming the URL."""


def is_url(path: str) -> bool:
    return "://" in str(path) and not str(path).startswith("file://")


def filesystem(url: str) -> tuple[Any, str]:
    """``(fsspec filesystem, path within it)``; StoreError naming the extra to install."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as err:
        raise StoreError(f"{url}: {err}; for s3:// install the s3 extra (pip install 'gsg-zoo[s3]')") from err


def _errors(url: str, err: BaseException) -> Exception:
    """A one-line error for ``url`` saying what to do (credentials, a missing object, the network)."""
    name = type(err).__name__
    if name in ("NoCredentialsError", "PartialCredentialsError", "NoAuthTokenError"):
        return StoreError(
            f"{url}: no credentials for the bucket ({err}); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
            "AWS_PROFILE, or the store's own credentials"
        )
    if isinstance(err, PermissionError):
        return StoreError(f"{url}: access denied ({err}); check the credentials and the bucket policy")
    if isinstance(err, FileNotFoundError):
        return FileNotFoundError(f"{url} does not exist: check the bucket, the key and the pattern")
    return StoreError(f"{url}: {name}: {err} (after {RETRIES} retries); check the network and the endpoint")


def _transient(err: BaseException) -> bool:
    return not isinstance(err, FileNotFoundError | PermissionError) and type(err).__name__ not in (
        "NoCredentialsError",
        "PartialCredentialsError",
    )


def retried(url: str, call: Any) -> Any:
    """``call()``, retried with backoff on transient errors; the last error named with ``url``."""
    for attempt in range(RETRIES + 1):
        try:
            return call()
        except Exception as err:  # fsspec backends raise their own types: sorted by _transient
            if not _transient(err) or attempt == RETRIES:
                raise _errors(url, err) from err
            log.warning(
                "reading %s failed (%s: %s): retry %d in %.1f s",
                url,
                type(err).__name__,
                err,
                attempt + 1,
                BACKOFF_S * 2**attempt,
            )
            time.sleep(BACKOFF_S * 2**attempt)
    raise AssertionError("unreachable")


def info(url: str) -> tuple[int, str]:
    """``(size, version)`` of the object: its ETag (or mtime) tells a changed object."""
    fs, path = filesystem(url)
    meta = retried(url, lambda: fs.info(path))
    version = meta.get("ETag") or meta.get("etag") or meta.get("mtime") or meta.get("LastModified") or ""
    return int(meta["size"]), str(version)


def read_range(url: str, start: int, size: int) -> bytes:
    """Bytes ``start:start+size`` of the object (one ranged GET, retried); OSError when short."""
    fs, path = filesystem(url)
    data = retried(url, lambda: _exact(fs.cat_file(path, start=start, end=start + size), size))
    return data


def _exact(data: bytes, size: int) -> bytes:
    if len(data) != size:
        raise ConnectionError(f"short read: {len(data)} of {size} bytes")
    return data


def glob(pattern: str) -> list[str]:
    """The URLs a glob matches, sorted."""
    fs, path = filesystem(pattern)
    protocol = pattern.split("://", 1)[0]
    return sorted(f"{protocol}://{p}" for p in retried(pattern, lambda: fs.glob(path)))


def exists(url: str) -> bool:
    """Whether the object is there (errors other than its absence, e.g. no credentials, are raised)."""
    try:
        info(url)
    except FileNotFoundError:
        return False
    return True


class RetryingFile(io.RawIOBase):
    """A seekable read-only file over ``url`` whose every ranged read is retried (see the module)."""

    def __init__(self, url: str, size: int | None = None) -> None:
        self.url, self.pos = url, 0
        self.size = size if size is not None else info(url)[0]
        self._block, self._block_at = b"", 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.size - self.pos)
        if n <= 0:
            return 0
        if not self._block_at <= self.pos < self._block_at + len(self._block):
            length = min(max(BLOCK, n), self.size - self.pos)
            self._block, self._block_at = read_range(self.url, self.pos, length), self.pos
        chunk = self._block[self.pos - self._block_at :][:n]
        buffer[: len(chunk)] = chunk
        self.pos += len(chunk)
        return len(chunk)


def open_shard(path: str) -> io.BufferedReader:
    """A buffered, seekable reader of a local shard or of a URL (:class:`RetryingFile`)."""
    if is_url(path):
        return io.BufferedReader(RetryingFile(path), buffer_size=1 << 16)
    return open(path, "rb")  # noqa: SIM115  (the caller closes it)
