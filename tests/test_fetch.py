"""fetch-zoo-model: sources, resumable download, sha256, safe extraction, validation, CLI.

The download path runs against a loopback HTTP server started here; zoo tarballs are small fakes
with the real layout (one top-level folder holding model.ckpt.*, pipeline.config, checkpoint).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import socket
import tarfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from pipeline.cli import main
from pipeline.errors import PipelineError
from pipeline.zoo import (
    FETCH_INFO,
    RetryPolicy,
    fetch_zoo,
    fetch_zoo_model,
    parse_source,
    validate_zoo_dir,
)
from pipeline.zoo.layout import config_architecture

FAST = RetryPolicy(attempts=3, backoff_s=0.0, timeout_s=10.0)
TOP = "ssd_fake_coco_2018_03_29"
CONFIG = (
    'model {\n  ssd {\n    feature_extractor {\n      type: "ssd_mobilenet_v2"\n    }\n  }\n}\n'
)


# ----------------------------------------------------------------------------- archives


def _model_files(data_bytes: int = 300_000) -> dict[str, bytes]:
    rng = bytes(hashlib.sha256(str(i).encode()).digest()[0] for i in range(256))
    return {
        "model.ckpt.index": b"fake index " * 50,
        "model.ckpt.data-00000-of-00001": (rng * (data_bytes // 256 + 1))[:data_bytes],
        "model.ckpt.meta": b"fake meta graph",
        "checkpoint": b'model_checkpoint_path: "model.ckpt"\n',
        "pipeline.config": CONFIG.encode(),
    }


def _tarball(path: Path, files: dict[str, bytes], *, top: str | None = TOP, mode="w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        if top:
            info = tarfile.TarInfo(top)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for name, payload in files.items():
            info = tarfile.TarInfo(f"{top}/{name}" if top else name)
            info.size = len(payload)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(payload))
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def zoo_tar(tmp_path_factory) -> Path:
    return _tarball(tmp_path_factory.mktemp("zoo") / f"{TOP}.tar.gz", _model_files())


# ----------------------------------------------------------------------------- HTTP server


@dataclass
class Route:
    body: bytes
    ranges: bool = True  # honour Range requests
    drop_after: int = 0  # bytes sent before dropping the connection ...
    drops: int = 0  # ... on this many responses
    errors: int = 0  # answer 503 this many times first
    stalls: int = 0  # send headers, then go silent, this many times first
    requests: list[dict[str, str]] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        route: Route | None = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404, "Not Found")
            return
        route.requests.append(dict(self.headers))
        if route.errors > 0:
            route.errors -= 1
            self.send_error(503, "Service Unavailable")
            return
        body, start = route.body, 0
        requested = self.headers.get("Range")
        if requested and route.ranges:
            start = int(re.fullmatch(r"bytes=(\d+)-", requested).group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.send_header("ETag", '"v1"')
        self.end_headers()
        payload = body[start:]
        if route.stalls > 0:
            route.stalls -= 1
            self.wfile.write(payload[:100])
            self.wfile.flush()
            self.server.release.wait(5)
            self.close_connection = True
            return
        if route.drops > 0:
            route.drops -= 1
            self.wfile.write(payload[: route.drop_after])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.routes = {}
    httpd.release = threading.Event()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"

    def serve(path: str, route: Route) -> str:
        httpd.routes[path] = route
        return base + path

    serve.base = base
    yield serve
    httpd.release.set()
    httpd.shutdown()
    httpd.server_close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _assert_model(out: Path) -> None:
    # Flattened: the files sit directly in `out`, not in the tarball's top folder.
    assert not (out / TOP).exists()
    for name, payload in _model_files().items():
        assert (out / name).read_bytes() == payload
    model = validate_zoo_dir(out)
    assert model.checkpoint_prefix == out / "model.ckpt"
    assert model.meta_graph == out / "model.ckpt.meta"


def _leftovers(cache: Path) -> list[str]:
    return (
        sorted(p.name for p in cache.iterdir() if p.name != ".gitignore") if cache.exists() else []
    )


# ----------------------------------------------------------------------------- HTTP


def test_http_fetch_verifies_and_flattens(server, zoo_tar, tmp_path) -> None:
    url = server("/ok/model.tar.gz", Route(zoo_tar.read_bytes()))
    out = tmp_path / "data" / "zoo"
    result = fetch_zoo(url, out, sha256=_sha(zoo_tar).upper(), name="fake", retry=FAST)
    _assert_model(out)
    assert result.path == out and result.pinned and result.sha256 == _sha(zoo_tar)
    info = yaml.safe_load((out / FETCH_INFO).read_text())
    assert info["sha256"] == _sha(zoo_tar)
    assert info["architecture"] == "ssd_mobilenet_v2"
    assert info["checkpoint_prefix"] == "model.ckpt"
    # The downloaded archive is not kept once unpacked; the cache sits beside the output.
    assert _leftovers(tmp_path / "data" / ".cache" / "downloads") == []
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [".cache", "zoo"]


def test_dropped_connection_resumes_with_range(server, zoo_tar, tmp_path) -> None:
    body = zoo_tar.read_bytes()
    route = Route(body, drop_after=len(body) // 3, drops=1)
    url = server("/drop/model.tar.gz", route)
    fetch_zoo_model(url, tmp_path / "zoo", sha256=_sha(zoo_tar), retry=FAST)
    _assert_model(tmp_path / "zoo")
    assert len(route.requests) == 2
    assert "Range" not in route.requests[0]
    assert route.requests[1]["Range"] == f"bytes={len(body) // 3}-"
    assert route.requests[1]["If-Range"] == '"v1"'


def test_interrupted_download_is_kept_and_resumed_by_the_next_run(server, zoo_tar, tmp_path):
    body = zoo_tar.read_bytes()
    route = Route(body, drop_after=len(body) // 2, drops=1)
    url = server("/later/model.tar.gz", route)
    out, cache = tmp_path / "zoo", tmp_path / "cache"
    with pytest.raises(PipelineError, match=r"rerun to resume") as error:
        fetch_zoo(url, out, cache_dir=cache, retry=RetryPolicy(attempts=1, backoff_s=0))
    assert url in str(error.value) and "\n" not in str(error.value)
    assert not out.exists()
    (partial,) = (p for p in cache.iterdir() if p.name.endswith(".partial"))
    assert partial.stat().st_size == len(body) // 2

    fetch_zoo(url, out, cache_dir=cache, sha256=_sha(zoo_tar), retry=FAST)
    _assert_model(out)
    assert route.requests[-1]["Range"] == f"bytes={len(body) // 2}-"
    assert _leftovers(cache) == []


def test_server_without_range_support_restarts_from_zero(server, zoo_tar, tmp_path) -> None:
    body = zoo_tar.read_bytes()
    route = Route(body, ranges=False, drop_after=1000, drops=1)
    url = server("/norange/model.tar.gz", route)
    fetch_zoo_model(url, tmp_path / "zoo", sha256=_sha(zoo_tar), retry=FAST)
    _assert_model(tmp_path / "zoo")
    assert route.requests[1]["Range"] == "bytes=1000-"  # asked, got a full 200, started over


def test_server_errors_are_retried(server, zoo_tar, tmp_path) -> None:
    route = Route(zoo_tar.read_bytes(), errors=2)
    url = server("/busy/model.tar.gz", route)
    fetch_zoo_model(url, tmp_path / "zoo", retry=FAST)
    _assert_model(tmp_path / "zoo")
    assert len(route.requests) == 3


def test_silent_server_times_out_and_retries(server, zoo_tar, tmp_path) -> None:
    route = Route(zoo_tar.read_bytes(), stalls=1)
    url = server("/stall/model.tar.gz", route)
    fetch_zoo_model(
        url, tmp_path / "zoo", retry=RetryPolicy(attempts=2, backoff_s=0, timeout_s=0.5)
    )
    _assert_model(tmp_path / "zoo")
    assert len(route.requests) == 2


def test_complete_partial_from_an_interrupted_run_is_used(server, zoo_tar, tmp_path) -> None:
    from pipeline.zoo.download import partial_path
    from pipeline.zoo.fetch import _cache_file
    from pipeline.zoo.sources import parse_source as parse

    route = Route(zoo_tar.read_bytes())
    url = server("/done/model.tar.gz", route)
    cache = tmp_path / "cache"
    partial_path(_cache_file(cache, parse(url))).write_bytes(zoo_tar.read_bytes())
    fetch_zoo_model(url, tmp_path / "zoo", cache_dir=cache, sha256=_sha(zoo_tar), retry=FAST)
    _assert_model(tmp_path / "zoo")
    assert len(route.requests) == 1  # answered 416: nothing left to download


def test_http_404_fails_at_once(server, tmp_path) -> None:
    url = server.base + "/nope/missing.tar.gz"
    with pytest.raises(PipelineError, match=r"HTTP 404") as error:
        fetch_zoo_model(url, tmp_path / "zoo", retry=FAST)
    assert str(error.value).startswith(url)
    assert not (tmp_path / "zoo").exists()


def test_unreachable_url(tmp_path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/model.tar.gz"
    with pytest.raises(PipelineError, match=r"Connection refused") as error:
        fetch_zoo_model(url, tmp_path / "zoo", retry=RetryPolicy(attempts=2, backoff_s=0))
    message = str(error.value)
    assert message.startswith(url) and "after 2 attempts" in message and "\n" not in message
    assert not (tmp_path / "zoo").exists()


def test_wrong_sha256_leaves_nothing(server, zoo_tar, tmp_path) -> None:
    url = server("/sha/model.tar.gz", Route(zoo_tar.read_bytes()))
    with pytest.raises(PipelineError, match=r"sha256 mismatch") as error:
        fetch_zoo_model(url, tmp_path / "zoo", sha256="0" * 64, retry=FAST)
    assert _sha(zoo_tar) in str(error.value)
    assert not (tmp_path / "zoo").exists()
    # A bad download is not kept: the next run downloads afresh.
    assert _leftovers(tmp_path / ".cache" / "downloads") == []


def test_malformed_sha256_is_rejected_before_any_work(tmp_path) -> None:
    with pytest.raises(PipelineError, match=r"not a sha256 digest"):
        fetch_zoo_model("http://127.0.0.1:9/x.tar.gz", tmp_path / "zoo", sha256="abc")


# ----------------------------------------------------------------------------- local sources


def test_file_url_local_tarball_and_folder(zoo_tar, tmp_path) -> None:
    fetch_zoo_model(zoo_tar.as_uri(), tmp_path / "a", sha256=_sha(zoo_tar))
    _assert_model(tmp_path / "a")
    fetch_zoo_model(str(zoo_tar), tmp_path / "b")
    _assert_model(tmp_path / "b")
    # An unpacked tarball: the folder holding the top folder, or the top folder itself.
    unpacked = tmp_path / "unpacked"
    with tarfile.open(zoo_tar) as tar:
        tar.extractall(unpacked, filter="data")
    for source, out in ((unpacked, "c"), (unpacked / TOP, "d")):
        fetch_zoo_model(str(source), tmp_path / out)
        _assert_model(tmp_path / out)
    with pytest.raises(PipelineError, match=r"pins an archive but this is a folder"):
        fetch_zoo_model(str(unpacked), tmp_path / "e", sha256=_sha(zoo_tar))


def test_uncompressed_tar_without_top_folder(tmp_path) -> None:
    archive = _tarball(tmp_path / "flat.tar", _model_files(), top=None, mode="w")
    fetch_zoo_model(str(archive), tmp_path / "zoo")
    assert (tmp_path / "zoo" / "pipeline.config").is_file()


def test_builtin_scheme_resolves_to_packaged_tarball(zoo_tar, tmp_path, monkeypatch) -> None:
    import pipeline.builtin

    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / "tiny_builtin.tar.gz").write_bytes(zoo_tar.read_bytes())
    monkeypatch.setattr(pipeline.builtin, "ASSETS_DIR", assets)
    assert parse_source("builtin://tiny_builtin").path == assets / "tiny_builtin.tar.gz"
    fetch_zoo_model("builtin://tiny_builtin", tmp_path / "zoo", sha256=_sha(zoo_tar))
    _assert_model(tmp_path / "zoo")
    with pytest.raises(PipelineError, match=r"builtin://other: not shipped.*tiny_builtin"):
        fetch_zoo_model("builtin://other", tmp_path / "zoo2")
    with pytest.raises(PipelineError, match=r"invalid built-in name"):
        parse_source("builtin://../../etc/passwd")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("ftp://example.org/model.tar.gz", "unsupported URL scheme 'ftp'"),
        ("file://otherhost/model.tar.gz", "file:// URLs must be local"),
        ("does/not/exist.tar.gz", "no such file or folder"),
        ("", "zoo source is empty"),
    ],
)
def test_bad_sources(source, message, tmp_path) -> None:
    with pytest.raises(PipelineError, match=re.escape(message)):
        fetch_zoo_model(source, tmp_path / "zoo")
    assert not (tmp_path / "zoo").exists()


# ----------------------------------------------------------------------------- bad archives


def test_truncated_archive(zoo_tar, tmp_path) -> None:
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(zoo_tar.read_bytes()[: zoo_tar.stat().st_size // 2])
    with pytest.raises(PipelineError, match=r"truncated or corrupt archive") as error:
        fetch_zoo_model(str(truncated), tmp_path / "zoo")
    assert str(error.value).startswith(str(truncated))
    assert not (tmp_path / "zoo").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["truncated.tar.gz"]  # no staging left


def test_truncated_uncompressed_tar(tmp_path) -> None:
    archive = _tarball(tmp_path / "m.tar", _model_files(), mode="w")
    archive.write_bytes(archive.read_bytes()[:150_000])
    with pytest.raises(PipelineError, match=r"truncated or corrupt archive"):
        fetch_zoo_model(str(archive), tmp_path / "zoo")
    assert not (tmp_path / "zoo").exists()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"<!DOCTYPE html><html>Sign in</html>" * 20, "looks like a web page"),
        (b"PK\x03\x04 a zip file" * 40, "not a .tar.gz/.tar archive"),
        (b"", "file is empty"),
        (b"\x1f\x8b\x08\x00 not really gzip" * 10, "truncated or corrupt archive"),
    ],
)
def test_not_an_archive(payload, message, tmp_path) -> None:
    bad = tmp_path / "model.tar.gz"
    bad.write_bytes(payload)
    with pytest.raises(PipelineError, match=re.escape(message)):
        fetch_zoo_model(str(bad), tmp_path / "zoo")
    assert not (tmp_path / "zoo").exists()


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        (("model.ckpt.index", "model.ckpt.data-00000-of-00001"), "no weights found"),
        (("model.ckpt.data-00000-of-00001",), "has an index but no data file"),
        (("pipeline.config",), "no pipeline.config"),
    ],
)
def test_archive_without_a_complete_model(drop, message, tmp_path) -> None:
    files = {k: v for k, v in _model_files().items() if k not in drop}
    archive = _tarball(tmp_path / "m.tar.gz", files)
    with pytest.raises(PipelineError, match=re.escape(message)):
        fetch_zoo_model(str(archive), tmp_path / "zoo")
    assert not (tmp_path / "zoo").exists()


@pytest.mark.parametrize(
    ("files", "form", "weights_file"),
    [
        (
            {"frozen_inference_graph.pb": b"graph", "pipeline.config": CONFIG.encode()},
            "frozen_graph",
            "frozen_inference_graph.pb",
        ),
        (
            {"saved_model/saved_model.pb": b"graph", "pipeline.config": CONFIG.encode()},
            "saved_model",
            "saved_model/saved_model.pb",
        ),
        (
            {
                "model.ckpt-900.index": b"index",
                "model.ckpt-900.data-00000-of-00001": b"data",
                "model.ckpt-1200.index": b"index",
                "model.ckpt-1200.data-00000-of-00001": b"data",
                "ssd_mobilenet_v2_coco.config": CONFIG.encode(),
            },
            "checkpoint",
            "model.ckpt-1200.index",
        ),
    ],
)
def test_every_form_a_model_arrives_in_is_accepted(files, form, weights_file, tmp_path) -> None:
    """A frozen graph or SavedModel alone, or a training dir (several steps, no state file, the
    config named after the sample): the forms `convert` reads (pipeline.tf1.model_dir)."""
    archive = _tarball(tmp_path / "m.tar.gz", files)
    result = fetch_zoo(str(archive), tmp_path / "zoo")
    assert result.model.form == form
    info = json.loads((tmp_path / "zoo" / FETCH_INFO).read_text())
    assert info["weights"] == form and info["weights_file"] == weights_file


def test_missing_data_shard(tmp_path) -> None:
    files = _model_files()
    files["model.ckpt.data-00000-of-00002"] = files.pop("model.ckpt.data-00000-of-00001")
    with pytest.raises(PipelineError, match=r"lacks data shard\(s\) \[1\] of 2"):
        fetch_zoo_model(str(_tarball(tmp_path / "m.tar.gz", files)), tmp_path / "zoo")


def _malicious(kind: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo()
    if kind == "absolute":
        info.name = "/tmp/evil"
    elif kind == "dotdot":
        info.name = f"{TOP}/../../evil"
    elif kind == "symlink":
        info.name, info.type, info.linkname = f"{TOP}/link", tarfile.SYMTYPE, "../../../etc/passwd"
    elif kind == "abs_symlink":
        info.name, info.type, info.linkname = f"{TOP}/link", tarfile.SYMTYPE, "/etc/passwd"
    elif kind == "hardlink":
        info.name, info.type, info.linkname = f"{TOP}/hard", tarfile.LNKTYPE, "../outside"
    elif kind == "device":
        info.name, info.type, info.devmajor, info.devminor = f"{TOP}/dev", tarfile.CHRTYPE, 1, 3
    elif kind == "fifo":
        info.name, info.type = f"{TOP}/fifo", tarfile.FIFOTYPE
    return info


@pytest.mark.parametrize(
    "kind", ["absolute", "dotdot", "symlink", "abs_symlink", "hardlink", "device", "fifo"]
)
def test_malicious_members_are_refused(kind, tmp_path) -> None:
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, payload in _model_files().items():
            info = tarfile.TarInfo(f"{TOP}/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        bad = _malicious(kind)
        tar.addfile(bad, io.BytesIO(b"x" * bad.size))
    work = tmp_path / "work"
    with pytest.raises(PipelineError, match=r"unsafe archive member") as error:
        fetch_zoo_model(str(archive), work / "zoo")
    assert bad.name in str(error.value)
    assert not (work / "zoo").exists()
    assert not (tmp_path / "evil").exists() and not (work / "evil").exists()
    assert list(work.iterdir()) == [] if work.exists() else True


def test_symlink_inside_the_archive_is_allowed(tmp_path) -> None:
    archive = tmp_path / "m.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, payload in _model_files().items():
            info = tarfile.TarInfo(f"{TOP}/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        link = tarfile.TarInfo(f"{TOP}/config_link")
        link.type, link.linkname = tarfile.SYMTYPE, "pipeline.config"
        tar.addfile(link)
    fetch_zoo_model(str(archive), tmp_path / "zoo")
    assert (tmp_path / "zoo" / "config_link").read_text() == CONFIG


# ----------------------------------------------------------------------------- output handling


def test_failure_keeps_the_previous_output_intact(zoo_tar, tmp_path) -> None:
    out = tmp_path / "zoo"
    fetch_zoo_model(str(zoo_tar), out)
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"garbage" * 100)
    with pytest.raises(PipelineError):
        fetch_zoo_model(str(bad), out)
    _assert_model(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tar.gz", "zoo"]


def test_refuses_to_replace_a_foreign_folder(zoo_tar, tmp_path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "precious.json").write_text("{}")
    with pytest.raises(PipelineError, match=r"refusing to replace"):
        fetch_zoo_model(str(zoo_tar), data)
    assert (data / "precious.json").exists()


def test_architecture_mismatch(zoo_tar, tmp_path) -> None:
    with pytest.raises(PipelineError, match=r"zoo.architecture is 'ssd_mobilenet_v1'"):
        fetch_zoo(str(zoo_tar), tmp_path / "zoo", architecture="ssd_mobilenet_v1")
    assert not (tmp_path / "zoo").exists()


def test_real_zoo_files(tf1_zoo_dir, tmp_path) -> None:
    """A tarball with the real zoo layout and pipeline.config (data file faked: not shipped)."""
    real = tf1_zoo_dir / "ssd_mobilenet_v2_coco_2018_03_29"
    archive = tmp_path / f"{real.name}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(real.iterdir()):
            tar.add(path, arcname=f"{real.name}/{path.name}")
        data = b"\0" * 1024
        info = tarfile.TarInfo(f"{real.name}/model.ckpt.data-00000-of-00001")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    result = fetch_zoo(str(archive), tmp_path / "zoo", architecture="ssd_mobilenet_v2")
    assert result.model.meta_graph is not None
    assert config_architecture(result.model.pipeline_config) == "ssd_mobilenet_v2"
    assert (tmp_path / "zoo" / "model.ckpt.index").read_bytes() == (
        real / "model.ckpt.index"
    ).read_bytes()


# ----------------------------------------------------------------------------- registry + CLI


CONF_ZOO = Path(__file__).resolve().parents[1] / "conf" / "zoo"


@pytest.mark.parametrize("entry", sorted(CONF_ZOO.glob("*.yaml")), ids=lambda p: p.stem)
def test_zoo_registry_entries(entry) -> None:
    from pipeline.modeling.faster_rcnn.spec import SUPPORTED_ARCHITECTURES as TWO_STAGE
    from pipeline.modeling.spec import SUPPORTED_ARCHITECTURES
    from pipeline.zoo.integrity import normalize_sha256

    conf = yaml.safe_load(entry.read_text())
    assert {"name", "url", "sha256", "architecture"} <= set(conf)
    assert conf["architecture"] in (*SUPPORTED_ARCHITECTURES, *TWO_STAGE)
    normalize_sha256(conf["sha256"])
    if conf["url"].startswith("http"):
        assert conf["url"].endswith(f"/{conf['name']}.tar.gz")
        assert parse_source(conf["url"]).url == conf["url"]
    else:
        assert conf["url"] == f"builtin://{conf['name']}"


def test_cli_params_mode(zoo_tar, tmp_path, capsys) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "zoo": {
                    "name": "fake",
                    "url": zoo_tar.as_uri(),
                    "sha256": None,
                    "architecture": "ssd_mobilenet_v2",
                }
            }
        )
    )
    assert main(["fetch", "--params", str(params), "--out", str(tmp_path / "zoo")]) == 0
    out = capsys.readouterr().out
    assert f"sha256 {_sha(zoo_tar)} (unpinned: add it to `sha256:` in the conf/zoo/" in out
    _assert_model(tmp_path / "zoo")
    # The hint names the Hydra choice's file, which is not named after the release.
    (tmp_path / "conf" / "zoo").mkdir(parents=True)
    (tmp_path / "conf" / "zoo" / "fake_choice.yaml").write_text("name: fake\nsha256: null\n")
    assert main(["fetch", "--params", str(params), "--out", str(tmp_path / "zoo2")]) == 0
    out = capsys.readouterr().out
    assert "(unpinned: add it to `sha256:` in conf/zoo/fake_choice.yaml to verify" in out


def test_cli_errors_are_one_line_and_exit_2(server, tmp_path, capsys) -> None:
    url = server.base + "/cli/missing.tar.gz"
    code = main(["fetch", "--url", url, "--out", str(tmp_path / "zoo"), "--retries", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith(f"error: {url}: HTTP 404")
    assert not (tmp_path / "zoo").exists()

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"zoo": {"name": "x", "url": "", "sha256": None}}))
    assert main(["fetch", "--params", str(params), "--out", str(tmp_path / "zoo")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: {params}: zoo.url is empty; set it in conf/zoo/<model>.yaml and run "
        "`python -m pipeline params`"
    ]


def test_cli_subprocess_exit_code(tmp_path) -> None:
    import subprocess
    import sys

    bad = tmp_path / "m.tar.gz"
    bad.write_bytes(b"not an archive" * 50)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "fetch",
            "--url",
            str(bad),
            "--out",
            str(tmp_path / "z"),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {bad}: not a .tar.gz/.tar archive (starts with b'not an archiveno'); "
        "point zoo.url at the model's .tar.gz"
    ]
    assert not (tmp_path / "z").exists()


@pytest.mark.parametrize("kind", ["dotdot", "symlink", "device"])
def test_pythons_without_tar_filters_still_refuse_malicious_members(
    kind, tmp_path, monkeypatch
) -> None:
    """Python 3.11.0-3.11.3 (e.g. Debian 12's 3.11.2) has no `filter=` for extractall."""
    monkeypatch.setattr("pipeline.zoo.extract._HAS_DATA_FILTER", False)
    test_malicious_members_are_refused(kind, tmp_path)


def test_pythons_without_tar_filters_extract_with_safe_modes(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("pipeline.zoo.extract._HAS_DATA_FILTER", False)
    archive = tmp_path / "m.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, payload in _model_files().items():
            info = tarfile.TarInfo(f"{TOP}/{name}")
            info.size = len(payload)
            info.mode = 0o6777  # setuid + setgid + world-writable
            info.uid, info.gid = 4321, 4321
            tar.addfile(info, io.BytesIO(payload))
    out = fetch_zoo_model(str(archive), tmp_path / "zoo")
    _assert_model(out)
    for path in out.iterdir():
        if path.name in _model_files():
            assert path.stat().st_mode & 0o7777 == 0o755, path
            assert path.stat().st_uid == os.getuid()
