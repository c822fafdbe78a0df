"""Amazon Reviews 2023 import: a small category in the real file format, images from 127.0.0.1.

Expected results come from a slow, plain-Python reference (dedup, content filter, k-core loop)
over the generator's own ground truth, never from the module under test.
"""

from __future__ import annotations

import gzip
import io as stdio
import json
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from modalrec.data.dataset import Dataset
from modalrec.data.sources import amazon2023
from modalrec.data.sources.amazon2023 import (
    category_urls,
    download_amazon2023,
    import_amazon2023,
    render_text,
    resolve_category,
    select_image_url,
)
from modalrec.errors import ConfigError, DataError

N_ITEMS = 30
BROKEN, SLOW, GONE = 5, 6, 8  # item indices whose image is not an image / times out / is a 404
NO_IMAGE = {3, 13, 23}
NO_DESCRIPTION = {7, 17, 27}
NOT_IN_META = {29}


# --- a local image server -------------------------------------------------------------------------
class ImageServer:
    """Serves ``/img/<name>.jpg`` and any registered file; counts requests per path."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.counts: Counter[str] = Counter()
        self.release = threading.Event()
        lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                with lock:
                    server.counts[self.path] += 1
                try:
                    if self.path.endswith(f"/item{SLOW:02d}.jpg"):
                        server.release.wait(3.0)
                    body = server.files.get(self.path)
                    if body is None:
                        self.send_error(404)
                        return
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def __enter__(self) -> ImageServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server() -> Iterator[ImageServer]:
    with ImageServer() as running:
        yield running


# --- a small category in the real format ----------------------------------------------------------
def parent(j: int) -> str:
    return f"B0PARENT{j:02d}"


def jpeg(color: tuple[int, int, int]) -> bytes:
    buffer = stdio.BytesIO()
    Image.new("RGB", (8, 8), color).save(buffer, format="JPEG")
    return buffer.getvalue()


@dataclass
class Category:
    reviews: list[dict] = field(default_factory=list)
    meta: list[dict] = field(default_factory=list)
    image_url: dict[str, str] = field(default_factory=dict)  # parent -> the URL the import must pick

    def write(self, folder: Path, gz: bool = False) -> tuple[Path, Path]:
        folder.mkdir(parents=True, exist_ok=True)
        suffix = ".jsonl.gz" if gz else ".jsonl"
        paths = folder / f"Baby_Products{suffix}", folder / f"meta_Baby_Products{suffix}"
        for path, rows in zip(paths, (self.reviews, self.meta)):
            text = "".join(json.dumps(row) + "\n" for row in rows).encode()
            path.write_bytes(gzip.compress(text) if gz else text)
        return paths


def make_category(base_url: str, server: ImageServer | None = None, seed: int = 3) -> Category:
    rng = np.random.default_rng(seed)
    cat = Category()
    for j in range(N_ITEMS):
        p = parent(j)
        big = f"{base_url}/img/item{j:02d}.jpg"
        images = [
            {"thumb": f"{base_url}/img/t{j}.jpg", "large": f"{base_url}/img/alt{j}.jpg", "variant": "PT01",
             "hi_res": None},
            {"thumb": f"{base_url}/img/t{j}m.jpg", "large": big, "variant": "MAIN",
             "hi_res": f"{base_url}/img/hi{j}.jpg"},
        ]
        if j == 1:  # MAIN without "large": its hi_res
            images = [{"thumb": None, "large": None, "variant": "MAIN", "hi_res": big}]
        if j == 2:  # no MAIN: the first image of any kind
            images = [{"thumb": f"{base_url}/img/t2.jpg", "large": big, "variant": "PT03", "hi_res": None}]
        if j in NO_IMAGE:
            images = []
        else:
            cat.image_url[p] = big
        description = ["Soft and safe.", f"Product {j} keeps your baby happy."]
        if j in NO_DESCRIPTION:
            description = [] if j != 17 else ["", "  "]
        if j not in NOT_IN_META:
            cat.meta.append({
                "main_category": "Baby", "title": f"Baby thing {j}", "average_rating": 4.5,
                "rating_number": 10 + j, "features": [f"feature {j}a", f"feature {j}b"],
                "description": description, "price": None if j % 2 else 19.99, "images": images,
                "videos": [], "store": f"Store {j % 4}",
                "categories": ["Baby Products", "Feeding"] if j % 2 else [],
                "details": {"Brand": f"Brand{j % 3}", "Age Range": "0-12 months"},
                "parent_asin": p, "bought_together": None,
            })
        if server is not None and j not in NO_IMAGE:
            path = f"/img/item{j:02d}.jpg"
            if j == BROKEN:
                server.files[path] = b"GIF89a... not really"
            elif j != GONE:
                server.files[path] = jpeg((j * 8, 255 - j * 8, 100))
    for extra in range(3):  # metadata of items nobody reviewed
        cat.meta.append({"parent_asin": f"B0UNSEEN{extra}", "title": "x", "description": ["y"], "images": []})

    weights = np.ones(N_ITEMS)
    weights[[BROKEN, SLOW, GONE, 0, 1, 2]] = 4.0  # popular: they survive the k-core
    weights[[11, 19, 28]] = 0.0  # reviewed only as set below
    t0 = 1_600_000_000_000
    for u in range(60):
        user = f"AE{u:04d}USER{'X' * 20}"
        degree = int(rng.integers(2, 14))
        chosen = rng.choice(N_ITEMS, size=min(degree, N_ITEMS), replace=False, p=weights / weights.sum())
        for j in chosen:
            cat.reviews.append(review(user, int(j), float(rng.integers(1, 6)), t0 + int(rng.integers(0, 10**9))))
    # a cascade the k-core needs three rounds for: item 11 (3 reviews) goes, then the user who has
    # 5 reviews with it, then item 28 (5 reviews with that user's)
    cascade = "AE9999CASCADE" + "X" * 15
    for j in (11, 28, 0, 1, 2):
        cat.reviews.append(review(cascade, j, 4.0, t0 + j))
    for u in range(4):
        cat.reviews.append(review(f"AE{u:04d}USER{'X' * 20}", 28, 5.0, t0 + 7 + u))
    for u in (10, 11):
        cat.reviews.append(review(f"AE{u:04d}USER{'X' * 20}", 11, 3.0, t0 + 9 + u))
        cat.reviews.append(review(f"AE{u:04d}USER{'X' * 20}", 19, 3.0, t0 + 9 + u))
    # repeated reviews of one parent through variant asins, and an exact tie (the later line wins)
    cat.reviews.append(review("AE0000USER" + "X" * 20, 0, 1.0, t0 + 2 * 10**9, asin="B0CHILD00a"))
    cat.reviews.append(review("AE0001USER" + "X" * 20, 1, 2.0, t0 - 5, asin="B0CHILD01a"))  # older: loses
    order = rng.permutation(len(cat.reviews))
    cat.reviews = [cat.reviews[k] for k in order]
    cat.reviews.append(review("AE0002USER" + "X" * 20, 2, 3.0, t0 + 3 * 10**9, asin="B0CHILD02a"))
    cat.reviews.append(review("AE0002USER" + "X" * 20, 2, 5.0, t0 + 3 * 10**9, asin="B0CHILD02b"))
    return cat


def review(user: str, j: int, rating: float, ts: int, asin: str | None = None) -> dict:
    return {"rating": rating, "title": "Great", "text": "Works as described.", "images": [],
            "asin": asin or parent(j), "parent_asin": parent(j), "user_id": user, "timestamp": ts,
            "helpful_vote": 0, "verified_purchase": True}


def reference(cat: Category, k: int, failed: set[str] = frozenset(),
              rounds: list[int] | None = None) -> dict[tuple[str, str], tuple[float, int]]:
    """Slow reference: latest review per (user, parent), content filter, iterative k-core
    (``rounds`` receives the number of removal rounds)."""
    latest: dict[tuple[str, str], tuple[int, int, float]] = {}
    for line, r in enumerate(cat.reviews):
        key = (r["user_id"], r["parent_asin"])
        if key not in latest or (r["timestamp"], line) > latest[key][:2]:
            latest[key] = (r["timestamp"], line, r["rating"])
    good = {parent(j) for j in range(N_ITEMS)
            if j not in NO_IMAGE | NO_DESCRIPTION | NOT_IN_META} - set(failed)
    edges = {key: (v[2], v[0]) for key, v in latest.items() if key[1] in good}
    n_rounds = 0
    while True:
        users = Counter(u for u, _ in edges)
        items = Counter(i for _, i in edges)
        kept = {e: v for e, v in edges.items() if users[e[0]] >= k and items[e[1]] >= k}
        if len(kept) == len(edges):
            if rounds is not None:
                rounds.append(n_rounds)
            return edges
        edges = kept
        n_rounds += 1


def as_edges(dataset: Dataset) -> dict[tuple[str, str], tuple[float, int]]:
    frame = dataset.interactions.to_frame()
    return {(str(dataset.user_ids[u]), str(dataset.item_ids[i])): (float(r), int(t))
            for u, i, r, t in zip(frame["user"], frame["item"], frame["rating"], frame["timestamp"])}


# --- tests ----------------------------------------------------------------------------------------
def test_import_matches_the_reference_and_round_trips(tmp_path: Path) -> None:
    cat = make_category("http://127.0.0.1:9")
    reviews, meta = cat.write(tmp_path / "raw")
    data = import_amazon2023(reviews, meta, tmp_path / "ds", k_core=5, progress=False)

    rounds: list[int] = []
    expected = reference(cat, 5, rounds=rounds)
    assert rounds[0] >= 3  # the fixture really needs an *iterative* k-core
    assert as_edges(data) == expected
    assert "AE9999CASCADE" + "X" * 15 not in set(data.user_ids) and parent(28) not in set(data.item_ids)
    assert set(data.item_ids) == {i for _, i in expected}
    assert list(data.items["item_id"]) == list(data.item_ids)
    assert parent(11) not in set(data.item_ids) and parent(BROKEN) in set(data.item_ids)
    assert not {parent(j) for j in NO_IMAGE | NO_DESCRIPTION | NOT_IN_META} & set(data.item_ids)
    # variants of one parent are one item: the latest review of the parent wins
    assert as_edges(data)[("AE0000USER" + "X" * 20, parent(0))] == (1.0, 1_600_000_000_000 + 2 * 10**9)
    assert as_edges(data)[("AE0002USER" + "X" * 20, parent(2))][0] == 5.0  # tie: the later line

    items = data.items.set_index("item_id")
    assert list(data.items.columns) == ["item_id", "title", "description"]
    assert items.loc[parent(0), "title"] == "Baby thing 0"
    assert items.loc[parent(0), "description"] == "Soft and safe. Product 0 keeps your baby happy."
    urls = data.extras["images"].set_index("item_id")["image_url"]
    assert {i: urls[i] for i in data.item_ids} == {i: cat.image_url[i] for i in data.item_ids}

    counts = data.provenance["counts"]
    assert counts["review_lines"] == len(cat.reviews)
    assert counts["duplicate_reviews"] == len(cat.reviews) - len({(r["user_id"], r["parent_asin"])
                                                                  for r in cat.reviews})
    assert counts["meta_without_reviews"] == 3
    assert [s["step"] for s in data.provenance["filters"]] == ["content", "k_core"]
    assert data.provenance["filters"][-1]["interactions"][1] == len(expected)

    loaded = Dataset.load(tmp_path / "ds")
    assert loaded.interactions == data.interactions
    assert list(loaded.item_ids) == list(data.item_ids) and list(loaded.user_ids) == list(data.user_ids)
    pd.testing.assert_frame_equal(loaded.items, data.items)


def test_gzipped_input_gives_the_same_data_set(tmp_path: Path) -> None:
    cat = make_category("http://127.0.0.1:9")
    plain = import_amazon2023(*cat.write(tmp_path / "plain"), tmp_path / "a", k_core=3, progress=False)
    gz_reviews, gz_meta = cat.write(tmp_path / "gz", gz=True)
    assert gz_reviews.read_bytes()[:2] == b"\x1f\x8b"
    zipped = import_amazon2023(gz_reviews, gz_meta, tmp_path / "b", k_core=3, progress=False)
    assert zipped.interactions == plain.interactions
    pd.testing.assert_frame_equal(zipped.items, plain.items)
    assert as_edges(zipped) == reference(cat, 3)


def test_text_field_choice(tmp_path: Path) -> None:
    cat = make_category("http://127.0.0.1:9")
    reviews, meta = cat.write(tmp_path / "raw")
    data = import_amazon2023(reviews, meta, tmp_path / "ds", k_core=0,
                             text_fields=["features", "details", "categories", "store"], progress=False)
    assert list(data.items.columns) == ["item_id", "features", "details", "categories", "store"]
    items = data.items.set_index("item_id")
    assert items.loc[parent(1), "features"] == "feature 1a; feature 1b"
    assert items.loc[parent(1), "details"] == "Brand: Brand1; Age Range: 0-12 months"
    assert items.loc[parent(1), "categories"] == "Baby Products > Feeding"
    assert pd.isna(items.loc[parent(0), "categories"])  # an empty list is missing text, not ""
    assert items.loc[parent(2), "store"] == "Store 2"
    assert as_edges(data) == reference(cat, 0)

    with pytest.raises(ConfigError, match="unknown text field") as error:
        import_amazon2023(reviews, meta, tmp_path / "x", text_fields=["title", "colour"], progress=False)
    assert error.value.where == "--text-fields" and "description" in error.value.hint


def test_render_text_and_image_choice() -> None:
    assert render_text(["  a ", "", "b"], "description") == "a b"
    assert render_text({"Size": ["S", "M"], "Empty": ""}, "details") == "Size: S, M"
    assert render_text([], "features") is None and render_text(None) is None
    assert render_text(12.5, "price") == "12.5"
    assert select_image_url([{"large": "l0", "variant": "PT01"}, {"large": "l1", "hi_res": "h1", "variant": "MAIN"}]) == "l1"
    assert select_image_url([{"large": None, "hi_res": "h1", "variant": "MAIN"}]) == "h1"
    assert select_image_url([{"thumb": "t0", "variant": "PT01"}, {"hi_res": "h2", "variant": "PT02"}]) == "t0"
    assert select_image_url({"large": ["l0", "l1"], "variant": ["PT01", "MAIN"], "hi_res": [None, None]}) == "l1"
    assert select_image_url([]) is None and select_image_url(None) is None


def test_malformed_lines_strict_and_lenient(tmp_path: Path) -> None:
    cat = make_category("http://127.0.0.1:9")
    reviews, meta = cat.write(tmp_path / "raw")
    lines = reviews.read_text().splitlines(keepends=True)
    lines.insert(10, '{"rating": 5.0, "user_id": "AE00\n')  # cut in the middle
    lines.insert(20, "\n")  # blank lines are not errors
    lines.insert(30, '{"rating": 4.0, "parent_asin": "B0PARENT01", "timestamp": 5}\n')  # no user
    reviews.write_text("".join(lines))

    with pytest.raises(DataError, match="not valid JSON") as error:
        import_amazon2023(reviews, meta, tmp_path / "strict", progress=False)
    assert error.value.where == f"{reviews}:11"
    assert not (tmp_path / "strict" / "manifest.json").exists()

    data = import_amazon2023(reviews, meta, tmp_path / "lenient", k_core=5, strict=False, progress=False)
    assert data.provenance["counts"]["malformed_review_lines"] == 2
    assert data.provenance["counts"]["review_lines"] == len(lines)
    assert as_edges(data) == reference(cat, 5)


def test_truncated_gzip_and_missing_files_are_clear_errors(tmp_path: Path) -> None:
    cat = make_category("http://127.0.0.1:9")
    reviews, meta = cat.write(tmp_path / "raw", gz=True)
    reviews.write_bytes(reviews.read_bytes()[:-200])
    with pytest.raises(DataError, match="truncated|cannot read") as error:
        import_amazon2023(reviews, meta, tmp_path / "ds", progress=False)
    assert error.value.where == str(reviews)
    with pytest.raises(DataError, match="not found"):
        import_amazon2023(tmp_path / "nope.jsonl", meta, tmp_path / "ds", progress=False)
    with pytest.raises(ConfigError, match="--download-images|downloaded"):
        import_amazon2023(reviews, meta, tmp_path / "ds", drop_failed_images=True, progress=False)


def test_download_images_marks_failures_drops_them_and_resumes(server: ImageServer, tmp_path: Path) -> None:
    cat = make_category(server.url(""), server)
    reviews, meta = cat.write(tmp_path / "raw")
    options = {"k_core": 5, "download_images": True, "workers": 4, "image_connect_timeout": 0.5,
               "image_read_timeout": 0.5, "image_retries": 1, "image_backoff": 0.01, "progress": False}

    kept = import_amazon2023(reviews, meta, tmp_path / "ds", **options)
    expected = reference(cat, 5)
    assert as_edges(kept) == expected  # failed images stay, without an image
    paths = kept.items.set_index("item_id")["image_path"]
    failed = {parent(BROKEN), parent(SLOW), parent(GONE)}
    assert {i for i, p in paths.items() if pd.isna(p)} == failed
    for item_id, path in paths.items():
        if not pd.isna(path):
            assert path == f"images/{item_id}.jpg"
            with Image.open(tmp_path / "ds" / path) as image:
                assert image.size == (8, 8)
    report = pd.read_parquet(tmp_path / "ds" / "image_failures.parquet")
    assert dict(zip(report["item_id"], report["kind"])) == {
        parent(BROKEN): "corrupt", parent(SLOW): "timeout", parent(GONE): "missing"}
    status = kept.extras["images"].set_index("item_id")["image_status"]
    assert status[parent(GONE)] == "failed" and status[parent(0)] == "downloaded"
    assert kept.provenance["images"]["failed"] == 3
    assert Dataset.load(tmp_path / "ds").items["image_path"].isna().sum() == 3
    assert not (tmp_path / "ds" / ".modalrec-partial").exists()

    # a second run into the same folder fetches nothing that is already there, and may drop failures
    before = Counter(server.counts)
    dropped = import_amazon2023(reviews, meta, tmp_path / "ds", **options, drop_failed_images=True)
    good = [f"/img/item{int(i[-2:]):02d}.jpg" for i in paths.index if i not in failed]
    assert good and all(server.counts[p] == before[p] for p in good)
    assert server.counts[f"/img/item{GONE:02d}.jpg"] == before[f"/img/item{GONE:02d}.jpg"] + 1
    assert dropped.provenance["images"]["present"] == len(good)
    assert as_edges(dropped) == reference(cat, 5, failed=failed)
    assert dropped.items["image_path"].notna().all()
    assert [s["step"] for s in dropped.provenance["filters"]] == ["content", "k_core", "drop_failed_images", "k_core"]
    assert not failed & set(dropped.item_ids)


def test_a_crash_during_image_download_resumes_and_foreign_folders_are_refused(
        server: ImageServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cat = make_category(server.url(""), server)
    reviews, meta = cat.write(tmp_path / "raw")
    options = {"k_core": 5, "download_images": True, "workers": 4, "image_connect_timeout": 0.5,
               "image_read_timeout": 0.5, "image_retries": 1, "image_backoff": 0.01, "progress": False}

    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("killed after the downloads")

    monkeypatch.setattr(amazon2023, "_build", crash)
    with pytest.raises(RuntimeError):
        import_amazon2023(reviews, meta, tmp_path / "ds", **options)
    monkeypatch.undo()
    assert (tmp_path / "ds" / ".modalrec-partial").exists() and not (tmp_path / "ds" / "manifest.json").exists()
    fetched = Counter(server.counts)
    assert sum(fetched.values()) > 10

    data = import_amazon2023(reviews, meta, tmp_path / "ds", **options)
    assert data.provenance["images"]["downloaded"] == 0
    assert data.provenance["images"]["present"] == data.items["image_path"].notna().sum() > 10
    assert not (tmp_path / "ds" / ".modalrec-partial").exists()
    assert as_edges(Dataset.load(tmp_path / "ds")) == reference(cat, 5)

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("precious")
    with pytest.raises(DataError, match="refusing to overwrite"):
        import_amazon2023(reviews, meta, foreign, **options)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


def test_category_names_and_addresses() -> None:
    assert resolve_category("baby products") == "Baby_Products"
    assert resolve_category("Clothing, Shoes & Jewelry") == "Clothing_Shoes_and_Jewelry"
    assert category_urls("Pet_Supplies") == (
        "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_2023/raw/review_categories/Pet_Supplies.jsonl.gz",
        "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_2023/raw/meta_categories/meta_Pet_Supplies.jsonl.gz",
    )
    with pytest.raises(ConfigError, match="unknown Amazon") as error:
        resolve_category("Baby_Product")
    assert "Baby_Products" in error.value.hint


def test_download_category_files_from_a_mirror(server: ImageServer, tmp_path: Path) -> None:
    cat = make_category("http://127.0.0.1:9")
    reviews, meta = cat.write(tmp_path / "src", gz=True)
    server.files["/raw/review_categories/Baby_Products.jsonl.gz"] = reviews.read_bytes()
    server.files["/raw/meta_categories/meta_Baby_Products.jsonl.gz"] = meta.read_bytes()

    got = download_amazon2023("baby_products", tmp_path / "dl", base_url=server.url("/raw"), progress=False)
    assert got == (tmp_path / "dl" / "Baby_Products.jsonl.gz", tmp_path / "dl" / "meta_Baby_Products.jsonl.gz")
    assert got[0].read_bytes() == reviews.read_bytes() and got[1].read_bytes() == meta.read_bytes()
    download_amazon2023("Baby_Products", tmp_path / "dl", base_url=server.url("/raw"), progress=False)
    assert server.counts["/raw/review_categories/Baby_Products.jsonl.gz"] == 1
    data = import_amazon2023(*got, tmp_path / "ds", k_core=5, progress=False)
    assert as_edges(data) == reference(cat, 5)

    with pytest.raises(DataError, match="404"):
        download_amazon2023("Pet_Supplies", tmp_path / "dl", base_url=server.url("/raw"), retries=0,
                            progress=False)
