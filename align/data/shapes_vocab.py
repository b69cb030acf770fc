"""The shapes-world vocabulary as plain data: the one table the generator, CHAIR/POPE evaluators and pair
builders share, so a word the generator writes is always a word the evaluators recognise.

Bump `VOCAB_VERSION` whenever a table changes meaning (a new synonym, a moved colour): `world.json` records it,
so scores computed with a different vocabulary can be told apart.
"""

from __future__ import annotations

VOCAB_VERSION = 1

# Canonical class -> every word or two-word phrase that names it (the canonical name first).
# "ring" is deliberately absent: hollow circles are never drawn, so a "ring" mention is not a circle.
SHAPES: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disc", "disk", "dot", "round shape"),
    "ellipse": ("ellipse", "oval"),
    "square": ("square",),
    "rectangle": ("rectangle", "oblong", "bar"),
    "triangle": ("triangle",),
    "diamond": ("diamond", "rhombus", "lozenge"),
    "pentagon": ("pentagon",),
    "hexagon": ("hexagon",),
    "star": ("star",),
    "heart": ("heart",),
    "cross": ("cross", "plus sign", "plus"),
    "crescent": ("crescent", "half moon", "moon"),
}
CLASSES: tuple[str, ...] = tuple(SHAPES)

# Two-word phrases merged before single words, as CHAIR merges "hot dog": "half moon" is one crescent,
# not a "half" and a "moon".
PHRASES: dict[str, str] = {
    syn: name for name, synonyms in SHAPES.items() for syn in synonyms if " " in syn
}
# Single-word synonym -> canonical class.
SYNONYMS: dict[str, str] = {
    syn: name for name, synonyms in SHAPES.items() for syn in synonyms if " " not in syn
}

# Generic words that never count as a mention, right or wrong (AMBER's safe words).
SAFE_WORDS: frozenset[str] = frozenset(
    {"shape", "object", "figure", "polygon", "item", "thing", "background", "image", "picture"}
)

# Canonical plural of each class, as captions write it.
PLURALS: dict[str, str] = {
    name: (name + "es" if name.endswith(("s", "x", "sh", "ch")) else name + "s") for name in CLASSES
}
# Plurals the strip-a-suffix rule gets wrong ("ellipses" would become "ellips").
IRREGULAR_PLURALS: dict[str, str] = {"ellipses": "ellipse", "rhombi": "rhombus"}

# Eight colours far apart in RGB (every pair at least ~100 apart, all far from the white background), so
# the colour at an object's centre names it unambiguously.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (225, 25, 30),
    "green": (30, 160, 40),
    "blue": (30, 70, 230),
    "yellow": (245, 225, 0),
    "orange": (245, 125, 0),
    "purple": (135, 40, 185),
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
}
COLOR_SYNONYMS: dict[str, str] = {"grey": "gray", "violet": "purple"}
BACKGROUND = "white"
BACKGROUND_RGB: tuple[int, int, int] = (255, 255, 255)

# Size = bounding-box area as a fraction of the image area, in contiguous bands [low, high). The generator
# samples well inside a band; the label is always read back from the drawn box, so it is exact.
SIZES: dict[str, tuple[float, float]] = {
    "small": (0.02, 0.04),
    "medium": (0.04, 0.07),
    "large": (0.07, 0.11),
}

# The 3x3 grid, row-major; an object's cell is the cell that holds its bounding-box centre.
CELLS: tuple[str, ...] = (
    "top-left", "top", "top-right",
    "left", "center", "right",
    "bottom-left", "bottom", "bottom-right",
)
# How captions say each cell; one phrase per sentence, so a position parser has one shape to tie it to.
CELL_PHRASES: dict[str, str] = {
    "top-left": "in the top left",
    "top": "at the top",
    "top-right": "in the top right",
    "left": "on the left",
    "center": "in the center",
    "right": "on the right",
    "bottom-left": "in the bottom left",
    "bottom": "at the bottom",
    "bottom-right": "in the bottom right",
}
# Position words a model may use -> cell (match the longest phrase first: "top left" before "top").
POSITION_PHRASES: dict[str, str] = {
    "top left": "top-left", "upper left": "top-left",
    "top right": "top-right", "upper right": "top-right",
    "bottom left": "bottom-left", "lower left": "bottom-left",
    "bottom right": "bottom-right", "lower right": "bottom-right",
    "top": "top", "upper": "top",
    "bottom": "bottom", "lower": "bottom",
    "left": "left", "right": "right",
    "center": "center", "centre": "center", "middle": "center",
}

# Classes a model may confuse by look; the "look-alike" adversarial probes pair them.
LOOKALIKES: tuple[tuple[str, str], ...] = (
    ("square", "rectangle"),
    ("square", "diamond"),
    ("circle", "ellipse"),
    ("pentagon", "hexagon"),
    ("crescent", "circle"),
)

NUMBER_WORDS: dict[int, str] = {
    0: "zero", 1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six",
    7: "seven", 8: "eight", 9: "nine", 10: "ten", 11: "eleven", 12: "twelve",
}
NUMBERS: dict[str, int] = {word: n for n, word in NUMBER_WORDS.items()}  # number word -> n
_POSITIONS_LONGEST_FIRST = sorted(POSITION_PHRASES, key=lambda p: -len(p.split()))


def position_at(words: list[str], start: int = 0, stop: int | None = None) -> tuple[int, int, str] | None:
    """The first position phrase in lower-case `words[start:stop]`, the longest phrase first at each word ("top
    left" is top-left, not top): (first word, last word + 1, cell), or None."""
    stop = len(words) if stop is None else stop
    for i in range(start, stop):
        for phrase in _POSITIONS_LONGEST_FIRST:
            parts = phrase.split()
            if words[i:i + len(parts)] == parts and i + len(parts) <= stop:
                return i, i + len(parts), POSITION_PHRASES[phrase]
    return None

_SINGULAR_WORDS = frozenset(SYNONYMS) | frozenset(w for phrase in PHRASES for w in phrase.split())


def singularize(token: str) -> str:
    """The deterministic singularizer of the design: irregulars, then -es after s/x/sh/ch, then -s.

    Words that are already vocabulary singulars ("cross", "plus", "rhombus") are left alone.
    """
    word = token.lower()
    if word in _SINGULAR_WORDS or word in SAFE_WORDS:
        return word
    if word in IRREGULAR_PLURALS:
        return IRREGULAR_PLURALS[word]
    if word.endswith("es") and word[:-2].endswith(("s", "x", "sh", "ch")):
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss") and len(word) > 1:
        return word[:-1]
    return word
