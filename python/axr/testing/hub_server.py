"""A small Hugging Face hub-compatible HTTP server on 127.0.0.1, for tests without a network.

It serves what ``huggingface_hub`` (``snapshot_download``, ``hf_hub_download``) and transformers'
``from_pretrained`` ask of the hub: repo info, file trees and file downloads, for model and dataset
repos held in memory, each with one or more revisions, and the uploads of ``create_repo`` /
``upload_folder`` (files sent inline, recorded in ``commits``). Every request is recorded, so a test can
assert what was fetched. The server stops after ``max_requests`` requests or ``lifetime_s`` seconds,
whichever comes first, so a test that forgets to stop it cannot leave it running.

Use it as a context manager; ``server.endpoint`` is the value for ``HF_ENDPOINT``::

    with HubServer() as hub:
        hub.add_repo("model", "org/tiny", files_of_folder(model_dir))
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

# Files at least this big are described as LFS files in trees (as the hub does for weights).
LFS_THRESHOLD = 10 * 1024


@dataclass
class Revision:
    sha: str
    files: dict[str, bytes]


@dataclass
class Repo:
    repo_id: str
    kind: str  # "model" or "dataset"
    revisions: dict[str, Revision] = field(default_factory=dict)  # branch or tag name → revision
    private: bool = False

    def find(self, revision: str) -> Revision | None:
        if revision in self.revisions:
            return self.revisions[revision]
        return next((found for found in self.revisions.values() if found.sha == revision), None)


@dataclass(frozen=True)
class Commit:
    """One commit pushed to the server: the repo, its title and the files it added or changed."""

    repo_id: str
    summary: str
    files: list[str]


@dataclass(frozen=True)
class Request:
    method: str
    path: str


def files_of_folder(folder: str | Path) -> dict[str, bytes]:
    """The files under ``folder`` by their relative POSIX path (hidden files skipped)."""
    root = Path(folder)
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(root).parts)
    }


def _commit_sha(files: Mapping[str, bytes]) -> str:
    digest = hashlib.sha1()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return digest.hexdigest()


class HubServer:
    """The fake hub. ``add_repo`` before or while it runs; ``requests`` lists what it was asked."""

    def __init__(self, *, max_requests: int = 2000, lifetime_s: float = 300.0) -> None:
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[Request] = []
        self.commits: list[Commit] = []
        self.max_requests = max_requests
        self.lifetime_s = lifetime_s
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None

    # ---- content --------------------------------------------------------------------------------
    def add_repo(self, kind: str, repo_id: str, files: Mapping[str, bytes], *, revision: str = "main") -> str:
        """Add (or move ``revision`` of) a repo to a commit with ``files``; returns the commit sha."""
        if kind not in ("model", "dataset"):
            raise ValueError(f"kind must be model or dataset, not {kind!r}")
        sha = _commit_sha(files)
        with self._lock:
            repo = self.repos.setdefault((kind, repo_id), Repo(repo_id, kind))
            repo.revisions[revision] = Revision(sha, dict(files))
        return sha

    # ---- lifetime -------------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the hub server is not running")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def start(self) -> HubServer:
        handler = type("Handler", (_Handler,), {"hub": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        self._timer = threading.Timer(self.lifetime_s, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if self._timer is not None and self._timer is not threading.current_thread():
            self._timer.cancel()
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _count(self, method: str, path: str) -> bool:
        """Record a request; False once the request budget is spent (the server then stops)."""
        with self._lock:
            self.requests.append(Request(method, path))
            over = len(self.requests) > self.max_requests
        if over:
            threading.Thread(target=self.stop, daemon=True).start()
        return not over


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return  # keep test output clean; requests are recorded on the server

    # ---- responses ------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, headers: Mapping[str, str], *, head: bool = False) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, value: Any, *, head: bool = False) -> None:
        self._send(200, json.dumps(value).encode(), {"Content-Type": "application/json"}, head=head)

    def _error(self, status: int, code: str, message: str, *, head: bool = False, sha: str = "") -> None:
        headers = {"Content-Type": "application/json", "X-Error-Code": code, "X-Error-Message": message}
        if sha:
            headers["X-Repo-Commit"] = sha
        self._send(status, json.dumps({"error": message}).encode(), headers, head=head)

    # ---- routing --------------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        self._route(head=False)

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if not self.hub._count("POST", path):
            self._error(503, "TooManyRequests", "the test hub's request budget is spent")
            return
        parts = [unquote(part) for part in path.strip("/").split("/")]
        if parts == ["api", "validate-yaml"]:  # a README.md in a commit: its model card metadata
            self._json({"errors": [], "warnings": []})
            return
        if parts == ["api", "repos", "create"]:
            request = json.loads(body)
            kind = request.get("type") or "model"
            repo_id = (
                f"{request['organization']}/{request['name']}"
                if request.get("organization")
                else request["name"]
            )
            with self.hub._lock:
                repo = self.hub.repos.setdefault((kind, repo_id), Repo(repo_id, kind))
                repo.private = bool(request.get("private")) or request.get("visibility") == "private"
                if "main" not in repo.revisions:
                    repo.revisions["main"] = Revision(_commit_sha({}), {})
            self._json({"url": f"{self.hub.endpoint}/{repo_id}", "name": repo_id})
            return
        if parts[:1] == ["api"] and len(parts) >= 6 and parts[1] in ("models", "datasets"):
            kind, repo_id, action, revision = parts[1][:-1], f"{parts[2]}/{parts[3]}", parts[4], parts[5]
            if self._repo(kind, repo_id, revision, head=False) is None:
                return
            if action == "preupload":
                files = [
                    {"path": item["path"], "uploadMode": "regular", "shouldIgnore": False}
                    for item in json.loads(body)["files"]
                ]
                self._json({"files": files})
                return
            if action == "commit":
                self._json(self._commit(kind, repo_id, revision, body))
                return
        self._error(404, "NotFound", f"the test hub does not serve POST {path}")

    def _commit(self, kind: str, repo_id: str, revision: str, body: bytes) -> dict[str, Any]:
        """Apply an NDJSON commit (files sent inline as base64, the "regular" upload mode)."""
        import base64

        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        with self.hub._lock:
            repo = self.hub.repos[(kind, repo_id)]
            files = dict(repo.revisions[revision].files)
            for line in lines:
                value = line.get("value", {})
                if line.get("key") == "file":
                    files[value["path"]] = base64.b64decode(value["content"])
                elif line.get("key") == "deletedFile":
                    files.pop(value["path"], None)
            sha = _commit_sha(files)
            repo.revisions[revision] = Revision(sha, files)
            summary = next(
                (line["value"].get("summary", "") for line in lines if line.get("key") == "header"), ""
            )
            self.hub.commits.append(
                Commit(
                    repo_id,
                    summary,
                    sorted(line["value"]["path"] for line in lines if line.get("key") == "file"),
                )
            )
        return {"commitUrl": f"{self.hub.endpoint}/{repo_id}/commit/{sha}", "commitOid": sha, "success": True}

    def _route(self, *, head: bool) -> None:
        path = urlsplit(self.path).path
        if not self.hub._count(self.command, path):
            self._error(503, "TooManyRequests", "the test hub's request budget is spent", head=head)
            return
        parts = [unquote(part) for part in path.strip("/").split("/")]
        if parts[:1] == ["api"] and len(parts) >= 4 and parts[1] in ("models", "datasets"):
            self._api(parts[1][:-1], f"{parts[2]}/{parts[3]}", parts[4:], head=head)
            return
        kind = "model"
        if parts[:1] == ["datasets"]:
            kind, parts = "dataset", parts[1:]
        if len(parts) >= 5 and parts[2] == "resolve":
            self._resolve(kind, f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]), head=head)
            return
        self._error(404, "NotFound", f"the test hub does not serve {path}", head=head)

    def _repo(self, kind: str, repo_id: str, revision: str, *, head: bool) -> Revision | None:
        repo = self.hub.repos.get((kind, repo_id))
        if repo is None:
            self._error(404, "RepoNotFound", f"Repository Not Found for {kind} {repo_id}", head=head)
            return None
        found = repo.find(revision)
        if found is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head=head)
        return found

    def _api(self, kind: str, repo_id: str, rest: list[str], *, head: bool) -> None:
        if not rest or rest[0] == "revision":
            revision = self._repo(kind, repo_id, rest[1] if len(rest) > 1 else "main", head=head)
            if revision is not None:
                siblings = [{"rfilename": name} for name in sorted(revision.files)]
                private = self.hub.repos[(kind, repo_id)].private
                info = {"id": repo_id, "sha": revision.sha, "siblings": siblings, "private": private}
                self._json(info, head=head)
            return
        if rest[0] == "tree" and len(rest) >= 2:
            revision = self._repo(kind, repo_id, rest[1], head=head)
            if revision is not None:
                recursive = "recursive=true" in (urlsplit(self.path).query or "").lower()
                self._json(_tree(revision.files, "/".join(rest[2:]), recursive=recursive), head=head)
            return
        self._error(404, "NotFound", f"the test hub has no API {'/'.join(rest)}", head=head)

    def _resolve(self, kind: str, repo_id: str, revision_name: str, filename: str, *, head: bool) -> None:
        revision = self._repo(kind, repo_id, revision_name, head=head)
        if revision is None:
            return
        body = revision.files.get(filename)
        if body is None:
            self._error(404, "EntryNotFound", f"{filename} not in {repo_id}", head=head, sha=revision.sha)
            return
        headers = {
            "Content-Type": "application/octet-stream",
            "X-Repo-Commit": revision.sha,
            "ETag": f'"{hashlib.sha256(body).hexdigest()}"',
        }
        self._send(200, body, headers, head=head)


def _tree(files: Mapping[str, bytes], under: str, *, recursive: bool) -> list[dict[str, Any]]:
    """File and directory entries under ``under`` (directories too: clients walk them)."""
    prefix = f"{under.strip('/')}/" if under.strip("/") else ""
    entries: dict[str, dict[str, Any]] = {}
    for name, body in sorted(files.items()):
        if not name.startswith(prefix):
            continue
        parts = name[len(prefix) :].split("/")
        for depth in range(1, len(parts)):
            if depth > 1 and not recursive:
                break
            directory = prefix + "/".join(parts[:depth])
            entries.setdefault(
                directory, {"type": "directory", "path": directory, "oid": "0" * 40, "size": 0}
            )
        if len(parts) > 1 and not recursive:
            continue
        entry: dict[str, Any] = {
            "type": "file",
            "path": name,
            "size": len(body),
            "oid": hashlib.sha1(b"blob %d\0" % len(body) + body).hexdigest(),
        }
        if len(body) >= LFS_THRESHOLD:
            entry["lfs"] = {"oid": hashlib.sha256(body).hexdigest(), "size": len(body), "pointerSize": 134}
        entries[name] = entry
    return list(entries.values())


def alpaca_rows(count: int, *, start: int = 0, tag: str = "") -> list[dict[str, str]]:
    """Alpaca rows (instruction/input/output) numbered from ``start``; ``tag`` marks a variant."""
    return [
        {"instruction": f"Say the number {index}{tag}", "input": "", "output": f"It is {index}."}
        for index in range(start, start + count)
    ]


def jsonl_bytes(rows: list[dict[str, str]]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def parquet_bytes(rows: list[dict[str, str]]) -> bytes:
    """The rows as a Parquet file (needs ``pyarrow``, a dev dependency)."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buffer)
    return buffer.getvalue()


DATASET_CARD = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*.jsonl
  - split: test
    path: data/test-*.jsonl
- config_name: numbers_parquet
  data_files:
  - split: train
    path: parquet/train-*.parquet
  - split: test
    path: parquet/test-*.parquet
---
# A tiny alpaca dataset for axr's tests
"""


def alpaca_dataset_repo(*, train: int = 12, test: int = 4, tag: str = "") -> dict[str, bytes]:
    """A dataset repo as the hub lays it out: a card whose ``configs`` name two subsets (``default``:
    JSONL, ``numbers_parquet``: Parquet), each with a train and a test split."""
    train_rows, test_rows = alpaca_rows(train, tag=tag), alpaca_rows(test, start=1000, tag=tag)
    return {
        "README.md": DATASET_CARD.encode(),
        "data/train-00000-of-00001.jsonl": jsonl_bytes(train_rows),
        "data/test-00000-of-00001.jsonl": jsonl_bytes(test_rows),
        "parquet/train-00000-of-00001.parquet": parquet_bytes(train_rows[: train // 2]),
        "parquet/test-00000-of-00001.parquet": parquet_bytes(test_rows[: test // 2]),
    }


def folder_subsets_repo(*, counts: Mapping[str, int]) -> dict[str, bytes]:
    """A dataset repo with no card: each subset is a top-level folder with a ``train`` file."""
    return {
        f"{name}/train.jsonl": jsonl_bytes(alpaca_rows(count, tag=f" in {name}"))
        for name, count in counts.items()
    }
