"""Item pictures for the synthetic world: category silhouette, fill colour, pattern and emblem.

The picture is a function of an :class:`ImageSpec` only, which holds the image attributes
(colour, pattern, emblem), the attribute shared with the text (category) and nuisance jitter
(position, scale, background tint, pattern phase). Text-only attributes (material, purpose,
style) are not parameters of this module at all, so no picture can leak them.

Everything is chosen to be salient to a generic ImageNet CNN: colours are saturated and fill most
of the object, patterns are coarse textures, silhouettes and emblems are large and outlined.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageChops, ImageDraw

Point = tuple[float, float]
Box = tuple[float, float, float, float]

#: fill colours (image-only attribute): saturated, far apart in hue, none close to the background
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (214, 32, 39),
    "orange": (245, 130, 20),
    "yellow": (242, 214, 24),
    "green": (40, 160, 60),
    "cyan": (20, 185, 205),
    "blue": (35, 70, 205),
    "purple": (125, 45, 175),
    "pink": (240, 105, 180),
}

#: surface patterns (image-only attribute): coarse textures drawn in a dark shade of the fill
PATTERNS: tuple[str, ...] = ("solid", "stripes", "dots", "checks", "zigzag", "grid")

#: emblem printed on the object (image-only attribute): a large white outlined shape
EMBLEMS: tuple[str, ...] = ("circle", "triangle", "square", "star", "cross", "heart")

#: category silhouettes (the attribute shared with the text), in unit coordinates
CATEGORIES: tuple[str, ...] = ("mug", "bottle", "shirt", "bag", "lamp", "boot", "hat", "cushion")

OUTLINE = (40, 40, 40)
EMBLEM_FILL = (250, 250, 250)
SUPERSAMPLE = 2  # draw at twice the size and downsample, for anti-aliased edges


@dataclass(frozen=True)
class Nuisance:
    """Per-item jitter that varies pictures without carrying any attribute."""

    dx: float = 0.0  # object offset, fraction of the canvas
    dy: float = 0.0
    scale: float = 1.0  # object scale
    background: tuple[int, int, int] = (242, 242, 242)
    phase: float = 0.0  # pattern phase, fraction of one period

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Nuisance:
        grey = int(rng.integers(228, 251))
        tint = rng.integers(-6, 7, size=3)
        return cls(
            dx=float(rng.uniform(-0.05, 0.05)),
            dy=float(rng.uniform(-0.04, 0.04)),
            scale=float(rng.uniform(0.88, 1.0)),
            background=tuple(int(np.clip(grey + t, 0, 255)) for t in tint),  # type: ignore[arg-type]
            phase=float(rng.uniform(0.0, 1.0)),
        )


@dataclass(frozen=True)
class ImageSpec:
    """Everything a picture depends on: image attributes, the shared category, and jitter."""

    category: str
    colour: str
    pattern: str
    emblem: str
    nuisance: Nuisance = Nuisance()

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("category", self.category, CATEGORIES),
            ("colour", self.colour, tuple(COLOURS)),
            ("pattern", self.pattern, PATTERNS),
            ("emblem", self.emblem, EMBLEMS),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(allowed)}")


# --- silhouettes ------------------------------------------------------------------------------------
# Each shape is a list of (kind, geometry, fill) primitives drawn in order on a mask in unit
# coordinates; fill 0 cuts a hole. ``EMBLEM_AT`` is the centre of the object's body.

Primitive = tuple[str, object, int]

SILHOUETTES: dict[str, list[Primitive]] = {
    "mug": [
        ("ellipse", (0.56, 0.36, 0.88, 0.70), 255),
        ("ellipse", (0.63, 0.44, 0.81, 0.62), 0),
        ("rounded", (0.18, 0.26, 0.68, 0.84), 255),
    ],
    "bottle": [
        ("rect", (0.42, 0.08, 0.58, 0.15), 255),
        ("rect", (0.44, 0.14, 0.56, 0.30), 255),
        ("polygon", [(0.30, 0.44), (0.43, 0.28), (0.57, 0.28), (0.70, 0.44)], 255),
        ("rounded", (0.30, 0.40, 0.70, 0.90), 255),
    ],
    "shirt": [
        ("polygon", [(0.30, 0.16), (0.42, 0.13), (0.50, 0.21), (0.58, 0.13), (0.70, 0.16), (0.92, 0.36),
                     (0.81, 0.48), (0.73, 0.41), (0.73, 0.88), (0.27, 0.88), (0.27, 0.41), (0.19, 0.48),
                     (0.08, 0.36)], 255),
    ],
    "bag": [
        ("ellipse", (0.28, 0.12, 0.72, 0.62), 255),
        ("ellipse", (0.35, 0.19, 0.65, 0.55), 0),
        ("polygon", [(0.16, 0.40), (0.84, 0.40), (0.90, 0.88), (0.10, 0.88)], 255),
    ],
    "lamp": [
        ("polygon", [(0.30, 0.10), (0.70, 0.10), (0.86, 0.52), (0.14, 0.52)], 255),
        ("rect", (0.45, 0.52, 0.55, 0.80), 255),
        ("ellipse", (0.24, 0.76, 0.76, 0.92), 255),
    ],
    "boot": [
        ("polygon", [(0.26, 0.10), (0.62, 0.10), (0.62, 0.56), (0.84, 0.64), (0.92, 0.76), (0.92, 0.90),
                     (0.18, 0.90), (0.18, 0.78), (0.26, 0.66)], 255),
    ],
    "hat": [
        ("ellipse", (0.06, 0.60, 0.94, 0.82), 255),
        ("rounded", (0.26, 0.18, 0.74, 0.70), 255),
    ],
    "cushion": [
        ("ellipse", (0.10, 0.14, 0.20, 0.24), 255),
        ("ellipse", (0.80, 0.14, 0.90, 0.24), 255),
        ("ellipse", (0.10, 0.76, 0.20, 0.86), 255),
        ("ellipse", (0.80, 0.76, 0.90, 0.86), 255),
        ("rounded", (0.13, 0.17, 0.87, 0.83), 255),
    ],
}

EMBLEM_AT: dict[str, Point] = {
    "mug": (0.43, 0.55), "bottle": (0.50, 0.64), "shirt": (0.50, 0.58), "bag": (0.50, 0.65),
    "lamp": (0.50, 0.33), "boot": (0.44, 0.40), "hat": (0.50, 0.44), "cushion": (0.50, 0.50),
}
EMBLEM_SIZE = 0.26  # emblem diameter, fraction of the canvas


class _Frame:
    """Maps unit coordinates to pixels with the item's offset and scale (about the centre)."""

    def __init__(self, size: int, nuisance: Nuisance) -> None:
        self.size = size
        self.scale = nuisance.scale
        self.dx, self.dy = nuisance.dx, nuisance.dy

    def point(self, p: Point) -> Point:
        x = (0.5 + (p[0] - 0.5) * self.scale + self.dx) * self.size
        y = (0.5 + (p[1] - 0.5) * self.scale + self.dy) * self.size
        return (x, y)

    def box(self, b: Box) -> Box:
        x0, y0 = self.point((b[0], b[1]))
        x1, y1 = self.point((b[2], b[3]))
        return (x0, y0, x1, y1)


def _draw_silhouette(draw: ImageDraw.ImageDraw, category: str, frame: _Frame, fill: dict[int, int]) -> None:
    """Draw the category's primitives on a mask; ``fill`` maps a primitive's 255/0 to a value."""
    for kind, geometry, value in SILHOUETTES[category]:
        style = {"fill": fill[value]}
        if kind == "polygon":
            draw.polygon([frame.point(p) for p in geometry], **style)  # type: ignore[union-attr]
        elif kind == "ellipse":
            draw.ellipse(frame.box(geometry), **style)  # type: ignore[arg-type]
        elif kind == "rect":
            draw.rectangle(frame.box(geometry), **style)  # type: ignore[arg-type]
        else:  # rounded rectangle
            radius = 0.07 * frame.size * frame.scale
            draw.rounded_rectangle(frame.box(geometry), radius=radius, **style)  # type: ignore[arg-type]


# --- patterns ---------------------------------------------------------------------------------------

def _stripes(draw: ImageDraw.ImageDraw, size: int, period: float, offset: float, ink: tuple[int, ...]) -> None:
    width = period / 2
    start = -size + offset
    while start < size:
        draw.polygon([(start, size), (start + width, size), (start + width + size, 0), (start + size, 0)], fill=ink)
        start += period


def _dots(draw: ImageDraw.ImageDraw, size: int, period: float, offset: float, ink: tuple[int, ...]) -> None:
    radius = period * 0.24
    row = 0
    y = -period + offset
    while y < size + period:
        x = -period + offset + (period / 2 if row % 2 else 0.0)
        while x < size + period:
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=ink)
            x += period
        y += period
        row += 1


def _checks(draw: ImageDraw.ImageDraw, size: int, period: float, offset: float, ink: tuple[int, ...]) -> None:
    cell = period / 2
    n = int(size / cell) + 3
    for i in range(-1, n):
        for j in range(-1, n):
            if (i + j) % 2 == 0:
                x, y = i * cell + offset % period, j * cell + offset % period
                draw.rectangle((x, y, x + cell, y + cell), fill=ink)


def _zigzag(draw: ImageDraw.ImageDraw, size: int, period: float, offset: float, ink: tuple[int, ...]) -> None:
    amplitude = period * 0.25
    width = max(2, int(period * 0.16))
    y = -period + offset
    while y < size + period:
        points = []
        x, up = -period, True
        while x < size + period:
            points.append((x, y - amplitude if up else y + amplitude))
            x += period / 2
            up = not up
        draw.line(points, fill=ink, width=width, joint="curve")
        y += period * 0.7


def _grid(draw: ImageDraw.ImageDraw, size: int, period: float, offset: float, ink: tuple[int, ...]) -> None:
    width = max(2, int(period * 0.12))
    pos = -period + offset
    while pos < size + period:
        draw.line([(pos, 0), (pos, size)], fill=ink, width=width)
        draw.line([(0, pos), (size, pos)], fill=ink, width=width)
        pos += period * 0.8


PATTERN_DRAWERS: dict[str, Callable[..., None] | None] = {
    "solid": None, "stripes": _stripes, "dots": _dots, "checks": _checks, "zigzag": _zigzag, "grid": _grid,
}


def _texture(colour: str, pattern: str, size: int, phase: float) -> Image.Image:
    base = COLOURS[colour]
    ink = tuple(int(c * 0.38) for c in base)
    texture = Image.new("RGB", (size, size), base)
    drawer = PATTERN_DRAWERS[pattern]
    if drawer is not None:
        period = size / 7
        drawer(ImageDraw.Draw(texture), size, period, phase * period, ink)
    return texture


# --- emblems ----------------------------------------------------------------------------------------

def _emblem_polygon(emblem: str, cx: float, cy: float, r: float) -> list[Point] | None:
    if emblem == "triangle":
        return [(cx, cy - r), (cx + r * 0.95, cy + r * 0.75), (cx - r * 0.95, cy + r * 0.75)]
    if emblem == "star":
        angles = np.arange(10) * np.pi / 5 - np.pi / 2
        radii = np.where(np.arange(10) % 2 == 0, r, r * 0.42)
        return [(cx + float(rad * np.cos(a)), cy + float(rad * np.sin(a))) for a, rad in zip(angles, radii)]
    if emblem == "cross":
        a, b = r, r * 0.34
        return [(cx - b, cy - a), (cx + b, cy - a), (cx + b, cy - b), (cx + a, cy - b), (cx + a, cy + b),
                (cx + b, cy + b), (cx + b, cy + a), (cx - b, cy + a), (cx - b, cy + b), (cx - a, cy + b),
                (cx - a, cy - b), (cx - b, cy - b)]
    return None


def _draw_emblem(draw: ImageDraw.ImageDraw, emblem: str, centre: Point, radius: float, outline: int) -> None:
    """A white emblem with a dark outline: the shape in dark, then a slightly smaller one in white."""
    cx, cy = centre
    for fill, r in ((OUTLINE, radius + outline), (EMBLEM_FILL, radius)):
        polygon = _emblem_polygon(emblem, cx, cy, r)
        if polygon is not None:
            draw.polygon(polygon, fill=fill)
        elif emblem == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        elif emblem == "square":
            q = r * 0.85
            draw.rectangle((cx - q, cy - q, cx + q, cy + q), fill=fill)
        else:  # heart: two lobes and a point
            lobe = r * 0.52
            top = cy - r * 0.75
            draw.ellipse((cx - 2 * lobe, top, cx, top + 2 * lobe), fill=fill)
            draw.ellipse((cx, top, cx + 2 * lobe, top + 2 * lobe), fill=fill)
            draw.polygon([(cx - 2 * lobe + r * 0.03, cy - r * 0.1), (cx + 2 * lobe - r * 0.03, cy - r * 0.1),
                          (cx, cy + r)], fill=fill)


def _dilate(mask: Image.Image, radius: int) -> Image.Image:
    """Grow a mask by about ``radius`` pixels (eight shifted copies; far cheaper than MaxFilter)."""
    grown = mask
    d = max(1, round(radius * 0.7))
    for ox, oy in ((radius, 0), (-radius, 0), (0, radius), (0, -radius), (d, d), (-d, -d), (d, -d), (-d, d)):
        grown = ImageChops.lighter(grown, ImageChops.offset(mask, ox, oy))
    return grown


# --- the picture ------------------------------------------------------------------------------------

def render(spec: ImageSpec, size: int = 128) -> Image.Image:
    """The item's picture as an RGB image of ``size`` x ``size`` pixels."""
    canvas = size * SUPERSAMPLE
    frame = _Frame(canvas, spec.nuisance)
    background = spec.nuisance.background
    image = Image.new("RGB", (canvas, canvas), background)
    draw = ImageDraw.Draw(image)
    # a floor shadow grounds the object without carrying any attribute
    shade = tuple(int(c * 0.86) for c in background)
    draw.ellipse(frame.box((0.12, 0.87, 0.88, 0.97)), fill=shade)
    outline = max(1, canvas // 64)
    mask = Image.new("L", (canvas, canvas), 0)
    _draw_silhouette(ImageDraw.Draw(mask), spec.category, frame, {255: 255, 0: 0})
    image.paste(OUTLINE, (0, 0), _dilate(mask, outline))
    image.paste(_texture(spec.colour, spec.pattern, canvas, spec.nuisance.phase), (0, 0), mask)
    centre = frame.point(EMBLEM_AT[spec.category])
    _draw_emblem(draw, spec.emblem, centre, EMBLEM_SIZE / 2 * canvas * frame.scale, outline)
    return image.reduce(SUPERSAMPLE) if SUPERSAMPLE > 1 else image


def render_png(spec: ImageSpec, size: int = 128) -> bytes:
    """PNG bytes of :func:`render`, with no metadata, so equal specs give equal bytes."""
    buffer = io.BytesIO()
    render(spec, size).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
