"""Sources: every format on small files (and the real MovieLens / MMRec data where present), the
bad-input cases with their file:line messages, atomic output, round trips and downloads."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import shared_data_path
from data_files import (
    ELLIOT,
    ML_RATINGS,
    MMREC,
    MMREC_FEATURE_ROWS,
    ml100k_zip_bytes,
    write_elliot,
    write_folder_source,
    write_image,
    write_ml100k,
    write_mmrec,
    write_overviews,
    write_posters,
)
from modalrec.data.dataset import Dataset
from modalrec.data.download import download_ml100k, fetch
from modalrec.data.output import PARTIAL_MARKER, output_state, save_dataset
from modalrec.data.sources.elliot import import_elliot
from modalrec.data.sources.folder import import_folder
from modalrec.data.sources.mmrec import import_mmrec
from modalrec.data.sources.movielens import import_movielens
from modalrec.data.sources.tables import read_delimited, read_jsonl, read_table
from modalrec.errors import ConfigError, DataError
from modalrec.features.store import FeatureStore


def assert_same_dataset(a: Dataset, b: Dataset) -> None:
    assert a.interactions == b.interactions
    assert list(a.user_ids.astype(str)) == list(b.user_ids.astype(str))
    assert list(a.item_ids.astype(str)) == list(b.item_ids.astype(str))
    assert list(a.items.columns) == list(b.items.columns)
    for column in a.items.columns:  # same values, and missing in the same places (None or NaN)
        assert [None if pd.isna(v) else v for v in a.items[column]] == \
            [None if pd.isna(v) else v for v in b.items[column]], column
    assert a.provenance == b.provenance
    assert (a.split is None) == (b.split is None)
    if a.split is not None:
        assert a.split.protocol == b.split.protocol
        for name in ("train", "valid", "test"):
            assert a.split.part(name) == b.split.part(name)


def triples(dataset: Dataset, part=None) -> set[tuple[str, str]]:
    inter = dataset.interactions if part is None else part
    return {(str(dataset.user_ids[u]), str(dataset.item_ids[i])) for u, i in zip(inter.users, inter.items)}


# --- tables --------------------------------------------------------------------------------------
def test_wrong_field_count_names_file_and_line(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("user_id,item_id,rating\nu1,i1,5\n\nu2,i2\n")
    with pytest.raises(DataError) as err:
        read_delimited(path)
    assert err.value.where == f"{path}:4"  # the blank line 3 still counts
    assert "expected 3 fields" in err.value.message and "found 2" in err.value.message


def test_non_numeric_value_names_line_and_column(tmp_path):
    path = tmp_path / "x.tsv"
    path.write_text("user_id\titem_id\trating\nu1\ti1\t5\nu2\ti2\tfive\n")
    table = read_delimited(path)
    with pytest.raises(DataError) as err:
        table.numbers("rating")
    assert err.value.where == f"{path}:3"
    assert "'rating'" in err.value.message and "'five'" in err.value.message


def test_missing_column_lists_the_columns_found(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("user,item\n1,2\n")
    table = read_table(path)
    with pytest.raises(DataError) as err:
        table.require("user_id")
    assert "missing column 'user_id'" in err.value.message
    assert "'user', 'item'" in err.value.message
    assert err.value.where == str(path)


@pytest.mark.parametrize("content", ["", "\n\n", "user_id,item_id\n"])
def test_empty_files_are_errors(tmp_path, content):
    path = tmp_path / "x.csv"
    path.write_text(content)
    with pytest.raises(DataError) as err:
        read_delimited(path)
    assert err.value.where == str(path)


def test_bad_utf8_and_bad_json_name_the_line(tmp_path):
    path = tmp_path / "x.csv"
    path.write_bytes(b"a,b\n1,2\n3,\xff\n")
    with pytest.raises(DataError) as err:
        read_delimited(path)
    assert err.value.where == f"{path}:3"
    path = tmp_path / "x.jsonl"
    path.write_text('{"item_id": "a"}\n\n{"item_id": "b",}\n')
    with pytest.raises(DataError) as err:
        read_jsonl(path)
    assert err.value.where == f"{path}:3"


def test_quoted_multiline_field_keeps_line_numbers(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text('id,text,n\n1,"two\nlines",3\n2,ok,x\n')
    table = read_delimited(path)
    assert table.frame["text"].iloc[0] == "two\nlines"
    with pytest.raises(DataError) as err:
        table.numbers("n")
    assert err.value.where == f"{path}:4"


def test_iso_timestamps_become_unix_seconds(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("t\n1970-01-02T00:00:00Z\n2001-09-09T01:46:40Z\n")
    assert read_delimited(path).timestamps("t").tolist() == [86400, 1_000_000_000]


# --- folder --------------------------------------------------------------------------------------
def folder_dataset(tmp_path: Path) -> Dataset:
    files = write_folder_source(tmp_path / "src")
    return import_folder(files["interactions"], files["items"], files["images"], user_col="uid",
                         item_col="iid", rating_col="stars", timestamp_col="when")


def test_folder_source(tmp_path):
    dataset = folder_dataset(tmp_path)
    assert list(dataset.user_ids) == ["alice", "bob", "carol"]
    # items table order first (p3, p1, p2, p9), then ids only seen in interactions (p4)
    assert list(dataset.item_ids) == ["p3", "p1", "p2", "p9", "p4"]
    assert dataset.interactions.nnz == 6  # 7 rows, one duplicate
    frame = dataset.interactions.to_frame()
    alice_p1 = frame[(frame.user == 0) & (frame.item == 1)]
    assert alice_p1["rating"].tolist() == [5.0] and alice_p1["timestamp"].tolist() == [100]
    items = dataset.items.set_index("item_id")
    images = tmp_path / "src" / "images"
    assert items.loc["p1", "image_path"] == str((images / "p1.jpg").resolve())
    assert items.loc["p2", "image_path"] == str((images / "p2.png").resolve())
    assert items.loc["p9", "image_path"] == str((images / "p9.webp").resolve())
    assert pd.isna(items.loc["p3", "image_path"])  # corrupt file counts as missing content
    assert pd.isna(items.loc["p4", "image_path"])
    assert items.loc["p3", "tags"] == '["light", "home"]'
    assert pd.isna(items.loc["p2", "tags"])
    prov = dataset.provenance
    assert prov["duplicates_removed"] == 1
    assert prov["unreadable_images"] == 1 and prov["unreadable_image_items"] == ["p3"]
    assert prov["images_without_item"] == 1  # zz.jpg
    assert prov["items_with_image"] == 3 and prov["items_without_image"] == 2
    assert prov["items_without_interactions"] == 1  # p9


@pytest.mark.parametrize("policy, rating, timestamp", [("last", 5.0, 100), ("first", 1.0, 90),
                                                       ("mean", 3.0, 100)])
def test_folder_duplicate_policies(tmp_path, policy, rating, timestamp):
    files = write_folder_source(tmp_path / "src")
    dataset = import_folder(files["interactions"], user_col="uid", item_col="iid", rating_col="stars",
                            timestamp_col="when", dedup=policy)
    frame = dataset.interactions.to_frame()
    row = frame[(frame.user == 0) & (frame.item == list(dataset.item_ids).index("p1"))]
    assert row["rating"].tolist() == [rating] and row["timestamp"].tolist() == [timestamp]


def test_folder_defaults_and_separator(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("user_id;item_id;rating\n1;10;4\n2;10;3\n")
    dataset = import_folder(path)
    assert dataset.interactions.nnz == 2 and dataset.interactions.ratings is not None
    assert dataset.interactions.timestamps is None
    dataset = import_folder(path, sep=";", rating_col=None)
    assert dataset.interactions.nnz == 2


def test_folder_bad_input(tmp_path):
    files = write_folder_source(tmp_path / "src")
    with pytest.raises(DataError) as err:
        import_folder(files["interactions"])  # default column names are not there
    assert "missing column 'user_id'" in err.value.message and "'uid'" in err.value.message
    with pytest.raises(DataError) as err:
        import_folder(files["interactions"], user_col="uid", item_col="iid", rating_col="score")
    assert "missing column 'score'" in err.value.message
    with pytest.raises(DataError) as err:
        import_folder(files["interactions"], images=tmp_path / "nope", user_col="uid", item_col="iid")
    assert err.value.where == str(tmp_path / "nope") and "image folder not found" in err.value.message
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,item_id,rating\na,b,5\nc,d,\n")
    with pytest.raises(DataError) as err:
        import_folder(bad)
    assert err.value.where == f"{bad}:3"
    items = tmp_path / "items.csv"
    items.write_text("item_id,title\nb,x\nb,y\n")
    with pytest.raises(DataError) as err:
        import_folder(_ok_csv(tmp_path), items)
    assert err.value.where == f"{items}:3" and "duplicate item id 'b'" in err.value.message


def _ok_csv(tmp_path: Path) -> Path:
    path = tmp_path / "ok.csv"
    path.write_text("user_id,item_id\na,b\n")
    return path


# --- elliot --------------------------------------------------------------------------------------
def test_elliot_fixed_split(tmp_path):
    paths = write_elliot(tmp_path)
    dataset = import_elliot(paths["train"], paths["valid"], paths["test"])
    assert dataset.split.protocol == "fixed"
    assert dataset.split.sizes() == {name: len(rows) for name, rows in ELLIOT.items()}
    for name, rows in ELLIOT.items():
        assert triples(dataset, dataset.split.part(name)) == {(u, i) for u, i, _ in rows}
    # u4 and d only occur in test: kept in the id maps and counted
    assert "u4" in set(dataset.user_ids) and "d" in set(dataset.item_ids)
    unknown = dataset.provenance["not_in_train"]
    assert unknown["test"]["users"] == 1 and unknown["test"]["items"] == 1
    assert unknown["valid"] == {"users": 0, "items": 0, "interactions_with_unknown_user": 0,
                                "interactions_with_unknown_item": 0}
    ratings = dataset.split.test.to_frame()
    assert sorted(ratings["rating"].tolist()) == [3.0, 5.0]


def test_elliot_bad_input(tmp_path):
    paths = write_elliot(tmp_path)
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    with pytest.raises(DataError) as err:
        import_elliot(paths["train"], empty, paths["test"])
    assert err.value.where == str(empty)
    with pytest.raises(DataError) as err:
        import_elliot(paths["train"], tmp_path / "missing.tsv", paths["test"])
    assert err.value.where == str(tmp_path / "missing.tsv") and "not found" in err.value.message
    clash = tmp_path / "clash.tsv"
    clash.write_text("u9\tz\t1\nu1\ta\t2\n")  # (u1, a) is in train line 1
    with pytest.raises(DataError) as err:
        import_elliot(paths["train"], paths["valid"], clash)
    assert err.value.where == f"{clash}:2" and f"{paths['train']}:1" in err.value.message
    ragged = tmp_path / "ragged.tsv"
    ragged.write_text("u1\ta\t5\nu2\tb\t4\t99\t7\n")
    with pytest.raises(DataError) as err:
        import_elliot(ragged, paths["valid"], paths["test"])
    assert err.value.where == f"{ragged}:2"
    wrong = tmp_path / "wrong.tsv"
    wrong.write_text("u1\ta\t5\nu2\tb\tgood\n")
    with pytest.raises(DataError) as err:
        import_elliot(wrong, paths["valid"], paths["test"])
    assert err.value.where == f"{wrong}:2" and "'good'" in err.value.message


def test_elliot_duplicates_inside_a_part_are_resolved(tmp_path):
    paths = write_elliot(tmp_path)
    paths["train"].write_text(paths["train"].read_text() + "u1\ta\t1\n")
    dataset = import_elliot(paths["train"], paths["valid"], paths["test"])
    assert dataset.provenance["duplicates_removed"]["train"] == 1
    frame = dataset.split.train.to_frame()
    u1, a = int(dataset.user_index(["u1"])[0]), int(dataset.item_index(["a"])[0])
    assert frame[(frame.user == u1) & (frame.item == a)]["rating"].tolist() == [1.0]  # file order: last


# --- mmrec ---------------------------------------------------------------------------------------
def test_mmrec_folder_with_features(tmp_path):
    folder = write_mmrec(tmp_path)
    dataset, features = import_mmrec(folder)
    assert dataset.n_items == MMREC_FEATURE_ROWS  # items 5 and 6 have features but no interactions
    assert list(dataset.item_ids) == [str(k) for k in range(MMREC_FEATURE_ROWS)]
    assert dataset.split.sizes() == {"train": 5, "valid": 2, "test": 3}
    labels = {0: "train", 1: "valid", 2: "test"}
    for code, name in labels.items():
        expected = {(str(u), str(i)) for u, i, _, _, x in MMREC if x == code}
        assert triples(dataset, dataset.split.part(name)) == expected
    assert set(features) == {"image", "text"}
    image = np.load(folder / "image_feat.npy")
    np.testing.assert_array_equal(features["image"].matrix, image)  # row k = item id k
    assert features["image"].mask.tolist() == [True] * 5 + [False, True]
    assert features["text"].mask.all()
    assert dataset.provenance["items_without_interactions"] == 2


def test_mmrec_single_inter_file_and_bad_input(tmp_path):
    folder = write_mmrec(tmp_path, features=False)
    dataset, features = import_mmrec(inter=folder / "data.inter")
    assert features == {} and dataset.n_items == 5
    bad = [*MMREC[:3], (2, 4, 4, 31, 3)]
    folder = write_mmrec(tmp_path / "bad", rows=bad, features=False)
    with pytest.raises(DataError) as err:
        import_mmrec(folder)
    assert err.value.where == f"{folder / 'data.inter'}:5" and "x_label" in err.value.message
    folder = write_mmrec(tmp_path / "neg", rows=[*MMREC[:2], (-1, 2, 1, 1, 0)], features=False)
    with pytest.raises(DataError) as err:
        import_mmrec(folder)
    assert err.value.where == f"{folder / 'data.inter'}:4"
    folder = write_mmrec(tmp_path / "short")
    np.save(folder / "text_feat.npy", np.zeros((3, 2), dtype=np.float32))  # item ids go to 4
    with pytest.raises(DataError) as err:
        import_mmrec(folder)
    assert err.value.where == str(folder / "text_feat.npy") and "3 rows" in err.value.message
    nolabel = tmp_path / "nolabel.inter"
    nolabel.write_text("userID\titemID\n0\t1\n")
    with pytest.raises(DataError) as err:
        import_mmrec(inter=nolabel)
    assert "missing column 'x_label'" in err.value.message
    with pytest.raises(DataError):
        import_mmrec(tmp_path / "nowhere")
    with pytest.raises(ConfigError):
        import_mmrec()


@pytest.mark.data
def test_mmrec_reference_data():
    folder = shared_data_path("ml100k-mmrec-ref")
    dataset, features = import_mmrec(folder)
    assert (dataset.n_users, dataset.n_items, dataset.interactions.nnz) == (943, 1682, 100_000)
    assert dataset.split.sizes() == {"train": 79_926, "valid": 10_037, "test": 10_037}
    assert features["image"].matrix.shape == (1682, 1280) and features["text"].matrix.shape == (1682, 384)
    # item index == item id, so feature rows stay aligned
    assert list(dataset.item_ids[:3]) == ["0", "1", "2"]
    assert int((dataset.split.train.item_counts() == 0).sum()) == 37  # as the reference README says


# --- movielens -----------------------------------------------------------------------------------
def test_movielens_with_posters_and_overviews(tmp_path):
    write_ml100k(tmp_path)
    posters = write_posters(tmp_path, [1, 2, 4])
    dataset = import_movielens(tmp_path, posters=posters, overviews=write_overviews(tmp_path))
    assert (dataset.n_users, dataset.n_items, dataset.interactions.nnz) == (3, 4, len(ML_RATINGS))
    items = dataset.items.set_index("item_id")
    assert items.loc["1", "genres"] == "Animation|Children's|Comedy"
    assert items.loc["3", "title"] == "Café au lait (1993)"  # decoded from latin-1
    assert items.loc["4", "title"] == '"Heat" (1995)' and items.loc["4", "genres"] == "Action|Crime|Thriller"
    assert items.loc["1", "overview"] == "Toys come to life.\nWoody is jealous."
    assert items.loc["2", "overview"] == "A spy stops a satellite."  # first of the duplicates
    assert pd.isna(items.loc["3", "overview"]) and pd.isna(items.loc["4", "overview"])
    assert pd.isna(items.loc["3", "image_path"])
    assert items.loc["4", "image_path"] == str((posters / "4.jpg").resolve())
    prov = dataset.provenance
    assert prov["overview_duplicates_dropped"] == 1 and prov["overviews_without_item"] == 1
    frame = dataset.interactions.to_frame()
    assert sorted(zip(frame.rating, frame.timestamp)) == sorted((float(r), t) for _, _, r, t in ML_RATINGS)


def test_movielens_bad_input(tmp_path):
    folder = write_ml100k(tmp_path)
    with pytest.raises(DataError) as err:
        import_movielens(tmp_path / "elsewhere")
    assert "not found" in err.value.message
    (folder / "u.data").write_text("1\t1\t5\t100\n1\t7\t5\t100\n")
    with pytest.raises(DataError) as err:
        import_movielens(folder)
    assert err.value.where == f"{folder / 'u.data'}:2" and "movie 7" in err.value.message
    (folder / "u.data").write_text("1\t1\t5\t100\n2\t2\t5\n")
    with pytest.raises(DataError) as err:
        import_movielens(folder)
    assert err.value.where == f"{folder / 'u.data'}:2"
    (folder / "u.data").write_text("1\t1\t5\t100\n")
    overviews = tmp_path / "o.csv"
    overviews.write_text("id,overview\n1,x\n")
    with pytest.raises(DataError) as err:
        import_movielens(folder, overviews=overviews)
    assert "missing column 'movie_id'" in err.value.message


@pytest.mark.data
def test_movielens_real_data():
    root = shared_data_path("ml100k-tmdb")
    dataset = import_movielens(root / "ml-100k", posters=root / "posters", overviews=root / "items.csv")
    assert (dataset.n_users, dataset.n_items, dataset.interactions.nnz) == (943, 1682, 100_000)
    items = dataset.items.set_index("item_id")
    assert items.loc["1", "title"] == "Toy Story (1995)"
    assert items.loc["1", "genres"] == "Animation|Children's|Comedy"
    assert dataset.info()["images"] == 1663
    assert int(items["overview"].notna().sum()) == 1682 - 18  # the README: 18 without an overview
    assert dataset.provenance["overview_duplicates_dropped"] == 64
    assert list(dataset.item_ids[:3]) == ["1", "2", "3"] and list(dataset.user_ids[:2]) == ["1", "2"]


# --- saving: round trips and the output folder ---------------------------------------------------
def test_round_trip_every_source(tmp_path):
    write_ml100k(tmp_path / "ml")
    elliot = write_elliot(tmp_path)
    mmrec, features = import_mmrec(write_mmrec(tmp_path))
    built = {
        "folder": (folder_dataset(tmp_path), {}),
        "elliot": (import_elliot(elliot["train"], elliot["valid"], elliot["test"]), {}),
        "mmrec": (mmrec, features),
        "movielens": (import_movielens(tmp_path / "ml", overviews=write_overviews(tmp_path)), {}),
    }
    for name, (dataset, feats) in built.items():
        out = tmp_path / "out" / name
        save_dataset(dataset, out, feats)
        assert not (out / PARTIAL_MARKER).exists()
        assert_same_dataset(Dataset.load(out), dataset)
        for modality, stored in feats.items():
            loaded = FeatureStore(out).load(modality)
            np.testing.assert_array_equal(loaded.matrix, stored.matrix)
            np.testing.assert_array_equal(loaded.mask, stored.mask)


def test_output_refuses_foreign_folders(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    dataset = import_movielens(write_ml100k(tmp_path))
    with pytest.raises(DataError) as err:
        save_dataset(dataset, foreign)
    assert "refusing to overwrite" in err.value.message
    assert sorted(p.name for p in foreign.iterdir()) == ["thesis.tex"]
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(DataError):
        output_state(a_file)
    empty = tmp_path / "empty"
    empty.mkdir()
    save_dataset(dataset, empty)
    assert Dataset.load(empty).interactions == dataset.interactions


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
    dataset = import_movielens(write_ml100k(tmp_path))

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("modalrec.io.write_json", broken)
    out = tmp_path / "out"
    with pytest.raises(OSError):
        save_dataset(dataset, out)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_reimport_replaces_tables_and_drops_old_split(tmp_path):
    paths = write_elliot(tmp_path)
    out = tmp_path / "out"
    save_dataset(import_elliot(paths["train"], paths["valid"], paths["test"]), out)
    assert (out / "split" / "split.json").exists()
    dataset = import_movielens(write_ml100k(tmp_path))
    save_dataset(dataset, out)
    assert not (out / "split").exists()
    assert_same_dataset(Dataset.load(out), dataset)


# --- downloads -----------------------------------------------------------------------------------
class _Server:
    """A local HTTP server: ``routes`` maps a path to (body, announced length)."""

    def __init__(self) -> None:
        routes: dict[str, tuple[bytes, int]] = {}

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the http.server API
                if self.path not in routes:
                    self.send_error(404)
                    return
                body, length = routes[self.path]
                self.send_response(200)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.routes = routes
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.close()


def test_download_ml100k_from_local_server(tmp_path, server):
    body = ml100k_zip_bytes(tmp_path)
    server.routes["/ml-100k.zip"] = (body, len(body))
    out = tmp_path / "dl"
    folder = download_ml100k(out, url=server.url("/ml-100k.zip"),
                             checksum="md5:" + hashlib.md5(body).hexdigest(), progress=False)
    assert folder == out / "ml-100k"
    assert (folder / "u.data").read_text().count("\n") == len(ML_RATINGS)
    assert import_movielens(folder).interactions.nnz == len(ML_RATINGS)
    assert sorted(p.name for p in out.iterdir()) == ["ml-100k", "ml-100k.zip"]
    server.routes.clear()  # a second call finds the data and downloads nothing
    assert download_ml100k(out, url=server.url("/ml-100k.zip"), progress=False) == folder


@pytest.mark.parametrize("case", ["partial", "corrupt", "checksum", "missing", "not-ml100k"])
def test_bad_downloads_leave_nothing(tmp_path, server, case):
    body = ml100k_zip_bytes(tmp_path)
    checksum = None
    if case == "partial":  # the server promises more bytes than it sends, then hangs up
        server.routes["/f.zip"] = (body[: len(body) // 2], len(body))
    elif case == "corrupt":  # complete length, damaged content
        damaged = bytearray(body)
        damaged[len(body) // 3 : len(body) // 3 + 64] = b"\0" * 64
        server.routes["/f.zip"] = (bytes(damaged), len(body))
    elif case == "checksum":
        server.routes["/f.zip"] = (body, len(body))
        checksum = "sha256:" + "0" * 64
    elif case == "not-ml100k":
        import io
        import zipfile

        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("other/readme.txt", "hello")
        server.routes["/f.zip"] = (buffer.getvalue(), len(buffer.getvalue()))
    out = tmp_path / "dl"
    with pytest.raises(DataError) as err:
        download_ml100k(out, url=server.url("/f.zip"), checksum=checksum, progress=False)
    assert not out.exists(), list(out.rglob("*"))
    expected = {"partial": "incomplete", "corrupt": "zip", "checksum": "checksum mismatch",
                "missing": "HTTP 404", "not-ml100k": "lacks ml-100k/u.data"}[case]
    assert expected in err.value.message


def test_fetch_into_existing_folder_keeps_it_clean(tmp_path, server):
    server.routes["/a.bin"] = (b"hello world", 20)
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(DataError):
        fetch(server.url("/a.bin"), tmp_path / "a.bin", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
    server.routes["/a.bin"] = (b"hello world", 11)
    fetch(server.url("/a.bin"), tmp_path / "a.bin", checksum="md5:" + hashlib.md5(b"hello world").hexdigest(),
          progress=False)
    assert (tmp_path / "a.bin").read_bytes() == b"hello world"


def test_image_helpers(tmp_path):
    from modalrec.data.sources.images import index_images, is_readable_image

    write_image(tmp_path / "a.png")
    write_image(tmp_path / "a.jpg")
    (tmp_path / "b.JPEG").write_bytes(b"\x89PNG broken")
    found = index_images(tmp_path)
    assert found["a"].name == "a.jpg"  # jpg is preferred over png for the same id
    assert found["b"].name == "b.JPEG"
    assert is_readable_image(found["a"]) and not is_readable_image(found["b"])
