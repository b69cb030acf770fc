"""Shape geometry for the shapes world: masks for the 12 classes, box sizes, non-overlapping placement.

Pure functions of a `random.Random` and plain numbers; `align.data.shapes` decides what to draw and writes files.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from align.data import shapes_vocab as vocab

_PLACEMENT_ATTEMPTS = 200  # random positions tried per object before it is shrunk
PLACEMENTS = ("free", "grid")

# Width/height of each class's drawn box. Squares, circles and crosses are exactly square; diamonds are tall
# so a diamond is never a square turned 45 degrees; ellipses and rectangles are clearly stretched.
_ASPECT: dict[str, tuple[float, float]] = {
    "circle": (1.0, 1.0), "square": (1.0, 1.0), "cross": (1.0, 1.0),
    "ellipse": (1.6, 2.2), "rectangle": (1.6, 2.2),
    "diamond": (0.6, 0.7), "triangle": (1.15, 1.15),
    "pentagon": (1.05, 1.05), "hexagon": (1.15, 1.15),
    "star": (1.05, 1.05), "heart": (1.1, 1.1), "crescent": (0.75, 0.75),
}
_STRETCHABLE = {"ellipse", "rectangle"}  # drawn lying or standing at random


def _regular_points(sides: int, start_deg: float, radii: tuple[float, ...] = (1.0,)) -> list[tuple[float, float]]:
    step = 360.0 / (sides * len(radii))
    return [
        (radii[i % len(radii)] * math.cos(math.radians(start_deg + i * step)),
         radii[i % len(radii)] * math.sin(math.radians(start_deg + i * step)))
        for i in range(sides * len(radii))
    ]


def _heart_points(steps: int = 48) -> list[tuple[float, float]]:
    # The classic parametric heart; y is negated because image rows grow downwards.
    points = []
    for i in range(steps):
        t = 2 * math.pi * i / steps
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        points.append((x, -y))
    return points


_UNIT_POLYGONS: dict[str, list[tuple[float, float]]] = {
    "triangle": [(0.5, 0.0), (1.0, 1.0), (0.0, 1.0)],
    "diamond": [(0.5, 0.0), (1.0, 0.5), (0.5, 1.0), (0.0, 0.5)],
    "pentagon": _regular_points(5, -90),
    "hexagon": _regular_points(6, 0),
    "star": _regular_points(5, -90, radii=(1.0, 0.45)),
    "heart": _heart_points(),
    "cross": [(1, 0), (2, 0), (2, 1), (3, 1), (3, 2), (2, 2), (2, 3), (1, 3), (1, 2), (0, 2), (0, 1), (1, 1)],
}


def _fit(points: list[tuple[float, float]], w: int, h: int) -> list[tuple[float, float]]:
    """Scale a polygon so its extremes touch the edges of a w x h canvas."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, y0 = min(xs), min(ys)
    sx, sy = (w - 1) / (max(xs) - x0), (h - 1) / (max(ys) - y0)
    return [((x - x0) * sx, (y - y0) * sy) for x, y in points]


def shape_mask(name: str, w: int, h: int, mirrored: bool = False):
    """A binary "L" mask of one shape, cropped to its tight box (no anti-aliasing: colours stay exact)."""
    from PIL import Image, ImageDraw, ImageOps

    if name == "crescent":
        # A disc of radius R minus the same disc shifted by R: the lit part spans 1.5R x 2R, and the centre of
        # that box lies inside the lit part, so the object's centre pixel carries its colour.
        side = max(4, round(h))
        mask = Image.new("L", (side, side), 0)
        draw = ImageDraw.Draw(mask)
        draw.ellipse([0, 0, side - 1, side - 1], fill=255)
        draw.ellipse([side // 2, 0, side // 2 + side - 1, side - 1], fill=0)
    else:
        mask = Image.new("L", (w, h), 0)
        draw = ImageDraw.Draw(mask)
        if name in ("circle", "ellipse"):
            draw.ellipse([0, 0, w - 1, h - 1], fill=255)
        elif name in ("square", "rectangle"):
            draw.rectangle([0, 0, w - 1, h - 1], fill=255)
        else:
            draw.polygon(_fit(_UNIT_POLYGONS[name], w, h), fill=255)
    if mirrored:
        mask = ImageOps.mirror(mask)
    return mask.crop(mask.getbbox())


def size_label(area_fraction: float) -> str:
    """The size band holding a box's area fraction; below the first band is small, above the last is large."""
    for name, (_, high) in vocab.SIZES.items():
        if area_fraction < high:
            return name
    return list(vocab.SIZES)[-1]


def _box_dims(rng: random.Random, name: str, size: str, image_area: int) -> tuple[int, int]:
    low, high = vocab.SIZES[size]
    # Sample in the middle 60% of the band so pixel rounding rarely moves the label to a neighbour.
    area = image_area * rng.uniform(low + 0.2 * (high - low), high - 0.2 * (high - low))
    aspect = rng.uniform(*_ASPECT[name])
    if name in _STRETCHABLE and rng.random() < 0.5:
        aspect = 1.0 / aspect
    w = max(3, round(math.sqrt(area * aspect)))
    h = max(3, round(math.sqrt(area / aspect)))
    return w, h


@dataclass
class Piece:
    """One shape on its way onto the canvas."""

    name: str
    color: str
    size: str
    mirrored: bool
    mask: Any = None
    box: tuple[int, int, int, int] | None = None  # x0, y0, x1, y1; x1/y1 exclusive (PIL's box convention)


def _clear_of(box: tuple[int, int, int, int], others: list[tuple[int, int, int, int]], gap: int) -> bool:
    x0, y0, x1, y1 = box
    return all(x1 + gap <= a0 or a1 + gap <= x0 or y1 + gap <= b0 or b1 + gap <= y0 for a0, b0, a1, b1 in others)


def _try_place(rng: random.Random, piece: Piece, taken: list, side: int, gap: int) -> bool:
    w, h = piece.mask.size
    if w > side - 2 or h > side - 2:
        return False
    for _ in range(_PLACEMENT_ATTEMPTS):
        x0, y0 = rng.randint(1, side - 1 - w), rng.randint(1, side - 1 - h)
        box = (x0, y0, x0 + w, y0 + h)
        if _clear_of(box, taken, gap):
            piece.box = box
            return True
    return False


def layout(rng: random.Random, pieces: list[Piece], config: Any) -> bool:
    """Rejection-sample non-overlapping positions, biggest first; a piece that finds no room is shrunk a size."""
    if config.placement == "grid":
        return grid_layout(rng, pieces, config.image_size, config.min_gap, config.grid_jitter)
    side, sizes = config.image_size, list(vocab.SIZES)
    taken: list[tuple[int, int, int, int]] = []
    for piece in pieces:
        while True:
            piece.mask = shape_mask(piece.name, *_box_dims(rng, piece.name, piece.size, side * side),
                                    mirrored=piece.mirrored)
            if _try_place(rng, piece, taken, side, config.min_gap):
                taken.append(piece.box)
                break
            if piece.size == sizes[0]:
                return False
            piece.size = sizes[sizes.index(piece.size) - 1]
    return True


def grid_layout(rng: random.Random, pieces: list[Piece], side: int, gap: int, jitter: int = 0) -> bool:
    """One piece per distinct 3x3 cell, at most `jitter` px from the cell's centre, its box inside the cell with
    half of `gap` (rounded up) to spare on every side, so two neighbours are at least `gap` apart; a piece too big
    for its cell is shrunk a size."""
    if len(pieces) > len(vocab.CELLS):
        return False
    sizes, margin = list(vocab.SIZES), max(1, -(-gap // 2))
    for piece, cell in zip(pieces, rng.sample(range(len(vocab.CELLS)), len(pieces)), strict=False):
        # Cell bounds as _cell reads them: column c covers x with x * 3 // side == c.
        row, col = divmod(cell, 3)
        x_lo, x_hi = -(-col * side // 3), -(-(col + 1) * side // 3)
        y_lo, y_hi = -(-row * side // 3), -(-(row + 1) * side // 3)
        while True:
            piece.mask = shape_mask(piece.name, *_box_dims(rng, piece.name, piece.size, side * side),
                                    mirrored=piece.mirrored)
            w, h = piece.mask.size
            if w <= x_hi - x_lo - 2 * margin and h <= y_hi - y_lo - 2 * margin:
                break
            if piece.size == sizes[0]:
                return False
            piece.size = sizes[sizes.index(piece.size) - 1]
        x0 = _jittered(rng, x_lo + margin, x_hi - margin - w, jitter)
        y0 = _jittered(rng, y_lo + margin, y_hi - margin - h, jitter)
        piece.box = (x0, y0, x0 + w, y0 + h)
    return True


def _jittered(rng: random.Random, low: int, high: int, jitter: int) -> int:
    """A start coordinate in [low, high] within `jitter` px of the centred one."""
    mid = (low + high) // 2
    return rng.randint(max(low, mid - jitter), min(high, mid + jitter))


def _cell(cx: int, cy: int, side: int) -> str:
    return vocab.CELLS[min(2, cy * 3 // side) * 3 + min(2, cx * 3 // side)]


def object_record(piece: Piece, side: int) -> dict[str, Any]:
    x0, y0, x1, y1 = piece.box
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    return {
        "name": piece.name,
        "color": piece.color,
        "size": size_label((x1 - x0) * (y1 - y0) / (side * side)),
        "bbox": [x0, y0, x1, y1],
        "center": [cx, cy],
        "cell": _cell(cx, cy, side),
    }
