"""Remote dataset paths and config files (``https://``, ``s3://``, ``gs://``), served on 127.0.0.1.

https is served by a small HTTP server here; s3 by moto's S3-compatible server and gs by
gcp-storage-emulator's GCS JSON API server (both dev extras), read through fsspec + s3fs / gcsfs.
"""

from __future__ import annotations

import hashlib
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from axr.cli import main
from axr.config import load_config
from axr.data.preprocess import preprocess
from axr.errors import ConfigError
from axr.remote import fetch
from axr.testing.hub_server import alpaca_rows, jsonl_bytes


class FileServer:
    """Files by URL path with an ETag each; records the paths of GET requests."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.gets: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                server.gets.append(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()[:16]}"')
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def remote_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "axr-cache"
    monkeypatch.setenv("AXR_CACHE", str(cache))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return cache / "remote"


@pytest.fixture
def file_server(remote_cache: Path) -> Iterator[FileServer]:
    server = FileServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.stop()


def _config_text(tokenizer_dir: Path, tmp_path: Path, path: str) -> str:
    return (
        f"base_model: {tokenizer_dir}\nsequence_len: 128\n"
        f"dataset_prepared_path: {tmp_path / 'prepared'}\n"
        f"datasets:\n  - path: {path}\n    type: alpaca\n"
    )


def test_an_https_dataset_and_config_are_fetched_once_and_a_changed_file_rebuilds(
    file_server, remote_cache, tmp_path, mistral_tokenizer_dir, monkeypatch
):
    file_server.files["/data/rows.jsonl"] = jsonl_bytes(alpaca_rows(9))
    data_url = f"{file_server.url}/data/rows.jsonl"
    file_server.files["/configs/run.yml"] = _config_text(mistral_tokenizer_dir, tmp_path, data_url).encode()
    config_url = f"{file_server.url}/configs/run.yml"

    # The CLI takes the URL as its config.
    assert main(["preprocess", config_url, "--no-progress", "--no-doctor"]) == 0
    first = preprocess(load_config(config_url), progress=False)
    assert first.reused
    assert first.metas["train"]["samples"] == 9
    copies = sorted(path.name for path in remote_cache.rglob("*.jsonl"))
    assert copies == ["rows.jsonl"]
    source = first.metas["train"]["options"]["datasets"][0]["source"]
    assert source["origin"].startswith(f"{data_url} etag=")

    again = preprocess(load_config(config_url), progress=False)
    assert again.reused
    assert again.fingerprint == first.fingerprint
    assert sorted(path.name for path in remote_cache.rglob("*.jsonl")) == ["rows.jsonl"]

    file_server.files["/data/rows.jsonl"] = jsonl_bytes(alpaca_rows(5))
    changed = preprocess(load_config(config_url), progress=False)
    assert not changed.reused
    assert changed.metas["train"]["samples"] == 5

    # Offline: the newest cached copy, no request; a URL never fetched fails at once.
    file_server.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    requests = len(file_server.gets)
    offline = preprocess(load_config(config_url), progress=False)
    assert offline.reused
    assert offline.fingerprint == changed.fingerprint
    assert len(file_server.gets) == requests
    started = time.monotonic()
    with pytest.raises(
        ConfigError, match=r"^config: http://.*/never\.yml is not in the local cache .* offline$"
    ):
        load_config(f"{file_server.url}/never.yml")
    assert time.monotonic() - started < 5


def test_remote_errors_name_the_key_and_the_url(file_server, tmp_path, mistral_tokenizer_dir):
    with pytest.raises(ConfigError, match=r"^config: http://127\.0\.0\.1:\d+/missing\.yml: HTTP 404"):
        load_config(f"{file_server.url}/missing.yml")
    file_server.files["/bad.yml"] = b"base_model: [unclosed\n"
    with pytest.raises(ConfigError, match=r"^http://127\.0\.0\.1:\d+/bad\.yml: not valid YAML: line 2"):
        load_config(f"{file_server.url}/bad.yml")
    # A config bigger than the config size limit is refused while it streams in.
    file_server.files["/huge.yml"] = b"# " + b"x" * (5 * 1024 * 1024) + b"\n"
    with pytest.raises(ConfigError, match=r"^config: http://.*/huge\.yml is larger than 4,194,304 bytes"):
        load_config(f"{file_server.url}/huge.yml")
    config = tmp_path / "c.yml"
    config.write_text(_config_text(mistral_tokenizer_dir, tmp_path, f"{file_server.url}/gone.jsonl"))
    with pytest.raises(ConfigError, match=r"^datasets\[0\]\.path: http://.*/gone\.jsonl: HTTP 404"):
        preprocess(load_config(config), progress=False)
    config.write_text(_config_text(mistral_tokenizer_dir, tmp_path, "az://container/rows.jsonl"))
    with pytest.raises(ConfigError, match=r"^datasets\[0\]\.path: az:// paths are not supported"):
        preprocess(load_config(config), progress=False)


def test_gs_without_gcsfs_says_which_extra_to_install(remote_cache, monkeypatch):
    monkeypatch.setitem(sys.modules, "gcsfs", None)  # as if not installed, whatever this venv holds
    with pytest.raises(
        ConfigError,
        match=r'^datasets\[0\]\.path: gs:// paths need the gcsfs package: pip install "axr\[gcs\]"$',
    ):
        fetch("gs://bucket/rows.jsonl", "datasets[0].path")


@pytest.fixture
def s3_server(remote_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto's S3 server on 127.0.0.1 with a bucket; s3fs finds it through AWS_ENDPOINT_URL."""
    pytest.importorskip("s3fs", reason="the s3 tests need the s3 extra (pip install 'axr[s3]'); dev has it")
    from moto.server import ThreadedMotoServer

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for name, value in {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    import boto3

    client = boto3.client("s3")
    client.create_bucket(Bucket="axr-data")
    try:
        yield client
    finally:
        server.stop()


def _bucket_files_and_folders(
    put: Callable[[str, bytes], Any], scheme: str, etag: str, cache: Path, tmp_path: Path, tokenizer_dir: Path
) -> None:
    """Through an object store: a folder (data files only), reuse, a file's ETag as its origin,
    a changed file rebuilt, a missing object named. ``put(key, body)`` writes bucket axr-data."""
    put("alpaca/part-0.jsonl", jsonl_bytes(alpaca_rows(4)))
    put("alpaca/part-1.jsonl", jsonl_bytes(alpaca_rows(3, start=10)))
    put("alpaca/notes.md", b"not data")
    config = tmp_path / f"{scheme}.yml"
    config.write_text(_config_text(tokenizer_dir, tmp_path, f"{scheme}://axr-data/alpaca/"))
    folder = preprocess(load_config(config), progress=False)
    assert folder.metas["train"]["samples"] == 7
    assert not list(cache.rglob("notes.md")), "only data files are fetched from a folder"
    assert preprocess(load_config(config), progress=False).reused

    config.write_text(_config_text(tokenizer_dir, tmp_path, f"{scheme}://axr-data/alpaca/part-1.jsonl"))
    single = preprocess(load_config(config), progress=False)
    assert single.metas["train"]["samples"] == 3
    origin = single.metas["train"]["options"]["datasets"][0]["source"]["origin"]
    assert origin.startswith(f"{scheme}://axr-data/alpaca/part-1.jsonl {etag}=")

    put("alpaca/part-1.jsonl", jsonl_bytes(alpaca_rows(2, start=20)))
    assert preprocess(load_config(config), progress=False).metas["train"]["samples"] == 2

    config.write_text(_config_text(tokenizer_dir, tmp_path, f"{scheme}://axr-data/nothing.jsonl"))
    with pytest.raises(
        ConfigError, match=rf"^datasets\[0\]\.path: {scheme}://axr-data/nothing\.jsonl does not exist$"
    ):
        preprocess(load_config(config), progress=False)


def test_s3_files_and_folders_through_fsspec(s3_server, remote_cache, tmp_path, mistral_tokenizer_dir):
    def put(key: str, body: bytes) -> None:
        s3_server.put_object(Bucket="axr-data", Key=key, Body=body)

    _bucket_files_and_folders(put, "s3", "ETag", remote_cache, tmp_path, mistral_tokenizer_dir)


@pytest.fixture
def gs_server(remote_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """gcp-storage-emulator on 127.0.0.1 with a bucket; gcsfs finds it through STORAGE_EMULATOR_HOST."""
    pytest.importorskip("gcsfs", reason="the gs tests need the gcs extra (axr[gcs]); dev has it")
    from gcp_storage_emulator.server import create_server

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket="axr-data")
    server.start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    # gcsfs's experimental bucket-type probe speaks gRPC, which the emulator does not; it would
    # wait 60 s per bucket before falling back to the JSON API that real buckets and this server share.
    monkeypatch.setenv("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    for name in [name for name in sys.modules if name == "gcsfs" or name.startswith("gcsfs.")]:
        monkeypatch.delitem(sys.modules, name)
    import fsspec
    import gcsfs

    fsspec.register_implementation("gs", gcsfs.GCSFileSystem, clobber=True)
    gcsfs.GCSFileSystem.clear_instance_cache()
    client = gcsfs.GCSFileSystem(token="anon")
    try:
        yield client
    finally:
        gcsfs.GCSFileSystem.clear_instance_cache()
        server.stop()


def test_gs_files_and_folders_through_fsspec(gs_server, remote_cache, tmp_path, mistral_tokenizer_dir):
    def put(key: str, body: bytes) -> None:
        gs_server.pipe(f"axr-data/{key}", body)

    _bucket_files_and_folders(put, "gs", "etag", remote_cache, tmp_path, mistral_tokenizer_dir)
