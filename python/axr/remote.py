"""Remote files (``https://``, ``s3://``, ``gs://``) → local copies in a cache, read by the native reader.

A URL is fetched once into ``$AXR_CACHE/remote`` (default ``~/.cache/axr/remote``), under a folder
keyed by the URL and by what identifies the remote content (ETag, else size and modification time):
a changed remote file lands in a new folder, an unchanged one is reused without reading it again.
Bodies are streamed to disk in 1 MiB blocks (bounded memory, whatever the size), to a temporary name
renamed when complete, so an interrupted download never looks like a cached one.

``https://`` and ``http://`` use the standard library. ``s3://`` and ``gs://`` go through fsspec with
its ``s3fs`` / ``gcsfs`` implementations (extras ``axr[s3]``, ``axr[gcs]``); credentials and endpoints
come from their usual environment (``AWS_*``, ``AWS_ENDPOINT_URL``, ``GOOGLE_APPLICATION_CREDENTIALS``).
An ``s3://`` or ``gs://`` prefix (a "folder") fetches the data files under it. With
``HF_HUB_OFFLINE=1`` (axr's one offline switch) the newest cached copy of a URL is used, and a URL
never fetched fails at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from axr.errors import ConfigError

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# scheme → (fsspec implementation package, axr extra); http(s) needs neither.
_FSSPEC = {"s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3"), "gs": ("gcsfs", "gcs"), "gcs": ("gcsfs", "gcs")}
_HTTP = ("http", "https")
# Files fetched from a remote folder: what the native reader reads.
DATA_SUFFIXES = (".jsonl", ".json", ".ndjson", ".parquet", ".arrow", ".txt")
_BLOCK = 1 << 20
_TIMEOUT_S = 60.0


def scheme_of(path: str) -> str | None:
    match = _SCHEME.match(path)
    return match.group(1).lower() if match else None


def is_remote(path: str) -> bool:
    return scheme_of(path) in (*_HTTP, *_FSSPEC)


def cache_root() -> Path:
    base = os.environ.get("AXR_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "axr"
    )
    return Path(base).expanduser() / "remote"


def _offline() -> bool:
    from axr.hub import offline

    return offline()


@dataclass(frozen=True)
class Fetched:
    """A URL's local copy: ``path`` is a file (or a folder for a remote prefix); ``origin`` names the
    URL and the identity of its content (kept in the store's fingerprint and meta.json)."""

    path: Path
    origin: str


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _url_folder(url: str) -> Path:
    return cache_root() / _digest(url)


def _newest_cached(url: str, key: str) -> Fetched:
    """Offline: the most recently completed copy of ``url``."""
    folder = _url_folder(url)
    copies = sorted(
        (entry for entry in folder.glob("*/") if (entry / ".complete").is_file()),
        key=lambda entry: (entry / ".complete").stat().st_mtime,
    )
    if not copies:
        raise ConfigError(f"{key}: {url} is not in the local cache ({cache_root()}) and the hub is offline")
    newest = copies[-1]
    record = json.loads((newest / ".complete").read_text(encoding="utf-8"))
    return Fetched(newest / record["path"], record["origin"])


def _stream(source: IO[bytes], target: Path, *, limit: int | None, url: str, key: str) -> None:
    """Copy ``source`` to ``target`` through a temporary file, at most ``limit`` bytes."""
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        written = 0
        with os.fdopen(descriptor, "wb") as out:
            while block := source.read(_BLOCK):
                written += len(block)
                if limit is not None and written > limit:
                    raise ConfigError(f"{key}: {url} is larger than {limit:,} bytes")
                out.write(block)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _mark_complete(folder: Path, origin: str, result: Path) -> None:
    """Written last: a folder without it is an interrupted fetch. It says what the copy is (offline use)."""
    relative = result.relative_to(folder).as_posix()
    (folder / ".complete").write_text(json.dumps({"origin": origin, "path": relative}), encoding="utf-8")


def _file_name(url: str) -> str:
    name = PurePosixPath(url.split("?", 1)[0].split("#", 1)[0]).name
    return name or "index"


def _fetch_http(url: str, key: str, limit: int | None) -> Fetched:
    """One GET: its headers say which copy the body is; a cached copy is used without reading it."""
    name = _file_name(url)
    request = urllib.request.Request(url, headers={"User-Agent": "axr"})
    try:
        response = urllib.request.urlopen(request, timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as error:
        raise ConfigError(f"{key}: {url}: HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ConfigError(f"{key}: cannot fetch {url}: {reason}") from None
    with response:
        headers = response.headers
        etag = headers.get("ETag")
        size = headers.get("Content-Length")
        if limit is not None and size is not None and int(size) > limit:
            raise ConfigError(f"{key}: {url} is larger than {limit:,} bytes ({int(size):,})")
        if etag:
            identity = f"etag={etag}"
        elif headers.get("Last-Modified") and size is not None:
            identity = f"size={size} modified={headers['Last-Modified']}"
        else:
            # Nothing identifies the content: always fetch, key the copy by its bytes afterwards.
            identity = ""
        if identity:
            folder = _url_folder(url) / _digest(identity)
            origin = f"{url} {identity}"
            if (folder / ".complete").is_file():
                return Fetched(folder / name, origin)
            _stream(response, folder / name, limit=limit, url=url, key=key)
            _mark_complete(folder, origin, folder / name)
            return Fetched(folder / name, origin)
        staging = _url_folder(url) / f".staging-{os.getpid()}"
        _stream(response, staging / name, limit=limit, url=url, key=key)
    with (staging / name).open("rb") as body:
        content = hashlib.file_digest(body, "sha256").hexdigest()
    origin = f"{url} sha256={content}"
    folder = _url_folder(url) / _digest(origin)
    if (folder / ".complete").is_file():
        shutil.rmtree(staging)
    else:
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
        _mark_complete(folder, origin, folder / name)
    return Fetched(folder / name, origin)


def _filesystem(url: str, key: str) -> tuple[Any, str]:
    scheme = scheme_of(url) or ""
    package, extra = _FSSPEC[scheme]
    try:
        import fsspec
    except ImportError:
        raise ConfigError(
            f'{key}: {scheme}:// paths need fsspec and {package}: pip install "axr[{extra}]"'
        ) from None
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError:
        raise ConfigError(
            f'{key}: {scheme}:// paths need the {package} package: pip install "axr[{extra}]"'
        ) from None


def _identity(info: dict[str, Any]) -> str:
    for field in ("ETag", "etag", "md5Hash", "generation"):
        if info.get(field):
            return f"{field}={str(info[field]).strip(chr(34))} size={info.get('size')}"
    modified = info.get("LastModified") or info.get("mtime") or info.get("updated")
    return f"size={info.get('size')} modified={modified}"


def _fetch_fsspec(url: str, key: str, limit: int | None) -> Fetched:
    fs, root = _filesystem(url, key)
    scheme = scheme_of(url)
    try:
        fs.invalidate_cache()  # fsspec keeps listings per process; a changed file must be seen
        info = fs.info(root)
        if info.get("type") == "directory":
            listing = fs.find(root, detail=True)
            files = {
                name: entry
                for name, entry in sorted(listing.items())
                if entry.get("type") == "file" and name.lower().endswith(DATA_SUFFIXES)
            }
            if not files:
                raise ConfigError(f"{key}: {url} holds no data files ({', '.join(DATA_SUFFIXES)})")
        else:
            files = {root: info}
    except FileNotFoundError:
        raise ConfigError(f"{key}: {url} does not exist") from None
    except PermissionError as error:
        raise ConfigError(f"{key}: {url}: access denied ({error})") from None
    except OSError as error:
        raise ConfigError(f"{key}: cannot reach {url}: {error}") from None
    is_folder = info.get("type") == "directory"
    prefix = root.rstrip("/") + "/"
    identity = "\n".join(f"{name} {_identity(entry)}" for name, entry in files.items())
    origin = f"{url} " + (f"listing={_digest(identity)}" if is_folder else _identity(info))
    folder = _url_folder(url) / _digest(identity)
    result = folder if is_folder else folder / _file_name(root)
    if (folder / ".complete").is_file():
        return Fetched(result, origin)
    for name in files:
        target = folder / (name[len(prefix) :] if is_folder else _file_name(root))
        try:
            with fs.open(name, "rb", block_size=_BLOCK) as body:
                _stream(body, target, limit=limit, url=f"{scheme}://{name}", key=key)
        except FileNotFoundError:
            raise ConfigError(f"{key}: {scheme}://{name} disappeared while it was fetched") from None
        except OSError as error:
            raise ConfigError(f"{key}: cannot fetch {scheme}://{name}: {error}") from None
    _mark_complete(folder, origin, result)
    return Fetched(result, origin)


def fetch(url: str, key: str, *, limit: int | None = None) -> Fetched:
    """The local copy of ``url`` (fetched now unless cached); ``key`` names the config key in errors.

    ``limit``: refuse a body larger than this many bytes (config files)."""
    scheme = scheme_of(url)
    if scheme not in (*_HTTP, *_FSSPEC):
        raise ConfigError(
            f"{key}: {scheme}:// paths are not supported; axr reads local paths, hub ids (org/name), "
            "https://, s3:// and gs:// URLs"
        )
    if _offline():
        return _newest_cached(url, key)
    if scheme in _HTTP:
        return _fetch_http(url, key, limit)
    return _fetch_fsspec(url, key, limit)
