"""Parse ``[Slot] {value}`` answers, and recover the slots from answers that drift from the form.

Real LVLM outputs differ in discipline: Qwen2-VL keeps the required ``[Slot] {value}`` form, while
Phi-3.5-V mostly writes ``Slot: value`` (comma-separated or one per line), quotes the labels
(``['Slot'] {value}``), mismatches brackets (``{value]``), adds notes, drops a label, or lists bare
values. Every slot gets a status: ``strict`` (the required form), ``recovered`` (found another way)
or ``missing``, so compliance can be reported per model and per slot.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import pandas as pd

STRICT, RECOVERED, MISSING = "strict", "recovered", "missing"
STATUSES = (STRICT, RECOVERED, MISSING)

_MAX_BARE_WORDS = 6  # an unlabelled piece longer than this is prose, not a slot value
_QUOTES = "'\"`"
_TRIM = " \t\r\n,;.:*_-=|>'\"`[](){}"


@dataclass(frozen=True)
class SlotParse:
    """The value and status of each slot of one answer."""

    values: dict[str, str | None]
    status: dict[str, str]

    @property
    def n_found(self) -> int:
        return sum(s != MISSING for s in self.status.values())

    @property
    def complete(self) -> bool:
        return all(s != MISSING for s in self.status.values())

    @property
    def strict(self) -> bool:
        return all(s == STRICT for s in self.status.values())


@dataclass
class SlotParser:
    """Parser for one prompt's slots. Build once, call ``parse(text)`` per answer."""

    slots: Sequence[str]
    _label: re.Pattern[str] = field(init=False, repr=False)
    _strict: dict[str, re.Pattern[str]] = field(init=False, repr=False)
    _keys: dict[str, str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.slots = tuple(self.slots)
        self._strict = {s: re.compile(r"\[" + re.escape(s) + r"\] ?\{([^{}\[\]\n]*)\}") for s in self.slots}
        self._keys = {_key(s): s for s in self.slots}
        names = "|".join(sorted((_flexible(s) for s in self.slots), key=len, reverse=True))
        q = "['\"`]?"
        self._label = re.compile(
            # [Slot] / ['Slot'] / [ slot ], optionally followed by ':'
            rf"\[\s*{q}\s*(?P<b>{names})\s*{q}\s*\]\s*:?"
            # {Slot} {value}: the label itself put in braces
            rf"|\{{\s*(?P<c>{names})\s*\}}\s*:?"
            # Slot: / "Slot": / **Slot**: / Slot = / Slot {value}
            rf"|(?<![\w\[{{])(?:{q})(?P<p>{names})(?:{q})\s*(?:[:=]|(?=\{{))"
            # at a line start (after a bullet or number): Slot - value
            rf"|^[ \t]*(?:[-*+\u2022]|\d+[.)])?[ \t]*(?P<d>{names})[ \t]+[-\u2013\u2014][ \t]+",
            re.IGNORECASE | re.MULTILINE,
        )

    def parse(self, text: object) -> SlotParse:
        raw = "" if text is None or (isinstance(text, float) and text != text) else str(text)
        clean = _preclean(raw)
        values: dict[str, str | None] = dict.fromkeys(self.slots)
        status = dict.fromkeys(self.slots, MISSING)

        for slot, pattern in self._strict.items():
            match = pattern.search(raw)
            value = _clean_value(match.group(1)) if match else ""
            if value:
                values[slot], status[slot] = value, STRICT

        labels = [(m.start(), m.end(), self._keys[_key(m.group("b") or m.group("c") or m.group("p") or m.group("d"))])
                  for m in self._label.finditer(clean)]
        for i, (_, end, slot) in enumerate(labels):
            if status[slot] != MISSING:
                continue
            stop = labels[i + 1][0] if i + 1 < len(labels) else len(clean)
            value = _segment_value(clean[end:stop])
            if value:
                values[slot], status[slot] = value, RECOVERED

        lead = clean[: labels[0][0]] if labels else clean
        self._recover_unlabelled(lead, labels, values, status)
        return SlotParse(values, status)

    def _recover_unlabelled(self, lead: str, labels: list[tuple[int, int, str]],
                            values: dict[str, str | None], status: dict[str, str]) -> None:
        """Assign unlabelled leading pieces to the slots that should come before the first label.

        ``Bedding, Toddler, Comfort, Cotton, Sleep`` (no labels) fills all slots in order;
        ``Bed {Infant}, [Purpose] {Sleeping}, ...`` fills Category and Age Group; a lone short
        phrase fills the first slot.
        """
        pieces = _bare_pieces(lead)
        if not pieces:
            return
        if labels:
            first = self.slots.index(labels[0][2])
            # the first label's own value may stand before it: 'Mashed Potatoes {Dish Type} [Cuisine] ...'
            targets = [s for s in self.slots[: first + 1] if status[s] == MISSING]
            if not targets:
                return
            if len(pieces) > len(targets):
                # 'X {Y}' where only one slot is missing: X took the label's place
                pieces = pieces[: len(targets)]
        else:
            groups = [_clean_value(g) for g in _BRACKETED.findall(lead)]
            if len(groups) == len(self.slots) and all(groups):
                # 'Pasta {Pasta} {Italian} {Cheese} {Savory} {Dinner}': a word took the first
                # label's place, the bracketed values are the slots in order
                pieces = groups
            elif len(pieces) != len(self.slots) and len(pieces) != 1:
                return
            targets = list(self.slots[: len(pieces)])
        for slot, value in zip(targets, pieces):
            if status[slot] == MISSING:
                values[slot], status[slot] = value, RECOVERED

    def parse_many(self, texts: Iterable[object]) -> list[SlotParse]:
        return [self.parse(t) for t in texts]


def parse_slots(text: object, slots: Sequence[str]) -> SlotParse:
    """Parse one answer (builds a parser; use ``SlotParser`` for many answers)."""
    return SlotParser(slots).parse(text)


def parse_frame(texts: Iterable[object], slots: Sequence[str]) -> pd.DataFrame:
    """One row per answer: ``value:<Slot>`` and ``status:<Slot>`` columns for every slot."""
    parser = SlotParser(slots)
    rows = []
    for result in parser.parse_many(texts):
        row: dict[str, object] = {}
        for slot in parser.slots:
            row[f"value:{slot}"] = result.values[slot]
            row[f"status:{slot}"] = result.status[slot]
        rows.append(row)
    columns = [c for s in parser.slots for c in (f"value:{s}", f"status:{s}")]
    return pd.DataFrame(rows, columns=columns)


def compliance(frame: pd.DataFrame, slots: Sequence[str], has_output: pd.Series | None = None) -> pd.DataFrame:
    """Per slot: share of answers strict / recovered / missing (rows without output are left out)."""
    rows = frame if has_output is None else frame[has_output.to_numpy(dtype=bool)]
    out = {}
    for slot in slots:
        counts = rows[f"status:{slot}"].value_counts()
        out[slot] = {s: float(counts.get(s, 0)) / max(1, len(rows)) for s in STATUSES}
    table = pd.DataFrame(out).T[list(STATUSES)]
    status = rows[[f"status:{s}" for s in slots]]
    table.loc["all slots"] = [
        float((status == STRICT).all(axis=1).mean()) if len(rows) else 0.0,
        float(((status != MISSING).all(axis=1) & ~(status == STRICT).all(axis=1)).mean()) if len(rows) else 0.0,
        float((status == MISSING).any(axis=1).mean()) if len(rows) else 0.0,
    ]
    return table


# --- helpers -----------------------------------------------------------------------------------
def _key(label: str) -> str:
    return re.sub(r"[^a-z0-9]", "", label.lower())


def _flexible(slot: str) -> str:
    """A label pattern that tolerates case, spaces, underscores and hyphens between words."""
    words = re.split(r"[\s_-]+", slot.strip())
    return r"[\s_-]*".join(re.escape(w) for w in words)


def _preclean(text: str) -> str:
    text = text.replace("\u00a0", " ").replace("**", "").replace("__", "")
    for a, b in (("\u2018", "'"), ("\u2019", "'"), ("\u201c", '"'), ("\u201d", '"')):
        text = text.replace(a, b)
    return text


def _clean_value(value: str) -> str:
    value = " ".join(value.split())
    return value.strip(_TRIM).strip()


_BRACKETED = re.compile(r"[{\[]([^{}\[\]\n]*)[}\]]")
_NEXT_UNKNOWN_LABEL = re.compile(r"[,;]\s*(?:\[|[A-Za-z][\w '/-]{0,30}:)")


def _segment_value(segment: str) -> str:
    """The value right after a label: brace/quote content, else the rest of the line."""
    text = segment.lstrip(" \t:=-")
    if text.startswith("\n"):
        text = text.lstrip()
    if text[:1] == "{":
        end = re.search(r"[}\]\n]", text[1:])
        return _clean_value(text[1: 1 + end.start()] if end else text[1:])
    if text and text[0] in _QUOTES and text[0] in text[1:]:
        return _clean_value(text[1: text.index(text[0], 1)])
    line = text.split("\n", 1)[0]
    cut = _NEXT_UNKNOWN_LABEL.search(line)
    if cut:
        line = line[: cut.start()]
    return _clean_value(line)


def _bare_pieces(lead: str) -> list[str]:
    """Short unlabelled values in leading text: split at commas/newlines and ``X {Y}`` braces."""
    if lead.strip().endswith(":"):  # a preamble ("Here are the keywords:"), not a value
        return []
    lead = lead.strip().strip(_TRIM)
    if not lead:
        return []
    pieces: list[str] = []
    for part in re.split(r"[,;\n]+", lead):
        for sub in re.split(r"[{}]", part):
            value = _clean_value(sub)
            if value:
                pieces.append(value)
    if not pieces or any(len(p.split()) > _MAX_BARE_WORDS for p in pieces):
        return []
    return pieces
