"""The weights hub: manifests, publishing, and finding a weight file by its name and sha256.

Artifacts
    A published model is two files side by side: ``<arch>.<tag>-<sha8>.safetensors`` (the state dict only) and
    ``<arch>.<tag>-<sha8>.yaml`` (the resolved config, any extra data such as preprocessing statistics and the eval
    protocol, and ``weights_sha256``). ``sha8`` is the first 8 hex digits of the weights file's sha256, so a
    retrained model always gets a new file name. Manifests (``tasks/<task>/weights.yaml``) list
    :class:`WeightEntry` records; entries are immutable once added.

Resolution order (:func:`resolve_file`)
    1. an explicit path or ``file://`` URL (a directory means "the file of this name in it");
    2. ``weights_dir()/name``: ``$ZOO_WEIGHTS_DIR``, by default the in-tree ``data/weights/``;
    3. ``cache_dir()/name``: ``$ZOO_HOME/weights`` (``ZOO_HOME`` defaults to ``~/.cache/zoo``);
    4. each HTTP(S) source in turn, unless ``ZOO_OFFLINE`` is ``1``, ``true`` or ``yes``. A source ending in
       ``/`` is a mirror base to which the file name is appended; any other source is the file's full URL.
    Not found anywhere → :class:`~zoo.errors.WeightsUnavailableError` (exit 3) naming the file, its hash and
    every place searched.

Security rules
    - A file is only ever accepted after its full sha256 matches the expected one. A local file (explicit,
      weights dir or cache) with another hash is an error (:class:`~zoo.errors.ChecksumError`, exit 4) and is
      left untouched: the hub never deletes files it did not download.
    - Each download streams into its own temporary file in ``cache_dir()`` while hashing; only a full match is
      renamed into place (``os.replace``), under a ``flock`` on ``<name>.lock`` and only if no other process put
      a good copy there first, so concurrent fetches into one cache are safe. A complete file with another
      hash raises ``ChecksumError``; a network error, a stall, a body shorter than its Content-Length or the
      manifest size, one larger than the manifest size, or a download still running after
      :func:`download_timeout` counts as unavailable from that source and the next one is tried. The temporary
      file is deleted in every case.
    - File names from manifests must be plain names (no directories, no ``..``), so a manifest cannot make the
      hub read or write outside the directories above.
    - Weights are read with safetensors only. Lightning checkpoints are read with
      ``torch.load(weights_only=True)`` and nothing else: arbitrary pickles are refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
import http.client
import math
import os
import pickle
import re
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from zoo.errors import ChecksumError, WeightsUnavailableError, ZooValueError, check_arg
from zoo.io import atomic_write_bytes, atomic_write_text

__all__ = [
    "DOWNLOAD_TIMEOUT",
    "HTTP_TIMEOUT",
    "PublishedArtifact",
    "WeightEntry",
    "add_entry",
    "cache_dir",
    "download_timeout",
    "load_checkpoint",
    "load_manifest",
    "load_state_dict",
    "offline",
    "publish",
    "read_artifact",
    "read_config",
    "resolve_config",
    "resolve_file",
    "save_manifest",
    "sha256_file",
    "verify",
    "weights_dir",
]

HTTP_TIMEOUT = 30.0
"""Seconds a single HTTP connect or read may take before the source counts as failed."""

DOWNLOAD_TIMEOUT = 1800.0
"""Seconds a whole download may take (``$ZOO_DOWNLOAD_TIMEOUT`` overrides it): a server that trickles bytes
never trips the per-read timeout, so only a total limit bounds it."""

_CHUNK = 1 << 20
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_TOKEN_RE = re.compile(r"[A-Za-z0-9_.-]+")
_RESERVED_CONFIG_KEYS = ("arch", "tag", "weights_file", "weights_sha256", "config")


# ---------------------------------------------------------------------------------------------------------------
# Hashing and small validators


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 of a file as lowercase hex, read in chunks (constant memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _short(sha256: str) -> str:
    return sha256[:12] + "…"


def _check_sha256(sha256: Any, what: str = "sha256") -> str:
    if not isinstance(sha256, str) or not _SHA256_RE.fullmatch(sha256.lower()):
        raise ZooValueError(f"{what}={sha256!r} is not a sha256 (64 hex digits)")
    return sha256.lower()


def _check_file_name(name: Any, what: str = "file name") -> str:
    """A plain file name: no directory part, not '.'/'..', no control characters."""
    if (
        not isinstance(name, str)
        or not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or any(ord(c) < 32 for c in name)
    ):
        raise ZooValueError(f"{what}={name!r} is not allowed; expected a plain file name without directories")
    return name


def _check_token(value: Any, what: str) -> str:
    """A safe file-name token for arch/tag: [A-Za-z0-9_.-], no '..', not starting with '.' or '-'."""
    if (
        not isinstance(value, str)
        or not _TOKEN_RE.fullmatch(value)
        or ".." in value
        or value[0] in ".-"
    ):
        raise ZooValueError(
            f"{what}={value!r} is not allowed; expected letters, digits, '_', '.', '-' "
            "(no '/', no '..', not starting with '.' or '-')"
        )
    return value


# ---------------------------------------------------------------------------------------------------------------
# Manifest


_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "file": str,
    "sha256": str,
    "config": str,
    "config_sha256": str,
    "size": int,
    "params_total": int,
    "params_active": int,
}
_OPTIONAL: dict[str, type | tuple[type, ...]] = {
    "metrics": dict,
    "board": (str, type(None)),
    "sources": list,
    "default": bool,
}


@dataclass(frozen=True)
class WeightEntry:
    """One manifest record: which file, its hash, its config and what it scored.

    ``id`` is ``<task>/<arch>.<tag>``; ``file`` and ``config`` are plain file names resolved by
    :func:`resolve_file`; ``sources`` are HTTP(S) mirror bases (ending in ``/``) or full URLs.
    """

    id: str
    file: str
    sha256: str
    config: str
    config_sha256: str
    size: int
    params_total: int
    params_active: int
    metrics: dict[str, Any] = field(default_factory=dict, hash=False)
    board: str | None = None
    sources: tuple[str, ...] = ()
    default: bool = False

    @property
    def task(self) -> str:
        """The task part of the id (before the first '/')."""
        return self.id.split("/", 1)[0]

    @classmethod
    def from_dict(cls, data: Any, source: str | os.PathLike | None = None) -> WeightEntry:
        """Validate one manifest record; errors name the key and ``source`` (the manifest path)."""
        where = f" in {source}" if source is not None else ""
        if not isinstance(data, Mapping):
            raise ZooValueError(f"weights entry{where} must be a mapping, got {type(data).__name__}")
        label = f"weights entry {data.get('id')!r}{where}" if isinstance(data.get("id"), str) else f"weights entry{where}"
        known = {**_REQUIRED, **_OPTIONAL}
        for key in data:
            if key not in known:
                hint = difflib.get_close_matches(str(key), known, n=1)
                dym = f"; did you mean {hint[0]!r}?" if hint else f"; known keys: {', '.join(known)}"
                raise ZooValueError(f"{label}: unknown key {key!r}{dym}")
        for key in _REQUIRED:
            if key not in data:
                raise ZooValueError(f"{label}: missing required key {key!r}")
        for key, typ in known.items():
            if key not in data:
                continue
            value = data[key]
            bad_bool = isinstance(value, bool) and typ is int  # bool is an int subclass
            if bad_bool or not isinstance(value, typ):
                want = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
                raise ZooValueError(f"{label}: key {key!r} must be {want}, got {value!r}")
        for key in ("size", "params_total", "params_active"):
            if data[key] < 0:
                raise ZooValueError(f"{label}: key {key!r} must be >= 0, got {data[key]!r}")
        entry_id = data["id"]
        if entry_id.count("/") != 1 or not all(entry_id.split("/")):
            raise ZooValueError(f"{label}: key 'id' must look like '<task>/<arch>.<tag>', got {entry_id!r}")
        try:
            _check_file_name(data["file"], "file")
            _check_file_name(data["config"], "config")
            sha = _check_sha256(data["sha256"], "sha256")
            config_sha = _check_sha256(data["config_sha256"], "config_sha256")
        except ZooValueError as e:
            raise ZooValueError(f"{label}: {e}") from None
        sources = data.get("sources", [])
        for url in sources:
            if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme not in ("http", "https", "file"):
                raise ZooValueError(f"{label}: key 'sources' holds {url!r}; expected http(s):// or file:// URLs")
        metrics = data.get("metrics", {})
        if not all(isinstance(k, str) for k in metrics):
            raise ZooValueError(f"{label}: key 'metrics' must map names to values")
        return cls(
            id=entry_id,
            file=data["file"],
            sha256=sha,
            config=data["config"],
            config_sha256=config_sha,
            size=data["size"],
            params_total=data["params_total"],
            params_active=data["params_active"],
            metrics=dict(metrics),
            board=data.get("board"),
            sources=tuple(sources),
            default=data.get("default", False),
        )

    def to_dict(self) -> dict[str, Any]:
        """The manifest record (plain types, key order as in the dataclass)."""
        return {
            "id": self.id,
            "file": self.file,
            "sha256": self.sha256,
            "config": self.config,
            "config_sha256": self.config_sha256,
            "size": self.size,
            "params_total": self.params_total,
            "params_active": self.params_active,
            "metrics": dict(self.metrics),
            "board": self.board,
            "sources": list(self.sources),
            "default": self.default,
        }


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _yaml_error_line(path: Path, err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return f"{path}: malformed YAML{at}: {problem}"


def load_manifest(path: str | os.PathLike) -> list[WeightEntry]:
    """Read a manifest ``{"weights": [...]}``; a missing or empty ``weights`` list gives ``[]``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ZooValueError(f"{path}: weights manifest not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ZooValueError(f"{path}: cannot read weights manifest: {e}") from None
    try:
        doc = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: plain YAML types only
    except yaml.YAMLError as e:
        raise ZooValueError(_yaml_error_line(path, e)) from None
    if doc is None:
        return []
    if not isinstance(doc, dict) or set(doc) - {"weights"}:
        raise ZooValueError(f"{path}: a weights manifest is a mapping with the single key 'weights'")
    items = doc.get("weights") or []
    if not isinstance(items, list):
        raise ZooValueError(f"{path}: 'weights' must be a list, got {type(items).__name__}")
    entries = [WeightEntry.from_dict(item, path) for item in items]
    _check_unique(entries, path)
    return entries


def _check_unique(entries: Sequence[WeightEntry], path: Path) -> None:
    seen: set[str] = set()
    for e in entries:
        if e.id in seen:
            raise ZooValueError(f"{path}: duplicate weights id {e.id!r}")
        seen.add(e.id)


def save_manifest(path: str | os.PathLike, entries: Iterable[WeightEntry]) -> Path:
    """Write a manifest atomically (ids must be unique)."""
    path = Path(path)
    entries = list(entries)
    _check_unique(entries, path)
    text = yaml.safe_dump(
        {"weights": [e.to_dict() for e in entries]}, sort_keys=False, allow_unicode=True, default_flow_style=False
    )
    return atomic_write_text(path, text)


def add_entry(path: str | os.PathLike, entry: WeightEntry) -> list[WeightEntry]:
    """Append ``entry`` to the manifest at ``path`` (created if missing) and return all entries.

    Adding an identical entry again is a no-op; changing an existing id is refused, since entries are immutable.
    """
    path = Path(path)
    entries = load_manifest(path) if path.exists() else []
    for old in entries:
        if old.id == entry.id:
            if old == entry:
                return entries
            raise ZooValueError(
                f"{path}: weights id {entry.id!r} already exists and entries are immutable; "
                "retrain makes a new file (publish it under a new tag)"
            )
    entries.append(entry)
    save_manifest(path, entries)
    return entries


# ---------------------------------------------------------------------------------------------------------------
# Where weights live


def _repo_root() -> Path:
    import zoo

    return Path(zoo.__file__).resolve().parents[1]


def weights_dir() -> Path:
    """``$ZOO_WEIGHTS_DIR``, or the in-tree ``data/weights/``."""
    env = os.environ.get("ZOO_WEIGHTS_DIR")
    return Path(env).expanduser() if env else _repo_root() / "data" / "weights"


def cache_dir() -> Path:
    """``$ZOO_HOME/weights`` (``ZOO_HOME`` defaults to ``~/.cache/zoo``)."""
    home = os.environ.get("ZOO_HOME") or "~/.cache/zoo"
    return Path(home).expanduser() / "weights"


def offline() -> bool:
    """True when ``ZOO_OFFLINE`` is 1/true/yes (any case): no HTTP."""
    return os.environ.get("ZOO_OFFLINE", "").strip().lower() in ("1", "true", "yes")


def _file_url_path(url: str) -> Path:
    parts = urllib.parse.urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ZooValueError(f"{url!r}: only local file:// URLs are supported")
    return Path(urllib.request.url2pathname(parts.path))


def _check_local(path: Path, sha256: str) -> Path:
    actual = sha256_file(path)
    if actual != sha256:
        raise ChecksumError(
            f"{path}: sha256 mismatch: expected {sha256}, got {actual} "
            "(the file was left in place; replace or remove it)"
        )
    return path


def resolve_file(
    name: str,
    sha256: str,
    sources: Iterable[str] = (),
    explicit: str | os.PathLike | None = None,
    *,
    size: int | None = None,
) -> Path:
    """Find the file ``name`` whose sha256 is ``sha256``, downloading it into the cache if needed.

    See the module docstring for the order and the rules. ``explicit`` may be a file, a directory holding
    ``name``, or a ``file://`` URL of either; a missing explicit path is reported with the other places searched.
    ``size`` (bytes), when known, caps a download. Raises ``ChecksumError`` (exit 4) for a file with the wrong
    hash and ``WeightsUnavailableError`` (exit 3) when the file is nowhere.
    """
    name = _check_file_name(name)
    sha256 = _check_sha256(sha256)
    searched: list[str] = []

    local: list[Path] = []
    if explicit is not None:
        text = os.fspath(explicit)
        if text.startswith(("http://", "https://")):
            sources = [text, *sources]
        else:
            p = _file_url_path(text) if text.startswith("file://") else Path(text).expanduser()
            local.append(p / name if p.is_dir() else p)
    local += [weights_dir() / name, cache_dir() / name]
    http_sources: list[str] = []
    for src in sources:
        scheme = urllib.parse.urlsplit(src).scheme
        if scheme in ("http", "https"):
            http_sources.append(src + urllib.parse.quote(name) if src.endswith("/") else src)
        elif scheme == "file":
            p = _file_url_path(src)
            local.append(p / name if src.endswith("/") or p.is_dir() else p)
        else:
            raise ZooValueError(f"weights source {src!r} is not allowed; expected an http(s):// or file:// URL")

    for p in local:
        if p.is_file():
            return _check_local(p, sha256)
        searched.append(str(p))

    if http_sources and offline():
        searched.append(f"{len(http_sources)} HTTP source(s) skipped because ZOO_OFFLINE=1")
    else:
        for url in http_sources:
            try:
                return _download(url, name, sha256, size)
            except _SourceFailed as e:
                searched.append(f"{url} ({e})")
    raise WeightsUnavailableError(
        f"weights file {name} (sha256 {_short(sha256)}) not found; searched: {'; '.join(searched)}"
    )


class _SourceFailed(Exception):
    """One HTTP source could not deliver the file (the next one is tried)."""


def _progress(total: int | None, label: str):
    """A rich progress bar on a TTY stderr, else ``None``."""
    if not sys.stderr.isatty():
        return None
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    progress.add_task(label, total=total)
    return progress


def download_timeout() -> float:
    """``$ZOO_DOWNLOAD_TIMEOUT`` seconds (default :data:`DOWNLOAD_TIMEOUT`): the most one download may take."""
    text = os.environ.get("ZOO_DOWNLOAD_TIMEOUT", "").strip()
    if not text:
        return DOWNLOAD_TIMEOUT
    try:
        limit = float(text)
    except ValueError:
        limit = float("nan")
    check_arg(limit > 0 and math.isfinite(limit), "ZOO_DOWNLOAD_TIMEOUT", text, "a number of seconds > 0")
    return limit


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold ``fcntl.flock`` on ``lock_path`` and remove the lock file when done.

    The file is unlinked while still locked, so a process that opened it before the unlink finds, once it gets
    the lock, that the path no longer names its file, and retries on the new one: two holders never overlap.
    """
    import fcntl

    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        lock_path.unlink(missing_ok=True)
        os.close(fd)


def _download(url: str, name: str, sha256: str, size: int | None) -> Path:
    """Download ``url`` into a private temporary file in the cache, then move it to ``cache_dir()/name``.

    Each call writes its own ``mkstemp`` file, so concurrent fetches of one file never share a partial file;
    the rename happens under ``<name>.lock``, after checking whether another process already put a good copy
    there. Raises ``_SourceFailed`` when this source cannot deliver the whole file in time and ``ChecksumError``
    when it delivered a complete file with another hash.
    """
    dest = cache_dir() / name
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{name}.", suffix=".part")
    except OSError as e:
        raise ZooValueError(f"cannot write to the weights cache {dest.parent}: {e.strerror or e}; "
                            "set ZOO_HOME to a writable directory") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600 files; a cached file gets the usual permissions
            actual = _fetch(url, name, out, size)
        if actual != sha256:
            raise ChecksumError(
                f"{url}: downloaded {name} has sha256 {actual}, expected {sha256} (download discarded)"
            )
        with _exclusive(dest.with_name(name + ".lock")):
            if not (dest.is_file() and sha256_file(dest) == sha256):  # else another process finished it first
                os.replace(tmp, dest)
        return dest
    finally:
        tmp.unlink(missing_ok=True)  # gone after os.replace; otherwise partial, rejected or not needed


def _fetch(url: str, name: str, out: BinaryIO, size: int | None) -> str:
    """Stream ``url`` into ``out`` and return its sha256; any failure to get the whole file is ``_SourceFailed``.

    A body shorter than its Content-Length or than ``size`` is truncated, one longer than ``size`` is cut off,
    and the whole transfer must end within :func:`download_timeout` (checked after every read; a single read
    waits at most the smaller of that limit and :data:`HTTP_TIMEOUT`).
    """
    from zoo import __version__

    limit = download_timeout()
    deadline = time.monotonic() + limit
    request = urllib.request.Request(url, headers={"User-Agent": f"moe-zoo/{__version__}"})
    h = hashlib.sha256()
    received = 0
    try:
        with urllib.request.urlopen(request, timeout=min(HTTP_TIMEOUT, limit)) as response:
            length = response.headers.get("Content-Length")
            announced = int(length) if length and length.isdigit() else None
            if announced is not None and size is not None and announced != size:
                raise _SourceFailed(f"announces {announced} bytes, expected {size}")
            progress = _progress(announced or size, f"downloading {name}")
            try:
                if progress is not None:
                    progress.start()
                while chunk := response.read1(_CHUNK):
                    received += len(chunk)
                    if size is not None and received > size:
                        raise _SourceFailed(f"sent more than the expected {size} bytes")
                    if time.monotonic() > deadline:
                        raise _SourceFailed(f"not complete within ZOO_DOWNLOAD_TIMEOUT={limit:g} s")
                    h.update(chunk)
                    out.write(chunk)
                    if progress is not None:
                        progress.advance(progress.task_ids[0], len(chunk))
            finally:
                if progress is not None:
                    progress.stop()
        expected = announced if announced is not None else size
        if expected is not None and received < expected:
            raise _SourceFailed(f"truncated: got {received} of {expected} bytes")
        out.flush()
        os.fsync(out.fileno())
        return h.hexdigest()
    except urllib.error.HTTPError as e:
        raise _SourceFailed(f"HTTP {e.code}") from None
    except urllib.error.URLError as e:
        raise _SourceFailed(_stalled(e.reason, limit) if isinstance(e.reason, TimeoutError) else str(e.reason)) from None
    except TimeoutError as e:
        raise _SourceFailed(_stalled(e, limit)) from None
    except (OSError, http.client.HTTPException, ValueError) as e:
        raise _SourceFailed(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__) from None


def _stalled(err: BaseException, limit: float) -> str:
    """Why a source failed when one read waited its whole timeout."""
    return f"stalled: no data for {min(HTTP_TIMEOUT, limit):g} s ({err})"


# ---------------------------------------------------------------------------------------------------------------
# Artifacts


@dataclass(frozen=True)
class PublishedArtifact:
    """The two files :func:`publish` wrote and their hashes."""

    weights_path: Path
    config_path: Path
    sha256: str
    config_sha256: str
    size: int

    @property
    def name(self) -> str:
        """``<arch>.<tag>`` (the file stem without ``-<sha8>``)."""
        return self.weights_path.name.removesuffix(".safetensors").rsplit("-", 1)[0]

    def entry(
        self,
        task: str,
        *,
        params_total: int,
        params_active: int,
        metrics: Mapping[str, Any] | None = None,
        board: str | None = None,
        sources: Iterable[str] = (),
        default: bool = False,
    ) -> WeightEntry:
        """The manifest entry ``<task>/<arch>.<tag>`` for these files (validated like a manifest record)."""
        return WeightEntry.from_dict(
            {
                "id": f"{task}/{self.name}",
                "file": self.weights_path.name,
                "sha256": self.sha256,
                "config": self.config_path.name,
                "config_sha256": self.config_sha256,
                "size": self.size,
                "params_total": params_total,
                "params_active": params_active,
                "metrics": dict(metrics or {}),
                "board": board,
                "sources": list(sources),
                "default": default,
            }
        )


def _plain(value: Any) -> Any:
    """Config values as YAML-safe plain types (dataclasses, tuples, paths, numpy/torch scalars)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    tolist = getattr(value, "tolist", None)  # numpy arrays/scalars, torch tensors
    if callable(tolist):
        return _plain(tolist())
    raise ZooValueError(f"config value {value!r} of type {type(value).__name__} cannot be written to YAML")


def publish(
    state_dict: Mapping[str, Any],
    config: Mapping[str, Any],
    *,
    arch: str,
    tag: str,
    out_dir: str | os.PathLike,
    extra: Mapping[str, Any] | None = None,
) -> PublishedArtifact:
    """Write ``<arch>.<tag>-<sha8>.safetensors`` and ``.yaml`` into ``out_dir``, each atomically.

    The YAML holds ``arch``, ``tag``, ``weights_file``, ``weights_sha256``, the resolved ``config`` and the keys of
    ``extra`` at top level (preprocessing statistics, eval protocol, ...; they may not reuse those names).
    Tensors are copied to contiguous CPU storage first, so tied/shared tensors are saved once per key.
    """
    import safetensors.torch
    import torch

    arch = _check_token(arch, "arch")
    tag = _check_token(tag, "tag")
    extra = dict(extra or {})
    clash = [k for k in extra if k in _RESERVED_CONFIG_KEYS]
    if clash:
        raise ZooValueError(f"extra keys {clash} clash with the artifact's own keys {list(_RESERVED_CONFIG_KEYS)}")
    plain_config = _plain(config)
    if not isinstance(plain_config, dict):
        raise ZooValueError(f"config must be a mapping or dataclass, got {type(config).__name__}")
    tensors: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise ZooValueError(
                f"state_dict[{key!r}] is a {type(value).__name__}; only str → Tensor entries can be published"
            )
        tensors[key] = value.detach().to("cpu").contiguous().clone()
    # One metadata key only: safetensors writes metadata in hash-map order, so several keys would make the
    # bytes (and so the file name) differ between runs. arch/tag live in the YAML instead.
    data = safetensors.torch.save(tensors, metadata={"format": "pt"})
    sha256 = hashlib.sha256(data).hexdigest()
    stem = f"{arch}.{tag}-{sha256[:8]}"
    out_dir = Path(out_dir)
    weights_path = atomic_write_bytes(out_dir / f"{stem}.safetensors", data)
    doc = {
        "arch": arch,
        "tag": tag,
        "weights_file": weights_path.name,
        "weights_sha256": sha256,
        "config": plain_config,
        **_plain(extra),
    }
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, default_flow_style=False)
    config_bytes = text.encode("utf-8")
    config_path = atomic_write_bytes(out_dir / f"{stem}.yaml", config_bytes)
    return PublishedArtifact(
        weights_path=weights_path,
        config_path=config_path,
        sha256=sha256,
        config_sha256=hashlib.sha256(config_bytes).hexdigest(),
        size=len(data),
    )


_KEY_TYPES: dict[str, type] = {"config": dict, "model_info": dict, "task": str}


def read_config(path: str | os.PathLike, sha256: str | None = None, required: Sequence[str] = ()) -> dict[str, Any]:
    """Read an artifact's YAML, verifying its hash when given.

    Args:
        path: the YAML file.
        sha256: its expected sha256 (from a manifest entry).
        required: keys that must be present (``config`` and ``model_info`` as mappings, ``task`` as a string),
            so a YAML that cannot rebuild a model fails here with one line rather than later with a KeyError.
    """
    path = Path(path)
    if sha256 is not None:
        _check_local(path, _check_sha256(sha256))
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ZooValueError(_yaml_error_line(path, e)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ZooValueError(f"{path}: cannot read the weights YAML: {e}") from None
    if not isinstance(doc, dict):
        raise ZooValueError(f"{path}: the weights YAML must be a mapping, got {type(doc).__name__}")
    missing = [k for k in required if k not in doc]
    if missing:
        raise ZooValueError(f"{path}: missing {', '.join(map(repr, missing))}; not the YAML of published weights "
                            "(republish them from their run with `zoo weights publish`)")
    for key in required:
        want = _KEY_TYPES.get(key, object)
        if not isinstance(doc[key], want):
            raise ZooValueError(f"{path}: {key!r} must be a {want.__name__}, got {type(doc[key]).__name__}")
    return doc


def read_artifact(
    weights_path: str | os.PathLike, required: Sequence[str] = ("config",), *, trust_unverified: bool = False
) -> tuple[dict[str, Any], str | None]:
    """The YAML beside a weights file given by path, and the sha256 to check that file against.

    A file given by path has no manifest entry, so its YAML's ``weights_sha256`` is what ties the two files
    together: a YAML that records none is refused unless ``trust_unverified``, and then the returned hash is
    ``None``. ``required`` is checked as in :func:`read_config`.

    Args:
        weights_path: the ``.safetensors`` file; its YAML has the same stem.
        required: the keys the caller rebuilds the model from.
        trust_unverified: accept a YAML without ``weights_sha256`` (the file is then loaded unchecked).
    """
    weights_path = Path(weights_path)
    if not weights_path.is_file():
        raise ZooValueError(f"{weights_path}: no such weights file")
    yaml_path = weights_path.with_suffix(".yaml")
    if not yaml_path.is_file():
        raise ZooValueError(f"{weights_path}: its YAML {yaml_path.name} (config and model info) is not beside it; "
                            "copy both files of the published weights")
    doc = read_config(yaml_path, required=required)
    sha256 = doc.get("weights_sha256")
    if sha256 is None:
        if not trust_unverified:
            raise ZooValueError(f"{yaml_path}: records no weights_sha256, so {weights_path.name} cannot be verified; "
                                "pass --trust-unverified (trust_unverified=True in Python) to load it anyway")
        return doc, None
    try:
        return doc, _check_sha256(sha256, "weights_sha256")
    except ZooValueError as e:
        raise ZooValueError(f"{yaml_path}: {e}") from None


def load_state_dict(path: str | os.PathLike, sha256: str | None = None) -> dict[str, Any]:
    """Load a ``.safetensors`` state dict on CPU, verifying its sha256 first when given."""
    import safetensors.torch

    path = Path(path)
    if sha256 is not None:
        _check_local(path, _check_sha256(sha256))
    try:
        return safetensors.torch.load_file(path, device="cpu")
    except FileNotFoundError:
        raise ZooValueError(f"{path}: weights file not found") from None
    except Exception as e:  # SafetensorError, OSError, ...: not a readable safetensors file
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ZooValueError(f"{path}: not a valid safetensors file: {first}") from None


_ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")


def _load_refusal(err: BaseException) -> str:
    """The reason in a ``torch.load`` error: PyTorch's refusal spans many lines of advice (with terminal colour
    codes) around one line saying what it found, such as ``Unsupported global: GLOBAL print``."""
    text = _ANSI_RE.sub("", str(err))
    _, marker, reason = text.partition("WeightsUnpickler error:")
    lines = [line.strip() for line in (reason if marker else text).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    return lines[0].split(". Please use")[0].rstrip(".")


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a Lightning ``.ckpt`` with ``torch.load(weights_only=True)``; anything else is refused."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ZooValueError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError, TypeError) as e:
        raise ZooValueError(
            f"{path}: cannot be loaded safely (torch.load weights_only=True refused it: {_load_refusal(e)}); "
            "only checkpoints of plain tensors and containers are accepted"
        ) from None
    if not isinstance(ckpt, dict):
        raise ZooValueError(f"{path}: a checkpoint must be a dict, got {type(ckpt).__name__}")
    return ckpt


# ---------------------------------------------------------------------------------------------------------------
# Manifest entries end to end


def verify(entry: WeightEntry, path: str | os.PathLike | None = None) -> Path:
    """Resolve ``entry``'s weights file (``path`` first, if given) and return it, hash checked."""
    return resolve_file(entry.file, entry.sha256, entry.sources, explicit=path, size=entry.size)


def resolve_config(entry: WeightEntry, weights_path: str | os.PathLike | None = None) -> Path:
    """Resolve ``entry``'s YAML config, looking beside ``weights_path`` first when given."""
    explicit = Path(weights_path).parent if weights_path is not None else None
    return resolve_file(entry.config, entry.config_sha256, entry.sources, explicit=explicit)
