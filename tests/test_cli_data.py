"""``modalrec data ...`` through ``modalrec.cli.main.main``: exit codes, printed summaries, and one
clean stderr line (no traceback, nothing written) for bad input."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest

from data_files import (
    ML_RATINGS,
    ml100k_zip_bytes,
    write_elliot,
    write_folder_source,
    write_ml100k,
    write_mmrec,
    write_overviews,
    write_posters,
)
from modalrec.cli import main as cli_main
from modalrec.data.dataset import Dataset
from modalrec.features.store import FeatureStore


@pytest.fixture(autouse=True)
def only_data_group(monkeypatch):
    """Build the parser from the data group alone, so these tests do not depend on other groups."""
    monkeypatch.setattr(cli_main, "GROUPS", ["data"])


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli_main.main(["data", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err: str) -> str:
    """The single error line; fails if stderr holds a traceback or more than one error."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("modalrec: error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_movielens_import_info_and_split(tmp_path, capsys):
    write_ml100k(tmp_path)
    posters = write_posters(tmp_path, [1, 2])
    out = tmp_path / "ds"
    code, stdout, _ = run(capsys, "import", "--format", "movielens", "--path", tmp_path / "ml-100k",
                          "--posters", posters, "--overviews", write_overviews(tmp_path), "--out", out)
    assert code == 0
    assert f"imported movielens: 3 users, 4 items, {len(ML_RATINGS)} interactions" in stdout
    code, stdout, _ = run(capsys, "info", out)
    assert code == 0
    assert "users         3" in stdout and "items         4" in stdout
    assert f"interactions  {len(ML_RATINGS)}" in stdout and f"density       {9 / 12:.6f}" in stdout
    assert "images        2" in stdout and "split         none" in stdout
    assert "title, genres, overview" in stdout
    code, stdout, _ = run(capsys, "split", out, "--protocol", "leave-one-out", "--seed", "4")
    # users 1 and 2 (4 and 3 ratings) give one each; user 3 (2 ratings) keeps both in train
    assert code == 0 and stdout.strip() == "split leave-one-out: train 5 / valid 2 / test 2"
    code, stdout, _ = run(capsys, "info", out)
    assert "split         leave-one-out: train 5 / valid 2 / test 2" in stdout
    assert Dataset.load(out).split.protocol == "leave-one-out"


def test_split_protocols_and_bad_ratios(tmp_path, capsys):
    write_ml100k(tmp_path)
    out = tmp_path / "ds"
    assert run(capsys, "import", "--format", "movielens", "--path", tmp_path, "--out", out)[0] == 0
    code, stdout, _ = run(capsys, "split", out, "--protocol", "random", "--ratios", "0.5,0.25,0.25")
    assert code == 0 and stdout.startswith("split random: train ")
    before = Dataset.load(out).split
    code, _, err = run(capsys, "split", out, "--protocol", "random", "--ratios", "0.5,0.6,0.1")
    assert code == 2 and "--ratios" in error_line(err) and "sum to 1" in err
    after = Dataset.load(out).split
    assert after.train == before.train  # nothing changed
    code, stdout, _ = run(capsys, "split", out, "--protocol", "cold-item", "--seed", "1")
    assert code == 0 and "cold items" in stdout
    code, _, err = run(capsys, "split", tmp_path / "nothing", "--protocol", "random")
    assert code == 2 and "not a modalrec data set" in error_line(err)


def test_separate_user_and_item_k(tmp_path, capsys):
    write_ml100k(tmp_path)
    out = tmp_path / "ds"
    assert run(capsys, "import", "--format", "movielens", "--path", tmp_path, "--user-k", "3", "--out", out)[0] == 0
    dataset = Dataset.load(out)
    # users 1 and 2 have 4 and 3 ratings, user 3 only 2; items are not thresholded
    assert list(dataset.user_ids) == ["1", "2"] and dataset.n_items == 4
    step = dataset.provenance["filters"][0]
    assert (step["user_k"], step["item_k"]) == (3, 0)
    assert run(capsys, "import", "--format", "movielens", "--path", tmp_path, "--k-core", "2", "--item-k", "3",
               "--out", out)[0] == 0
    step = Dataset.load(out).provenance["filters"][0]
    assert (step["user_k"], step["item_k"]) == (2, 3)


@pytest.mark.data
def test_real_movielens_random_split_has_the_reference_sizes(tmp_path, capsys):
    from conftest import shared_data_path

    root = shared_data_path("ml100k-tmdb")
    out = tmp_path / "ml"
    code, stdout, _ = run(capsys, "import", "--format", "movielens", "--path", root / "ml-100k", "--posters",
                          root / "posters", "--overviews", root / "items.csv", "--out", out)
    assert code == 0 and "943 users, 1682 items, 100000 interactions" in stdout
    code, stdout, _ = run(capsys, "split", out, "--protocol", "random", "--seed", "0")
    assert code == 0 and stdout.strip() == "split random: train 79926 / valid 10037 / test 10037"


def test_elliot_fixed_split_is_protected(tmp_path, capsys):
    paths = write_elliot(tmp_path)
    out = tmp_path / "ds"
    code, stdout, _ = run(capsys, "import", "--format", "elliot", "--train", paths["train"], "--valid",
                          paths["valid"], "--test", paths["test"], "--out", out)
    assert code == 0 and "split fixed: train 5 / valid 2 / test 2" in stdout
    code, _, err = run(capsys, "split", out, "--protocol", "random")
    assert code == 2 and "--replace" in error_line(err)
    assert Dataset.load(out).split.protocol == "fixed"
    code, _, _ = run(capsys, "split", out, "--protocol", "random", "--replace")
    assert code == 0 and Dataset.load(out).split.protocol == "random"


def test_mmrec_import_stores_features_and_filters_keep_them_aligned(tmp_path, capsys):
    folder = write_mmrec(tmp_path)
    out = tmp_path / "ds"
    code, stdout, _ = run(capsys, "import", "--format", "mmrec", "--path", folder, "--out", out)
    assert code == 0 and "features image: 7 x 4" in stdout
    store = FeatureStore(out)
    assert store.names() == ["image", "text"]
    np.testing.assert_array_equal(store.load("image").matrix, np.load(folder / "image_feat.npy"))
    out2 = tmp_path / "core"
    code, stdout, _ = run(capsys, "import", "--format", "mmrec", "--path", folder, "--k-core", "2",
                          "--out", out2)
    assert code == 0
    dataset = Dataset.load(out2)
    kept = [int(i) for i in dataset.item_ids]
    assert kept == [0, 1, 2, 3, 4]  # items 5 and 6 have no interaction, so no 2-core membership
    np.testing.assert_array_equal(FeatureStore(out2).load("text").matrix, np.load(folder / "text_feat.npy")[kept])


def test_folder_import_with_column_mapping(tmp_path, capsys):
    files = write_folder_source(tmp_path / "src")
    out = tmp_path / "ds"
    code, stdout, _ = run(capsys, "import", "--format", "folder", "--interactions", files["interactions"],
                          "--items", files["items"], "--images", files["images"], "--user-col", "uid",
                          "--item-col", "iid", "--rating-col", "stars", "--timestamp-col", "when",
                          "--sep", ",", "--min-rating", "3", "--out", out)
    assert code == 0 and "imported folder: 3 users" in stdout
    dataset = Dataset.load(out)
    assert dataset.interactions.ratings.min() >= 3
    assert dataset.provenance["filters"][0]["step"] == "min_rating"


@pytest.mark.parametrize("case", ["malformed", "missing-column", "empty", "x-label", "bad-image-dir"])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, case):
    out = tmp_path / "ds"
    if case == "malformed":
        paths = write_elliot(tmp_path)
        paths["valid"].write_text("u1\tc\t4\nu3\ta\n")
        argv = ["--format", "elliot", "--train", paths["train"], "--valid", paths["valid"], "--test",
                paths["test"]]
        where = f"{paths['valid']}:2"
    elif case == "missing-column":
        path = tmp_path / "x.csv"
        path.write_text("user,item\n1,2\n")
        argv = ["--format", "folder", "--interactions", path]
        where = "missing column 'user_id' (columns found: 'user', 'item')"
    elif case == "empty":
        paths = write_elliot(tmp_path)
        paths["test"].write_text("")
        argv = ["--format", "elliot", "--train", paths["train"], "--valid", paths["valid"], "--test",
                paths["test"]]
        where = str(paths["test"])
    elif case == "x-label":
        folder = write_mmrec(tmp_path, rows=[(0, 0, 5, 1, 0), (0, 1, 5, 1, 7)], features=False)
        argv = ["--format", "mmrec", "--path", folder]
        where = f"{folder / 'data.inter'}:3"
    else:
        files = write_folder_source(tmp_path / "src")
        argv = ["--format", "folder", "--interactions", files["interactions"], "--user-col", "uid",
                "--item-col", "iid", "--images", tmp_path / "no-images"]
        where = str(tmp_path / "no-images")
    code, _, err = run(capsys, "import", *argv, "--out", out)
    assert code == 2
    assert where in error_line(err)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ds")]


def test_refuses_to_overwrite_a_foreign_folder(tmp_path, capsys):
    write_ml100k(tmp_path)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    code, _, err = run(capsys, "import", "--format", "movielens", "--path", tmp_path, "--out", out)
    assert code == 2 and "refusing to overwrite" in error_line(err)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    code, _, err = run(capsys, "synth", "--out", out, "--users", "10", "--items", "10")
    assert code == 2 and "refusing to overwrite" in error_line(err)


def test_reimport_into_a_dataset_replaces_it(tmp_path, capsys):
    paths = write_elliot(tmp_path)
    write_ml100k(tmp_path)
    out = tmp_path / "ds"
    assert run(capsys, "import", "--format", "elliot", "--train", paths["train"], "--valid", paths["valid"],
               "--test", paths["test"], "--out", out)[0] == 0
    assert run(capsys, "import", "--format", "movielens", "--path", tmp_path, "--out", out)[0] == 0
    dataset = Dataset.load(out)
    assert dataset.provenance["source"] == "movielens" and dataset.split is None


@pytest.mark.parametrize("argv, flag", [
    (["--format", "elliot", "--train", "a", "--valid", "b", "--test", "c", "--posters", "p"], "--posters"),
    (["--format", "elliot", "--train", "a"], "--valid"),
    (["--format", "movielens"], "--path"),
    (["--format", "mmrec"], "--path"),
    (["--format", "folder", "--interactions", "a", "--k-core", "-1"], "--k-core"),
    (["--format", "amazon2023", "--reviews", "r", "--meta", "m", "--user-k", "3"], "--user-k"),
])
def test_option_errors_name_the_option(tmp_path, capsys, argv, flag):
    code, _, err = run(capsys, "import", *argv, "--out", tmp_path / "ds")
    assert code == 2 and flag in error_line(err)
    assert not (tmp_path / "ds").exists()


def test_synth(tmp_path, capsys):
    out = tmp_path / "syn"
    code, stdout, err = run(capsys, "synth", "--out", out, "--users", "40", "--items", "30", "--seed", "2",
                            "--content-weight", "0.7")
    assert code == 0, err
    dataset = Dataset.load(out)
    assert dataset.n_items == 30 and dataset.n_users <= 40
    assert f"synthesized: {dataset.n_users} users, 30 items" in stdout
    config = dataset.provenance["config"]
    assert (config["seed"], config["n_users"], config["n_items"], config["content_weight"]) == (2, 40, 30, 0.7)


def test_amazon2023_wiring(tmp_path, capsys, monkeypatch):
    from modalrec.data.sources import amazon2023

    calls = {}

    def fake_import(reviews, meta, out, **options):
        calls["import"] = (reviews, meta, out, options)
        dataset = Dataset.from_frames(_frame(), provenance={"source": "amazon2023"})
        dataset.save(out)
        return dataset

    def fake_download(category, out):
        calls["download"] = (category, out)
        return out / "a.jsonl.gz", out / "meta_a.jsonl.gz"

    monkeypatch.setattr(amazon2023, "import_amazon2023", fake_import)
    monkeypatch.setattr(amazon2023, "download_amazon2023", fake_download)
    out = tmp_path / "ds"
    code, stdout, _ = run(capsys, "import", "--format", "amazon2023", "--reviews", "r.jsonl", "--meta", "m.jsonl",
                          "--k-core", "10", "--text-fields", "title,features", "--download-images",
                          "--drop-failed-images", "--workers", "4", "--min-rating", "4", "--out", out)
    assert code == 0 and "imported amazon2023: 2 users" in stdout
    reviews, meta, target, options = calls["import"]
    assert (reviews, meta, target) == (Path("r.jsonl"), Path("m.jsonl"), out)
    assert options == {"k_core": 10, "text_fields": ("title", "features"), "download_images": True,
                       "drop_failed_images": True, "workers": 4, "min_rating": 4.0}
    run(capsys, "import", "--format", "amazon2023", "--reviews", "r", "--meta", "m", "--out", tmp_path / "d2")
    assert calls["import"][3] == {"k_core": 5, "download_images": False, "drop_failed_images": False}
    code, stdout, _ = run(capsys, "download", "amazon2023", "--category", "Baby_Products", "--out", tmp_path / "raw")
    assert code == 0 and calls["download"] == ("Baby_Products", tmp_path / "raw")
    assert "--reviews" in stdout


def _frame():
    import pandas as pd

    return pd.DataFrame({"user_id": ["a", "b"], "item_id": ["x", "x"]})


@pytest.fixture
def zip_server(tmp_path):
    body = ml100k_zip_bytes(tmp_path)
    routes = {"/good.zip": body, "/cut.zip": body[: len(body) // 2]}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server API
            data = routes.get(self.path)
            if data is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))  # /cut.zip promises more than it sends
            self.end_headers()
            self.wfile.write(data)
            self.close_connection = True

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", hashlib.md5(body).hexdigest()
    httpd.shutdown()
    httpd.server_close()


def test_download_ml100k(tmp_path, capsys, zip_server):
    base, md5 = zip_server
    out = tmp_path / "raw"
    code, stdout, _ = run(capsys, "download", "ml100k", "--out", out, "--url", f"{base}/good.zip",
                          "--checksum", f"md5:{md5}")
    assert code == 0 and (out / "ml-100k" / "u.data").is_file()
    assert f"--path {out / 'ml-100k'}" in stdout
    bad = tmp_path / "bad"
    code, _, err = run(capsys, "download", "ml100k", "--out", bad, "--url", f"{base}/cut.zip")
    assert code == 2 and "incomplete" in error_line(err)
    assert not bad.exists()
    code, _, err = run(capsys, "download", "ml100k", "--out", bad, "--url", f"{base}/good.zip",
                       "--checksum", "crc:1")
    assert code == 2 and "--checksum" in error_line(err)


def test_data_without_action_prints_help(capsys):
    code, stdout, _ = run(capsys)
    assert code == 2 and "synth" in stdout and "import" in stdout
