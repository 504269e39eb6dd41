"""Shards on an object store: a real S3 API on localhost (moto's server mode, started here on
127.0.0.1 and stopped after) behind a proxy that injects faults (a connection dropped mid-body, a 503).
The shards (webdataset's ShardWriter) are read by URL pattern or prefix, by index (ranged GETs) and
streamed, with the same samples and views as from the local disk, faults or not; a missing object and
missing credentials are one-line errors naming the URL; a crash inside a streamed epoch with faults
injected resumes bit-identically."""

from __future__ import annotations

import http.client
import itertools
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from test_foreign_shards import TRAIN, epoch, recipe, write_wds

from gsg_zoo.data import remote
from gsg_zoo.data.shard_sources import shard_set
from gsg_zoo.data.shards import ShardImages

moto_server = pytest.importorskip("moto.server")
s3fs = pytest.importorskip("s3fs")
boto3 = pytest.importorskip("boto3")

FAULTS = {"cut_every": 0, "fail_every": 0, "fired": 0}  # every N-th GET with a body: cut / answered 503
_gets = itertools.count(1)


class FaultyProxy(BaseHTTPRequestHandler):
    """Forwards every request to moto; some GET responses are cut mid-body or replaced by a 503."""

    protocol_version = "HTTP/1.1"
    upstream: tuple[str, int] = ("127.0.0.1", 0)

    def log_message(self, *args) -> None:
        pass

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        conn = http.client.HTTPConnection(*self.upstream, timeout=30)
        conn.request(
            self.command, self.path, body, {k: v for k, v in self.headers.items() if k.lower() != "host"}
        )
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        n = next(_gets) if self.command == "GET" and resp.status in (200, 206) and len(data) > 2048 else 0
        if n and FAULTS["fail_every"] and n % FAULTS["fail_every"] == 0:
            FAULTS["fired"] += 1
            error = b"<Error><Code>ServiceUnavailable</Code><Message>injected</Message></Error>"
            return self._send(503, {"Content-Type": "application/xml"}, error)
        cut = bool(n and FAULTS["cut_every"] and n % FAULTS["cut_every"] == 0)
        headers = {k: v for k, v in resp.getheaders() if k.lower() not in ("transfer-encoding", "connection")}
        self._send(resp.status, headers, data, cut)

    def _send(self, status: int, headers: dict, data: bytes, cut: bool = False) -> None:
        self.send_response(status)
        for k, v in headers.items():
            if k.lower() not in ("content-length", "server", "date"):
                self.send_header(k, v)
        length = headers.get("Content-Length") if self.command == "HEAD" else None  # HEAD: the object's
        self.send_header("Content-Length", length or str(len(data)))
        self.end_headers()
        if cut:  # half the body, then the connection drops
            FAULTS["fired"] += 1
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(data)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto on 127.0.0.1, the faulty proxy in front; bucket ``shards`` holds ``in1k/in1k-train-000N.tar``."""
    local = tmp_path_factory.mktemp("s3") / "in1k"
    write_wds(local, "train", TRAIN, 10, seed=0)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    FaultyProxy.upstream = server.get_host_and_port()
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), FaultyProxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.server_address[1]}",
    }
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        mp.setattr(remote, "BACKOFF_S", 0.01)
        s3fs.S3FileSystem.clear_instance_cache()
        client = boto3.client("s3")
        client.create_bucket(Bucket="shards")
        for p in sorted(local.glob("*.tar")):
            client.upload_file(str(p), "shards", f"in1k/{p.name}")
        yield local
        s3fs.S3FileSystem.clear_instance_cache()
    proxy.shutdown()
    server.stop()


PATTERN = "s3://shards/in1k/in1k-train-{0000..0004}.tar"


@pytest.fixture
def faults():
    FAULTS.update(cut_every=0, fail_every=0, fired=0)
    yield FAULTS
    FAULTS.update(cut_every=0, fail_every=0, fired=0)


def test_a_bucket_reads_as_the_local_shards_by_index_and_streamed(s3, faults):
    local = shard_set(s3, "train")
    for url in (PATTERN, "s3://shards/in1k"):
        remote_set = shard_set(url, "train")
        assert remote_set.counts == local.counts == [10, 10, 10, 10, 6]
    by_index, ref = ShardImages(shard_set(PATTERN)), ShardImages(local)
    assert by_index.items == ref.items
    assert all(by_index[i][0].tobytes() == ref[i][0].tobytes() for i in (0, 4, 33))
    assert epoch(shard_set(PATTERN), 0) == epoch(local, 0)


def test_gsg_data_info_of_a_bucket(s3, faults, capsys):
    import json

    from gsg_zoo.app.cli import main

    assert main(["data", "info", "s3://shards/in1k"]) == 0
    train = json.loads(capsys.readouterr().out)["splits"]["(given)"]
    assert (train["samples"], train["shards"], train["image_key"]) == (TRAIN, 5, "jpg")
    assert train["bytes"] == sum(p.stat().st_size for p in s3.glob("*.tar"))


def test_dropped_connections_and_503s_lose_and_repeat_nothing(s3, faults):
    want = epoch(shard_set(s3, "train"), 0)
    faults.update(cut_every=2, fail_every=3)
    assert epoch(shard_set(PATTERN), 0) == want
    by_index, ref = ShardImages(shard_set(PATTERN)), ShardImages(shard_set(s3, "train"))
    assert [by_index[i][0].tobytes() for i in range(0, TRAIN, 5)] == [
        ref[i][0].tobytes() for i in range(0, TRAIN, 5)
    ]
    assert faults["fired"] >= 4


def test_a_retrying_file_reads_on_from_the_byte_a_read_failed_at(monkeypatch, caplog):
    data = bytes(range(256)) * 64
    calls = []

    class Flaky:
        def cat_file(self, path, start, end):
            calls.append(start)
            if len(calls) % 2:
                raise ConnectionResetError("dropped")
            return data[start:end][: (end - start) // 2 or 1] if len(calls) == 2 else data[start:end]

        def info(self, path):
            return {"size": len(data), "ETag": "x"}

    monkeypatch.setattr(remote, "filesystem", lambda url: (Flaky(), url))
    monkeypatch.setattr(remote, "BACKOFF_S", 0.0)
    monkeypatch.setattr(remote, "BLOCK", 1000)
    f = remote.open_shard("s3://b/k.tar")
    assert f.read() == data and calls[:3] == [0, 0, 0]  # dropped, short, then whole: from byte 0 each time
    assert "reading s3://b/k.tar failed (ConnectionResetError: dropped): retry 1" in caplog.text


def test_a_missing_object_and_missing_credentials_are_named(s3, faults, monkeypatch, tmp_path, capsys):
    with pytest.raises(
        FileNotFoundError, match=r"in1k-train-\{0000\.\.0005\}\.tar: 1 of its 6 shards are missing"
    ):
        shard_set("s3://shards/in1k/in1k-train-{0000..0005}.tar")
    with pytest.raises(FileNotFoundError, match=r"s3://shards/in1k/nope\.tar does not exist"):
        remote.info("s3://shards/in1k/nope.tar")
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(k)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        with pytest.raises(
            remote.StoreError, match=r"s3://shards/in1k/in1k-train-0000\.tar: no credentials.*AWS_PROFILE"
        ):
            shard_set("s3://shards/in1k/in1k-train-0000.tar")
        from gsg_zoo.app.cli import main

        assert main(["data", "info", "s3://shards/in1k/in1k-train-0000.tar"]) == 1
        err = capsys.readouterr().err.strip()
        assert "no credentials for the bucket" in err and len(err.splitlines()) == 1
    finally:
        s3fs.S3FileSystem.clear_instance_cache()


@pytest.mark.slow
def test_a_crash_inside_a_streamed_epoch_from_s3_with_faults_resumes_exactly(
    s3, faults, tmp_path, monkeypatch
):
    from test_cluster import crash_and_resume_equals_uninterrupted

    faults.update(cut_every=3)
    r = recipe(PATTERN, "data.stream.enabled=true")
    saved = crash_and_resume_equals_uninterrupted(r, tmp_path, monkeypatch, crash_step=9)
    assert (saved["epoch"], saved["epoch_step"]) == (1, 2) and faults["fired"] > 0
