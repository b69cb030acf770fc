"""The `Vocabulary` type every pair builder, corruption and rule-based evaluator shares, plus the general English
word tables (colours, sizes, counts, grid positions, spatial relations) a source without its own tables uses.

A vocabulary is plain data: which classes exist, every word or phrase that names one, how each is written in the
plural, and the attribute and relation words a corruption may change. Nothing here matches text; the matching
lives with its users (data_builders/corrupt/text.py, the CHAIR evaluator) so each keeps its own rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

from align.data import shapes_vocab
from align.data.nouns import article, pluralize

# ------------------------------------------------------------------------------------ English defaults

# Common colour words of image descriptions. "orange" is also a COCO class: users tell the two apart by position
# (a colour word stands before a noun).
COLORS: tuple[str, ...] = (
    "white", "black", "red", "blue", "green", "yellow", "orange", "brown", "gray", "pink", "purple", "silver",
)
COLOR_SYNONYMS: dict[str, str] = {"grey": "gray", "violet": "purple"}
SIZES: tuple[str, ...] = ("small", "medium", "large")
# Size words -> the size value they state, so "big" is never swapped for its own synonym "large".
SIZE_SYNONYMS: dict[str, str] = {
    "big": "large", "huge": "large", "giant": "large", "tiny": "small", "little": "small",
}
NUMBERS: dict[str, int] = {word: n for n, word in shapes_vocab.NUMBER_WORDS.items()}

# Spatial relations and their opposites, the POVID "logical relationship" and BPO "location" errors. Phrases are
# matched longest first, so "to the left of" wins over "left of". Several opposites: the corruption picks one.
RELATIONS: dict[str, tuple[str, ...]] = {
    "to the left of": ("to the right of",),
    "to the right of": ("to the left of",),
    "left of": ("right of",),
    "right of": ("left of",),
    "above": ("below",),
    "below": ("above",),
    "on top of": ("under", "beneath"),
    "under": ("on top of",),
    "underneath": ("on top of",),
    "beneath": ("on top of",),
    "in front of": ("behind",),
    "behind": ("in front of",),
    "inside": ("outside",),
    "outside": ("inside",),
    "bigger than": ("smaller than",),
    "larger than": ("smaller than",),
    "smaller than": ("bigger than", "larger than"),
    "taller than": ("shorter than",),
    "shorter than": ("taller than",),
}


def grid_positions() -> dict[str, str]:
    """Position phrase -> 3x3 grid cell, bare ("top left", "top-left") and with a preposition ("in the top left",
    "on the left", "at the bottom"). Built from the shapes tables, whose grid words are plain English."""
    bare = dict(shapes_vocab.POSITION_PHRASES)
    bare.update({cell: cell for cell in shapes_vocab.CELLS if "-" in cell})  # "top-left" as written in a cell id
    table: dict[str, str] = {}
    for phrase, cell in bare.items():
        for preposition in ("in the", "at the", "on the"):
            table[f"{preposition} {phrase}"] = cell
        if " " in phrase or "-" in phrase:
            # A single bare word ("left", "top") is too often something else ("left behind", "top of"); only
            # corner phrases count without a preposition.
            table[phrase] = cell
    table.update({phrase: cell for cell, phrase in shapes_vocab.CELL_PHRASES.items()})
    return table


# ------------------------------------------------------------------------------------- the type


@dataclass(frozen=True, eq=False)
class Vocabulary:
    """Classes, the words that name them, and the attribute/relation words of one source (COCO, shapes, a user's).

    Every key is lower case with single spaces between words. `synonyms` holds the canonical names too, so
    `synonyms.get(word)` answers "which class does this word name" for any singular form.
    """

    name: str
    classes: tuple[str, ...]
    # Every singular word or phrase that names a class -> the canonical class.
    synonyms: Mapping[str, str]
    # Singular surface form -> plural surface form, for every key of `synonyms`.
    plurals: Mapping[str, str]
    # CHAIR's two-word merges: phrase -> what it counts as. A value that is a synonym makes the phrase a mention
    # of that class ("baby bird" -> "bird"); any other value makes the phrase a non-object that hides its words
    # ("home plate" hides "plate", "train track" hides "train").
    phrases: Mapping[str, str] = field(default_factory=dict)
    # Generic words never counted as a mention ("shape", "object").
    safe_words: frozenset[str] = frozenset()
    colors: tuple[str, ...] = COLORS
    color_synonyms: Mapping[str, str] = field(default_factory=lambda: dict(COLOR_SYNONYMS))
    sizes: tuple[str, ...] = SIZES
    size_synonyms: Mapping[str, str] = field(default_factory=lambda: dict(SIZE_SYNONYMS))
    numbers: Mapping[str, int] = field(default_factory=lambda: dict(NUMBERS))
    # Position phrase -> grid cell; `cell_phrases` says how to write a cell back ("top-left" -> "in the top left").
    positions: Mapping[str, str] = field(default_factory=grid_positions)
    cell_phrases: Mapping[str, str] = field(default_factory=lambda: dict(shapes_vocab.CELL_PHRASES))
    relations: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(RELATIONS))
    # The word written when a corruption inserts a class (defaults to the class name; COCO writes "ski" for skis).
    display: Mapping[str, str] = field(default_factory=dict)
    # Default popularity (class -> weight) and co-occurrence (class -> class -> weight) for the popular and
    # adversarial strategies, when a builder passes no measured table. None: the source has no default.
    frequencies: Mapping[str, float] | None = None
    cooccurrence: Mapping[str, Mapping[str, float]] | None = None

    def __post_init__(self) -> None:
        unknown = sorted({c for c in self.synonyms.values() if c not in self.classes})
        if unknown:
            raise ValueError(f"vocabulary '{self.name}': synonyms name classes not in `classes`: {unknown}")
        missing = sorted(c for c in self.classes if self.synonyms.get(c) != c)
        if missing:
            raise ValueError(f"vocabulary '{self.name}': classes missing from their own synonyms: {missing}")

    # ------------------------------------------------------------------ lookups

    def canonical(self, word: str) -> str | None:
        """The class a word or phrase names, singular or plural (None when it names none)."""
        form = self.forms.get(" ".join(word.lower().split()))
        return form[0] if form else None

    def plural(self, word: str) -> str:
        return self.plurals.get(word.lower()) or pluralize(word.lower())

    def display_name(self, cls: str) -> str:
        return self.display.get(cls, cls)

    def color_value(self, word: str) -> str | None:
        """The colour a word states ("grey" -> "gray"), or None."""
        lower = word.lower()
        if lower in self.color_synonyms:
            return self.color_synonyms[lower]
        return lower if lower in self.colors else None

    def size_value(self, word: str) -> str | None:
        lower = word.lower()
        if lower in self.size_synonyms:
            return self.size_synonyms[lower]
        return lower if lower in self.sizes else None

    @staticmethod
    def article(word: str) -> str:
        return article(word)

    @cached_property
    def forms(self) -> dict[str, tuple[str, bool]]:
        """Every singular and plural surface form -> (class, is_plural).

        A form that is only ever a plural (people, children, skis) is plural; one that is its own plural
        (sheep, broccoli) is singular here, and readers decide from context.
        """
        table: dict[str, tuple[str, bool]] = {}
        for surface, cls in self.synonyms.items():
            plural = self.plural(surface)
            if plural != surface:
                table[plural] = (cls, True)
        for surface, cls in self.synonyms.items():
            table.setdefault(surface, (cls, False))
        return table

    @cached_property
    def singular_of(self) -> dict[str, str]:
        """Plural surface form -> its singular surface form ("circles" -> "circle")."""
        return {self.plural(s): s for s in self.synonyms if self.plural(s) != s}

    @cached_property
    def max_words(self) -> int:
        """Longest surface form or phrase in words, so matchers know how far to look ahead."""
        keys = list(self.forms) + list(self.phrases)
        return max((len(k.split()) for k in keys), default=1)

    def surfaces_of(self, cls: str) -> list[str]:
        """Every singular surface form of one class."""
        return [s for s, c in self.synonyms.items() if c == cls]
