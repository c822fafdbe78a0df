"""Image and file downloads against a local HTTP server on 127.0.0.1 (no other network traffic)."""

from __future__ import annotations

import contextlib
import io as stdio
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from modalrec.data.image_download import (
    FAILURE_REPORT,
    backoff_delay,
    download_file,
    download_images,
    image_format,
    image_stem,
)
from modalrec.errors import ConfigError, DataError

Route = Callable[[BaseHTTPRequestHandler, int], None]


class LocalServer:
    """A threaded HTTP server on an ephemeral port that counts requests per path.

    Each route is ``handler(request, n)`` with ``n`` the 1-based count of requests to that path.
    """

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.counts: Counter[str] = Counter()
        self.headers: dict[str, list[dict[str, str]]] = {}
        self.release = threading.Event()  # wakes sleeping handlers at shutdown
        lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                path = self.path.split("?")[0]
                with lock:
                    server.counts[path] += 1
                    n = server.counts[path]
                    server.headers.setdefault(path, []).append(dict(self.headers))
                route = server.routes.get(path)
                if route is None:
                    self.send_error(404)
                    return
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    route(self, n)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def __enter__(self) -> LocalServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def send(body: bytes, content_type: str = "image/jpeg", status: int = 200) -> Route:
    def route(request: BaseHTTPRequestHandler, n: int) -> None:
        request.send_response(status)
        request.send_header("Content-Type", content_type)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)
    return route


def status(code: int) -> Route:
    def route(request: BaseHTTPRequestHandler, n: int) -> None:
        request.send_error(code)
    return route


def sleeper(server: LocalServer, seconds: float, body: bytes) -> Route:
    def route(request: BaseHTTPRequestHandler, n: int) -> None:
        server.release.wait(seconds)
        send(body)(request, n)
    return route


def flaky(failures: int, body: bytes) -> Route:
    def route(request: BaseHTTPRequestHandler, n: int) -> None:
        if n <= failures:
            request.send_error(503)
        else:
            send(body)(request, n)
    return route


def redirect(location: str) -> Route:
    def route(request: BaseHTTPRequestHandler, n: int) -> None:
        request.send_response(302)
        request.send_header("Location", location)
        request.send_header("Content-Length", "0")
        request.end_headers()
    return route


def ranged(body: bytes, *, cut_first: int | None = None, honour_range: bool = True) -> Route:
    """Serve ``body``; the first response is cut after ``cut_first`` bytes (connection closed)."""
    def route(request: BaseHTTPRequestHandler, n: int) -> None:
        start = 0
        header = request.headers.get("Range")
        if honour_range and header:
            start = int(header.split("=")[1].split("-")[0])
        request.send_response(206 if start else 200)
        request.send_header("Content-Length", str(len(body) - start))
        if start:
            request.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        request.end_headers()
        chunk = body[start:]
        if n == 1 and cut_first is not None:
            chunk = chunk[:cut_first]
        request.wfile.write(chunk)
        request.close_connection = True
    return route


def image_bytes(fmt: str = "JPEG", color: tuple[int, int, int] = (200, 30, 60), size: int = 12) -> bytes:
    buffer = stdio.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server() -> Iterator[LocalServer]:
    with LocalServer() as running:
        yield running


FAST = {"connect_timeout": 0.5, "read_timeout": 0.5, "retries": 1, "backoff": 0.01, "progress": False}


def mixed_catalogue(server: LocalServer) -> tuple[list[tuple[str, str]], dict[str, bytes]]:
    png = image_bytes("PNG", (10, 120, 250))
    jpeg = image_bytes("JPEG")
    server.routes.update({
        "/a.jpg": send(jpeg),
        "/b.jpg": send(png, "image/png"),  # a PNG behind a .jpg address: saved as .png
        "/broken.jpg": send(b"<html>this is not an image</html>", "text/html"),
        "/slow.jpg": sleeper(server, 3.0, jpeg),
        "/gone.jpg": status(404),
        "/flaky.jpg": flaky(1, jpeg),
        "/moved.jpg": redirect("/c.jpg"),
        "/c.jpg": send(jpeg),
    })
    pairs = [
        ("A1", server.url("/a.jpg")),
        ("B2", server.url("/b.jpg")),
        ("BROKEN", server.url("/broken.jpg")),
        ("SLOW", server.url("/slow.jpg")),
        ("GONE", server.url("/gone.jpg")),
        ("FLAKY", server.url("/flaky.jpg")),
        ("MOVED", server.url("/moved.jpg")),
        ("LOCAL", "file:///etc/hostname"),
        ("EMPTY", ""),
    ]
    return pairs, {"png": png, "jpeg": jpeg}


def test_downloads_record_failures_and_keep_no_partial_files(server: LocalServer, tmp_path: Path) -> None:
    pairs, raw = mixed_catalogue(server)
    report = download_images(pairs, tmp_path, workers=4, **FAST)

    by_id = {r.item_id: r for r in report.results}
    assert [r.item_id for r in report.results] == [p[0] for p in pairs]
    assert {i for i, r in by_id.items() if r.status == "downloaded"} == {"A1", "B2", "FLAKY", "MOVED"}
    assert {i: r.kind for i, r in by_id.items() if r.status == "failed"} == {
        "BROKEN": "corrupt", "SLOW": "timeout", "GONE": "missing", "LOCAL": "bad_url", "EMPTY": "bad_url"}
    assert "404" in by_id["GONE"].reason

    images = tmp_path / "images"
    assert sorted(p.name for p in images.iterdir()) == ["A1.jpg", "B2.png", "FLAKY.jpg", "MOVED.jpg"]
    assert by_id["B2"].path == images / "B2.png"
    assert (images / "A1.jpg").read_bytes() == raw["jpeg"]
    with Image.open(images / "B2.png") as decoded:
        assert np.array_equal(np.asarray(decoded), np.full((12, 12, 3), (10, 120, 250), dtype=np.uint8))
    for failed in ("BROKEN", "SLOW", "GONE", "LOCAL", "EMPTY"):
        assert by_id[failed].path is None

    # permanent failures are not retried, transient ones are (retries=1: two attempts)
    assert server.counts["/gone.jpg"] == 1
    assert server.counts["/broken.jpg"] == 1
    assert server.counts["/slow.jpg"] == 2
    assert server.counts["/flaky.jpg"] == 2
    assert by_id["SLOW"].attempts == 2 and by_id["GONE"].attempts == 1

    failures = pd.read_parquet(tmp_path / FAILURE_REPORT)
    assert dict(zip(failures["item_id"], failures["kind"])) == {
        "BROKEN": "corrupt", "SLOW": "timeout", "GONE": "missing", "LOCAL": "bad_url", "EMPTY": "bad_url"}
    assert report.summary()["failed_by_kind"] == {"bad_url": 2, "corrupt": 1, "missing": 1, "timeout": 1}


def test_second_run_fetches_only_what_is_missing(server: LocalServer, tmp_path: Path) -> None:
    pairs, raw = mixed_catalogue(server)
    download_images(pairs, tmp_path, workers=4, **FAST)
    before = Counter(server.counts)
    images = tmp_path / "images"
    (images / "MOVED.jpg").write_bytes(raw["jpeg"][:40])  # damaged since: fetched again
    (images / ".A1.x1y2z3.part").write_bytes(b"half")  # left by a killed run: cleaned up

    second = download_images(pairs, tmp_path, workers=4, **FAST)

    by_id = {r.item_id: r for r in second.results}
    assert {i for i, r in by_id.items() if r.status == "present"} == {"A1", "B2", "FLAKY"}
    assert by_id["MOVED"].status == "downloaded"
    for path in ("/a.jpg", "/b.jpg", "/flaky.jpg"):
        assert server.counts[path] == before[path], path
    assert server.counts["/moved.jpg"] == before["/moved.jpg"] + 1
    assert server.counts["/c.jpg"] == before["/c.jpg"] + 1
    assert server.counts["/gone.jpg"] == before["/gone.jpg"] + 1  # failures are tried again
    assert image_format(images / "MOVED.jpg") == "JPEG"
    assert not [p for p in images.iterdir() if p.name.endswith(".part")]


def test_existing_files_are_trusted_without_verification_when_asked(server: LocalServer, tmp_path: Path) -> None:
    server.routes["/a.jpg"] = send(image_bytes())
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "A1.jpg").write_bytes(b"not checked")
    result = download_images([("A1", server.url("/a.jpg"))], tmp_path, verify_existing=False, **FAST)
    assert result.results[0].status == "present" and server.counts["/a.jpg"] == 0


def test_duplicate_items_and_bad_options_are_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="listed twice"):
        download_images([("A", "http://127.0.0.1:9/a"), ("A", "http://127.0.0.1:9/b")], tmp_path, progress=False)
    with pytest.raises(ConfigError, match="workers"):
        download_images([], tmp_path, workers=0)


def test_image_stem_is_safe_and_injective() -> None:
    assert image_stem("B07XYZ1234") == "B07XYZ1234"
    assert image_stem("42") == "42"
    odd = ["a/b", "a_b", "../etc/passwd", "a b", "é", ".hidden", ""]
    stems = [image_stem(x) for x in odd]
    assert stems[1] == "a_b"
    assert len(set(stems)) == len(stems)
    for stem in stems:
        assert "/" not in stem and "\\" not in stem and not stem.startswith(".") and stem


def test_backoff_is_exponential_capped_and_seeded() -> None:
    delays = [backoff_delay(n, 0.5, 4.0, random.Random("7\0item"), jitter=0.5) for n in range(6)]
    again = [backoff_delay(n, 0.5, 4.0, random.Random("7\0item"), jitter=0.5) for n in range(6)]
    assert delays == again
    for n, delay in enumerate(delays):
        floor = min(4.0, 0.5 * 2**n)
        assert floor <= delay <= 1.5 * floor
    assert backoff_delay(3, 0.5, 4.0, random.Random(1), jitter=0.0) == 4.0


def test_download_file_resumes_a_cut_transfer_with_a_range_request(server: LocalServer, tmp_path: Path) -> None:
    body = np.random.default_rng(0).bytes(300_000)
    server.routes["/big.gz"] = ranged(body, cut_first=120_000)
    target = tmp_path / "data" / "big.gz"
    assert download_file(server.url("/big.gz"), target, retries=2, backoff=0.01, progress=False) == target
    assert target.read_bytes() == body
    assert server.counts["/big.gz"] == 2
    assert server.headers["/big.gz"][1]["Range"] == "bytes=120000-"
    assert not (tmp_path / "data" / "big.gz.part").exists()

    download_file(server.url("/big.gz"), target, progress=False)  # complete: not fetched again
    assert server.counts["/big.gz"] == 2


def test_download_file_continues_an_earlier_runs_part_or_starts_over(server: LocalServer, tmp_path: Path) -> None:
    body = np.random.default_rng(1).bytes(50_000)
    server.routes["/r.gz"] = ranged(body)
    server.routes["/norange.gz"] = ranged(body, honour_range=False)
    (tmp_path / "r.gz.part").write_bytes(body[:1000])
    (tmp_path / "n.gz.part").write_bytes(b"x" * 1000)  # wrong bytes: the server ignores Range, so start over

    download_file(server.url("/r.gz"), tmp_path / "r.gz", progress=False)
    download_file(server.url("/norange.gz"), tmp_path / "n.gz", progress=False)

    assert (tmp_path / "r.gz").read_bytes() == body
    assert server.headers["/r.gz"][0]["Range"] == "bytes=1000-"
    assert (tmp_path / "n.gz").read_bytes() == body


def test_download_file_reports_a_missing_file_without_retrying(server: LocalServer, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="HTTP 404") as error:
        download_file(server.url("/nothing.gz"), tmp_path / "x.gz", retries=3, backoff=0.01, progress=False)
    assert error.value.where == str(tmp_path / "x.gz")
    assert server.counts["/nothing.gz"] == 1
    assert not (tmp_path / "x.gz").exists()
    with pytest.raises(ConfigError, match="http"):
        download_file("file:///etc/hostname", tmp_path / "y", progress=False)
