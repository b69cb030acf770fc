"""COCO's 80 categories with CHAIR's synonym list and two-word phrases (Rohrbach et al. 2018), as data.

The synonym list lives in coco_synonyms.txt, transcribed byte-exact from CHAIR's data/synonyms.txt (as embedded
in OPERA's chair.py and its ports; the copies agree). The phrase rules below are CHAIR's `double_word_dict`,
built the same way. The CHAIR evaluator reuses both, so tests pin their sizes and a few entries.

Uncertain or deliberate points:
- The two entries written after a double space (" motor bike", " cheesecake") keep their leading space in
  CHAIR's parser and never match. By default they are stripped (as RLAIF-V's synonyms_refine.txt does);
  `reference_exact=True` keeps them, and keeps "iPhone" upper-case (CHAIR lower-cases captions first, so it
  never matches either).
- RLAIF-V's refined list adds brother, pedestrian, coffee table and remote control; those are not included.
- The singular written for the class "skis" is "ski" (`display`), so an inserted skis reads "a ski".
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from align.data.nouns import IRREGULAR_PLURALS, pluralize
from align.data.vocab.vocabulary import Vocabulary

COCO_SYNONYMS_FILE = Path(__file__).with_name("coco_synonyms.txt")

# CHAIR's `coco_double_words`, in its order ("hot dog" and "teddy bear" appear twice there too).
COCO_DOUBLE_WORDS: tuple[str, ...] = (
    "motor bike", "motor cycle", "air plane", "traffic light", "street light", "traffic signal", "stop light",
    "fire hydrant", "stop sign", "parking meter", "suit case", "sports ball", "baseball bat", "baseball glove",
    "tennis racket", "wine glass", "hot dog", "cell phone", "mobile phone", "teddy bear", "hair drier",
    "potted plant", "bow tie", "laptop computer", "stove top oven", "hot dog", "teddy bear", "home plate",
    "train track",
)
# "baby X" / "adult X" would otherwise fire "baby"/"adult" as person; CHAIR maps them to X.
ANIMAL_WORDS: tuple[str, ...] = (
    "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "animal", "cub",
)
# "passenger jet" would otherwise fire "passenger" as person.
VEHICLE_WORDS: tuple[str, ...] = ("jet", "train")

COCO_DISPLAY: dict[str, str] = {"skis": "ski"}


def coco_synonym_lines(reference_exact: bool = False) -> list[list[str]]:
    """The 80 lines of the synonym list, entries in file order with repeats (canonical name first).

    reference_exact=True returns CHAIR's own parse (`line.strip().split(", ")`), leading spaces and case kept.
    """
    lines = []
    for raw in COCO_SYNONYMS_FILE.read_text(encoding="utf-8").splitlines():
        if not raw.strip() or raw.startswith("#"):
            continue
        entries = raw.strip().split(", ")
        lines.append(entries if reference_exact else [e.strip() for e in entries])
    return lines


def coco_double_word_dict() -> dict[str, str]:
    """CHAIR's `double_word_dict`: two-word phrase -> the word it counts as, built in CHAIR's order."""
    table = {phrase: phrase for phrase in COCO_DOUBLE_WORDS}
    for animal in ANIMAL_WORDS:
        table[f"baby {animal}"] = animal
        table[f"adult {animal}"] = animal
    for vehicle in VEHICLE_WORDS:
        table[f"passenger {vehicle}"] = vehicle
    table["bow tie"] = "tie"
    table["toilet seat"] = "toilet"
    table["wine glas"] = "wine glass"  # undoes the singularizer's "glass" -> "glas"
    return table


def coco_vocabulary(reference_exact: bool = False) -> Vocabulary:
    """COCO with CHAIR's synonyms and phrases and the general English attribute and relation words (one shared
    instance per setting: `coco_vocabulary()` and `coco_vocabulary(reference_exact=False)` are the same object)."""
    return _coco_vocabulary(bool(reference_exact))


@cache
def _coco_vocabulary(reference_exact: bool) -> Vocabulary:
    synonyms: dict[str, str] = {}
    for entries in coco_synonym_lines(reference_exact):
        for entry in entries:
            synonyms[entry if reference_exact else entry.lower()] = entries[0]
    classes = tuple(entries[0] for entries in coco_synonym_lines(reference_exact))
    return Vocabulary(
        name="coco",
        classes=classes,
        synonyms=synonyms,
        plurals={s: pluralize(s, IRREGULAR_PLURALS) for s in synonyms},
        phrases=coco_double_word_dict(),
        display=dict(COCO_DISPLAY),
    )
