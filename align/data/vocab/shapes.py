"""The shapes-world vocabulary as a `Vocabulary`, built from align.data.shapes_vocab (the one table the generator
and evaluators share) and the generator's class prior and planted pairs; nothing is copied here."""

from __future__ import annotations

from functools import lru_cache

from align.data import shapes_vocab
from align.data.nouns import pluralize
from align.data.vocab.vocabulary import Vocabulary, grid_positions


def _plurals() -> dict[str, str]:
    # The generator's own plurals first, then shapes' irregulars ("rhombus" -> "rhombi"), then the English rule
    # for the other synonyms ("disc" -> "discs", "plus sign" -> "plus signs"); shapes_vocab.singularize undoes
    # each of them (a test checks it).
    irregular = {singular: plural for plural, singular in shapes_vocab.IRREGULAR_PLURALS.items()}
    table = {}
    for synonyms in shapes_vocab.SHAPES.values():
        for surface in synonyms:
            table[surface] = shapes_vocab.PLURALS.get(surface) or pluralize(surface, irregular)
    return table


def _planted_cooccurrence() -> dict[str, dict[str, float]]:
    """Anchor <-> partner weight 1 both ways: the co-occurrence the generator plants, before any measurement."""
    from align.data.shapes import PLANTED_PARTNERS

    table: dict[str, dict[str, float]] = {c: {} for c in shapes_vocab.CLASSES}
    for anchor, partner in PLANTED_PARTNERS.items():
        table[anchor][partner] = 1.0
        table[partner][anchor] = 1.0
    return table


def _prior() -> dict[str, float]:
    from align.data.shapes import ShapesConfig, class_prior

    return class_prior(ShapesConfig().class_skew)


@lru_cache(maxsize=1)
def shapes_vocabulary() -> Vocabulary:
    """Shapes classes, synonyms, phrases, safe words, colours, sizes and grid positions; the default class prior
    as popularity and the planted pairs as co-occurrence (a builder passes a world's measured tables instead)."""
    bare_and_prepositional = grid_positions()
    return Vocabulary(
        name="shapes",
        classes=shapes_vocab.CLASSES,
        synonyms={s: name for name, synonyms in shapes_vocab.SHAPES.items() for s in synonyms},
        plurals=_plurals(),
        phrases=dict(shapes_vocab.PHRASES),
        safe_words=shapes_vocab.SAFE_WORDS,
        colors=tuple(shapes_vocab.COLORS),
        color_synonyms=dict(shapes_vocab.COLOR_SYNONYMS),
        sizes=tuple(shapes_vocab.SIZES),
        size_synonyms={},  # the generator writes only small/medium/large
        positions=bare_and_prepositional,
        cell_phrases=dict(shapes_vocab.CELL_PHRASES),
        frequencies=_prior(),
        cooccurrence=_planted_cooccurrence(),
    )
