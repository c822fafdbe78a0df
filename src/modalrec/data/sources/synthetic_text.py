"""Item titles and descriptions for the synthetic world.

The text is a function of a :class:`TextSpec` only: the text attributes (material, purpose,
style), the attribute shared with the picture (category), a brand and a random generator for the
wording. Image-only attributes (colour, pattern, emblem) are not parameters here, and no template,
synonym, brand or filler sentence uses their vocabulary (``IMAGE_VOCABULARY``; the tests check
every generated text against it).

Each attribute value is stated in plain words a sentence encoder picks up, through varied
synonyms and templates, among distractors: brand names, model codes and filler sentences that say
nothing about any attribute.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: the shared attribute; keys match ``synthetic_render.CATEGORIES``. First entry is the title noun.
CATEGORY_WORDS: dict[str, tuple[str, ...]] = {
    "mug": ("mug", "coffee mug", "cup", "tea mug"),
    "bottle": ("bottle", "water bottle", "flask", "drinking bottle"),
    "shirt": ("t-shirt", "shirt", "tee", "short-sleeve shirt"),
    "bag": ("bag", "handbag", "tote bag", "carry bag"),
    "lamp": ("lamp", "table lamp", "desk lamp", "bedside light"),
    "boot": ("boot", "ankle boot", "boots", "pair of boots"),
    "hat": ("hat", "brimmed hat", "sun hat", "wide-brim hat"),
    "cushion": ("cushion", "throw pillow", "pillow", "sofa cushion"),
}

#: text-only attribute: what the item is made of. First entry is the title adjective.
MATERIALS: dict[str, tuple[str, ...]] = {
    "cotton": ("cotton", "soft cotton", "organic cotton", "cotton canvas", "breathable cotton"),
    "leather": ("leather", "genuine leather", "full-grain leather", "supple leather", "tanned leather"),
    "steel": ("steel", "stainless steel", "brushed steel", "forged steel", "surgical-grade steel"),
    "wood": ("wood", "oak wood", "walnut wood", "hand-carved wood", "sustainably sourced timber"),
    "glass": ("glass", "borosilicate glass", "hand-blown glass", "tempered glass", "crystal-clear glass"),
    "ceramic": ("ceramic", "porcelain", "stoneware ceramic", "glazed ceramic", "fired clay ceramic"),
    "wool": ("wool", "merino wool", "knitted wool", "felted wool", "cosy lambswool"),
    "plastic": ("plastic", "recycled plastic", "BPA-free plastic", "durable polymer plastic", "moulded plastic"),
}

#: text-only attribute: what the item is for (phrases fit "made for ..."; first entry for titles).
PURPOSES: dict[str, tuple[str, ...]] = {
    "travel": ("travel", "trips and travel", "travellers on the road", "weekend travel"),
    "cooking": ("cooking", "cooking in the kitchen", "home cooks", "cooking and baking"),
    "office": ("the office", "office work", "working at the office desk", "office professionals"),
    "camping": ("camping", "camping trips", "campers in the wild", "outdoor camping"),
    "fitness": ("fitness", "the gym and fitness", "fitness workouts", "athletes in training"),
    "gifting": ("gifting", "a thoughtful gift", "birthday gift giving", "gifts for loved ones"),
    "relaxing": ("relaxing", "relaxing at home", "relaxation and unwinding", "lazy relaxing evenings"),
    "gardening": ("gardening", "the garden", "gardeners", "gardening and yard work"),
}

#: text-only attribute: the look and feel, in words (adjectives; first entry for titles).
STYLES: dict[str, tuple[str, ...]] = {
    "vintage": ("vintage", "retro vintage", "vintage-inspired", "old-fashioned vintage"),
    "modern": ("modern", "contemporary modern", "sleek modern", "modern-day"),
    "minimalist": ("minimalist", "minimal", "simple minimalist", "understated minimalist"),
    "rustic": ("rustic", "farmhouse rustic", "rustic country", "cabin-style rustic"),
    "luxury": ("luxury", "luxurious", "high-end luxury", "opulent luxury"),
    "playful": ("playful", "whimsical", "fun and playful", "quirky playful"),
}

#: invented brand names: distractors that carry no attribute (checked against every vocabulary)
BRANDS: tuple[str, ...] = (
    "Zorvik", "Kalmora", "Tundrix", "Velbo", "Quenza", "Marlowe & Finch", "Ostra", "Nivaro", "Bexley",
    "Lumiq", "Farrago", "Hollin", "Treska", "Upsala Co.", "Wendt", "Yarrow Goods", "Pellico", "Sundar",
    "Brisk & Bay", "Corvell", "Dunmore", "Elkhorn", "Fennick", "Galvo", "Harwick", "Istra", "Jorvell",
    "Kestrel Lane", "Lorne", "Mavik", "Norrland", "Oakhurst Supply", "Pemberly", "Quillon", "Rask",
    "Selwyn", "Tavish", "Ulvik", "Vantor", "Wexford Works",
)

#: filler sentences: shop boilerplate that says nothing about any attribute
FILLERS: tuple[str, ...] = (
    "Easy to clean.", "Ships within two business days.", "Backed by a one-year warranty.",
    "Customers love the value for money.", "Limited stock available.", "Makes everyday life a little easier.",
    "Thousands sold last month.", "Returns accepted within 30 days.", "Lightweight and durable.",
    "Handle with care.", "Packaged in a recyclable box.", "Assembled and inspected by hand.",
    "A bestseller in our shop.", "Great value for the price.", "Order today and it arrives this week.",
    "Please allow for slight variations between batches.", "Our support team is happy to help.",
    "Rated highly by our customers.", "Imported and distributed by {brand}.", "Dimensions: {size} cm.",
    "Item code {code}.", "Weight: {weight} g.", "Part of the {brand} range.", "Model {code}.",
)

TITLE_TEMPLATES: tuple[str, ...] = (
    "{brand} {style} {material} {category}",
    "{material} {category} by {brand}",
    "{brand} {category}, {style} edition",
    "{style} {category} - {brand} {code}",
    "{brand} {material} {category} {code}",
    "The {brand} {category} for {purpose}",
    "{brand} {style} {category} for {purpose}",
)

MATERIAL_SENTENCES: tuple[str, ...] = (
    "This {category} is made of {material}.",
    "Crafted from {material}, this {category} is built to last.",
    "A {category} in {material}.",
    "{category}, made from {material}.",
    "The {category} uses {material} throughout.",
    "{category}. Material: {material}.",
)
PURPOSE_SENTENCES: tuple[str, ...] = (
    "Ideal for {purpose}.",
    "Designed with {purpose} in mind.",
    "The perfect companion for {purpose}.",
    "Made for {purpose}.",
    "A great pick for {purpose}.",
    "Use: {purpose}.",
)
STYLE_SENTENCES: tuple[str, ...] = (
    "Its {style} design suits any home.",
    "A {style} look that stands out.",
    "Style: {style}.",
    "Finished in a {style} style.",
    "For lovers of {style} design.",
)

#: words that name image-only attribute values; none may appear in any generated text
IMAGE_VOCABULARY: tuple[str, ...] = (
    # colours and near synonyms
    "red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink", "teal", "turquoise", "violet",
    "magenta", "crimson", "scarlet", "gold", "golden", "lime", "navy", "azure", "lilac", "colour", "color",
    "white", "black", "grey", "gray", "brown",
    # patterns
    "solid", "stripe", "stripes", "striped", "dot", "dots", "dotted", "polka", "spotted", "check", "checks",
    "checked", "checkered", "chequered", "plaid", "tartan", "zigzag", "zig-zag", "chevron", "grid", "lattice",
    "pattern", "patterned", "plain",
    # emblems
    "circle", "round", "ring", "triangle", "triangular", "square", "star", "stars", "cross", "plus", "heart",
    "hearts", "emblem", "logo", "badge", "symbol", "shape",
)


@dataclass(frozen=True)
class TextSpec:
    """Everything an item's text depends on, besides the wording's random generator."""

    category: str
    material: str
    purpose: str
    style: str
    brand: str

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("category", self.category, CATEGORY_WORDS),
            ("material", self.material, MATERIALS),
            ("purpose", self.purpose, PURPOSES),
            ("style", self.style, STYLES),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(allowed)}")


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _code(rng: np.random.Generator) -> str:
    letters = "".join(chr(ord("A") + int(i)) for i in rng.integers(0, 26, size=2))
    return f"{letters}-{int(rng.integers(100, 1000))}"


def _capitalise(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:]


def write(spec: TextSpec, rng: np.random.Generator) -> tuple[str, str]:
    """``(title, description)`` for one item; the wording is drawn from ``rng``."""
    code = _code(rng)
    fields = {
        "brand": spec.brand,
        "code": code,
        "size": f"{int(rng.integers(8, 60))} x {int(rng.integers(8, 60))}",
        "weight": str(int(rng.integers(50, 2000))),
    }
    title = _pick(rng, TITLE_TEMPLATES).format(
        brand=spec.brand, code=code, category=CATEGORY_WORDS[spec.category][0],
        material=MATERIALS[spec.material][0], style=STYLES[spec.style][0], purpose=PURPOSES[spec.purpose][0],
    )

    def word(table: dict[str, tuple[str, ...]], key: str) -> str:
        return _pick(rng, table[key])

    sentences = [
        _pick(rng, MATERIAL_SENTENCES).format(category=word(CATEGORY_WORDS, spec.category),
                                              material=word(MATERIALS, spec.material)),
        _pick(rng, PURPOSE_SENTENCES).format(purpose=word(PURPOSES, spec.purpose)),
        _pick(rng, STYLE_SENTENCES).format(style=word(STYLES, spec.style)),
    ]
    n_filler = int(rng.integers(1, 4))
    picks = rng.choice(len(FILLERS), size=n_filler, replace=False)
    sentences += [FILLERS[int(i)].format(**fields) for i in picks]
    # the sentence stating the material (and category) leads; the rest come in any order
    rest = [sentences[int(i)] for i in 1 + rng.permutation(len(sentences) - 1)]
    description = " ".join(_capitalise(s) for s in [sentences[0], *rest])
    return _capitalise(title), description
