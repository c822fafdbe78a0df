"""The slot parser on the forms real LVLMs produce, compliance statuses, and the real output files."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import shared_data_path
from modalrec.features.prompts import BUILTIN
from modalrec.features.slot_parser import (
    MISSING,
    RECOVERED,
    STRICT,
    SlotParser,
    compliance,
    parse_frame,
    parse_slots,
)

BABY = BUILTIN["baby"].slots
RECIPES = BUILTIN["recipes"].slots
WANT = ["Bedding", "Infant", "Comfort", "Cotton", "Bedroom"]


def values(text, slots=BABY):
    return list(parse_slots(text, slots).values.values())


def statuses(text, slots=BABY):
    return list(parse_slots(text, slots).status.values())


def test_strict_form():
    text = "[Category] {Bedding}, [Age Group] {Infant}, [Purpose] {Comfort}, [Material] {Cotton}, [Usage Context] {Bedroom}."
    result = parse_slots(text, BABY)
    assert list(result.values.values()) == WANT
    assert result.strict and result.complete and result.n_found == 5


@pytest.mark.parametrize("text", [
    "Category: Bedding, Age Group: Infant, Purpose: Comfort, Material: Cotton, Usage Context: Bedroom",
    "Category: Bedding\nAge Group: Infant\nPurpose: Comfort\nMaterial: Cotton\nUsage Context: Bedroom\n\n"
    "(Note: the image shows a patterned fabric.)",
    "- **Category**: Bedding\n- **Age Group**: Infant\n- **Purpose**: Comfort\n* **Material:** Cotton\n"
    "* **Usage Context:** Bedroom",
    "['Category'] {Bedding}, ['Age Group'] {Infant}, ['Purpose'] {Comfort}, ['Material'] {Cotton}, "
    "['Usage Context'] {Bedroom}",
    'category: "Bedding"; AGE_GROUP: Infant; purpose = Comfort; [ material ] {Cotton}; usage-context: Bedroom',
    '{"Category": "Bedding", "Age Group": "Infant", "Purpose": "Comfort", "Material": "Cotton", '
    '"Usage Context": "Bedroom"}',
    "Category: {Bedding}, Age Group: {Infant}, Purpose: {Comfort}, Material: {Cotton}, Usage Context: {Bedroom}",
    "[Category] {Bedding], [Age Group] {Infant}, [Purpose] {Comfort], [Material] {Cotton}, [Usage Context] {Bedroom}",
    "Sure! Here are the keywords:\n1. Category - Bedding\n2. Age Group - Infant\n3. Purpose - Comfort\n"
    "4. Material - Cotton\n5. Usage Context - Bedroom",
    "Bedding, Infant, Comfort, Cotton, Bedroom",
])
def test_recovered_forms(text):
    result = parse_slots(text, BABY)
    assert list(result.values.values()) == WANT, text
    assert result.complete and not result.strict
    assert set(result.status.values()) <= {STRICT, RECOVERED}


def test_mixed_strict_and_recovered_statuses():
    text = "Category: Bedding, [Age Group] {Infant}, [Purpose] {Comfort}, Material: Cotton, [Usage Context] {Bedroom}"
    assert statuses(text) == [RECOVERED, STRICT, STRICT, RECOVERED, STRICT]


def test_partial_and_unknown_labels():
    text = "[Category] {Bedding}, [Purpose] {Comfort}, [Design] {Crib}"
    assert values(text) == ["Bedding", None, "Comfort", None, None]
    assert statuses(text) == [STRICT, MISSING, STRICT, MISSING, MISSING]
    # a colon value stops at an unknown label
    assert values("Category: Bedding, Design: Crib")[0] == "Bedding"
    assert values("Usage Context: Home, Design: Crib")[4] == "Home"


def test_label_replaced_by_a_value():
    # Phi-3.5-V sometimes writes the value where the first label belongs
    assert values("Bedding {Children}, [Age Group] {Toddler}, [Purpose] {Comfort}, [Material] {Fabric}, "
                  "[Usage Context] {Bedroom}") == ["Bedding", "Toddler", "Comfort", "Fabric", "Bedroom"]
    assert values("Bed {Infant}, [Purpose] {Sleeping}, [Material] {Wood}, [Usage Context] {Home}") == \
        ["Bed", "Infant", "Sleeping", "Wood", "Home"]
    assert values("Pasta {Pasta} {Italian} {Cheese} {Savory} {Dinner}", RECIPES) == \
        ["Pasta", "Italian", "Cheese", "Savory", "Dinner"]
    assert values("Mashed Potatoes {Dish Type} [Cuisine] {American} [Primary Ingredient] {Potatoes} "
                  "[Flavor Profile] {Creamy} [Meal Type] {Side Dish}.", RECIPES) == \
        ["Mashed Potatoes", "American", "Potatoes", "Creamy", "Side Dish"]
    assert values("French toast {Dish Type} {Breakfast} {Cuisine} {French} {Primary Ingredient} {Bread} "
                  "{Flavor Profile} {Sweet} {Meal Type} {Breakfast}.", RECIPES) == \
        ["Breakfast", "French", "Bread", "Sweet", "Breakfast"]


def test_what_is_not_a_slot_value():
    assert values("Sleeping Bag") == ["Sleeping Bag", None, None, None, None]
    assert values("I'm sorry, but I cannot provide assistance with that request.") == [None] * 5
    assert values("") == [None] * 5 and values(None) == [None] * 5 and values(float("nan")) == [None] * 5
    assert values("Here are the keywords:") == [None] * 5
    assert statuses("[Category] {}, [Age Group] {Infant}")[:2] == [MISSING, STRICT]
    # a label word inside a value is not a label
    assert values("[Category] {Multi-purpose Material Kit}, [Purpose] {Storage}")[:3] == \
        ["Multi-purpose Material Kit", None, "Storage"]


def test_frame_and_compliance_numbers():
    texts = [
        "[Category] {A}, [Age Group] {B}, [Purpose] {C}, [Material] {D}, [Usage Context] {E}",
        "Category: A, Age Group: B, Purpose: C, Material: D, Usage Context: E",
        "[Category] {A}, Age Group: B",
        "nonsense that is far too long to be a single keyword value at all",
    ]
    frame = parse_frame(texts, BABY)
    assert list(frame.columns[:4]) == ["value:Category", "status:Category", "value:Age Group", "status:Age Group"]
    table = compliance(frame, BABY)
    assert table.loc["Category"].tolist() == [0.5, 0.25, 0.25]
    assert table.loc["Age Group"].tolist() == [0.25, 0.5, 0.25]
    assert table.loc["Material"].tolist() == [0.25, 0.25, 0.5]
    assert table.loc["all slots"].tolist() == [0.25, 0.25, 0.5]
    only_first = compliance(frame, BABY, pd.Series([True, False, False, False]))
    assert only_first.loc["all slots"].tolist() == [1.0, 0.0, 0.0]


_VALUE = st.text(alphabet=st.characters(whitelist_categories=("Lu", "Ll", "Nd"), max_codepoint=0x24F),
                 min_size=1, max_size=12)
_VALUES = st.lists(_VALUE, min_size=1, max_size=3).map(" ".join)


@settings(max_examples=60, deadline=None)
@given(st.lists(_VALUES, min_size=5, max_size=5), st.sampled_from([", ", " ", "\n", "; "]))
def test_round_trip_strict_and_colon_forms(vals, sep):
    parser = SlotParser(BABY)
    strict = sep.join(f"[{s}] {{{v}}}" for s, v in zip(BABY, vals))
    result = parser.parse(strict)
    assert list(result.values.values()) == vals and result.strict
    colon = "\n".join(f"{s}: {v}" for s, v in zip(BABY, vals))
    result = parser.parse(colon)
    assert list(result.values.values()) == vals
    assert set(result.status.values()) == {RECOVERED}


# --- the real output files ----------------------------------------------------------------------
def _complete_share(path, slots):
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    parsed = parse_frame(frame.iloc[:, 1], slots)
    status = parsed[[f"status:{s}" for s in slots]]
    return float((status != MISSING).all(axis=1).mean()), float((status == STRICT).all(axis=1).mean())


@pytest.mark.data
@pytest.mark.parametrize(("file", "slots", "min_complete", "strict_range"), [
    ("amazon2023-baby-lvlm/baby_QWEN2VL_keywords.csv", BABY, 0.999, (0.99, 1.0)),
    ("amazon2023-baby-lvlm/baby_phi35vl_keywords.csv", BABY, 0.95, (0.08, 0.2)),
    ("allrecipes/lvlm_outputs/allrecipes_qwen2_keywords.csv", RECIPES, 0.99, (0.99, 1.0)),
    ("allrecipes/lvlm_outputs/allrecipes_phi35_keyword.csv", RECIPES, 0.95, (0.7, 0.9)),
])
def test_real_outputs_have_all_five_slots_recovered(file, slots, min_complete, strict_range):
    complete, strict = _complete_share(shared_data_path(*file.split("/")), slots)
    assert complete >= min_complete
    assert strict_range[0] <= strict <= strict_range[1]  # Phi-3.5-V keeps the strict form only for some items
