"""The weights hub: publish, manifests, resolution (local, cache, loopback HTTP mirror) and safe loading."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from zoo import hub
from zoo.errors import ChecksumError, WeightsUnavailableError, ZooValueError

# ---------------------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path, monkeypatch):
    """Every test gets its own weights dir and ZOO_HOME, and starts online."""
    monkeypatch.setenv("ZOO_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ZOO_OFFLINE", raising=False)


class _Loopback:
    """A threaded HTTP server on 127.0.0.1 (a free port) running ``handler``; ``close`` stops it."""

    def _serve(self, handler) -> None:
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/"

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class _Mirror(_Loopback):
    """A loopback HTTP server serving ``root``; ``requests`` lists the paths asked for."""

    def __init__(self, root: Path):
        self.root = root
        self.requests: list[str] = []
        mirror = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                mirror.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self._serve(functools.partial(Handler, directory=root))


class _Scripted(_Loopback):
    """A loopback HTTP server whose every GET runs ``respond(handler, release)``: it writes the status, headers
    and body itself (truncated, stalled, trickled). ``release`` is set on close so that stalled handlers end."""

    def __init__(self, respond: Callable[[http.server.BaseHTTPRequestHandler, threading.Event], None]):
        self.release = threading.Event()
        scripted = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                try:
                    respond(self, scripted.release)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up first

            def log_message(self, *args):
                pass

        self._serve(Handler)

    def close(self):
        self.release.set()
        super().close()


@pytest.fixture
def scripted():
    """``scripted(respond)`` starts a :class:`_Scripted` server, closed after the test."""
    servers: list[_Scripted] = []

    def start(respond) -> _Scripted:
        servers.append(_Scripted(respond))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def _headers(handler, length: int | None) -> None:
    handler.send_response(200)
    if length is not None:
        handler.send_header("Content-Length", str(length))
    handler.end_headers()


def _serve(tmp_path, name):
    root = tmp_path / name
    root.mkdir()
    m = _Mirror(root)
    yield m
    m.close()


@pytest.fixture
def mirror(tmp_path):
    yield from _serve(tmp_path, "mirror")


@pytest.fixture
def mirror2(tmp_path):
    yield from _serve(tmp_path, "mirror2")


def _state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    emb = torch.randn(5, 3, generator=torch.Generator().manual_seed(seed))
    big = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    return {
        "embed.weight": emb,
        "head.weight": emb,  # tied: same storage as embed.weight
        "proj.weight": big.t(),  # non-contiguous view
        "proj.slice": big[1:3, ::2],  # strided view into shared storage
        "norm.bias": torch.zeros(3, dtype=torch.bfloat16),
        "step": torch.tensor(7, dtype=torch.int64),
    }


def _artifact(out_dir: Path, seed: int = 0, **kwargs) -> hub.PublishedArtifact:
    return hub.publish(
        _state_dict(seed),
        {"model": {"d_model": 3, "experts": 8, "k": 2}, "data": {"dataset": "m3-monthly"}},
        arch="moe_e8k2",
        tag="m3-monthly",
        out_dir=out_dir,
        **kwargs,
    )


def _blob(data: bytes = b"weights bytes " * 1000, name: str = "w.safetensors"):
    """A named payload with its sha256 (for resolution tests that need no real safetensors)."""
    return name, data, hashlib.sha256(data).hexdigest()


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# ---------------------------------------------------------------------------------------------------------------
# Hashing and publishing


def test_sha256_file_matches_hashlib(tmp_path):
    data = bytes(range(256)) * 9000  # > one read chunk
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert hub.sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_publish_writes_hash_named_weights_and_config(tmp_path):
    art = _artifact(tmp_path, extra={"scaler": {"mean": [1.5, 2.0]}, "eval_protocol": "last 18 months"})
    sha8 = art.sha256[:8]
    assert art.weights_path == tmp_path / f"moe_e8k2.m3-monthly-{sha8}.safetensors"
    assert art.config_path == tmp_path / f"moe_e8k2.m3-monthly-{sha8}.yaml"
    assert hub.sha256_file(art.weights_path) == art.sha256
    assert hub.sha256_file(art.config_path) == art.config_sha256
    assert art.size == art.weights_path.stat().st_size
    doc = hub.read_config(art.config_path, sha256=art.config_sha256)
    assert doc["weights_sha256"] == art.sha256
    assert doc["weights_file"] == art.weights_path.name
    assert doc["config"]["model"] == {"d_model": 3, "experts": 8, "k": 2}
    assert doc["scaler"] == {"mean": [1.5, 2.0]}
    assert doc["eval_protocol"] == "last 18 months"
    assert _files(tmp_path) == sorted([art.weights_path.name, art.config_path.name])  # no temp files left


def test_publish_is_deterministic_and_new_weights_make_a_new_file(tmp_path):
    a = _artifact(tmp_path / "a")
    b = _artifact(tmp_path / "b")
    assert (a.sha256, a.weights_path.name) == (b.sha256, b.weights_path.name)
    c = _artifact(tmp_path / "c", seed=1)
    assert c.sha256 != a.sha256 and c.weights_path.name != a.weights_path.name


def test_safetensors_round_trip_equals_state_dict_including_tied_tensors(tmp_path):
    original = _state_dict()
    art = _artifact(tmp_path)
    loaded = hub.load_state_dict(art.weights_path, sha256=art.sha256)
    assert set(loaded) == set(original)
    for key, tensor in original.items():
        assert loaded[key].dtype == tensor.dtype, key
        assert torch.equal(loaded[key], tensor), key
    # the original tensors were not modified and the tied pair still shares storage in the caller's dict
    assert original["embed.weight"].data_ptr() == original["head.weight"].data_ptr()


def test_publish_accepts_a_model_state_dict_with_tied_parameters(tmp_path):
    model = torch.nn.Sequential(torch.nn.Embedding(6, 4), torch.nn.Linear(4, 6, bias=False))
    model[1].weight = model[0].weight  # weight tying
    art = hub.publish(model.state_dict(), {"d": 4}, arch="tied", tag="t", out_dir=tmp_path)
    fresh = torch.nn.Sequential(torch.nn.Embedding(6, 4), torch.nn.Linear(4, 6, bias=False))
    fresh.load_state_dict(hub.load_state_dict(art.weights_path))
    assert torch.equal(fresh[0].weight, model[0].weight) and torch.equal(fresh[1].weight, model[0].weight)


@pytest.mark.parametrize(
    ("arch", "tag"),
    [("moe/e8", "t"), ("..", "t"), ("a..b", "t"), ("", "t"), (".hidden", "t"), ("moe", "a b"), ("moe", "-rf"),
     ("moe", "x/../y"), ("moe", "ü")],
)
def test_publish_rejects_unsafe_arch_or_tag(tmp_path, arch, tag):
    with pytest.raises(ZooValueError) as err:
        hub.publish({"w": torch.zeros(1)}, {}, arch=arch, tag=tag, out_dir=tmp_path)
    assert err.value.exit_code == 2
    assert f"arch={arch!r}" in str(err.value) or f"tag={tag!r}" in str(err.value)
    assert _files(tmp_path) == []


def test_publish_rejects_non_tensors_and_reserved_extra_keys(tmp_path):
    with pytest.raises(ZooValueError, match="extra_state"):
        hub.publish({"w": torch.zeros(1), "extra_state": {"a": 1}}, {}, arch="a", tag="t", out_dir=tmp_path)
    with pytest.raises(ZooValueError, match="weights_sha256"):
        hub.publish({"w": torch.zeros(1)}, {}, arch="a", tag="t", out_dir=tmp_path, extra={"weights_sha256": "x"})
    assert _files(tmp_path) == []


def test_load_state_dict_checks_hash_and_format(tmp_path):
    art = _artifact(tmp_path)
    with pytest.raises(ChecksumError) as err:
        hub.load_state_dict(art.weights_path, sha256="0" * 64)
    assert err.value.exit_code == 4 and art.sha256 in str(err.value)
    bogus = tmp_path / "bogus.safetensors"
    bogus.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ZooValueError, match="not a valid safetensors file"):
        hub.load_state_dict(bogus)


# ---------------------------------------------------------------------------------------------------------------
# Manifests


def test_manifest_add_load_round_trip_and_immutability(tmp_path):
    art = _artifact(tmp_path / "out")
    entry = art.entry(
        "forecasting", params_total=1000, params_active=400, metrics={"smape": 13.1}, board="m3-monthly",
        sources=["https://example.org/zoo/"], default=True,
    )
    assert entry.id == "forecasting/moe_e8k2.m3-monthly" and entry.task == "forecasting"
    manifest = tmp_path / "weights.yaml"
    assert hub.add_entry(manifest, entry) == [entry]
    assert hub.load_manifest(manifest) == [entry]
    assert hub.add_entry(manifest, entry) == [entry]  # identical re-add is a no-op
    before = manifest.read_bytes()
    changed = hub.WeightEntry.from_dict({**entry.to_dict(), "sha256": "f" * 64})
    with pytest.raises(ZooValueError, match="retrain makes a new file") as err:
        hub.add_entry(manifest, changed)
    assert err.value.exit_code == 2 and entry.id in str(err.value)
    assert manifest.read_bytes() == before
    other = hub.WeightEntry.from_dict({**entry.to_dict(), "id": "forecasting/dense.m3-monthly", "default": False})
    assert [e.id for e in hub.add_entry(manifest, other)] == [entry.id, other.id]
    assert hub.load_manifest(manifest)[1] == other


def _entry_dict(**overrides) -> dict:
    d = {
        "id": "forecasting/moe_e8k2.m3-monthly",
        "file": "moe_e8k2.m3-monthly-1a2b3c4d.safetensors",
        "sha256": "1a2b3c4d" + "0" * 56,
        "config": "moe_e8k2.m3-monthly-1a2b3c4d.yaml",
        "config_sha256": "e" * 64,
        "size": 123,
        "params_total": 10,
        "params_active": 5,
    }
    d.update(overrides)
    return d


def test_manifest_malformed_yaml_is_one_line_naming_the_file(tmp_path):
    path = tmp_path / "weights.yaml"
    path.write_text("weights:\n  - id: [unclosed\n")
    with pytest.raises(ZooValueError) as err:
        hub.load_manifest(path)
    msg = str(err.value)
    assert str(path) in msg and "malformed YAML" in msg and "\n" not in msg


@pytest.mark.parametrize("key", ["id", "file", "sha256", "config", "config_sha256", "size", "params_total"])
def test_manifest_missing_key_names_key_and_file(tmp_path, key):
    entry = _entry_dict()
    del entry[key]
    path = tmp_path / "weights.yaml"
    path.write_text(yaml.safe_dump({"weights": [entry]}))
    with pytest.raises(ZooValueError) as err:
        hub.load_manifest(path)
    assert repr(key) in str(err.value) and str(path) in str(err.value)


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"size": "123"}, "'size' must be int"),
        ({"default": "yes"}, "'default' must be bool"),
        ({"params_total": True}, "'params_total' must be int"),
        ({"sha256": "abc"}, "64 hex"),
        ({"file": "../../etc/passwd"}, "plain file name"),
        ({"file": ".."}, "plain file name"),
        ({"file": "sub\\w.safetensors"}, "plain file name"),
        ({"config": "../../etc/shadow.yaml"}, "plain file name"),
        ({"file": "/abs/w.safetensors"}, "plain file name"),
        ({"sources": ["ftp://x/"]}, "sources"),
        ({"id": "no-task-part"}, "<task>/<arch>.<tag>"),
        ({"metrix": {}}, "did you mean 'metrics'"),
    ],
)
def test_manifest_entry_validation(overrides, words):
    with pytest.raises(ZooValueError) as err:
        hub.WeightEntry.from_dict(_entry_dict(**overrides), "tasks/forecasting/weights.yaml")
    assert words in str(err.value) and "tasks/forecasting/weights.yaml" in str(err.value)


def test_manifest_duplicate_ids_and_keys_are_refused(tmp_path):
    path = tmp_path / "weights.yaml"
    path.write_text(yaml.safe_dump({"weights": [_entry_dict(), _entry_dict(size=5)]}))
    with pytest.raises(ZooValueError, match="duplicate weights id 'forecasting/moe_e8k2.m3-monthly'"):
        hub.load_manifest(path)
    path.write_text(yaml.safe_dump({"weights": [_entry_dict()]}) + "  size: 7\n")  # duplicate key in one entry
    with pytest.raises(ZooValueError, match="duplicate key 'size'"):
        hub.load_manifest(path)
    with pytest.raises(ZooValueError, match="duplicate weights id"):
        hub.save_manifest(path, [hub.WeightEntry.from_dict(_entry_dict())] * 2)


def test_manifest_entry_to_dict_round_trip():
    d = _entry_dict(metrics={"smape": 1.0}, board="b", sources=["https://m/"], default=True)
    entry = hub.WeightEntry.from_dict(d)
    assert entry.to_dict() == d
    assert hub.WeightEntry.from_dict(entry.to_dict()) == entry


# ---------------------------------------------------------------------------------------------------------------
# Resolution: local places


def test_default_dirs_and_offline_flag(monkeypatch, tmp_path):
    monkeypatch.delenv("ZOO_WEIGHTS_DIR")
    monkeypatch.delenv("ZOO_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    repo = Path(hub.__file__).resolve().parents[1]
    assert hub.weights_dir() == repo / "data" / "weights"
    assert hub.cache_dir() == tmp_path / ".cache" / "zoo" / "weights"
    for value, expected in [("1", True), ("true", True), ("YES", True), ("0", False), ("", False)]:
        monkeypatch.setenv("ZOO_OFFLINE", value)
        assert hub.offline() is expected


def test_publish_then_resolve_from_weights_dir(tmp_path):
    art = _artifact(hub.weights_dir())
    entry = art.entry("forecasting", params_total=1, params_active=1)
    hub.add_entry(tmp_path / "weights.yaml", entry)
    (entry,) = hub.load_manifest(tmp_path / "weights.yaml")
    assert hub.verify(entry) == art.weights_path
    assert hub.resolve_config(entry) == art.config_path
    assert _files(hub.cache_dir()) == []  # nothing copied or downloaded


def test_resolve_from_cache(tmp_path):
    name, data, sha = _blob()
    hub.cache_dir().mkdir(parents=True)
    (hub.cache_dir() / name).write_bytes(data)
    assert hub.resolve_file(name, sha) == hub.cache_dir() / name


def test_weights_dir_wins_over_cache(tmp_path):
    name, data, sha = _blob()
    for d in (hub.weights_dir(), hub.cache_dir()):
        d.mkdir(parents=True)
        (d / name).write_bytes(data)
    assert hub.resolve_file(name, sha) == hub.weights_dir() / name


def test_resolve_explicit_path_dir_and_file_url(tmp_path):
    name, data, sha = _blob()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    path = elsewhere / "renamed.safetensors"
    path.write_bytes(data)
    assert hub.resolve_file(name, sha, explicit=path) == path
    assert hub.resolve_file(name, sha, explicit=str(path)) == path
    assert hub.resolve_file(name, sha, explicit=path.as_uri()) == path
    (elsewhere / name).write_bytes(data)
    assert hub.resolve_file(name, sha, explicit=elsewhere) == elsewhere / name
    assert hub.resolve_file(name, sha, sources=[elsewhere.as_uri() + "/"]) == elsewhere / name


def test_wrong_hash_local_file_is_an_error_and_is_kept(tmp_path):
    name, data, sha = _blob()
    hub.weights_dir().mkdir(parents=True)
    local = hub.weights_dir() / name
    local.write_bytes(data + b"tampered")
    with pytest.raises(ChecksumError) as err:
        hub.resolve_file(name, sha)
    msg = str(err.value)
    assert err.value.exit_code == 4
    assert str(local) in msg and sha in msg and hashlib.sha256(data + b"tampered").hexdigest() in msg
    assert local.read_bytes() == data + b"tampered"  # user files are never deleted
    explicit = tmp_path / "mine.safetensors"
    explicit.write_bytes(b"other")
    with pytest.raises(ChecksumError):
        hub.resolve_file(name, sha, explicit=explicit)
    assert explicit.read_bytes() == b"other"


def test_unsafe_names_and_hashes_are_refused():
    with pytest.raises(ZooValueError, match="plain file name"):
        hub.resolve_file("../escape.safetensors", "0" * 64)
    with pytest.raises(ZooValueError, match="64 hex"):
        hub.resolve_file("w.safetensors", "1234")
    with pytest.raises(ZooValueError, match="not allowed"):
        hub.resolve_file("w.safetensors", "0" * 64, sources=["ftp://example.org/"])


# ---------------------------------------------------------------------------------------------------------------
# Resolution: loopback HTTP mirror


def test_download_lands_in_cache_with_exact_bytes_and_no_part(tmp_path, mirror):
    name, data, sha = _blob(data=bytes(range(256)) * 5000)  # > one chunk
    (mirror.root / name).write_bytes(data)
    path = hub.resolve_file(name, sha, sources=[mirror.url], size=len(data))
    assert path == hub.cache_dir() / name
    assert path.read_bytes() == data
    assert _files(hub.cache_dir()) == [name]
    assert mirror.requests == [f"/{name}"]
    # second time it comes from the cache, without asking the mirror
    assert hub.resolve_file(name, sha, sources=[mirror.url]) == path
    assert len(mirror.requests) == 1


def test_download_of_a_published_artifact_via_manifest_entry(tmp_path, mirror):
    art = _artifact(mirror.root)
    entry = art.entry("forecasting", params_total=1, params_active=1, sources=[mirror.url])
    path = hub.verify(entry)
    assert path == hub.cache_dir() / art.weights_path.name
    assert hub.resolve_config(entry, path).read_bytes() == art.config_path.read_bytes()
    assert torch.equal(hub.load_state_dict(path, entry.sha256)["head.weight"], _state_dict()["embed.weight"])


def test_download_with_progress_bar_on_a_tty(tmp_path, mirror, monkeypatch, capsys):
    name, data, sha = _blob(data=b"x" * 3_000_000)
    (mirror.root / name).write_bytes(data)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert hub.resolve_file(name, sha, sources=[mirror.url]).read_bytes() == data
    captured = capsys.readouterr()
    assert f"downloading {name}" in captured.err and captured.out == ""  # the bar goes to stderr only
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    (mirror.root / "other.bin").write_bytes(data)
    assert hub.resolve_file("other.bin", sha, sources=[mirror.url]).read_bytes() == data
    assert capsys.readouterr() == ("", "")  # silent when stderr is not a terminal


def test_corrupted_download_is_a_checksum_error_and_leaves_nothing(tmp_path, mirror):
    name, data, sha = _blob()
    (mirror.root / name).write_bytes(data[:-1] + b"X")
    with pytest.raises(ChecksumError) as err:
        hub.resolve_file(name, sha, sources=[mirror.url])
    assert err.value.exit_code == 4 and sha in str(err.value) and name in str(err.value)
    assert _files(hub.cache_dir()) == []  # neither the file nor its .part


def test_404_then_good_second_source(tmp_path, mirror, mirror2):
    name, data, sha = _blob()
    (mirror2.root / name).write_bytes(data)
    path = hub.resolve_file(name, sha, sources=[mirror.url, mirror2.url + name])  # base URL, then full URL
    assert path.read_bytes() == data
    assert mirror.requests == [f"/{name}"] and mirror2.requests == [f"/{name}"]
    assert _files(hub.cache_dir()) == [name]


def test_unreachable_source_then_good_one(tmp_path, mirror):
    name, data, sha = _blob()
    (mirror.root / name).write_bytes(data)
    dead = _Mirror(tmp_path)
    dead_url = dead.url
    dead.close()  # nothing listens there any more: connection refused
    assert hub.resolve_file(name, sha, sources=[dead_url, mirror.url]).read_bytes() == data


def test_download_larger_than_expected_size_is_cut_off(tmp_path, mirror, scripted):
    name, data, sha = _blob()
    (mirror.root / name).write_bytes(data * 3)
    with pytest.raises(WeightsUnavailableError, match=f"announces {3 * len(data)} bytes, expected {len(data)}"):
        hub.resolve_file(name, sha, sources=[mirror.url], size=len(data))

    def endless(handler, release):  # no Content-Length: only the running count can stop it
        handler.protocol_version = "HTTP/1.0"
        _headers(handler, None)
        while not release.is_set():
            handler.wfile.write(data)

    server = scripted(endless)
    with pytest.raises(WeightsUnavailableError, match=f"more than the expected {len(data)} bytes") as err:
        hub.resolve_file(name, sha, sources=[server.url], size=len(data))
    assert err.value.exit_code == 3
    assert _files(hub.cache_dir()) == []


def test_not_found_anywhere_names_file_hash_and_places(tmp_path, mirror):
    name, _, sha = _blob()
    with pytest.raises(WeightsUnavailableError) as err:
        hub.resolve_file(name, sha, sources=[mirror.url])
    msg = str(err.value)
    assert err.value.exit_code == 3 and "\n" not in msg
    assert name in msg and sha[:12] in msg
    assert str(hub.weights_dir() / name) in msg and str(hub.cache_dir() / name) in msg
    assert f"{mirror.url}{name} (HTTP 404)" in msg
    assert _files(hub.cache_dir()) == []


def test_offline_skips_http_and_says_so(tmp_path, mirror, monkeypatch):
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    name, data, sha = _blob()
    (mirror.root / name).write_bytes(data)
    with pytest.raises(WeightsUnavailableError) as err:
        hub.resolve_file(name, sha, sources=[mirror.url])
    msg = str(err.value)
    assert err.value.exit_code == 3
    assert name in msg and sha[:12] in msg and "ZOO_OFFLINE=1" in msg
    assert str(hub.weights_dir() / name) in msg and str(hub.cache_dir() / name) in msg
    assert mirror.requests == []  # no HTTP at all
    # local places still work offline
    hub.cache_dir().mkdir(parents=True)
    (hub.cache_dir() / name).write_bytes(data)
    assert hub.resolve_file(name, sha, sources=[mirror.url]) == hub.cache_dir() / name


def _truncating(data: bytes, announce: bool):
    """A handler that sends half of ``data`` and closes (announcing the full length, or no length)."""

    def respond(handler, release):
        handler.protocol_version = "HTTP/1.0"
        _headers(handler, len(data) if announce else None)
        handler.wfile.write(data[: len(data) // 2])

    return respond


@pytest.mark.parametrize("announce", [True, False], ids=["content-length", "manifest-size"])
def test_truncated_download_is_unavailable_and_the_next_mirror_is_tried(tmp_path, mirror, scripted, announce):
    name, data, sha = _blob()
    short = scripted(_truncating(data, announce))
    (mirror.root / name).write_bytes(data)
    path = hub.resolve_file(name, sha, sources=[short.url, mirror.url], size=len(data))
    assert path.read_bytes() == data and mirror.requests == [f"/{name}"]
    path.unlink()
    with pytest.raises(WeightsUnavailableError) as err:
        hub.resolve_file(name, sha, sources=[short.url], size=len(data))
    assert err.value.exit_code == 3 and "\n" not in str(err.value)
    assert f"truncated: got {len(data) // 2} of {len(data)} bytes" in str(err.value)
    assert _files(hub.cache_dir()) == []


def test_mirror_file_of_another_size_is_unavailable_not_a_mismatch(tmp_path, mirror):
    name, data, sha = _blob()
    (mirror.root / name).write_bytes(data[:-10])  # a short copy on the mirror: complete as served, but not the file
    with pytest.raises(WeightsUnavailableError, match=f"announces {len(data) - 10} bytes, expected {len(data)}"):
        hub.resolve_file(name, sha, sources=[mirror.url], size=len(data))
    assert _files(hub.cache_dir()) == []


def _stalling(data: bytes):
    def respond(handler, release):
        _headers(handler, len(data))
        handler.wfile.write(data[:100])
        handler.wfile.flush()
        release.wait(30)

    return respond


def _trickling(data: bytes):
    def respond(handler, release):
        _headers(handler, len(data))
        for i in range(len(data)):
            if release.wait(0.02):
                return
            handler.wfile.write(data[i : i + 1])
            handler.wfile.flush()

    return respond


@pytest.mark.parametrize("behaviour", [_stalling, _trickling], ids=["stall", "trickle"])
def test_download_time_limit_moves_on_to_the_next_mirror(tmp_path, mirror, scripted, monkeypatch, behaviour):
    monkeypatch.setenv("ZOO_DOWNLOAD_TIMEOUT", "0.5")
    name, data, sha = _blob()
    slow = scripted(behaviour(data))
    (mirror.root / name).write_bytes(data)
    start = time.monotonic()
    assert hub.resolve_file(name, sha, sources=[slow.url, mirror.url], size=len(data)).read_bytes() == data
    assert time.monotonic() - start < 3
    (hub.cache_dir() / name).unlink()
    with pytest.raises(WeightsUnavailableError) as err:
        hub.resolve_file(name, sha, sources=[slow.url], size=len(data))
    assert err.value.exit_code == 3
    assert ("stalled: no data for 0.5 s" if behaviour is _stalling else "not complete within ZOO_DOWNLOAD_TIMEOUT=0.5 s") in str(err.value)
    assert _files(hub.cache_dir()) == []


@pytest.mark.parametrize("value", ["soon", "0", "-1", "inf", "nan"])
def test_bad_download_timeout_is_a_usage_error(monkeypatch, value):
    monkeypatch.setenv("ZOO_DOWNLOAD_TIMEOUT", value)
    with pytest.raises(ZooValueError, match="ZOO_DOWNLOAD_TIMEOUT") as err:
        hub.download_timeout()
    assert err.value.exit_code == 2


def test_download_keeps_a_good_copy_another_process_finished_first(tmp_path, mirror, monkeypatch):
    name, data, sha = _blob()
    (mirror.root / name).write_bytes(data)
    dest = hub.cache_dir() / name
    fetch = hub._fetch
    theirs = []

    def racing(url, name_, out, size):  # another process completes the file while this one downloads
        digest = fetch(url, name_, out, size)
        dest.write_bytes(data)
        theirs.append(dest.stat().st_ino)
        return digest

    monkeypatch.setattr(hub, "_fetch", racing)
    assert hub.resolve_file(name, sha, sources=[mirror.url]) == dest
    assert dest.stat().st_ino == theirs[0]  # their copy was kept, not replaced
    assert _files(hub.cache_dir()) == [name]


_FETCH = """
import sys
from zoo import hub
print(hub.resolve_file(sys.argv[1], sys.argv[2], sources=[sys.argv[3]], size=int(sys.argv[4])))
"""


def test_concurrent_fetches_into_one_cache(tmp_path, scripted):
    name, data, sha = _blob(data=bytes(range(256)) * 8192)  # 2 MiB
    both = threading.Barrier(2, timeout=20)

    def in_step(handler, release):  # answer only once both processes are downloading, in small pieces
        both.wait()
        _headers(handler, len(data))
        for i in range(0, len(data), 256 * 1024):
            handler.wfile.write(data[i : i + 256 * 1024])
            handler.wfile.flush()
            time.sleep(0.01)

    server = scripted(in_step)
    env = {**os.environ, "PYTHONPATH": str(Path(hub.__file__).resolve().parents[1])}
    cmd = [sys.executable, "-c", _FETCH, name, sha, server.url, str(len(data))]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
             for _ in range(2)]
    results = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    assert {out.strip() for out, _ in results} == {str(hub.cache_dir() / name)}
    assert (hub.cache_dir() / name).read_bytes() == data
    assert _files(hub.cache_dir()) == [name]  # no temporary or lock file left


# ---------------------------------------------------------------------------------------------------------------
# Lightning checkpoints


class _Custom:
    """An arbitrary object: pickles of it must not be loaded."""

    def __init__(self):
        self.payload = 42


class _SideEffect:
    """Unpickling this would create ``marker`` (what a malicious checkpoint could do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_load_checkpoint_accepts_plain_tensors(tmp_path):
    ckpt = {"state_dict": {"w": torch.randn(2, 2)}, "epoch": 3, "hyper_parameters": {"optim": {"lr": 0.1}}}
    path = tmp_path / "ok.ckpt"
    torch.save(ckpt, path)
    loaded = hub.load_checkpoint(path)
    assert loaded["epoch"] == 3 and torch.equal(loaded["state_dict"]["w"], ckpt["state_dict"]["w"])


@pytest.mark.parametrize("kind", ["custom", "side_effect"])
def test_load_checkpoint_refuses_arbitrary_objects(tmp_path, kind):
    marker = tmp_path / "pwned"
    obj = _Custom() if kind == "custom" else _SideEffect(marker)
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": obj}, path)
    with pytest.raises(ZooValueError) as err:
        hub.load_checkpoint(path)
    assert err.value.exit_code == 2
    assert "cannot be loaded safely" in str(err.value) and str(path) in str(err.value)
    assert not marker.exists()  # nothing in the pickle ran


def test_load_checkpoint_refuses_garbage(tmp_path):
    path = tmp_path / "garbage.ckpt"
    path.write_bytes(b"\x00not a checkpoint")
    with pytest.raises(ZooValueError, match="cannot be loaded safely"):
        hub.load_checkpoint(path)
