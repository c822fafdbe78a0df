"""Prompts for the LVLM / LLM item descriptions: structured slot prompts, free description, control.

The reference study asks a vision-language model to act as a metadata annotator and fill five
slots per domain in the form ``[Slot] {value}, [Slot] {value}, ...`` with one worked example. The
wording here is our own; the slots are the study's. A prompt's identity is the sha256 of its
rendered template (item text left as a placeholder), recorded with every artifact made from it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from modalrec.errors import ConfigError

ITEM_PLACEHOLDER = "<<ITEM>>"
"""Stands for the item's own text (fields and hints) in the template that is hashed."""

Source = Literal["image", "text"]
"""What the model is shown: the item's picture (LVLM route) or its text (text-only LLM route)."""

_SOURCE_WORDS = {"image": "the picture", "text": "the product information below"}


class PromptSpec(BaseModel):
    """One prompt: an instruction, optional slots with a worked example, and item text options.

    ``kind='slots'`` asks for ``[Slot] {value}`` pairs; ``kind='free'`` asks for free text
    (description, control prompt). ``{source}`` in the instruction becomes "the picture" or
    "the product information below" depending on the route, and ``{slots}`` the slot list.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    kind: Literal["slots", "free"] = "slots"
    instruction: str = Field(min_length=1)
    slots: tuple[str, ...] = ()
    example: tuple[str, ...] | None = None
    include_fields: tuple[str, ...] = ()
    max_field_chars: int = Field(default=600, ge=20)

    @field_validator("slots", "include_fields", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("example", mode="before")
    @classmethod
    def _example_values(cls, value: Any, info: Any) -> Any:
        # accept a mapping slot -> value as well as a list in slot order
        if isinstance(value, Mapping):
            slots = info.data.get("slots") or ()
            missing = [s for s in slots if s not in value]
            if missing:
                raise ValueError(f"example lacks slot(s) {missing}")
            return tuple(str(value[s]) for s in slots)
        return value

    @model_validator(mode="after")
    def _check(self) -> PromptSpec:
        if self.kind == "slots":
            if not self.slots:
                raise ValueError("a slots prompt needs at least one slot")
            if len({s.lower() for s in self.slots}) != len(self.slots):
                raise ValueError("slot names must be unique (case-insensitively)")
            for slot in self.slots:
                if not re.fullmatch(r"[A-Za-z][A-Za-z0-9 _/-]*", slot):
                    raise ValueError(f"slot name {slot!r} must start with a letter and hold only letters, "
                                     "digits, spaces, '_', '-' or '/'")
            if self.example is None or len(self.example) != len(self.slots):
                raise ValueError("a slots prompt needs one example value per slot")
            for value in self.example:
                if any(ch in value for ch in "{}[]"):
                    raise ValueError(f"example value {value!r} must not contain braces or brackets")
        elif self.slots:
            raise ValueError("a free prompt takes no slots")
        return self

    # --- rendering --------------------------------------------------------------------------
    def answer_format(self) -> str:
        """The required answer line, with placeholders: ``[Slot] {value}, ...``."""
        return ", ".join(f"[{slot}] {{value}}" for slot in self.slots)

    def example_answer(self) -> str:
        return ", ".join(f"[{slot}] {{{value}}}" for slot, value in zip(self.slots, self.example or ()))

    def template(self, source: Source = "image", hints: bool = False) -> str:
        """The prompt with the item's text left as a placeholder (what the hash covers)."""
        instruction = self.instruction.replace("{source}", _SOURCE_WORDS[source])
        instruction = instruction.replace("{slots}", ", ".join(self.slots))
        lines = [instruction.strip()]
        if hints:
            lines.append("The visual hints list what an image classifier recognised in the item's photo; "
                         "they may be wrong.")
        if self.kind == "slots":
            lines += ["", "Answer on one line, in exactly this form and nothing else:", self.answer_format(),
                      "", "Example answer:", self.example_answer()]
        if self.include_fields or source == "text" or hints:
            lines += ["", "Product information:", ITEM_PLACEHOLDER]
        return "\n".join(lines)

    def prompt_hash(self, source: Source = "image", hints: bool = False) -> str:
        text = self.template(source, hints) + "\nfields=" + ",".join(self.include_fields)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def render(self, item: Mapping[str, Any] | None = None, source: Source = "image",
               hints: str | None = None) -> str:
        """The full prompt for one item: the template with its fields (and visual hints) filled in."""
        template = self.template(source, hints is not None)
        if ITEM_PLACEHOLDER not in template:
            return template
        fields = self.include_fields or (tuple(k for k in (item or {}) if k not in ("item_id", "image_path")))
        lines = []
        for field in fields:
            value = (item or {}).get(field)
            if value is None or (isinstance(value, float) and value != value):
                continue
            text = " ".join(str(value).split())
            if len(text) > self.max_field_chars:
                text = text[: self.max_field_chars].rstrip() + " ..."
            if text:
                lines.append(f"{field}: {text}")
        if hints:
            lines.append(f"visual hints: {hints}")
        return template.replace(ITEM_PLACEHOLDER, "\n".join(lines) if lines else "(none)")


# --- built-in prompts ---------------------------------------------------------------------------
_ANNOTATOR = ("You are a metadata annotator for an image database of {domain}. Look carefully at the item "
              "in {source} and describe it with one short keyword or phrase for each of these slots: "
              "{slots}.")


def _slots_prompt(name: str, domain: str, slots: tuple[str, ...], example: tuple[str, ...]) -> PromptSpec:
    return PromptSpec(name=name, kind="slots", instruction=_ANNOTATOR.replace("{domain}", domain),
                      slots=slots, example=example)


BUILTIN: dict[str, PromptSpec] = {
    "baby": _slots_prompt(
        "baby", "baby products", ("Category", "Age Group", "Purpose", "Material", "Usage Context"),
        ("Feeding Bottle", "Newborn", "Feeding", "Glass", "Home")),
    "pets": _slots_prompt(
        "pets", "pet products", ("Category", "Pet Type", "Purpose", "Material", "Usage Context"),
        ("Chew Toy", "Dog", "Dental Care", "Rubber", "Indoor Play")),
    "clothing": _slots_prompt(
        "clothing", "clothing, shoes and jewellery", ("Type", "Color", "Wear Location", "Material", "Style"),
        ("Hooded Sweatshirt", "Heather Grey", "Upper Body", "Cotton Fleece", "Casual")),
    "recipes": _slots_prompt(
        "recipes", "home-cooked recipes", ("Dish Type", "Cuisine", "Primary Ingredient", "Flavor Profile",
                                           "Meal Type"),
        ("Stew", "Moroccan", "Lamb", "Warm Spiced", "Dinner")),
    "movies": _slots_prompt(
        "movies", "movie posters", ("Genre", "Audience", "Visual Format", "Mood", "Setting"),
        ("Science Fiction", "Teenagers", "Animation", "Hopeful", "Space Station")),
    "describe": PromptSpec(
        name="describe", kind="free",
        instruction="Describe the item in {source} in one or two plain sentences of at most 30 words in "
                    "total. Mention what it is, what it looks like and what it is for."),
    "rocket": PromptSpec(
        name="rocket", kind="free",
        instruction="Explain briefly how the thing in {source} could help someone build a rocket."),
}
"""Domain slot prompts (the study's five slots each), a free description and the off-task control."""


def prompt_names() -> list[str]:
    return sorted(BUILTIN)


def load_prompt(name_or_path: str | Path, include_fields: list[str] | tuple[str, ...] | None = None) -> PromptSpec:
    """A built-in prompt by name, or a user prompt from a YAML/JSON file (keys of ``PromptSpec``).

    ``include_fields`` overrides the prompt's item text fields (the CLI's ``--include-fields``).
    """
    key = str(name_or_path)
    path = Path(key)
    if key in BUILTIN:
        spec = BUILTIN[key]
    elif path.suffix.lower() in (".yaml", ".yml", ".json") or path.exists():
        spec = prompt_from_file(path)
    else:
        raise ConfigError(f"unknown prompt {key!r}", where="--prompt",
                          hint=f"use one of {', '.join(prompt_names())} or a YAML/JSON prompt file")
    if include_fields is not None:
        spec = spec.model_copy(update={"include_fields": tuple(include_fields)})
    return spec


def prompt_from_file(path: str | Path) -> PromptSpec:
    """Read a user-defined prompt: ``name``, ``instruction``, ``slots``, ``example`` (and options)."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise ConfigError("prompt file not found", where=str(path), hint="check the path")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"cannot read the prompt file: {error}", where=str(path)) from error
    return prompt_from_dict(data, where=str(path))


def prompt_from_dict(data: Any, where: str = "prompt") -> PromptSpec:
    if not isinstance(data, Mapping):
        raise ConfigError("a prompt must be a mapping with name, instruction, slots and example", where=where)
    try:
        return PromptSpec.model_validate(dict(data))
    except ValidationError as error:
        first = error.errors()[0]
        key = ".".join(str(p) for p in first.get("loc", ())) or "prompt"
        raise ConfigError(first.get("msg", str(error)), where=f"{where}: {key}",
                          hint="a prompt needs name, instruction, slots (list) and example (one value per slot)",
                          ) from error
