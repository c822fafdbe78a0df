"""Small helpers shared by CLI commands: comma lists and plain-text tables."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from modalrec.errors import ConfigError


def split_list(text: str | None, option: str = "", cast: Callable[[str], Any] = str) -> list[Any]:
    """``'a, b,c'`` -> ``['a', 'b', 'c']``; a value that ``cast`` rejects names the option."""
    items = [part.strip() for part in (text or "").split(",") if part.strip()]
    try:
        return [cast(item) for item in items]
    except ValueError:
        raise ConfigError(f"bad value {text!r} for {option or 'a list option'}",
                          hint="give comma-separated values, e.g. 10,20") from None


def print_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Left-aligned columns sized to their widest cell."""
    cells = [[str(h) for h in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for n, row in enumerate(cells):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if n == 0:
            print("  ".join("-" * width for width in widths))
