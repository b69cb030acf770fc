"""Vocabularies of the pair builders and rule-based evaluators: COCO (CHAIR's synonym list), the shapes world, or a
user's file. All are `Vocabulary` objects: classes, synonym -> class, plurals, attribute and relation words.

    VOCABULARIES["coco"]()          COCO's 80 categories with CHAIR's synonyms and two-word phrases
    VOCABULARIES["shapes"]()        the shapes world (built from align.data.shapes_vocab)
    get_vocabulary(name_or_path)    one of the above by name, else `load_vocabulary(path)`

A user vocabulary file is either

* text (any suffix but .json), CHAIR's synonyms.txt format: one line per class, entries separated by commas, the
  canonical name first (`person, man, woman, child`); blank lines and lines starting with "#" are skipped.
  Multi-word entries ("hot dog") match as one object. Plurals follow the English rule plus a table of irregulars;
  attribute, position and relation words are the general English defaults.
* JSON, an object with the key "classes" and any of the optional keys below:

    {"name": "kitchen",
     "classes": {"cup": ["mug"], "knife": []},        # or [["cup", "mug"], ["knife"]]
     "plurals": {"knife": "knives"},                   # singular -> plural, overrides the rule
     "phrases": {"coffee mug": "mug"},                 # CHAIR-style two-word merges: phrase -> what it counts as
     "safe_words": ["thing"], "colors": [...], "color_synonyms": {...}, "sizes": [...], "size_synonyms": {...},
     "numbers": {"two": 2}, "positions": {"on the left": "left"}, "cell_phrases": {"left": "on the left"},
     "relations": {"above": ["below"]}, "display": {"knife": "knife"},
     "frequencies": {"cup": 10}, "cooccurrence": {"cup": {"knife": 3}}}

  Keys are lower-cased; an unknown key is an error that lists the valid ones.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from align.data.nouns import IRREGULAR_PLURALS, article, pluralize
from align.data.vocab.coco import coco_vocabulary
from align.data.vocab.shapes import shapes_vocabulary
from align.data.vocab.vocabulary import Vocabulary
from align.errors import DataError, lookup

__all__ = [
    "VOCABULARIES", "Vocabulary", "article", "coco_vocabulary", "get_vocabulary", "load_vocabulary",
    "pluralize", "shapes_vocabulary",
]

VOCABULARIES: dict[str, Callable[[], Vocabulary]] = {
    "coco": coco_vocabulary,
    "shapes": shapes_vocabulary,
}

# Optional JSON keys -> how to turn the JSON value into the Vocabulary field.
_JSON_FIELDS: dict[str, Callable[[Any], Any]] = {
    "plurals": lambda v: {k.lower(): p.lower() for k, p in v.items()},
    "phrases": lambda v: {" ".join(k.lower().split()): p.lower() for k, p in v.items()},
    "safe_words": lambda v: frozenset(w.lower() for w in v),
    "colors": lambda v: tuple(w.lower() for w in v),
    "color_synonyms": lambda v: {k.lower(): c.lower() for k, c in v.items()},
    "sizes": lambda v: tuple(w.lower() for w in v),
    "size_synonyms": lambda v: {k.lower(): s.lower() for k, s in v.items()},
    "numbers": lambda v: {k.lower(): int(n) for k, n in v.items()},
    "positions": lambda v: {" ".join(k.lower().split()): c for k, c in v.items()},
    "cell_phrases": dict,
    "relations": lambda v: {k.lower(): tuple([o] if isinstance(o, str) else o) for k, o in v.items()},
    "display": dict,
    "frequencies": lambda v: {k: float(f) for k, f in v.items()},
    "cooccurrence": lambda v: {a: {b: float(w) for b, w in row.items()} for a, row in v.items()},
}


def get_vocabulary(name_or_path: str | Path) -> Vocabulary:
    """A built-in vocabulary by name ("coco", "shapes"), else a user file by path."""
    if isinstance(name_or_path, str) and name_or_path in VOCABULARIES:
        return VOCABULARIES[name_or_path]()
    path = Path(name_or_path)
    if not path.exists():
        lookup(VOCABULARIES, "vocabulary (and no such file)", str(name_or_path))
    return load_vocabulary(path)


def load_vocabulary(path: str | Path) -> Vocabulary:
    """A user vocabulary from a JSON or CHAIR-style text file (format in this module's docstring)."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        return _from_json(path)
    return _build(path, path.stem, _parse_text(path), {})


def _parse_text(path: Path) -> list[list[str]]:
    lines = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        if raw.strip() and not raw.lstrip().startswith("#"):
            lines.append([e.strip() for e in raw.split(",") if e.strip()])
    return lines


def _from_json(path: Path) -> Vocabulary:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(path, f"not valid JSON ({exc})") from None
    if not isinstance(data, dict) or "classes" not in data:
        raise DataError(path, 'a JSON vocabulary is an object with at least the key "classes"')
    unknown = sorted(set(data) - set(_JSON_FIELDS) - {"name", "classes"})
    if unknown:
        valid = ", ".join(["name", "classes", *_JSON_FIELDS])
        raise DataError(path, f"unknown keys {unknown}; valid keys: {valid}")
    classes = data["classes"]
    if isinstance(classes, dict):
        lines = [[name, *synonyms] for name, synonyms in classes.items()]
    else:
        lines = [list(entries) for entries in classes]
    try:
        extra = {key: convert(data[key]) for key, convert in _JSON_FIELDS.items() if key in data}
    except (AttributeError, TypeError, ValueError) as exc:
        raise DataError(path, f"a vocabulary table has the wrong shape ({exc})") from None
    return _build(path, data.get("name", path.stem), lines, extra)


def _build(path: Path, name: str, lines: list[list[str]], extra: dict[str, Any]) -> Vocabulary:
    if not lines or any(not entries for entries in lines):
        raise DataError(path, "every class needs a canonical name; the file lists none or an empty class")
    synonyms: dict[str, str] = {}
    for entries in lines:
        canonical = " ".join(entries[0].lower().split())
        for entry in entries:
            surface = " ".join(entry.lower().split())
            if synonyms.get(surface, canonical) != canonical:
                raise DataError(path, f"'{surface}' names two classes ('{synonyms[surface]}' and '{canonical}')")
            synonyms[surface] = canonical
    plurals = {s: pluralize(s, IRREGULAR_PLURALS) for s in synonyms}
    plurals.update(extra.pop("plurals", {}))
    classes = tuple(dict.fromkeys(" ".join(entries[0].lower().split()) for entries in lines))
    try:
        return Vocabulary(name=name, classes=classes, synonyms=synonyms, plurals=plurals, **extra)
    except ValueError as exc:
        raise DataError(path, str(exc)) from None
