"""Built-in and user-defined prompts: slots, answer format, example, item fields, hashes, errors."""

from __future__ import annotations

import hashlib
import json

import pytest

from modalrec.errors import ConfigError
from modalrec.features.prompts import (
    BUILTIN,
    ITEM_PLACEHOLDER,
    PromptSpec,
    load_prompt,
    prompt_from_dict,
    prompt_names,
)
from modalrec.features.slot_parser import parse_slots

PAPER_SLOTS = {
    "baby": ("Category", "Age Group", "Purpose", "Material", "Usage Context"),
    "pets": ("Category", "Pet Type", "Purpose", "Material", "Usage Context"),
    "clothing": ("Type", "Color", "Wear Location", "Material", "Style"),
    "recipes": ("Dish Type", "Cuisine", "Primary Ingredient", "Flavor Profile", "Meal Type"),
    "movies": ("Genre", "Audience", "Visual Format", "Mood", "Setting"),
}


@pytest.mark.parametrize("domain", sorted(PAPER_SLOTS))
def test_domain_prompts_have_the_study_slots_format_and_example(domain):
    spec = BUILTIN[domain]
    assert spec.kind == "slots" and spec.slots == PAPER_SLOTS[domain]
    text = spec.render()
    answer = ", ".join(f"[{s}] {{value}}" for s in spec.slots)
    assert answer in text
    assert "metadata annotator" in text and "the picture" in text
    # the worked example is itself a strict answer to the prompt
    example = spec.example_answer()
    assert example in text
    parsed = parse_slots(example, spec.slots)
    assert parsed.strict and list(parsed.values.values()) == list(spec.example)


def test_free_and_control_prompts():
    describe, rocket = BUILTIN["describe"], BUILTIN["rocket"]
    assert describe.kind == rocket.kind == "free" and not describe.slots
    assert "at most 30 words" in describe.render()
    assert "rocket" in rocket.render() and "[" not in rocket.render()
    assert set(prompt_names()) == set(PAPER_SLOTS) | {"describe", "rocket"}


def test_hash_is_sha256_of_the_rendered_template():
    spec = BUILTIN["baby"]
    template = spec.template("image")
    assert spec.prompt_hash("image") == hashlib.sha256((template + "\nfields=").encode()).hexdigest()
    hashes = {s.prompt_hash("image") for s in BUILTIN.values()} | {s.prompt_hash("text") for s in BUILTIN.values()}
    assert len(hashes) == 2 * len(BUILTIN)
    with_fields = spec.model_copy(update={"include_fields": ("title",)})
    assert with_fields.prompt_hash() != spec.prompt_hash()
    assert ITEM_PLACEHOLDER in with_fields.template() and ITEM_PLACEHOLDER not in spec.template()
    # the item's own text does not change the hash: it is a placeholder in the template
    assert with_fields.prompt_hash() == with_fields.model_copy().prompt_hash()


def test_item_fields_are_rendered_and_truncated():
    spec = BUILTIN["pets"].model_copy(update={"include_fields": ("title", "description"), "max_field_chars": 20})
    text = spec.render({"title": "Chew  toy\nfor dogs", "description": "x" * 50, "brand": "Acme"})
    assert "Product information:\ntitle: Chew toy for dogs\ndescription: " + "x" * 20 + " ..." in text
    assert "Acme" not in text
    empty = spec.render({"title": None, "description": float("nan")})
    assert empty.endswith("Product information:\n(none)")
    # the text route shows all text fields when none are chosen, and says where to look
    text_route = BUILTIN["pets"].render({"title": "Leash", "brand": "Acme"}, source="text")
    assert "the product information below" in text_route and "title: Leash\nbrand: Acme" in text_route


def test_user_prompt_from_yaml_and_json(tmp_path):
    yaml_file = tmp_path / "books.yaml"
    yaml_file.write_text(
        "name: books\ninstruction: Annotate the book cover in {source} ({slots}).\n"
        "slots: [Genre, Era, Tone]\nexample: {Genre: Mystery, Era: Victorian, Tone: Dark}\n")
    spec = load_prompt(yaml_file)
    assert spec.name == "books" and spec.slots == ("Genre", "Era", "Tone")
    assert spec.example == ("Mystery", "Victorian", "Dark")
    assert "(Genre, Era, Tone)" in spec.render()
    assert "[Genre] {Mystery}, [Era] {Victorian}, [Tone] {Dark}" in spec.render()
    json_file = tmp_path / "free.json"
    json_file.write_text(json.dumps({"name": "mood", "kind": "free", "instruction": "One word for {source}."}))
    assert load_prompt(json_file).render() == "One word for the picture."
    assert load_prompt("baby", include_fields=["title"]).include_fields == ("title",)


@pytest.mark.parametrize(("data", "message"), [
    ({"name": "x", "instruction": "i", "slots": ["A", "B"], "example": ["a"]}, "one example value per slot"),
    ({"name": "x", "instruction": "i", "slots": ["A", "a"], "example": ["1", "2"]}, "unique"),
    ({"name": "x", "instruction": "i", "slots": [], "example": []}, "at least one slot"),
    ({"name": "x", "instruction": "i", "slots": ["A{"], "example": ["1"]}, "must start with a letter"),
    ({"name": "x", "instruction": "i", "slots": ["A"], "example": ["{1}"]}, "braces"),
    ({"name": "x", "instruction": "i", "slots": ["A"], "example": {"B": "1"}}, "lacks slot"),
    ({"name": "x", "kind": "free", "instruction": "i", "slots": ["A"]}, "takes no slots"),
    ({"name": "x", "instruction": "i", "slots": ["A"], "example": ["1"], "colour": 1}, "Extra inputs"),
])
def test_bad_user_prompts_are_config_errors(data, message):
    with pytest.raises(ConfigError, match=message):
        prompt_from_dict(data, where="p.yaml")


def test_unknown_prompt_and_bad_file(tmp_path):
    with pytest.raises(ConfigError, match="unknown prompt 'nope'.*baby"):
        load_prompt("nope")
    with pytest.raises(ConfigError, match="not found"):
        load_prompt(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_prompt(bad)
    spec = PromptSpec(name="x", instruction="i", slots="A, B", example=["1", "2"])
    assert spec.slots == ("A", "B")
